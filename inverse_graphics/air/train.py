"""Training AIR without labels: maximise the ELBO on tabletop images, with checkpoints and resume.

The training images are hard renders of a tabletop split (their labels are
never read by training; validation reads them to report count accuracy).
A checkpoint holds the model, optimizer, iteration, history and RNG states and is
written atomically, so a killed run resumes where its last checkpoint left it.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.tabletop import Tabletop, TabletopConfig
from ..metrics import evaluate_planar
from .model import AIR, AIRConfig, air_config_from_dict


@dataclass
class TrainConfig:
    split: str = "train"
    iterations: int = 4000
    batch_size: int = 32
    lr: float = 1e-3
    baseline_lr: float = 1e-3
    score_weight: float = 1.0
    train_pool: int = 6000  # distinct training images, rendered once
    val_size: int = 300
    val_split: str = "val"
    val_every: int = 250
    checkpoint_every: int = 100
    time_limit_minutes: float = 60.0
    seed: int = 0
    grad_clip: float = 10.0


def atomic_torch_save(obj, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_model(air_config: AIRConfig, data: Tabletop) -> AIR:
    return AIR(air_config, data.catalog, data.camera, data.config.table)


def load_checkpoint(path: str | Path, data: Tabletop | None = None) -> tuple[AIR, dict]:
    """(model in eval mode, checkpoint dict). Raises a clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no AIR checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        air_config = air_config_from_dict(ckpt["air_config"])
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise ValueError(f"{path} is not a readable AIR checkpoint ({exc})") from exc
    data = data or Tabletop(TabletopConfig.from_fields(ckpt["data_config"]))
    model = build_model(air_config, data)
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in ckpt["model"].items()})
    model.eval()
    return model, ckpt


def export_weights(checkpoint: str | Path, path: str | Path) -> Path:
    """A small file for shipping: the model's weights in float16 plus its configuration
    (no optimizer state). load_checkpoint reads it like a full checkpoint."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    slim = {"model": {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items()},
            "air_config": ckpt["air_config"], "train_config": ckpt["train_config"],
            "data_config": ckpt["data_config"], "train_seconds": ckpt["train_seconds"],
            "iteration": ckpt["iteration"], "skipped": ckpt.get("skipped", 0),
            "history": [h for h in ckpt["history"] if "val_count_acc" in h]}
    atomic_torch_save(slim, Path(path))
    return Path(path)


@torch.no_grad()
def evaluate(model: AIR, images: torch.Tensor, truth, batch_size: int = 256) -> dict:
    """Greedy inference on images (B, H, W, 3) scored against a SceneBatch's planar truth."""
    was_training = model.training
    model.eval()
    categories, positions, yaws = [], [], []
    for chunk in torch.split(images, batch_size):
        category, position, yaw, _, _ = model.scene_tensors(model.infer(chunk, greedy=True))
        categories.append(category)
        positions.append(position)
        yaws.append(yaw)
    model.train(was_training)
    true_position, true_yaw = truth.planar()
    return evaluate_planar(torch.cat(categories), torch.cat(positions), torch.cat(yaws),
                           truth.category, true_position, true_yaw, model.catalog)


def _render_pool(data: Tabletop, split: str, count: int, progress: bool) -> tuple[torch.Tensor, object]:
    from tqdm import tqdm

    images, batches = [], []
    for start in tqdm(range(0, count, 500), desc=f"rendering {split} images", disable=not progress, leave=False):
        out, batch = data.render(split, range(start, min(count, start + 500)))
        images.append((out.rgb * 255).round().to(torch.uint8))
        batches.append(batch)
    truth = batches[0]
    if len(batches) > 1:
        truth = type(truth)(torch.cat([b.category for b in batches]), torch.cat([b.rotation for b in batches]),
                            torch.cat([b.translation for b in batches]), torch.cat([b.color for b in batches]),
                            truth.camera, truth.table)
    return torch.cat(images), truth


def save_curves(history: list[dict], path: Path) -> Path:
    from ..visualize import save_figure

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if "elbo" in h]
    val = [h for h in history if "val_count_acc" in h]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        it = np.array([h["iteration"] for h in train])
        elbo = np.array([h["elbo"] for h in train])
        k = max(1, len(elbo) // 50)
        smooth = np.convolve(elbo, np.ones(k) / k, mode="valid")
        axes[0].plot(it[k - 1:], smooth)
    axes[0].set(xlabel="iteration", ylabel="ELBO per image (nats, smoothed)", title="training objective")
    if val:
        it = [h["iteration"] for h in val]
        axes[1].plot(it, [h["val_count_acc"] for h in val], label="count")
        axes[1].plot(it, [h["val_identity_acc"] for h in val], label="identity (matched)")
        axes[1].plot(it, [h["val_adds_recall"] for h in val], label="ADD-S recall")
        axes[1].legend()
    axes[1].set(xlabel="iteration", ylabel="accuracy", ylim=(0, 1.02), title="validation")
    fig.tight_layout()
    return save_figure(fig, path)


def train_air(out: str | Path, air_config: AIRConfig | None = None, train_config: TrainConfig | None = None,
              data: Tabletop | None = None, resume: bool = False, progress: bool = True, log=print) -> dict:
    """Trains AIR, writing out/checkpoint.pt, out/history.json and out/curves.png. Returns the last validation."""
    from tqdm import tqdm

    out = Path(out)
    cfg = train_config or TrainConfig()
    data = data or Tabletop()
    ckpt_path = out / "checkpoint.pt"
    ckpt = None
    if resume and ckpt_path.exists():
        _, ckpt = load_checkpoint(ckpt_path, data)
        air_config = air_config_from_dict(ckpt["air_config"])
        cfg = TrainConfig(**{**ckpt["train_config"], "iterations": cfg.iterations,
                             "time_limit_minutes": cfg.time_limit_minutes})
    elif ckpt_path.exists() and not resume:
        raise ValueError(f"{ckpt_path} exists; pass --resume to continue it or choose another --out")
    air_config = air_config or AIRConfig()
    torch.manual_seed(cfg.seed)
    model = build_model(air_config, data)
    baselines = [p for n, p in model.named_parameters() if n.startswith(("baseline", "local_baseline"))]
    guide_params = [p for n, p in model.named_parameters() if not n.startswith(("baseline", "local_baseline"))]
    optimizer = torch.optim.Adam([{"params": guide_params, "lr": cfg.lr},
                                  {"params": baselines, "lr": cfg.baseline_lr}])
    history, iteration, elapsed_before, skipped = [], 0, 0.0, 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        history, iteration = ckpt["history"], ckpt["iteration"]
        elapsed_before, skipped = ckpt["train_seconds"], ckpt.get("skipped", 0)
        torch.set_rng_state(ckpt["torch_rng"])
        log(f"resuming {ckpt_path} at iteration {iteration}")
    model.train()

    pool, _ = _render_pool(data, cfg.split, cfg.train_pool, progress)
    val_images, val_truth = _render_pool(data, cfg.val_split, cfg.val_size, progress)
    val_images = val_images.float() / 255

    def checkpoint():
        atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
                           "history": history, "air_config": air_config.to_dict(), "train_config": asdict(cfg),
                           "data_config": data.config.to_fields(), "train_seconds": train_seconds(),
                           "skipped": skipped, "torch_rng": torch.get_rng_state()}, ckpt_path)
        from ..data.bop import atomic_write_json

        atomic_write_json(out / "history.json", history)

    start = time.perf_counter()

    def train_seconds():
        return elapsed_before + time.perf_counter() - start

    bar = tqdm(total=cfg.iterations, initial=iteration, desc="train-air", disable=not progress)
    last_val = {}
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + iteration)
    while iteration < cfg.iterations:
        if train_seconds() > cfg.time_limit_minutes * 60:
            log(f"time limit of {cfg.time_limit_minutes} min reached at iteration {iteration}")
            break
        index = torch.randint(len(pool), (cfg.batch_size,), generator=generator)
        images = pool[index].float() / 255
        loss, info = model.loss(images, iteration, cfg.score_weight)
        optimizer.zero_grad()
        problem = None if torch.isfinite(loss) else f"loss is {float(loss.detach())}"
        if problem is None:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            problem = None if torch.isfinite(norm) else "gradient has NaN or Inf"
        if problem is not None:  # skip the step, keep the weights
            skipped += 1
            log(f"iteration {iteration}: {problem}; step skipped ({skipped} so far)")
            iteration += 1
            continue
        optimizer.step()
        iteration += 1
        counts = info["counts"].float()
        history.append({"iteration": iteration, "elbo": info["elbo"], "loss": float(loss.detach()),
                        "mean_count": float(counts.mean()), "seconds": train_seconds()})
        if iteration % cfg.val_every == 0 or iteration == cfg.iterations:
            metrics = evaluate(model, val_images, val_truth)
            last_val = {f"val_{k}": v for k, v in metrics.items() if k != "count_pairs"}
            history.append({"iteration": iteration, **last_val, "seconds": train_seconds()})
        if iteration % cfg.checkpoint_every == 0:
            checkpoint()
        bar.update(1)
        bar.set_postfix(elbo=f"{info['elbo']:.0f}", count=f"{float(counts.mean()):.2f}",
                        val_count=f"{last_val.get('val_count_acc', float('nan')):.3f}")
    bar.close()
    if not last_val or history[-1].get("iteration") != iteration:
        metrics = evaluate(model, val_images, val_truth)
        last_val = {f"val_{k}": v for k, v in metrics.items() if k != "count_pairs"}
        history.append({"iteration": iteration, **last_val, "seconds": train_seconds()})
    checkpoint()
    save_curves(history, out / "curves.png")
    return {"iteration": iteration, "train_minutes": train_seconds() / 60, "skipped": skipped, **last_val}
