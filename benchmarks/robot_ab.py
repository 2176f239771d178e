"""Interleaved A/B of pose-estimator variants on benchmarks/robot_frames.py's frames (written by
that script first), for comparing speed on a shared machine: per frame the arms run in turn
(rotating which goes first), each timed by its thread's CPU time and by wall time, reading the
frame included, writing nothing; then each arm's BOP recalls over the same frames.

    python benchmarks/robot_ab.py old=rgbd:inverse_graphics.robot.old_poses new=rgbd
    python benchmarks/robot_ab.py keep2=rgbd keep1=rgbd::'{"keep": 1}' --num 20

An arm is NAME=VARIANT[:MODULE[:SETTINGS[:MODEL]]]: VARIANT a folder of robot_frames_data (rgbd,
rgbd-plane, rgb, ideal), MODULE the module whose FramePoseEstimator and PoseSettings it uses
(default inverse_graphics.robot.poses; for the code before a change, a copy of the old file
beside it), SETTINGS a JSON object of PoseSettings fields ("refine.steps" sets a RefineSettings
field), MODEL the AIR checkpoint that proposes (default the robot pipeline's shipped one). One
thread unless --threads.
"""

import argparse
import importlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from inverse_graphics.assets import ObjectCatalog  # noqa: E402
from inverse_graphics.metrics import evaluate_poses  # noqa: E402
from inverse_graphics.paths import SHIPPED_AIR  # noqa: E402
from inverse_graphics.robot.frames import default_camera_file, frame_files, load_frame, read_camera  # noqa: E402
from inverse_graphics.robot.pipeline import detections_of  # noqa: E402
from inverse_graphics.robot.simulate import read_truth  # noqa: E402
from inverse_graphics.robot.view import frames_table_color, load_for_camera  # noqa: E402

DATA = ROOT / "results" / "robot_frames_data"


def make_arm(spec: str, catalog: ObjectCatalog) -> dict:
    name, rest = spec.split("=", 1)
    variant, module, settings, model_path = (rest.split(":", 3) + ["", "", ""])[:4]
    folder = DATA / variant
    files, depth_dir = frame_files(folder)
    setup = read_camera(default_camera_file(folder))
    code = importlib.import_module(module or "inverse_graphics.robot.poses")
    fields = json.loads(settings) if settings else {}
    pose_settings = code.PoseSettings(**{k: v for k, v in fields.items() if not k.startswith("refine.")})
    pose_settings.refine = replace(pose_settings.refine, **{k[7:]: v for k, v in fields.items()
                                                            if k.startswith("refine.")})
    first = load_frame(files[0], depth_dir, setup)  # the model sees the first frame's camera, as run_poses does
    model, _ = load_for_camera(model_path or SHIPPED_AIR, first.camera, frames_table_color([first]), "cpu")
    return {"name": name, "folder": folder, "files": {f.stem: f for f in files}, "depth": depth_dir, "setup": setup,
            "estimator": code.FramePoseEstimator(model, pose_settings, catalog), "cpu": [], "wall": [], "frames": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arms", nargs="+", help="NAME=VARIANT[:MODULE[:SETTINGS[:MODEL]]]")
    parser.add_argument("--num", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    catalog = ObjectCatalog.load()
    arms = [make_arm(spec, catalog) for spec in args.arms]
    names = sorted(arms[0]["files"])[:args.num]
    for i, name in enumerate(names):
        for arm in arms[i % len(arms):] + arms[:i % len(arms)]:
            cpu, wall = time.thread_time(), time.perf_counter()
            frame = load_frame(arm["files"][name], arm["depth"], arm["setup"])
            detections, timing = arm["estimator"].estimate(frame)
            arm["cpu"].append(time.thread_time() - cpu)
            arm["wall"].append(time.perf_counter() - wall)
            arm["frames"][name] = {"objects": [d.to_json() for d in detections], **timing}
    for arm in arms:
        truth = read_truth(arm["folder"])
        m = evaluate_poses(detections_of(arm, names), [truth[n] for n in names], catalog,
                           read_camera(arm["folder"] / "camera.json"))
        cpu, wall = torch.tensor(arm["cpu"]), torch.tensor(arm["wall"])
        print(f"{arm['name']:10s} ADD-S {m['adds_recall']:.4f}  identity {m['identity_acc']:.3f}  "
              f"count {m['count_acc']:.3f}  MSSD {m['mssd_recall']:.3f}  MSPD {m['mspd_recall']:.3f}  "
              f"t err {m['translation_err_mm_median']:.2f} mm  CPU s/frame {cpu.mean():.3f} (max {cpu.max():.2f})  "
              f"wall {wall.mean():.3f} (max {wall.max():.2f})")
    for arm in arms[1:]:
        print(f"{arms[0]['name']} / {arm['name']}: CPU {sum(arms[0]['cpu']) / sum(arm['cpu']):.3f}, "
              f"wall {sum(arms[0]['wall']) / sum(arm['wall']):.3f}")


if __name__ == "__main__":
    main()
