"""The one command-line entry point: `inverse-graphics <command> ...`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .paths import (EXAMPLE_FRAMES, GENERALIZATION_MODELS, REPO_ROOT, RESULTS_DIR, SHIPPED_AIR, SHIPPED_DAIR,
                    SHIPPED_SUPERVISED)


def _tabletop(args):
    from .data.tabletop import Tabletop, TabletopConfig

    return Tabletop(TabletopConfig(image_size=(args.image_size, args.image_size), seed=args.seed))


def _write_contact_sheet(data, split: str, out: Path, count: int = 32) -> Path:
    from .data.bop import read_split
    from .visualize import contact_sheet

    rgb, _, batch = read_split(out, split, data.catalog, data.config.max_objects, limit=count)
    labels = []
    for b in range(len(batch)):
        names = [data.catalog[int(c)].name for c in batch.category[b] if c >= 0]
        labels.append(f"{len(names)}: " + ", ".join(n.replace("_", " ") for n in names) if names else "0: empty")
    return contact_sheet(rgb, labels, out / f"{split}_contact_sheet.png",
                         title=f"tabletop-v1 {split}: first {len(batch)} scenes (count: objects)")


def cmd_generate(args) -> int:
    from .data.bop import generate_split

    data = _tabletop(args)
    path = generate_split(data, args.split, args.out, args.num, progress=not args.quiet)
    sheet = _write_contact_sheet(data, args.split, Path(args.out))
    print(f"wrote {path} (BOP layout) and {sheet}")
    return 0


def cmd_bench_render(args) -> int:
    from tqdm import tqdm

    from .files import atomic_write_json
    from .experiments.render_speed import run_render_benchmark

    bar = tqdm(desc="bench-render", unit="render", disable=args.json)

    def progress(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    result = run_render_benchmark(batch_size=args.batch_size, repeats=args.repeats, progress=progress)
    bar.close()
    result["command"] = "inverse-graphics bench-render"
    out = Path(args.out)
    atomic_write_json(out, result)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"3-object {result['image_size']}x{result['image_size']} soft renders, batch {result['batch_size']}:")
        print(f"  stock PyTorch3D autograd: {result['stock_forward_ms_per_image']:.2f} ms forward, "
              f"{result['stock_ms_per_image']:.2f} ms forward+backward per image")
        print(f"  fast gradient path:       {result['fast_forward_ms_per_image']:.2f} ms forward, "
              f"{result['fast_ms_per_image']:.2f} ms forward+backward per image")
        print(f"  speedup {result['speedup']:.1f}x (backward alone {result['backward_speedup']:.1f}x), "
              f"gradient relative error {result['grad_rel_err']:.2e}")
        print(f"wrote {out}")
    return 0


def cmd_bench_blackbox(args) -> int:
    from tqdm import tqdm

    from .files import atomic_write_json
    from .experiments.blackbox_gradients import run_blackbox_benchmark

    stages = tqdm(desc="bench-blackbox", total=7, unit="stage")

    def progress(stage):
        stages.set_postfix_str(stage)
        stages.update()

    result = run_blackbox_benchmark(repeats=args.repeats, per_category=args.per_category, steps=args.steps,
                                    progress=progress)
    stages.close()
    result["command"] = "python benchmarks/blackbox_grad.py"
    out = Path(args.out)
    atomic_write_json(out, result)
    for size, rates in result["renders_per_second"].items():
        print(f"renders/s at {size}: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
    print(f"mask IoU PyTorch3D vs Open3D: {result['mask_iou']:.4f}; "
          f"central-difference vs analytic gradient cosine: {result['central_cosine']:.3f}")
    for name, cost in result["gradient_cost"].items():
        fit = result["pose_recovery"][name]
        print(f"  {name:8s} {cost['ms_per_gradient']:7.1f} ms/gradient ({cost['renders_per_gradient']:.0f} renders); "
              f"pose recovery {fit['success_rate']:.0%} (median {fit['pos_err_mm_median']:.1f} mm, "
              f"{fit['yaw_err_deg_median']:.2f} deg, {fit['seconds_per_fit']:.2f} s/fit)")
    print(f"  starts: {result['pose_recovery']['start']['success_rate']:.0%} already within the success bounds")
    print(f"wrote {out}")
    return 0


def _air_config(args):
    from .air.model import AIRConfig

    return AIRConfig(max_steps=args.max_steps, dair=args.dair, renderer=args.renderer,
                     count_estimator=args.count_estimator)


def cmd_train_air(args) -> int:
    from .air.train import train_air

    data = _tabletop(args)
    if args.max_steps < data.config.max_objects and args.split in ("train", "val", "test"):
        print(f"note: {args.max_steps} steps cannot count the {data.config.max_objects} objects some scenes have")
    result = train_air(args.out, _air_config(args), _train_config(args, baseline_lr=args.baseline_lr), data,
                       resume=args.resume, progress=not args.quiet)
    _report_training(result, Path(args.out))
    return 0


def _set_threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _train_config(args, **extra):
    from .training import TrainConfig

    _set_threads(args)
    return TrainConfig(split=args.split, iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
                       train_pool=args.train_pool, val_size=args.val_size, val_every=args.val_every,
                       time_limit_minutes=args.minutes, seed=args.train_seed, **extra)


def _report_training(result: dict, out: Path) -> None:
    print(f"trained {result['iteration']} iterations in {result['train_minutes']:.1f} min "
          f"({result['skipped']} skipped); validation count accuracy {result.get('val_count_acc', float('nan')):.3f}, "
          f"identity {result.get('val_identity_acc', float('nan')):.3f}")
    print(f"wrote {out / 'checkpoint.pt'}, {out / 'history.json'}, {out / 'curves.png'}")


def cmd_train_supervised(args) -> int:
    from .supervised import train_supervised

    train_cfg = _train_config(args)
    result = train_supervised(args.out, None, train_cfg, _tabletop(args), resume=args.resume, progress=not args.quiet)
    _report_training(result, Path(args.out))
    return 0


def _existing(path) -> str | None:
    return str(path) if path and Path(path).is_file() else None


def cmd_benchmark(args) -> int:
    import torch

    from .experiments.side_by_side import GENERALIZATION, BenchmarkConfig, run_benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    models = Path(args.generalization_models)
    generalization = {} if args.no_generalization else {
        test: {m: str(models / f"{m}_{train}.pt") for m in ("air", "dair", "supervised")}
        for test, train in GENERALIZATION.items()}
    checkpoints = {}
    for name in ("air", "dair", "supervised"):
        given = getattr(args, name)
        if given and not Path(given).is_file():
            raise FileNotFoundError(f"--{name}: no checkpoint at {given}")
        checkpoints[name] = _existing(given)
    config = BenchmarkConfig(split=args.split, num=args.num, optimise_num=args.optimise_num, renderer=args.renderer,
                             seed=args.optimise_seed, generalization=generalization, **checkpoints)
    report = run_benchmark(config, args.out, progress=not args.quiet)
    for name, m in report["methods"].items():
        print(f"{name:11s} count {m['count_acc']:.3f}  identity {m['identity_acc']:.3f}  "
              f"pos {m['pos_err_mm_median']:.1f} mm  yaw {m['rot_err_deg_median']:.1f} deg  "
              f"ADD-S {m['adds_recall']:.3f}  {m['ms_per_image']:.2f} ms/image ({m['scenes']} scenes)")
    out = Path(args.out)
    print(f"wrote {out / 'tabletop_report.md'}, {out / 'tabletop_report.json'}, figures and BOP CSVs in {out / 'bop'}")
    return 0


def cmd_optimise(args) -> int:
    from .optimise import OptimiseSettings, optimise_files

    _set_threads(args)
    settings = OptimiseSettings(max_objects=args.max_objects, starts=args.starts)
    optimise_files(args.images, args.out, _tabletop(args), args.renderer, settings, args.optimise_seed)
    return 0


def cmd_export_weights(args) -> int:
    from .training import export_weights

    path = export_weights(args.checkpoint, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, float16)")
    return 0


def cmd_infer(args) -> int:
    from .air.infer import infer, overlay_figure, to_json
    from .data.images import load_images
    from .air.train import load_checkpoint
    from .files import atomic_write_json

    model, _ = load_checkpoint(args.model)
    images, files = load_images(args.images)
    results = infer(model, images, samples=args.samples)
    out = Path(args.out)
    payload = [to_json(r, str(f)) for r, f in zip(results, files)]
    for entry, r in zip(payload, results):
        entry["samples"] = [[{"category": o.category, "planar": list(o.planar)} for o in s.objects]
                            for s in r.samples]
    atomic_write_json(out / "poses.json", payload)
    shown = min(len(files), args.overlay_max)
    figure = overlay_figure(model, images[:shown], results[:shown], [str(f) for f in files[:shown]],
                            out / "overlay.png")
    for entry in payload[:8]:
        print(f"{Path(entry['image']).name}: {entry['count']} objects: "
              + ", ".join(f"{o['category']} at ({o['x_m'] * 1000:.0f}, {o['y_m'] * 1000:.0f}) mm" for o in entry["objects"]))
    print(f"wrote {out / 'poses.json'} ({len(files)} images) and {figure}")
    return 0


def cmd_demo(args) -> int:
    import torch

    from .data.bop import generate_split
    from .rendering.renderer import SceneRenderer
    from .visualize import render_panel

    data = _tabletop(args)
    out = Path(args.out)
    print(f"1/4 generating {args.num} tabletop-v1 test scenes into {out} ...")
    generate_split(data, "test", out, args.num)
    sheet = _write_contact_sheet(data, "test", out)
    print("2/4 rendering one scene in hard and soft modes ...")
    batch = data.scene_batch(data.sample("test", [args.scene]))
    with torch.no_grad():
        outputs = {mode: SceneRenderer(data.catalog, mode=mode, gradients="none")(batch) for mode in ("hard", "soft")}
    panel = render_panel(outputs, out / "render_modes.png")
    print(f"3/5 AIR inference with the shipped weights ({SHIPPED_AIR.relative_to(REPO_ROOT)}) ...")
    air_lines = _demo_air(data, out, args.num)
    print(f"4/5 object poses in the example robot frames ({EXAMPLE_FRAMES.relative_to(REPO_ROOT)}) ...")
    robot_lines = _demo_robot(out / "robot_poses")
    print("5/5 done. Files:")
    print(f"  dataset (BOP layout): {out / 'test'}")
    print(f"  contact sheet:        {sheet}")
    print(f"  hard vs soft render:  {panel}")
    for line in air_lines + robot_lines:
        print(line)
    return 0


def _demo_robot(out: Path) -> list[str]:
    from .assets import ObjectCatalog
    from .metrics import evaluate_poses
    from .robot.poses import detections_of, run_poses
    from .robot.simulate import read_truth

    results = run_poses(EXAMPLE_FRAMES, SHIPPED_AIR, out, progress=False)
    truth = read_truth(EXAMPLE_FRAMES)
    names = sorted(truth)
    metrics = evaluate_poses(detections_of(results, names), [truth[n] for n in names], ObjectCatalog.load())
    seconds = sum(results["frames"][n]["seconds"] for n in names) / len(names)
    return [f"  robot frame poses:    {out / 'poses.json'}, {out / 'poses_bop.csv'}, {out / 'overlay'}/",
            f"  on these {len(names)} frames: ADD-S recall {metrics['adds_recall']:.2f}, "
            f"{seconds:.2f} s per frame end to end"]


def _demo_air(data, out: Path, num: int) -> list[str]:
    from .air.infer import infer, overlay_figure, to_json
    from .air.train import evaluate, load_checkpoint
    from .data.bop import read_split
    from .files import atomic_write_json

    if not SHIPPED_AIR.exists():
        return [f"  (no shipped AIR weights at {SHIPPED_AIR}; train some with `inverse-graphics train-air`)"]
    model, ckpt = load_checkpoint(SHIPPED_AIR, data)
    rgb, _, truth = read_split(out, "test", data.catalog, data.config.max_objects)
    results = infer(model, rgb)
    names = [f"test scene {k}" for k in range(len(rgb))]
    atomic_write_json(out / "air_poses.json", [to_json(r, n) for r, n in zip(results, names)])
    figure = overlay_figure(model, rgb[:16], results[:16], names[:16], out / "air_reconstructions.png")
    metrics = evaluate(model, rgb, truth)
    return [f"  AIR poses (JSON):     {out / 'air_poses.json'}",
            f"  AIR reconstructions:  {figure}",
            f"  AIR on these {len(rgb)} scenes: count accuracy {metrics['count_acc']:.2f}, "
            f"identity accuracy {metrics['identity_acc']:.2f}, median position error "
            f"{metrics['pos_err_mm_median']:.1f} mm (model trained {ckpt['train_seconds'] / 60:.0f} min, no labels)"]


def cmd_frames(args) -> int:
    from .robot.simulate import CaptureConditions, write_frames

    conditions = CaptureConditions.ideal() if args.ideal else CaptureConditions()
    out = write_frames(args.out, args.num, conditions, seed=args.seed, with_extrinsic=not args.no_extrinsic,
                       rgb_format="jpg" if args.jpeg else "png", progress=not args.quiet)
    print(f"wrote {args.num} frames to {out} (rgb/, depth/, camera.json, scene_gt.json)")
    return 0


def cmd_fit(args) -> int:
    from .robot.fit import fit

    result = fit(args.frames, args.out, args.camera, args.init, args.minutes, args.iterations, args.seed,
                 resume=args.resume, progress=not args.quiet)
    print(f"fitted AIR on {result['frames']} frames for {result['train_minutes']:.1f} min "
          f"({result['iteration']} iterations); synthetic validation: count {result.get('val_count_acc', float('nan')):.3f}, "
          f"ADD-S {result.get('val_adds_recall', float('nan')):.3f}. Checkpoint: {Path(args.out) / 'checkpoint.pt'}")
    return 0


def cmd_poses(args) -> int:
    from .robot.poses import PoseSettings, run_poses

    settings = PoseSettings(categories=tuple(args.objects.split(","))) if args.objects else None
    results = run_poses(args.frames, args.model, args.out, args.camera, settings, write_overlays=not args.no_overlay,
                        progress=not args.quiet)
    done = results["frames"]
    for name, entry in list(sorted(done.items()))[:8]:
        print(f"{name}: " + (", ".join(f"{o['category']} ({o['score']:.2f})" for o in entry["objects"]) or "nothing"))
    seconds = [e["seconds"] for e in done.values()]
    if seconds:
        print(f"{len(done)} frames, {sum(seconds) / len(seconds):.2f} s per frame; skipped {len(results['skipped'])}")
    print(f"wrote {Path(args.out) / 'poses.json'}, {Path(args.out) / 'poses_bop.csv'} and {Path(args.out) / 'overlay'}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inverse-graphics", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def data_args(p):
        p.add_argument("--image-size", type=int, default=64, help="square image side in pixels (default 64)")
        p.add_argument("--seed", type=int, default=2016, help="dataset seed (default 2016, tabletop-v1)")

    from .data.tabletop import SPLITS

    p = sub.add_parser("generate", help="render a tabletop-v1 split to the BOP layout, with a contact sheet")
    p.add_argument("--split", required=True, choices=list(SPLITS))
    p.add_argument("--out", required=True, help="output folder (a BOP dataset root)")
    p.add_argument("--num", type=int, default=None, help="number of scenes (default: the whole split)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    data_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("bench-render", help="stock PyTorch3D autograd vs the fast gradient path")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS_DIR / "render_speed.json"))
    p.set_defaults(func=cmd_bench_render)

    p = sub.add_parser("bench-blackbox", help="Open3D + finite differences vs analytic PyTorch3D gradients")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--per-category", type=int, default=4, help="pose-recovery trials per object category")
    p.add_argument("--steps", type=int, default=80, help="gradient steps per pose recovery")
    p.add_argument("--out", default=str(RESULTS_DIR / "blackbox_grad.json"))
    p.set_defaults(func=cmd_bench_blackbox)

    from .rendering.likelihood import RENDERER_NAMES

    p = sub.add_parser("train-air", help="train AIR without labels by maximising the ELBO through the renderer")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, history.json, curves.png")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--renderer", choices=RENDERER_NAMES, default="pytorch3d", help="likelihood renderer")
    p.add_argument("--count-estimator", choices=["reinforce", "concrete"], default="reinforce",
                   help="z_pres gradients: NVIL score function or Concrete relaxation")
    p.add_argument("--dair", action="store_true", help="DAIR: each step sees what is left unexplained")
    p.add_argument("--max-steps", type=int, default=3, help="most objects per image (default 3)")
    p.add_argument("--split", default="train", choices=list(SPLITS), help="training images (labels unused)")
    p.add_argument("--iterations", type=int, default=8000)
    p.add_argument("--minutes", type=float, default=60.0, help="stop after this much training time")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--baseline-lr", type=float, default=1e-3)
    p.add_argument("--train-pool", type=int, default=6000, help="distinct training images, rendered once")
    p.add_argument("--val-size", type=int, default=300)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--train-seed", type=int, default=0, help="initialization and batch-order seed")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true")
    data_args(p)
    p.set_defaults(func=cmd_train_air)

    p = sub.add_parser("train-supervised", help="train the supervised regression baseline on labelled renders")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, history.json, curves.png")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--split", default="train", choices=list(SPLITS), help="training images and their labels")
    p.add_argument("--iterations", type=int, default=1_000_000, help="(the time limit usually ends training)")
    p.add_argument("--minutes", type=float, default=60.0, help="stop after this much training time (AIR's budget)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-pool", type=int, default=6000, help="distinct training images (AIR's default)")
    p.add_argument("--val-size", type=int, default=300)
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    data_args(p)
    p.set_defaults(func=cmd_train_supervised)

    p = sub.add_parser("benchmark", help="AIR, DAIR, supervised, optimise and AIR+refine side by side -> report")
    p.add_argument("--out", default=str(RESULTS_DIR), help="report folder (default benchmarks/results)")
    p.add_argument("--split", default="test", choices=list(SPLITS))
    p.add_argument("--num", type=int, default=1000, help="scenes for the amortized methods and AIR+refine")
    p.add_argument("--optimise-num", type=int, default=100, help="scenes for per-image optimisation")
    p.add_argument("--optimise-seed", type=int, default=0, help="seed of the optimiser's random starts")
    p.add_argument("--renderer", choices=RENDERER_NAMES, default="pytorch3d", help="for optimise and AIR+refine")
    p.add_argument("--air", default=str(SHIPPED_AIR), help="AIR checkpoint")
    p.add_argument("--dair", default=_existing(SHIPPED_DAIR), help="DAIR checkpoint")
    p.add_argument("--supervised", default=_existing(SHIPPED_SUPERVISED), help="supervised-baseline checkpoint")
    p.add_argument("--generalization-models", default=str(GENERALIZATION_MODELS),
                   help="folder of <method>_<extrap|interp>-train.pt checkpoints for the generalization splits")
    p.add_argument("--no-generalization", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    data_args(p)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("optimise", help="fit count, identity and pose per image through the renderer (no model)")
    p.add_argument("images", nargs="+", help="PNG/JPEG files or folders, at the tabletop camera's image size")
    p.add_argument("--out", default="optimise_output")
    p.add_argument("--renderer", choices=RENDERER_NAMES, default="pytorch3d")
    p.add_argument("--max-objects", type=int, default=3)
    p.add_argument("--starts", type=int, default=2, help="random starts per category for each new object")
    p.add_argument("--optimise-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    data_args(p)
    p.set_defaults(func=cmd_optimise)

    p = sub.add_parser("export-weights", help="a training checkpoint -> a small float16 file for shipping")
    p.add_argument("checkpoint", help="checkpoint.pt of a train-air or train-supervised run")
    p.add_argument("out", help="output file")
    p.set_defaults(func=cmd_export_weights)

    p = sub.add_parser("infer", help="count, identity and pose of the objects in images, with a trained AIR model")
    p.add_argument("images", nargs="+", help="PNG/JPEG files or folders, at the model's image size")
    p.add_argument("--model", required=True, help="AIR checkpoint (checkpoint.pt)")
    p.add_argument("--out", default="infer_output")
    p.add_argument("--samples", type=int, default=0, help="posterior samples per image, written to the JSON")
    p.add_argument("--overlay-max", type=int, default=16, help="images shown in overlay.png")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("demo", help="small tabletop set, contact sheet and one scene in both render modes")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--num", type=int, default=32)
    p.add_argument("--scene", type=int, default=3, help="test-scene index for the render panel")
    data_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("frames", help="make robot-camera frames (640x480 RGB-D, lighting, shadows, noise, clutter)")
    p.add_argument("out")
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ideal", action="store_true", help="the renderer's own model: no lighting change, noise or clutter")
    p.add_argument("--no-extrinsic", action="store_true", help="leave the extrinsic out of camera.json (found from depth)")
    p.add_argument("--jpeg", action="store_true", help="RGB as JPEG (quality 92) instead of PNG")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_frames)

    p = sub.add_parser("fit", help="train AIR without labels on a robot camera's frames (plus synthetic ones)")
    p.add_argument("frames", help="frames folder (rgb/, optional depth/, camera.json)")
    p.add_argument("--camera", default=None, help="camera.json or BOP scene_camera.json (default FRAMES/camera.json)")
    p.add_argument("--out", default="fit_output")
    p.add_argument("--init", default=None, help="AIR weights to start from (default: the shipped tabletop model)")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--iterations", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("poses", help="identity and 6-DoF pose of every object in a robot camera's frames")
    p.add_argument("frames", help="frames folder (rgb/, optional depth/, camera.json)")
    p.add_argument("--model", default=str(SHIPPED_AIR), help="AIR checkpoint (from `fit`; default the shipped one)")
    p.add_argument("--camera", default=None, help="camera.json or BOP scene_camera.json (default FRAMES/camera.json)")
    p.add_argument("--out", default="poses_output")
    p.add_argument("--objects", default=None, help="comma-separated catalog names that may appear (default: all)")
    p.add_argument("--no-overlay", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_poses)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError, IndexError) as exc:
        print(f"inverse-graphics {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
