"""`make demo`: a small tabletop set, one scene in both render modes, AIR on it with the shipped
weights, and the poses of the objects in the example robot frames — each step's files and figures."""

from __future__ import annotations

from pathlib import Path

import torch

from .air.infer import infer, overlay_figure, to_json
from .air.train import evaluate, load_checkpoint
from .data.bop import generate_split, read_split, write_contact_sheet
from .data.tabletop import Tabletop
from .files import atomic_write_json
from .paths import EXAMPLE_FRAMES, SHIPPED_AIR, shown
from .rendering.renderer import SceneRenderer
from .robot.evaluate import EVALUATION_FILE, evaluate_files, evaluation_lines
from .robot.pipeline import RESULTS_CSV, run_poses
from .visualize import render_panel


def run_demo(out: str | Path, data: Tabletop, num: int = 32, scene: int = 3, log=print) -> list[str]:
    """Runs every step into `out`, saying what it does; returns the summary lines (files and figures)."""
    out = Path(out)
    log(f"1/5 generating {num} tabletop-v1 test scenes into {out} ...")
    generate_split(data, "test", out, num)
    sheet = write_contact_sheet(out, "test", data.catalog, data.config.max_objects)
    log("2/5 rendering one scene in hard and soft modes ...")
    batch = data.scene_batch(data.sample("test", [scene]))
    with torch.no_grad():
        outputs = {mode: SceneRenderer(data.catalog, mode=mode, gradients="none")(batch) for mode in ("hard", "soft")}
    panel = render_panel(outputs, out / "render_modes.png")
    log(f"3/5 AIR inference with the shipped weights ({shown(SHIPPED_AIR)}) ...")
    air_lines = demo_air(data, out)
    log(f"4/5 object poses in the example robot frames ({shown(EXAMPLE_FRAMES)}) ...")
    robot_lines = demo_robot(out / "robot_poses")
    return ["5/5 done. Files:", f"  dataset (BOP layout): {out / 'test'}", f"  contact sheet:        {sheet}",
            f"  hard vs soft render:  {panel}", *air_lines, *robot_lines]


def demo_air(data: Tabletop, out: Path) -> list[str]:
    """AIR's answer for the test scenes written in `out`: JSON, overlay figure and accuracy."""
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


def demo_robot(out: Path) -> list[str]:
    """Poses in the example robot frames with the shipped weights, scored against their ground truth
    as `inverse-graphics evaluate` scores them (misses and false positives too)."""
    results = run_poses(EXAMPLE_FRAMES, SHIPPED_AIR, out, progress=False, overwrite=True)
    report = evaluate_files(out / "poses.json", EXAMPLE_FRAMES)
    atomic_write_json(out / EVALUATION_FILE, report)
    seconds = sum(e["seconds"] for e in results["frames"].values()) / len(results["frames"])
    return [f"  robot frame poses:    {out / 'poses.json'}, {out / RESULTS_CSV}, {out / 'overlay'}/, "
            f"{out / EVALUATION_FILE}",
            *[f"    {line}" for line in evaluation_lines(report)], f"    {seconds:.2f} s per frame end to end"]
