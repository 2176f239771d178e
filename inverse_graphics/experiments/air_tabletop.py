"""AIR on tabletop-v1: train several seeds (or load them), evaluate on the test split, time inference.

Runs live in RUNS_DIR/<name> (checkpoint.pt, history.json, curves.png); a run
that exists is resumed, or only evaluated once it is complete, so the benchmark
can be interrupted and run again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..air.config import AIRConfig
from ..air.model import AIR
from ..air.train import evaluate, load_checkpoint, train_air
from ..data.tabletop import Tabletop, TabletopConfig
from ..timing import time_inference
from ..training import TrainConfig, render_pool

HEADLINE = ("count_acc", "identity_acc", "pos_err_mm_median", "rot_err_deg_median", "adds_recall")


def run_name(seed: int, dair: bool = False, split: str = "train", tag: str = "") -> str:
    return f"{tag + '_' if tag else ''}{'dair' if dair else 'air'}_{split}_seed{seed}"


def train_run(runs_dir: Path, seed: int, minutes: float, iterations: int, dair: bool = False, split: str = "train",
              max_steps: int = 3, count_estimator: str = "reinforce", identity_signal: str = "enumerate",
              tag: str = "", progress: bool = True, overrides: dict | None = None) -> dict:
    data = Tabletop(TabletopConfig(max_objects=max(3, max_steps)))
    out = Path(runs_dir) / run_name(seed, dair, split, tag)
    config = AIRConfig(max_steps=max_steps, dair=dair, count_estimator=count_estimator,
                       identity_signal=identity_signal, **(overrides or {}))
    train_cfg = TrainConfig(split=split, iterations=iterations, time_limit_minutes=minutes, seed=seed)
    return train_air(out, config, train_cfg, data, resume=(out / "checkpoint.pt").exists(), progress=progress)


def evaluate_run(path: Path, split: str, num: int) -> dict:
    model, ckpt = load_checkpoint(Path(path) / "checkpoint.pt")
    data = Tabletop(TabletopConfig.from_fields(ckpt["data_config"]))
    images, truth = render_pool(data, split, num, progress=False)
    images = images.float() / 255
    metrics = evaluate(model, images, truth)
    pairs = metrics.pop("count_pairs")
    metrics.pop("matches")
    confusion = np.zeros((model.config.max_steps + 1, model.config.max_steps + 1), dtype=int)
    for t, p in pairs:
        confusion[min(t, model.config.max_steps), p] += 1
    val = [h for h in ckpt["history"] if "val_count_acc" in h]
    timing = time_inference(lambda x: model.infer(x, greedy=True), images)
    return {**metrics, **timing, "count_confusion": confusion.tolist(),
            "train_minutes": ckpt["train_seconds"] / 60, "iterations": ckpt["iteration"],
            "skipped_steps": ckpt.get("skipped", 0), "val_count_acc": val[-1]["val_count_acc"] if val else None,
            "config": ckpt["air_config"], "split": split}


def evaluate_untrained(split: str, num: int, seed: int = 0) -> dict:
    """The guide before any training: what its architecture alone (attention seeded by the
    difference from the bare table, presence from the evidence left) gets right."""
    torch.manual_seed(seed)
    data = Tabletop()
    model = AIR(AIRConfig(), data.catalog, data.camera, data.config.table)
    images, truth = render_pool(data, split, num, progress=False)
    metrics = evaluate(model, images.float() / 255, truth)
    metrics.pop("count_pairs")
    metrics.pop("matches")
    return metrics
