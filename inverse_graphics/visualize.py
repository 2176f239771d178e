"""Figures: contact sheets of scenes, side-by-side render panels and training curves (matplotlib)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display is needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .files import atomic_write_bytes  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def contact_sheet(rgb: torch.Tensor, labels: list[str], path: str | Path, columns: int = 8, title: str = "") -> Path:
    """rgb: (B, H, W, 3) in [0, 1]; one label per image."""
    B = rgb.shape[0]
    rows = max(1, int(np.ceil(B / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.75 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for b in range(B):
        ax = axes.flat[b]
        ax.imshow(rgb[b].clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_title(labels[b], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def render_panel(outputs: dict, path: str | Path, index: int = 0) -> Path:
    """One scene rendered several ways: outputs maps a row name to a RenderOutput."""
    columns = ["rgb", "mask", "depth", "instance"]
    fig, axes = plt.subplots(len(outputs), 4, figsize=(10, 2.6 * len(outputs)), squeeze=False)
    for row, (name, out) in enumerate(outputs.items()):
        depth = out.depth[index].detach()
        images = {"rgb": out.rgb[index].detach().clamp(0, 1), "mask": out.mask[index].detach(),
                  "depth": torch.where(depth > 0, depth, float("nan")), "instance": out.instance[index]}
        for col, key in enumerate(columns):
            ax = axes[row, col]
            kwargs = {"cmap": "viridis"} if key == "depth" else {"cmap": "tab10", "vmin": -1, "vmax": 9} \
                if key == "instance" else {"cmap": "gray", "vmin": 0, "vmax": 1} if key == "mask" else {}
            im = ax.imshow(images[key].numpy(), interpolation="nearest", **kwargs)
            if key == "depth":
                fig.colorbar(im, ax=ax, fraction=0.046, label="m")
            ax.set_title(f"{name}: {key}", fontsize=9)
            ax.axis("off")
    return save_figure(fig, path)


def save_curves(history: list[dict], path: Path, objective: str = "ELBO per image (nats, smoothed)") -> Path:
    """Training objective and validation accuracies against iteration, as a PNG."""
    train = [{**h, "objective": h.get("objective", h.get("elbo"))} for h in history if "objective" in h or "elbo" in h]
    val = [h for h in history if "val_count_acc" in h]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        it = np.array([h["iteration"] for h in train])
        value = np.array([h["objective"] for h in train])
        k = max(1, len(value) // 50)
        axes[0].plot(it[k - 1:], np.convolve(value, np.ones(k) / k, mode="valid"))
    axes[0].set(xlabel="iteration", ylabel=objective, title="training objective")
    if val:
        it = [h["iteration"] for h in val]
        axes[1].plot(it, [h["val_count_acc"] for h in val], label="count")
        axes[1].plot(it, [h["val_identity_acc"] for h in val], label="identity (matched)")
        adds = [h.get("val_adds_recall", float("nan")) for h in val]
        if np.isfinite(adds).any():  # validation during training skips the pose recalls
            axes[1].plot(it, adds, label="ADD-S recall")
        axes[1].legend()
    axes[1].set(xlabel="iteration", ylabel="accuracy", ylim=(0, 1.02), title="validation")
    fig.tight_layout()
    return save_figure(fig, path)
