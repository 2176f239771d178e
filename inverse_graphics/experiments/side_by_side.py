"""The side-by-side benchmark: every method on the same tabletop split, in one run, one metrics module.

Methods (names as in the report):
- `air`: AIR's amortized inference (no labels); `dair`: its difference-image variant;
- `supervised`: the regression baseline (labels);
- `optimise`: per-image render-and-compare from random starts (optimise.optimise);
- `air+refine`: AIR's answer refined through the renderer as `infer --refine` refines it
  (air.infer.refine_answer: q's second category where it doubts, the stopping step's proposal).

Every method sees the first `num` scenes of the split except `optimise`, which is
slow and sees the first `optimise_num`; a second table scores every method on that
common subset. Times are per image, measured in this run, on this machine.
Outputs (in `out`): tabletop_report.json, tabletop_report.md, figures
tabletop_*.png, and one BOP results CSV per method in bop/.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from tqdm import tqdm

from ..air.infer import refine_answer
from ..air.train import load_checkpoint
from ..data.bop import bop_results_name, write_bop_results
from ..data.tabletop import Tabletop
from ..devices import resolve_device
from ..files import atomic_write_bytes, atomic_write_json, prepare_output_folder
from ..metrics import evaluate_planar
from ..optimise import OptimiseSettings, optimise
from ..rendering.likelihood import make_planar_renderer
from ..scene import PlanarObjects, SceneBatch
from ..supervised import load_supervised
from ..timing import time_inference
from ..training import render_pool
from .side_by_side_report import GENERALIZATION, METHODS, markdown, write_figures, yaw_by_symmetry


@dataclass
class BenchmarkConfig:
    split: str = "test"
    num: int = 1000  # scenes for every method but optimise
    optimise_num: int = 100  # scenes for per-image optimisation (seconds per image)
    renderer: str = "pytorch3d"  # for optimise and air+refine (rendering.likelihood.RENDERER_NAMES)
    seed: int = 0
    # checkpoints (AIR's, a DAIR one, the supervised baseline's), trained on the split's training split
    air: str | None = None
    dair: str | None = None
    supervised: str | None = None
    # for the generalization splits: {test split: {method: checkpoint}} (missing ones are skipped)
    generalization: dict = field(default_factory=dict)
    optimiser: OptimiseSettings = field(default_factory=OptimiseSettings)
    device: str = "auto"  # where the methods run (devices.resolve_device); the report records the one used


def generalization_checkpoints(models_dir: str | Path) -> dict:
    """{test split: {method: models_dir/<method>_<its training split>.pt}} for the generalization splits."""
    return {test: {m: str(Path(models_dir) / f"{m}_{train}.pt") for m in ("air", "dair", "supervised")}
            for test, train in GENERALIZATION.items()}


@dataclass
class MethodAnswer:
    """One method's answer for B images: the objects it found and seconds (B,) spent per image."""

    objects: PlanarObjects
    seconds: torch.Tensor

    def first(self, k: int) -> "MethodAnswer":
        return MethodAnswer(self.objects.select(slice(0, k)), self.seconds[:k])


def _amortized(predict, images: torch.Tensor, batch_size: int = 250) -> MethodAnswer:
    parts, seconds = [], []
    with torch.no_grad():
        for chunk in torch.split(images, batch_size):
            start = time.perf_counter()
            parts.append(predict(chunk))
            seconds.append(torch.full((len(chunk),), (time.perf_counter() - start) / len(chunk)))
    return MethodAnswer(PlanarObjects.cat(parts), torch.cat(seconds))


def load_method(name: str, path: str | Path, device: str | torch.device = "cpu"):
    """(predict(images) -> PlanarObjects, model) for an amortized method's checkpoint, run on device:
    predict takes CPU images and gives CPU answers (the transfers are part of its time)."""
    if name == "supervised":
        model, _ = load_supervised(path, device)
        return (lambda images: model.predict(images.to(device)).to("cpu")), model
    model, _ = load_checkpoint(path, device=device)
    return (lambda images: model.objects(model.infer(images.to(device), greedy=True)).to("cpu")), model


def _score(pred: MethodAnswer, truth: SceneBatch, data: Tabletop) -> dict:
    return evaluate_planar(pred.objects, truth.planar(), data.catalog, data.camera)


def _summary(metrics: dict, pred: MethodAnswer, max_objects: int) -> dict:
    confusion = np.zeros((max_objects + 1, max_objects + 1), dtype=int)
    for t, p in metrics["count_pairs"]:
        confusion[min(t, max_objects), min(p, max_objects)] += 1
    return {**{k: v for k, v in metrics.items() if k not in ("count_pairs", "matches")},
            "count_confusion": confusion.tolist(), "ms_per_image": float(pred.seconds.mean() * 1000)}


def run_benchmark(config: BenchmarkConfig, out: str | Path, data: Tabletop | None = None, log=print,
                  progress: bool = True) -> dict:
    """Runs every method whose checkpoint is given (optimise always), scores them, writes the report."""
    out = Path(out)
    data = data or Tabletop()
    cfg = config
    device = resolve_device(cfg.device)
    if cfg.optimise_num > cfg.num:
        raise ValueError(f"optimise_num ({cfg.optimise_num}) cannot exceed num ({cfg.num})")
    prepare_output_folder(out)
    log(f"rendering {cfg.num} {cfg.split} scenes ...")
    images, truth = render_pool(data, cfg.split, cfg.num, progress)
    images = images.float() / 255
    renderer = make_planar_renderer(cfg.renderer, data.catalog)
    predictions, timings, models = _run_amortized(cfg, images, log, device)
    if "air" in predictions:
        log("air+refine: AIR's answers refined through the renderer, as `infer --refine` does ...")
        predictions["air+refine"] = _air_and_refinement(models["air"], images, renderer, device)
    log(f"optimise: per-image render-and-compare on {cfg.optimise_num} scenes ...")
    predictions["optimise"] = _run_optimiser(cfg, renderer, images[:cfg.optimise_num].to(device), data,
                                             progress)
    methods, subset, matches = _score_methods(cfg, predictions, timings, truth, data, out)
    speed = {f"optimise_over_{name}": methods["optimise"]["ms_per_image"] / methods[name]["infer_ms_per_image"]
             for name in ("air", "dair", "supervised") if name in methods and "optimise" in methods}
    report = {"split": cfg.split, "scenes": cfg.num, "optimise_scenes": cfg.optimise_num, "renderer": cfg.renderer,
              "device": str(device), "config": asdict(cfg), "methods": methods, "common_subset": subset, "speed_ratios": speed,
              "generalization": _run_generalization(cfg, data, log, progress, device),
              "targets": _targets(methods, subset, matches, data)}
    figures = write_figures(out, images, truth, predictions, methods, matches, data)
    report["figures"] = [str(p.relative_to(out)) for p in figures]
    atomic_write_json(out / "tabletop_report.json", report)
    atomic_write_bytes(out / "tabletop_report.md", markdown(report).encode())
    return report


def _run_amortized(cfg: BenchmarkConfig, images: torch.Tensor, log, device: torch.device
                   ) -> tuple[dict, dict, dict]:
    """The amortized methods whose checkpoints are given: their answers, inference timings and models."""
    predictions, timings, models = {}, {}, {}
    for name in ("air", "dair", "supervised"):
        path = getattr(cfg, name)
        if path is None:
            log(f"{name}: no checkpoint given; skipped")
            continue
        predict, models[name] = load_method(name, path, device)
        log(f"{name}: inference on {cfg.num} scenes ...")
        predictions[name] = _amortized(predict, images)
        timings[name] = time_inference(predict, images)
    return predictions, timings, models


def _air_and_refinement(model, images: torch.Tensor, renderer, device: torch.device) -> MethodAnswer:
    """AIR + refinement (air.infer.refine_answer) by the loaded AIR model on images (B, H, W, 3),
    timed end to end: AIR's inference, the refinement, the transfers."""
    start = time.perf_counter()
    on_device = images.to(device)
    with torch.no_grad():
        steps = model.infer(on_device, greedy=True)
    refined = refine_answer(model, on_device, steps, renderer).to("cpu")
    seconds = (time.perf_counter() - start) / len(images)
    return MethodAnswer(refined, torch.full((len(images),), seconds))


def _run_optimiser(cfg: BenchmarkConfig, renderer, images: torch.Tensor, data: Tabletop,
                   progress: bool) -> MethodAnswer:
    """Per-image optimisation, timed image by image."""
    bar = tqdm(total=len(images), desc="optimise", disable=not progress)
    seconds = []

    def tick(done, total):
        seconds.append(time.perf_counter())
        bar.update(1)

    start = time.perf_counter()
    optimised = optimise(renderer, images, data.camera, data.config.table, len(data.catalog), cfg.optimiser,
                         seed=cfg.seed, progress=tick).to("cpu")
    bar.close()
    return MethodAnswer(optimised, torch.tensor(np.diff([start] + seconds), dtype=torch.float32))


def _score_methods(cfg: BenchmarkConfig, predictions: dict, timings: dict, truth: SceneBatch, data: Tabletop,
                   out: Path) -> tuple[dict, dict, dict]:
    """Per method: metrics on every scene it saw and on optimise's subset, matched pairs, BOP CSV."""
    methods, subset, matches = {}, {}, {}
    common = truth.select(slice(0, cfg.optimise_num))
    for name in METHODS:
        if name not in predictions:
            continue
        pred = predictions[name]
        scored = truth if len(pred.objects) == len(truth) else common
        metrics = _score(pred, scored, data)
        matches[name] = metrics["matches"]
        methods[name] = {**_summary(metrics, pred, data.config.max_objects), **timings.get(name, {}),
                         "checkpoint": str(getattr(cfg, name, None) or "")}
        small = pred.first(cfg.optimise_num)
        subset[name] = _summary(_score(small, common, data), small, data.config.max_objects)
        csv = out / "bop" / bop_results_name(name, cfg.split)
        batch = replace(pred.objects, color=pred.objects.color.clamp(0, 1)).to_batch(data.catalog, data.camera,
                                                                                     data.config.table)
        write_bop_results(csv, batch, list(range(len(pred.objects))), data.catalog, pred.seconds,
                          pred.objects.score)
        methods[name]["bop_results"] = str(csv.relative_to(out))
    return methods, subset, matches


def _run_generalization(cfg: BenchmarkConfig, data: Tabletop, log, progress: bool, device: torch.device) -> dict:
    """Each generalization test split scored for every method whose checkpoint for it exists."""
    generalization = {}
    for test_split, checkpoints in cfg.generalization.items():
        found = {}
        for name, path in checkpoints.items():
            if path is None or not Path(path).is_file():
                log(f"generalization {test_split}/{name}: no checkpoint at {path}; skipped")
            else:
                found[name] = path
        if not found:
            continue
        images, truth = render_pool(data, test_split, cfg.num, progress)
        images = images.float() / 255
        for name, path in found.items():
            predict, _ = load_method(name, path, device)
            pred = _amortized(predict, images)
            generalization.setdefault(test_split, {})[name] = {
                **_summary(_score(pred, truth, data), pred, data.config.max_objects),
                "trained_on": GENERALIZATION.get(test_split, "?"), "checkpoint": str(path)}
    return generalization


def _targets(methods: dict, common: dict, matches: dict, data: Tabletop) -> dict:
    """The issue's targets, as measured."""
    t = {"yaw_err_deg_median_by_symmetry": {name: yaw_by_symmetry(m, data) for name, m in matches.items()}}
    if "air" in methods and "supervised" in methods:
        t["air_count_acc_minus_supervised"] = methods["air"]["count_acc"] - methods["supervised"]["count_acc"]
        t["air_within_2_points_of_supervised_count"] = t["air_count_acc_minus_supervised"] >= -0.02
        sym = [s for s in ("2-fold", "4-fold") if s in t["yaw_err_deg_median_by_symmetry"].get("air", {})]
        t["air_lower_yaw_error_on_symmetric"] = {
            s: t["yaw_err_deg_median_by_symmetry"]["air"][s] < t["yaw_err_deg_median_by_symmetry"]["supervised"].get(
                s, math.inf) for s in sym}
    # pose accuracy on the scenes every method saw (optimise's subset)
    for metric, best in (("pos_err_mm_median", min), ("rot_err_deg_median", min), ("adds_recall", max),
                         ("mssd_recall", max)):
        values = {n: m[metric] for n, m in common.items() if not math.isnan(m[metric])}
        if values:
            t[f"best_{metric}_on_common_subset"] = best(values, key=values.get)
    return t
