"""The side-by-side benchmark's outputs for people: figures (matplotlib) and a markdown report."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display is needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..data.tabletop import Tabletop  # noqa: E402
from ..rendering.renderer import SceneRenderer  # noqa: E402
from ..visualize import save_figure  # noqa: E402

METHODS = ("air", "dair", "supervised", "optimise", "air+refine")
GENERALIZATION = {"extrap-test": "extrap-train", "interp-test": "interp-train"}  # test split: its training split


def yaw_by_symmetry(matches: list[dict], data: Tabletop) -> dict:
    """Median yaw error (deg) over matched objects of each symmetry type with the right identity."""
    groups: dict[str, list[float]] = {}
    for m in matches:
        if m["pred_category"] == m["true_category"]:
            groups.setdefault(data.catalog[m["true_category"]].symmetry_type, []).append(m["yaw_err_deg"])
    return {k: float(np.median(v)) for k, v in sorted(groups.items())}


def write_figures(out: Path, images, truth, predictions: dict, methods: dict, matches: dict, data: Tabletop) -> list:
    """The report's figures (PNG, in out): count confusion, error histograms, yaw error by symmetry
    type, reconstructions and time per image."""
    names = [n for n in METHODS if n in methods]
    return [count_confusion_figure(out, names, methods), error_histograms_figure(out, names, matches, data),
            yaw_by_symmetry_figure(out, names, matches, data),
            reconstructions_figure(out, names, images, predictions, data), time_figure(out, names, methods)]


def count_confusion_figure(out: Path, names: list[str], methods: dict) -> Path:
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
    return save_figure(fig, out / "tabletop_count_confusion.png")


def error_histograms_figure(out: Path, names: list[str], matches: dict, data: Tabletop) -> Path:
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
    return save_figure(fig, out / "tabletop_error_histograms.png")


def yaw_by_symmetry_figure(out: Path, names: list[str], matches: dict, data: Tabletop) -> Path:
    by_sym = {n: yaw_by_symmetry(matches[n], data) for n in names}
    types = sorted({t for v in by_sym.values() for t in v})
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        ax.bar(np.arange(len(types)) + k * width, [by_sym[name].get(t, np.nan) for t in types], width, label=name)
    ax.set_xticks(np.arange(len(types)) + 0.4 - width / 2, types)
    ax.set(ylabel="median yaw error (deg)", title="Yaw error by symmetry type (right identity only)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out / "tabletop_yaw_by_symmetry.png")


def reconstructions_figure(out: Path, names: list[str], images: torch.Tensor, predictions: dict,
                           data: Tabletop) -> Path:
    """The first scenes (at most 6): input, and each method's answer rendered."""
    shown = min(6, *(len(p.objects) for p in predictions.values()))
    renderer = SceneRenderer(data.catalog, mode="hard", gradients="none")
    fig, axes = plt.subplots(shown, len(names) + 1, figsize=(1.9 * (len(names) + 1), 1.9 * shown), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k in range(shown):
        axes[k, 0].imshow(images[k].numpy())
        axes[k, 0].set_title("input" if k == 0 else "", fontsize=8)
    for j, name in enumerate(names):
        pred = predictions[name].first(shown).objects
        with torch.no_grad():
            rgb = renderer(replace(pred, color=pred.color.clamp(0, 1)).to_batch(data.catalog, data.camera,
                                                                                data.config.table)).rgb
        for k in range(shown):
            axes[k, j + 1].imshow(rgb[k].clamp(0, 1).numpy())
            labels = [data.catalog[int(c)].name for c in pred.category[k] if c >= 0]
            axes[k, j + 1].set_title((name + "\n" if k == 0 else "") + (", ".join(labels) or "empty"), fontsize=6)
    fig.tight_layout()
    return save_figure(fig, out / "tabletop_reconstructions.png")


def time_figure(out: Path, names: list[str], methods: dict) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(names, [methods[n]["ms_per_image"] for n in names])
    ax.set_xscale("log")
    ax.set(xlabel="ms per image (log; amortized methods in batches of 250)", title="Time per image, this run")
    fig.tight_layout()
    return save_figure(fig, out / "tabletop_time_per_image.png")


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
             "Count, identity and errors: objects matched to the truth by position (errors are medians over "
             "matched objects). ADD-S, MSSD AR, MSPD AR: BOP's recalls, computed as the BOP toolkit does (an "
             "estimate counts only against its own object; targets at least 10% visible; estimates ranked by "
             "score). ms/image: amortized methods batched.", ""]
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


def summary_lines(report: dict, out: Path) -> list[str]:
    """One line per method, and where the report went (what `inverse-graphics benchmark` prints)."""
    lines = [f"{name:11s} count {m['count_acc']:.3f}  identity {m['identity_acc']:.3f}  "
             f"pos {m['pos_err_mm_median']:.1f} mm  yaw {m['rot_err_deg_median']:.1f} deg  "
             f"ADD-S {m['adds_recall']:.3f}  {m['ms_per_image']:.2f} ms/image ({m['scenes']} scenes)"
             for name, m in report["methods"].items()]
    out = Path(out)
    return lines + [f"wrote {out / 'tabletop_report.md'}, {out / 'tabletop_report.json'}, figures and BOP CSVs in "
                    f"{out / 'bop'}"]
