"""Training AIR without labels: maximise the ELBO on tabletop images, with checkpoints and resume.

The training images are hard renders of a tabletop split (their labels are
never read by training; validation reads them to report count accuracy).
A checkpoint holds the model, optimizer, iteration, history and RNG states and is
written atomically, so a killed run resumes where its last checkpoint left it.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..data.prior import prior_batches
from ..data.tabletop import Tabletop, TabletopConfig
from ..metrics import evaluate_planar
from ..scene import PlanarObjects, SceneBatch
from ..training import TrainConfig, checkpoint_to_resume, export_weights, read_checkpoint, render_pool, train_loop
from .config import AIRConfig, air_config_from_dict
from .model import AIR
from .sleep import SleepConfig, sleep_loss

__all__ = ["TrainConfig", "train_air", "load_checkpoint", "export_weights", "evaluate"]


def build_model(air_config: AIRConfig, data: Tabletop) -> AIR:
    return AIR(air_config, data.catalog, data.camera, data.config.table)


def load_checkpoint(path: str | Path, data: Tabletop | None = None) -> tuple[AIR, dict]:
    """(model in eval mode, checkpoint dict). Raises a clear error for a missing or corrupt file."""
    ckpt = read_checkpoint(path, "AIR")
    try:
        air_config = air_config_from_dict(ckpt["air_config"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not an AIR checkpoint ({exc})") from exc
    data = data or Tabletop(TabletopConfig.from_fields(ckpt["data_config"]))
    model = build_model(air_config, data)
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in ckpt["model"].items()})
    model.eval()
    return model, ckpt


@torch.no_grad()
def evaluate(model: AIR, images: torch.Tensor, truth: SceneBatch, batch_size: int = 256) -> dict:
    """Greedy inference on images (B, H, W, 3) scored against a SceneBatch's planar truth."""
    was_training = model.training
    model.eval()
    predicted = PlanarObjects.cat([model.objects(model.infer(chunk, greedy=True))
                                   for chunk in torch.split(images, batch_size)])
    model.train(was_training)
    return evaluate_planar(predicted, truth.planar(), model.catalog)


def train_air(out: str | Path, air_config: AIRConfig | None = None, train_config: TrainConfig | None = None,
              data: Tabletop | None = None, resume: bool = False, progress: bool = True, log=print,
              init: str | Path | None = None, extra_images: torch.Tensor | None = None) -> dict:
    """Trains AIR, writing out/checkpoint.pt, out/history.json and out/curves.png. Returns the last validation.

    The training images are hard renders of cfg.split; their labels are never read here
    (validation reads the val split's to report accuracy). init: weights to start from (an AIR
    checkpoint of the same architecture, any camera). extra_images: (M, H, W, 3) uint8 unlabelled
    images added to the pool (a user's own frames).
    """
    out = Path(out)
    data = data or Tabletop()
    ckpt, cfg = checkpoint_to_resume(out, resume, train_config or TrainConfig(), "AIR")
    if ckpt is not None:
        air_config = air_config_from_dict(ckpt["air_config"])
    air_config = air_config or AIRConfig()
    torch.manual_seed(cfg.seed)
    model = build_model(air_config, data)
    baselines = [p for n, p in model.named_parameters() if n.startswith(("baseline", "local_baseline"))]
    guide_params = [p for n, p in model.named_parameters() if not n.startswith(("baseline", "local_baseline"))]
    optimizer = torch.optim.Adam([{"params": guide_params, "lr": cfg.lr},
                                  {"params": baselines, "lr": cfg.baseline_lr}])
    if init is not None and ckpt is None:
        start, start_ckpt = load_checkpoint(init, data)
        model.guide.load_state_dict(start.guide.state_dict())
        cfg = replace(cfg, schedule_start=start_ckpt.get("iteration", 0)
                      + start_ckpt.get("train_config", {}).get("schedule_start", 0))
        log(f"starting from the guide of {init} (schedules at iteration {cfg.schedule_start})")
    pool, _ = render_pool(data, cfg.split, cfg.train_pool, progress)
    if extra_images is not None:
        if extra_images.dtype != torch.uint8 or tuple(extra_images.shape[1:]) != tuple(pool.shape[1:]):
            raise ValueError(f"extra images must be uint8 {tuple(pool.shape[1:])}, got {extra_images.dtype} "
                             f"{tuple(extra_images.shape[1:])}")
        pool = torch.cat([pool, extra_images])
    val_images, val_truth = render_pool(data, cfg.val_split, cfg.val_size, progress)
    val_images = val_images.float() / 255

    def step_loss(index, iteration):
        loss, info = model.loss(pool[index].float() / 255, cfg.schedule_start + iteration, cfg.score_weight)
        return loss, {"objective": info["elbo"], "mean_count": float(info["counts"].float().mean())}

    payload = {"air_config": air_config.to_dict(), "train_config": asdict(cfg), "data_config": data.config.to_fields()}
    return train_loop(out, model, optimizer, cfg, step_loss, lambda: evaluate(model, val_images, val_truth), len(pool),
               payload, ckpt, progress, log, desc="train-air", objective_label="ELBO per image (nats, smoothed)")


def train_air_sleep(out: str | Path, air_config: AIRConfig | None = None, train_config: TrainConfig | None = None,
                    data: Tabletop | None = None, sleep: SleepConfig | None = None, resume: bool = False,
                    progress: bool = True, log=print) -> dict:
    """Trains AIR's guide by the sleep phase (air/sleep.py): fresh prior samples every batch,
    rendered beside training by sleep.prior.workers processes. Writes out/checkpoint.pt, history.json
    and curves.png like train_air; validation reads the val split's labels to report accuracy."""
    out = Path(out)
    data = data or Tabletop()
    ckpt, cfg = checkpoint_to_resume(out, resume, train_config or TrainConfig(), "AIR")
    if ckpt is not None:
        air_config = air_config_from_dict(ckpt["air_config"])
        sleep = SleepConfig.from_dict(ckpt["sleep_config"])
    air_config, sleep = air_config or AIRConfig(), sleep or SleepConfig()
    torch.manual_seed(cfg.seed)
    model = build_model(air_config, data)
    optimizer = torch.optim.Adam(model.guide.parameters(), lr=cfg.lr)
    yaw_orders = torch.tensor([c.yaw_symmetry_order() for c in data.catalog.categories])
    background = model.background()
    val_images, val_truth = render_pool(data, cfg.val_split, cfg.val_size, progress)
    val_images = val_images.float() / 255
    batches = prior_batches(data, cfg.batch_size, sleep.prior, seed=cfg.seed * 1000 + (ckpt or {}).get("iteration", 0))

    def step_loss(index, iteration):
        images, truth = next(batches)
        loss, info = sleep_loss(model.guide, images, background, truth, yaw_orders, sleep)
        weighted = {k: v for k, v in info.items() if k not in ("identity_acc", "presence_acc")}
        return loss, {"objective": -float(loss.detach()), "mean_count": float(truth.counts.float().mean()),
                      **{f"log_q_{k}": v for k, v in weighted.items()},
                      "trace_identity_acc": info["identity_acc"], "trace_presence_acc": info["presence_acc"]}

    payload = {"air_config": air_config.to_dict(), "train_config": asdict(cfg), "data_config": data.config.to_fields(),
               "sleep_config": sleep.to_dict()}
    return train_loop(out, model, optimizer, cfg, step_loss, lambda: evaluate(model, val_images, val_truth), 1,
                      payload, ckpt, progress, log, desc="train-air (sleep)",
                      objective_label="weighted log q of the trace per image (smoothed)")
