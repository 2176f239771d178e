"""Training AIR without labels: maximise the ELBO on tabletop images, with checkpoints and resume.

The training images are hard renders of a tabletop split (their labels are
never read by training; validation reads them to report count accuracy).
A checkpoint holds the model, optimizer, iteration, history and RNG states and is
written atomically, so a killed run resumes where its last checkpoint left it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..data.prior import prior_batches
from ..distributed import current
from ..data.tabletop import Tabletop, TabletopConfig
from ..metrics import evaluate_planar
from ..scene import PlanarObjects, SceneBatch
from ..checkpoints import checkpoint_catalog, export_weights, load_weights, read_checkpoint
from ..training import TrainConfig, checkpoint_to_resume, render_pool, train_loop, training_device
from .config import AIRConfig, air_config_from_dict
from .model import AIR
from .sleep import SleepConfig, sleep_loss
from .wake import WakeConfig, wake_loss

__all__ = ["TrainConfig", "train_air", "load_checkpoint", "export_weights", "evaluate"]


def build_model(air_config: AIRConfig, data: Tabletop) -> AIR:
    return AIR(air_config, data.catalog, data.camera, data.config.table)


def as_classes(model: AIR, truth: PlanarObjects) -> PlanarObjects:
    """truth with AIR's identity classes (a category and resting pose each, air/classes.py) in place
    of its categories: what the sleep phase's trace scores q's identity against."""
    return replace(truth, category=model.classes.of_objects(truth))


def load_checkpoint(path: str | Path, data: Tabletop | None = None, device: str | torch.device = "cpu",
                    glimpse_repeats: int | None = None) -> tuple[AIR, dict]:
    """(model in eval mode on device, checkpoint dict). Raises a clear error for a missing or corrupt file.
    glimpse_repeats: an inference setting (AIRConfig) in place of the checkpoint's (None: its own)."""
    ckpt = read_checkpoint(path, "AIR")
    if glimpse_repeats is not None:
        ckpt["air_config"] = {**ckpt["air_config"], "glimpse_repeats": glimpse_repeats}
    try:
        air_config = air_config_from_dict(ckpt["air_config"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not an AIR checkpoint ({exc})") from exc
    catalog = checkpoint_catalog(ckpt, path, data.catalog if data is not None else None)
    data = data or Tabletop(TabletopConfig.from_fields(ckpt["data_config"]), catalog)
    model = build_model(air_config, data)
    load_weights(model, ckpt, path)
    model.eval()
    return model.to(device), ckpt


@torch.no_grad()
def start_guide(model: AIR, start: AIR, init, log=print) -> None:
    """model's guide from start's: every tensor whose shape fits. Trained for other objects, the
    layers sized by the number of categories (identity, yaw per category, the step's one-hot
    input) start fresh, and the rest (attention, glimpse encoders, presence, position) carries over."""
    theirs = start.guide.state_dict()
    mine = model.guide.state_dict()
    fresh = [k for k, v in mine.items() if k not in theirs or theirs[k].shape != v.shape]
    model.guide.load_state_dict({**mine, **{k: theirs[k] for k in mine if k not in fresh}})
    if fresh:
        log(f"{init} was trained for {len(start.catalog)} objects, these are {len(model.catalog)}: "
            f"{len(fresh)} of the guide's {len(mine)} tensors start fresh ({', '.join(fresh[:4])}...)")


@torch.no_grad()
def evaluate(model: AIR, images: torch.Tensor, truth: SceneBatch, batch_size: int = 256,
             pose_recalls: bool = False) -> dict:
    """Greedy inference on images (B, H, W, 3) (any device; chunks go to the model's) scored against a
    SceneBatch's planar truth (pose_recalls: BOP's ADD-S, MSSD and MSPD too, seen by the truth's camera)."""
    was_training = model.training
    model.eval()
    device = model.generative.device
    predicted = PlanarObjects.cat([model.objects(model.infer(chunk.to(device), greedy=True)).to("cpu")
                                   for chunk in torch.split(images, batch_size)])
    model.train(was_training)
    return evaluate_planar(predicted, truth.planar(), model.catalog, truth.camera if pose_recalls else None)


def train_air(out: str | Path, air_config: AIRConfig | None = None, train_config: TrainConfig | None = None,
              data: Tabletop | None = None, resume: bool = False, progress: bool = True, log=print,
              init: str | Path | None = None, extra_images: torch.Tensor | None = None,
              device: str | torch.device | None = None) -> dict:
    """Trains AIR, writing out/checkpoint.pt, out/history.json and out/curves.png. Returns the last validation.

    The training images are hard renders of cfg.split; their labels are never read here
    (validation reads the val split's to report accuracy). init: weights to start from (an AIR
    checkpoint of the same architecture, any camera). extra_images: (M, H, W, 3) uint8 unlabelled
    images added to the pool (a user's own frames). device: where to train (devices.resolve_device;
    the pool stays on the CPU and each batch moves).
    """
    out = Path(out)
    device = training_device(device)
    data = data or Tabletop()
    ckpt, cfg = checkpoint_to_resume(out, resume, train_config or TrainConfig(), "AIR", log)
    if ckpt is not None:
        _same_phase(ckpt, out, None)
        air_config = air_config_from_dict(ckpt["air_config"])
    air_config = air_config or AIRConfig()
    torch.manual_seed(cfg.seed)
    model = build_model(air_config, data).to(device)
    baselines = [p for n, p in model.named_parameters() if n.startswith(("baseline", "local_baseline"))]
    guide_params = [p for n, p in model.named_parameters() if not n.startswith(("baseline", "local_baseline"))]
    optimizer = torch.optim.Adam([{"params": guide_params, "lr": cfg.lr},
                                  {"params": baselines, "lr": cfg.baseline_lr}])
    if init is not None and ckpt is None:
        start, start_ckpt = load_checkpoint(init, device=device)  # with the objects it was trained on
        start_guide(model, start, init, log)
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

    # the global batch's enumeration is the same on any number of processes: each takes its share
    enumerate_images = math.ceil(air_config.enumerate_images / current().world_size)

    def step_loss(index, iteration):
        loss, info = model.loss(pool[index].to(device).float() / 255, cfg.schedule_start + iteration,
                                cfg.score_weight, enumerate_images)
        return loss, {"objective": info["elbo"], "mean_count": float(info["counts"].float().mean())}

    payload = {"air_config": air_config.to_dict(), "train_config": asdict(cfg), "data_config": data.config.to_fields(),
               "catalog": data.catalog.record()}
    return train_loop(out, model, optimizer, cfg, step_loss, lambda: evaluate(model, val_images, val_truth), len(pool),
                      payload, ckpt, progress, log, desc="train-air", objective_label="ELBO per image (nats, smoothed)",
                      device=device)


_PHASE_OPTION = {None: "train-air", "sleep": "train-air --sleep", "wake": "train-air --wake"}


def _same_phase(ckpt: dict, out: Path, phase: str | None) -> None:
    """A run is resumed by the objective that started it (the ELBO, the sleep or the wake phase)."""
    started = "wake" if "wake_config" in ckpt else "sleep" if "sleep_config" in ckpt else None
    if started != phase:
        raise ValueError(f"{out} holds a run of `{_PHASE_OPTION[started]}`; resume it with that command, "
                         f"not `{_PHASE_OPTION[phase]}`")


def with_prior_workers(sleep: SleepConfig, workers: int | None) -> SleepConfig:
    """sleep with its prior rendered by `workers` processes (unchanged for None)."""
    if workers is None:
        return sleep
    if workers < 0:
        raise ValueError(f"prior workers must be 0 or more, got {workers}")
    return replace(sleep, prior=replace(sleep.prior, workers=workers))


def train_air_sleep(out: str | Path, air_config: AIRConfig | None = None, train_config: TrainConfig | None = None,
                    data: Tabletop | None = None, sleep: SleepConfig | None = None, resume: bool = False,
                    progress: bool = True, log=print, device: str | torch.device | None = None,
                    prior_workers: int | None = None) -> dict:
    """Trains AIR's (or DAIR's) guide by the sleep phase (air/sleep.py): fresh prior samples every batch,
    rendered beside training by sleep.prior.workers processes (prior_workers, if given, overrides it,
    also for a resumed run). Writes out/checkpoint.pt, history.json and curves.png like train_air;
    validation reads the val split's labels to report accuracy. The prior's samples are rendered on
    the CPU (by the workers) and each batch moves to device."""
    out = Path(out)
    device = training_device(device)
    data = data or Tabletop()
    ckpt, cfg = checkpoint_to_resume(out, resume, train_config or TrainConfig(), "AIR", log)
    if ckpt is not None:
        _same_phase(ckpt, out, "sleep")
        air_config = air_config_from_dict(ckpt["air_config"])
        sleep = SleepConfig.from_dict(ckpt["sleep_config"])
    air_config, sleep = air_config or AIRConfig(), with_prior_workers(sleep or SleepConfig(), prior_workers)
    torch.manual_seed(cfg.seed)
    model = build_model(air_config, data).to(device)
    optimizer = torch.optim.Adam(model.guide.parameters(), lr=cfg.lr)
    yaw_orders = torch.tensor(model.classes.yaw_orders, device=device)
    background = model.background()
    val_images, val_truth = render_pool(data, cfg.val_split, cfg.val_size, progress)
    val_images = val_images.float() / 255
    batches = prior_batches(data, cfg.batch_size, sleep.prior, seed=cfg.seed, start=(ckpt or {}).get("iteration", 0))
    render_found = model.render_found if air_config.dair else None  # DAIR's steps read what is left unexplained

    def step_loss(index, iteration):
        images, truth = next(batches)
        images = model.guide_input(images.to(device), balance=sleep.balance_images)
        loss, info = sleep_loss(model.guide, images, background, as_classes(model, truth.to(device)),
                                yaw_orders, sleep, render_found)
        weighted = {k: v for k, v in info.items() if k not in ("identity_acc", "presence_acc")}
        return loss, {"objective": -float(loss.detach()), "mean_count": float(truth.counts.float().mean()),
                      **{f"log_q_{k}": v for k, v in weighted.items()},
                      "trace_identity_acc": info["identity_acc"], "trace_presence_acc": info["presence_acc"]}

    payload = {"air_config": air_config.to_dict(), "train_config": asdict(cfg), "data_config": data.config.to_fields(),
               "catalog": data.catalog.record(),
               "sleep_config": sleep.to_dict()}
    return train_loop(out, model, optimizer, cfg, step_loss, lambda: evaluate(model, val_images, val_truth), 1,
                      payload, ckpt, progress, log, desc="train-air (sleep)",
                      objective_label="weighted log q of the trace per image (smoothed)", device=device)


def train_air_wake(out: str | Path, images: torch.Tensor, air_config: AIRConfig | None = None,
                   train_config: TrainConfig | None = None, data: Tabletop | None = None,
                   wake: WakeConfig | None = None, sleep: SleepConfig | None = None,
                   init: str | Path | None = None, resume: bool = False, progress: bool = True, log=print,
                   device: str | torch.device | None = None, prior_workers: int | None = None) -> dict:
    """Trains AIR by the wake phase (air/wake.py) on images (M, H, W, 3) uint8, an unlabelled pool
    (a user's own frames), with a sleep batch (air/sleep.py) every wake.sleep_every iterations (their
    losses summed); with wake.fit_table, the table's albedo (and with wake.fit_gain a light gain) is
    fitted too. init: an AIR checkpoint to start from (the normal use: a sleep-trained guide; its
    architecture is used when air_config is None). Writes out/checkpoint.pt, history.json and
    curves.png like train_air; validation reads data's val split labels to report accuracy. The images
    stay on the CPU; each batch moves to device."""
    out = Path(out)
    device = training_device(device)
    data = data or Tabletop()
    H, W = data.camera.image_size
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != (H, W, 3):
        raise ValueError(f"wake images must be uint8 (M, {H}, {W}, 3), got {images.dtype} {tuple(images.shape)}")
    ckpt, cfg = checkpoint_to_resume(out, resume, train_config or TrainConfig(), "AIR", log)
    start = None
    if ckpt is not None:
        _same_phase(ckpt, out, "wake")
        air_config = air_config_from_dict(ckpt["air_config"])
        wake, sleep = WakeConfig.from_dict(ckpt["wake_config"]), SleepConfig.from_dict(ckpt["sleep_config"])
    elif init is not None:
        start, start_ckpt = load_checkpoint(init, device=device)  # with the objects it was trained on
        air_config = air_config or start.config
    air_config, wake = air_config or AIRConfig(), wake or WakeConfig()
    sleep = with_prior_workers(sleep or SleepConfig(), prior_workers)
    torch.manual_seed(cfg.seed)
    model = build_model(air_config, data)
    appearance = model.generative.fit_appearance(wake.fit_gain) if wake.fit_table else None
    model.to(device)
    if start is not None:
        start_guide(model, start, init, log)
        fitted = start.generative.appearance
        if appearance is not None and fitted is not None:  # a wake-trained start: its table too
            with torch.no_grad():
                appearance.table_logits.copy_(fitted.table_logits)
                if appearance.log_gain is not None and fitted.log_gain is not None:
                    appearance.log_gain.copy_(fitted.log_gain)
        cfg = replace(cfg, schedule_start=start_ckpt.get("iteration", 0)
                      + start_ckpt.get("train_config", {}).get("schedule_start", 0))
        log(f"starting from {init} (schedules at iteration {cfg.schedule_start})")
    groups = [{"params": list(model.guide.parameters()), "lr": cfg.lr}]
    if appearance is not None:
        groups.append({"params": list(appearance.parameters()), "lr": wake.appearance_lr})
    optimizer = torch.optim.Adam(groups)
    val_images, val_truth = render_pool(data, cfg.val_split, cfg.val_size, progress)
    val_images = val_images.float() / 255
    batches = None
    if wake.sleep_every > 0:
        yaw_orders = torch.tensor(model.classes.yaw_orders, device=device)
        done = (ckpt or {}).get("iteration", 0)  # sleep batches so far: one every sleep_every iterations
        batches = prior_batches(data, cfg.batch_size, sleep.prior, seed=cfg.seed,
                                start=-(-done // wake.sleep_every))

    def step_loss(index, iteration):
        loss, info = wake_loss(model, images[index].to(device).float() / 255, wake, cfg.schedule_start + iteration)
        info = {"objective": info["iwae"], **info}
        if batches is not None and iteration % wake.sleep_every == 0:
            sleep_images, truth = next(batches)
            sleep_images = model.guide_input(sleep_images.to(device), balance=sleep.balance_images)
            asleep, sleep_info = sleep_loss(model.guide, sleep_images, model.background(),
                                            as_classes(model, truth.to(device)), yaw_orders, sleep)
            loss = loss + asleep
            info.update({"sleep_loss": float(asleep.detach()), "trace_identity_acc": sleep_info["identity_acc"],
                         "trace_presence_acc": sleep_info["presence_acc"]})
        return loss, info

    payload = {"air_config": air_config.to_dict(), "train_config": asdict(cfg), "data_config": data.config.to_fields(),
               "catalog": data.catalog.record(),
               "wake_config": wake.to_dict(), "sleep_config": sleep.to_dict()}
    return train_loop(out, model, optimizer, cfg, step_loss, lambda: evaluate(model, val_images, val_truth),
                      len(images), payload, ckpt, progress, log, desc="train-air (wake)",
                      objective_label="importance-weighted bound log p(x) per image (nats, smoothed)", device=device)
