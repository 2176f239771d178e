"""The side-by-side benchmark: every method on the same tabletop split, in one run, one metrics module.

Methods (names as in the report):
- `air`: AIR's amortized inference (no labels); `dair`: its difference-image variant;
- `supervised`: the regression baseline (labels);
- `optimise`: per-image render-and-compare from random starts (optimise.optimise);
- `air+refine`: AIR's answer refined through the renderer (optimise.refine_proposals).

Every method sees the first `num` scenes of the split except `optimise`, which is
slow and sees the first `optimise_num`; a second table scores every method on that
common subset. Times are per image, measured in this run, on this machine.
Outputs (in `out`): tabletop_report.json, tabletop_report.md, figures
tabletop_*.png, and one BOP results CSV per method in bop/.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data.bop import atomic_write_bytes, atomic_write_json, write_bop_results
from .data.tabletop import Tabletop
from .metrics import evaluate_planar
from .optimise import OptimiseSettings
from .scene import SceneBatch
from .timing import time_inference
from .training import render_pool

METHODS = ("air", "dair", "supervised", "optimise", "air+refine")
HEADLINE = ("count_acc", "identity_acc", "pos_err_mm_median", "rot_err_deg_median", "adds_recall", "mssd_recall",
            "mspd_recall")
GENERALIZATION = {"extrap-test": "extrap-train", "interp-test": "interp-train"}  # test split: its training split


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


@dataclass
class Predictions:
    """One method's answer: category (B, N) (-1 absent), position (B, N, 2) m, yaw (B, N) rad,
    colour (B, N, 3); seconds (B,) spent per image."""

    category: torch.Tensor
    position: torch.Tensor
    yaw: torch.Tensor
    color: torch.Tensor
    seconds: torch.Tensor

    def subset(self, k: int) -> "Predictions":
        return Predictions(*(x[:k] for x in (self.category, self.position, self.yaw, self.color, self.seconds)))


def _amortized(predict, images: torch.Tensor, batch_size: int = 250) -> Predictions:
    parts, seconds = [], []
    with torch.no_grad():
        for chunk in torch.split(images, batch_size):
            start = time.perf_counter()
            parts.append(predict(chunk))
            seconds.append(torch.full((len(chunk),), (time.perf_counter() - start) / len(chunk)))
    return Predictions(*(torch.cat([p[i] for p in parts]) for i in range(4)), torch.cat(seconds))


def _air_predict(model):
    def predict(images):
        category, position, yaw, color, _ = model.scene_tensors(model.infer(images, greedy=True))
        return category, position, yaw, color

    return predict


def load_method(name: str, path: str | Path):
    """(predict(images) -> (category, position, yaw, colour), model) for an amortized method's checkpoint."""
    if name == "supervised":
        from .supervised import load_supervised

        model, _ = load_supervised(path)
        return model.predict, model
    from .air.train import load_checkpoint

    model, _ = load_checkpoint(path)
    return _air_predict(model), model


def _score(pred: Predictions, truth: SceneBatch, data: Tabletop) -> dict:
    true_position, true_yaw = truth.planar()
    return evaluate_planar(pred.category, pred.position, pred.yaw, truth.category, true_position, true_yaw,
                           data.catalog, data.camera)


def _summary(metrics: dict, pred: Predictions, max_objects: int) -> dict:
    confusion = np.zeros((max_objects + 1, max_objects + 1), dtype=int)
    for t, p in metrics["count_pairs"]:
        confusion[min(t, max_objects), min(p, max_objects)] += 1
    return {**{k: v for k, v in metrics.items() if k not in ("count_pairs", "matches")},
            "count_confusion": confusion.tolist(), "ms_per_image": float(pred.seconds.mean() * 1000)}


def run_benchmark(config: BenchmarkConfig, out: str | Path, data: Tabletop | None = None, log=print,
                  progress: bool = True) -> dict:
    """Runs every method whose checkpoint is given (optimise always), scores them, writes the report."""
    from tqdm import tqdm

    from .optimise import optimise, refine_proposals
    from .rendering.likelihood import make_planar_renderer

    out = Path(out)
    data = data or Tabletop()
    cfg = config
    if cfg.optimise_num > cfg.num:
        raise ValueError(f"optimise_num ({cfg.optimise_num}) cannot exceed num ({cfg.num})")
    log(f"rendering {cfg.num} {cfg.split} scenes ...")
    images, truth = render_pool(data, cfg.split, cfg.num, progress)
    images = images.float() / 255
    table = data.config.table
    renderer = make_planar_renderer(cfg.renderer, data.catalog)
    predictions, timings, models = {}, {}, {}
    for name in ("air", "dair", "supervised"):
        path = getattr(cfg, name)
        if path is None:
            log(f"{name}: no checkpoint given; skipped")
            continue
        predict, models[name] = load_method(name, path)
        log(f"{name}: inference on {cfg.num} scenes ...")
        predictions[name] = _amortized(predict, images)
        timings[name] = time_inference(predict, images)

    if "air" in predictions:
        log("air+refine: refining AIR's answers through the renderer ...")
        air = predictions["air"]
        start = time.perf_counter()
        position, yaw, color = refine_proposals(renderer, images, air.category, air.position, air.yaw, air.color,
                                                data.camera, table)
        refine_seconds = (time.perf_counter() - start) / len(images)
        predictions["air+refine"] = Predictions(air.category, position, yaw, color, air.seconds + refine_seconds)

    log(f"optimise: per-image render-and-compare on {cfg.optimise_num} scenes ...")
    bar = tqdm(total=cfg.optimise_num, desc="optimise", disable=not progress)
    seconds = []

    def tick(done, total):
        seconds.append(time.perf_counter())
        bar.update(1)

    start = time.perf_counter()
    category, position, yaw, color = optimise(renderer, images[:cfg.optimise_num], data.camera, table,
                                              len(data.catalog), cfg.optimiser, seed=cfg.seed, progress=tick)
    bar.close()
    per_image = torch.tensor(np.diff([start] + seconds), dtype=torch.float32)
    predictions["optimise"] = Predictions(category, position, yaw, color, per_image)

    methods, subset, matches = {}, {}, {}
    common = truth.select(slice(0, cfg.optimise_num))
    for name in METHODS:
        if name not in predictions:
            continue
        pred = predictions[name]
        scored = truth if len(pred.category) == len(truth) else common
        metrics = _score(pred, scored, data)
        matches[name] = metrics["matches"]
        methods[name] = {**_summary(metrics, pred, data.config.max_objects), **timings.get(name, {}),
                         "checkpoint": str(getattr(cfg, name, None) or "")}
        small = pred.subset(cfg.optimise_num)
        subset[name] = _summary(_score(small, common, data), small, data.config.max_objects)
        csv = out / "bop" / f"{name.replace('+', '-')}_tabletop-{cfg.split}.csv"
        batch = SceneBatch.from_planar(pred.category, pred.position, pred.yaw, pred.color.clamp(0, 1), data.catalog,
                                       data.camera, table)
        write_bop_results(csv, batch, list(range(len(pred.category))), data.catalog, pred.seconds)
        methods[name]["bop_results"] = str(csv.relative_to(out))

    speed = {}
    if "optimise" in methods:
        for name in ("air", "dair", "supervised"):
            if name in methods:
                ratio = methods["optimise"]["ms_per_image"] / methods[name]["infer_ms_per_image"]
                speed[f"optimise_over_{name}"] = ratio

    generalization = {}
    for test_split, checkpoints in cfg.generalization.items():
        found = {}
        for name, path in checkpoints.items():
            if path is None or not Path(path).is_file():
                log(f"generalization {test_split}/{name}: no checkpoint at {path}; skipped")
            else:
                found[name] = path
        if found:
            gen_images, gen_truth = render_pool(data, test_split, cfg.num, progress)
            gen_images = gen_images.float() / 255
        for name, path in found.items():
            predict, _ = load_method(name, path)
            pred = _amortized(predict, gen_images)
            generalization.setdefault(test_split, {})[name] = {
                **_summary(_score(pred, gen_truth, data), pred, data.config.max_objects),
                "trained_on": GENERALIZATION.get(test_split, "?"), "checkpoint": str(path)}

    report = {"split": cfg.split, "scenes": cfg.num, "optimise_scenes": cfg.optimise_num, "renderer": cfg.renderer,
              "config": asdict(cfg), "methods": methods, "common_subset": subset, "speed_ratios": speed,
              "generalization": generalization, "targets": _targets(methods, subset, matches, data)}
    figures = write_figures(out, images, truth, predictions, methods, matches, data)
    report["figures"] = [str(p.relative_to(out)) for p in figures]
    atomic_write_json(out / "tabletop_report.json", report)
    atomic_write_bytes(out / "tabletop_report.md", markdown(report).encode())
    return report


def _yaw_by_symmetry(matches: list[dict], data: Tabletop) -> dict:
    """Median yaw error (deg) over matched objects of each symmetry type with the right identity."""
    groups: dict[str, list[float]] = {}
    for m in matches:
        if m["pred_category"] == m["true_category"]:
            groups.setdefault(data.catalog[m["true_category"]].symmetry_type, []).append(m["yaw_err_deg"])
    return {k: float(np.median(v)) for k, v in sorted(groups.items())}


def _targets(methods: dict, common: dict, matches: dict, data: Tabletop) -> dict:
    """The issue's targets, as measured."""
    t = {"yaw_err_deg_median_by_symmetry": {name: _yaw_by_symmetry(m, data) for name, m in matches.items()}}
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


def write_figures(out: Path, images, truth, predictions: dict, methods: dict, matches: dict, data: Tabletop) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .rendering.renderer import SceneRenderer
    from .visualize import save_figure

    names = [n for n in METHODS if n in methods]
    paths = []
    # count confusion matrices
    fig, axes = plt.subplots(1, len(names), figsize=(2.8 * len(names), 2.9), squeeze=False)
    for ax, name in zip(axes[0], names):
        c = np.array(methods[name]["count_confusion"])
        rate = c / np.maximum(1, c.sum(1, keepdims=True))
        ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
        for i in range(c.shape[0]):
            for j in range(c.shape[1]):
                ax.text(j, i, str(c[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rate[i, j] > 0.5 else "black")
        ax.set(title=f"{name} ({methods[name]['count_acc']:.1%})", xlabel="inferred count", ylabel="true count")
    fig.suptitle("Count confusion (rows: truth)", fontsize=10)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "tabletop_count_confusion.png"))
    # error histograms
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name in names:
        pos = [m["pos_err_mm"] for m in matches[name]]
        yaw = [m["yaw_err_deg"] for m in matches[name] if data.catalog[m["true_category"]].yaw_symmetry_order() != 0]
        if pos:
            axes[0].hist(np.clip(pos, 0, 40), bins=40, range=(0, 40), histtype="step", density=True, label=name)
        if yaw:
            axes[1].hist(yaw, bins=45, range=(0, 180), histtype="step", density=True, label=name)
    axes[0].set(xlabel="position error (mm, clipped at 40)", ylabel="density", title="matched objects")
    axes[1].set(xlabel="yaw error (deg, symmetry-aware)", title="matched objects with a yaw to get wrong")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "tabletop_error_histograms.png"))
    # yaw error by symmetry type
    by_sym = {n: _yaw_by_symmetry(matches[n], data) for n in names}
    types = sorted({t for v in by_sym.values() for t in v})
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        ax.bar(np.arange(len(types)) + k * width, [by_sym[name].get(t, np.nan) for t in types], width, label=name)
    ax.set_xticks(np.arange(len(types)) + 0.4 - width / 2, types)
    ax.set(ylabel="median yaw error (deg)", title="Yaw error by symmetry type (right identity only)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "tabletop_yaw_by_symmetry.png"))
    # reconstructions
    shown = min(6, *(len(p.category) for p in predictions.values()))
    renderer = SceneRenderer(data.catalog, mode="hard", gradients="none")
    fig, axes = plt.subplots(shown, len(names) + 1, figsize=(1.9 * (len(names) + 1), 1.9 * shown), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k in range(shown):
        axes[k, 0].imshow(images[k].numpy())
        axes[k, 0].set_title("input" if k == 0 else "", fontsize=8)
    for j, name in enumerate(names):
        pred = predictions[name].subset(shown)
        with torch.no_grad():
            rgb = renderer(SceneBatch.from_planar(pred.category, pred.position, pred.yaw, pred.color.clamp(0, 1),
                                                  data.catalog, data.camera, data.config.table)).rgb
        for k in range(shown):
            axes[k, j + 1].imshow(rgb[k].clamp(0, 1).numpy())
            labels = [data.catalog[int(c)].name for c in pred.category[k] if c >= 0]
            axes[k, j + 1].set_title((name + "\n" if k == 0 else "") + (", ".join(labels) or "empty"), fontsize=6)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "tabletop_reconstructions.png"))
    # time per image
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(names, [methods[n]["ms_per_image"] for n in names])
    ax.set_xscale("log")
    ax.set(xlabel="ms per image (log; amortized methods in batches of 250)", title="Time per image, this run")
    fig.tight_layout()
    paths.append(save_figure(fig, out / "tabletop_time_per_image.png"))
    return paths


def _fmt(v, pct=False):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.1%}" if pct else f"{v:.3g}"


def _table(rows: dict) -> list[str]:
    lines = ["| method | scenes | count | identity | pos err (mm) | yaw err (deg) | ADD-S | MSSD AR | MSPD AR "
             "| ms/image |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['scenes']} | {_fmt(m['count_acc'], True)} | {_fmt(m['identity_acc'], True)} | "
                     f"{_fmt(m['pos_err_mm_median'])} | {_fmt(m['rot_err_deg_median'])} | "
                     f"{_fmt(m['adds_recall'], True)} | {_fmt(m['mssd_recall'], True)} | "
                     f"{_fmt(m['mspd_recall'], True)} | {_fmt(m['ms_per_image'])} |")
    return lines


def markdown(report: dict) -> str:
    lines = [f"# tabletop-v1 {report['split']}: every method side by side", "",
             "Made by `inverse-graphics benchmark` (see `config` in tabletop_report.json); one run, one machine.",
             "Errors are medians over matched objects; recalls count misses. ms/image: amortized methods batched.", ""]
    lines += _table(report["methods"])
    lines += ["", f"## All methods on the first {report['optimise_scenes']} scenes (optimise's subset)", ""]
    lines += _table(report["common_subset"])
    t = report["targets"]
    lines += ["", "## Median yaw error (deg) by symmetry type, right identity only", "",
              "| method | " + " | ".join(sorted({k for v in t["yaw_err_deg_median_by_symmetry"].values() for k in v}))
              + " |"]
    types = sorted({k for v in t["yaw_err_deg_median_by_symmetry"].values() for k in v})
    lines.append("|---" * (len(types) + 1) + "|")
    for name, v in t["yaw_err_deg_median_by_symmetry"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(v.get(k)) for k in types) + " |")
    if report["speed_ratios"]:
        lines += ["", "## Speed (same run)", ""]
        lines += [f"- {k.replace('_', ' ')}: {v:,.0f}x" for k, v in report["speed_ratios"].items()]
    if report["generalization"]:
        lines += ["", "## Generalization splits", ""]
        for split, rows in report["generalization"].items():
            lines += [f"### {split} (trained on {GENERALIZATION.get(split, '?')})", ""] + _table(rows) + [""]
    lines += ["", "## Targets, as measured", ""]
    for k, v in t.items():
        if k != "yaw_err_deg_median_by_symmetry":
            lines.append(f"- {k.replace('_', ' ')}: {v}")
    lines += ["", "## Figures", ""] + [f"![{p}]({p})" for p in report.get("figures", [])]
    return "\n".join(lines) + "\n"
