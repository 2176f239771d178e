"""The robot user's commands: `frames` (simulated RGB-D frames with ground truth), `fit` (AIR
trained on a camera's own frames), `poses` (identity and 6-DoF pose per frame) and `evaluate`
(pose results scored against ground truth)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_options import nonnegative_int, positive_float, positive_int
from .distributed import current as current_process_group
from .files import atomic_write_json
from .paths import SHIPPED_AIR
from .assets import ObjectCatalog
from .robot.adapt import adapt_to_frames
from .robot.frames import read_camera
from .robot.evaluate import EVALUATION_FILE, evaluate_files, evaluation_lines
from .robot.pipeline import poses_summary, run_poses
from .robot.poses import PoseSettings
from .robot.simulate import CaptureConditions, write_frames


def cmd_frames(args) -> int:
    conditions = CaptureConditions.ideal() if args.ideal else CaptureConditions()
    camera = None
    if args.camera:
        setup = read_camera(args.camera)
        if setup.table_to_camera is None:
            raise ValueError(f"frames --camera: {args.camera} needs camera_to_table (where the camera stands over "
                             "the table) to simulate frames")
        camera = setup.camera()
    out = write_frames(args.out, args.num, conditions, seed=args.seed, camera=camera, catalog=ObjectCatalog.load(
                       args.models), with_extrinsic=not args.no_extrinsic, rgb_format="jpg" if args.jpeg else "png",
                       progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {args.num} frames to {out} (rgb/, depth/, camera.json; a BOP scene folder too: scene_gt.json, "
          "scene_gt_info.json, scene_camera.json)")
    return 0


def cmd_fit(args) -> int:
    result = adapt_to_frames(args.frames, args.out, args.camera, args.init, args.minutes, args.iterations,
                             args.seed, resume=args.resume, progress=not args.quiet, device=args.device,
                             models=args.models)
    if not current_process_group().is_main:
        return 0
    print(f"fitted AIR on {result['frames']} frames for {result['train_minutes']:.1f} min ({result['iteration']} "
          f"iterations); synthetic validation: count {result.get('val_count_acc', float('nan')):.3f}, identity "
          f"{result.get('val_identity_acc', float('nan')):.3f}. Checkpoint: {Path(args.out) / 'checkpoint.pt'}")
    return 0


def cmd_poses(args) -> int:
    settings = PoseSettings(categories=tuple(args.objects.split(","))) if args.objects else None
    results = run_poses(args.frames, args.model, args.out, args.camera, settings, write_overlays=not args.no_overlay,
                        progress=not args.quiet, device=args.device, overwrite=args.overwrite,
                        models=args.models)
    print("\n".join(poses_summary(results, args.out)))
    return 0


def cmd_evaluate(args) -> int:
    report = evaluate_files(args.results, args.ground_truth, ObjectCatalog.load(args.models))
    out = Path(args.out) if args.out else Path(args.results).parent / EVALUATION_FILE
    atomic_write_json(out, report)
    print("\n".join(evaluation_lines(report, args.shown)))
    print(f"wrote {out}")
    return 0


def add_robot_commands(sub, g) -> None:
    """The robot user's commands: frames, fit, poses and evaluate."""
    p = sub.add_parser("frames", parents=[g["quiet"], g["models"]],
                       help="make robot-camera frames (RGB-D, lighting, shadows, noise, clutter) with ground truth")
    p.add_argument("out")
    p.add_argument("--num", "--count", type=positive_int, default=8, help="frames (default 8)")
    p.add_argument("--camera", help="your camera.json (K, width, height, camera_to_table; default the example "
                                    "camera, 640x480)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--ideal", action="store_true", help="the renderer's own model: no lighting change, noise or clutter")
    p.add_argument("--no-extrinsic", action="store_true", help="leave the extrinsic out of camera.json (found from depth)")
    p.add_argument("--jpeg", action="store_true", help="RGB as JPEG (quality 92) instead of PNG")
    p.add_argument("--overwrite", action="store_true",
                   help="remake every frame when the folder holds frames made with other settings (else refused)")
    p.set_defaults(func=cmd_frames)

    camera = argparse.ArgumentParser(add_help=False)
    camera.add_argument("frames", help="frames folder (rgb/, optional depth/, camera.json)")
    camera.add_argument("--camera", help="camera.json or BOP scene_camera.json (default FRAMES/camera.json)")

    p = sub.add_parser("fit", parents=[camera, g["resume"], g["threads"], g["device"], g["quiet"],
                                       g["models"]],
                       help="train AIR without labels on a robot camera's frames (plus synthetic ones)")
    p.add_argument("--out", default="fit_output")
    p.add_argument("--init", default=None, help="AIR weights to start from (default: the shipped tabletop model)")
    p.add_argument("--minutes", type=positive_float, default=20.0)
    p.add_argument("--iterations", type=positive_int, default=100_000)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("poses", parents=[camera, g["threads"], g["device"], g["quiet"], g["models"]],
                       help="identity and 6-DoF pose of every object in a robot camera's frames")
    p.add_argument("--model", default=str(SHIPPED_AIR), help="AIR checkpoint (from `fit`; default the shipped one)")
    p.add_argument("--out", default="poses_output")
    p.add_argument("--objects", default=None, help="comma-separated catalog names that may appear (default: all)")
    p.add_argument("--no-overlay", action="store_true")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute every frame when --out holds poses made with another model, camera or settings")
    p.set_defaults(func=cmd_poses)

    p = sub.add_parser("evaluate", parents=[g["models"]], help="score pose results (poses.json or a BOP CSV) against ground truth (a "
                                        "frames or BOP scene folder): per frame and overall")
    p.add_argument("results", help="`poses`' poses.json or a BOP results CSV")
    p.add_argument("ground_truth", help="a frames or BOP scene folder (scene_gt.json), or its scene_gt.json")
    p.add_argument("--out", help=f"the report as JSON (default: {EVALUATION_FILE} beside RESULTS)")
    p.add_argument("--shown", type=nonnegative_int, default=20, help="frames listed in the table (default 20)")
    p.set_defaults(func=cmd_evaluate)
