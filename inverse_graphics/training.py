"""What every trainer here shares: a rendered image pool, atomic checkpoints, resume, a time
limit, a NaN guard, periodic validation, a progress bar and the history as JSON and PNG, on
one process or several (data-parallel under torchrun: distributed.py).

AIR (no labels) and the supervised baseline (labels) differ only in their loss and
their model; both go through `train_loop`, so their budgets and bookkeeping are the same.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from .checkpoints import read_checkpoint
from .data.tabletop import Tabletop
from .devices import resolve_device, rng_state, set_rng_state
from .distributed import ProcessGroup, process_group
from .files import atomic_torch_save, atomic_write_json, lock_output_folder, release_output_folder
from .scene import SceneBatch
from .visualize import save_curves


@dataclass
class TrainConfig:
    split: str = "train"
    iterations: int = 4000
    batch_size: int = 32
    lr: float = 1e-3
    baseline_lr: float = 1e-3  # AIR's NVIL baselines
    score_weight: float = 1.0  # AIR's score-function terms
    train_pool: int = 6000  # distinct training images, rendered once
    val_size: int = 300
    val_split: str = "val"
    val_every: int = 250
    checkpoint_every: int = 100
    time_limit_minutes: float = 60.0
    seed: int = 0
    grad_clip: float = 10.0
    # AIR: the annealing schedules' clock at iteration 0. A run started from trained weights
    # continues their schedule rather than re-tempering what they learned.
    schedule_start: int = 0
    # The learning rate over the run: "constant", or "cosine" from lr down to lr x lr_final_fraction
    # at the end of whichever budget (iterations or time_limit_minutes) runs out first.
    lr_decay: str = "constant"
    lr_final_fraction: float = 0.02

    def __post_init__(self):
        for name in ("batch_size", "train_pool", "val_size", "val_every", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"training {name} must be a positive whole number, got {getattr(self, name)!r}")
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError(f"training iterations must be 0 or more, got {self.iterations!r}")
        for name in ("lr", "baseline_lr", "time_limit_minutes", "grad_clip"):
            if not getattr(self, name) > 0:  # NaN fails too
                raise ValueError(f"training {name} must be positive, got {getattr(self, name)!r}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"training lr_decay must be one of {', '.join(LR_DECAYS)}, got {self.lr_decay!r}")
        if not 0 <= self.lr_final_fraction <= 1:
            raise ValueError(f"training lr_final_fraction must be in [0, 1], got {self.lr_final_fraction!r}")


LR_DECAYS = ("constant", "cosine")


def lr_factor(cfg: TrainConfig, progress: float) -> float:
    """The learning rate's multiple of cfg.lr at progress in [0, 1] of the run's budget."""
    if cfg.lr_decay == "constant":
        return 1.0
    progress = min(max(progress, 0.0), 1.0)
    return cfg.lr_final_fraction + (1 - cfg.lr_final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def training_device(device: str | torch.device | None = None) -> torch.device:
    """The device this training process computes on (devices.resolve_device), with torchrun's process
    group joined for it (NCCL on CUDA, gloo on CPU; nothing when not under torchrun)."""
    device = resolve_device(device)
    process_group(device)
    return device


def checkpoint_to_resume(out: Path, resume: bool, cfg: TrainConfig, kind: str,
                         log=print) -> tuple[dict | None, TrainConfig]:
    """(the checkpoint in out to continue, or None; the training configuration to use).

    The run folder is checked (writable, not a file) and held for this run: a second run into it
    is refused while this one lives. Resuming keeps the run's own configuration but the new
    iteration and time limits, and says where it resumes; starting over a run that exists is
    refused, so nothing written is lost.
    """
    out = Path(out)
    if process_group().is_main:
        lock_output_folder(out, "run folder")
    else:
        log = lambda message: None  # noqa: E731 (rank 0 speaks for the run)
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = read_checkpoint(ckpt_path, kind, resume=True)
        log(f"resuming {ckpt_path} from iteration {ckpt['iteration']}")
        return ckpt, TrainConfig(**{**ckpt["train_config"], "iterations": cfg.iterations,
                                    "time_limit_minutes": cfg.time_limit_minutes})
    if ckpt_path.exists():
        raise ValueError(f"{ckpt_path} exists; pass --resume to continue it or choose another --out")
    if resume:
        log(f"--resume: no checkpoint in {out} yet; starting from iteration 0")
    return None, cfg


def render_pool(data: Tabletop, split: str, count: int, progress: bool) -> tuple[torch.Tensor, SceneBatch]:
    """(count, H, W, 3) uint8 hard renders of a split's first scenes, and their SceneBatch truth."""
    images, batches = [], []
    for start in tqdm(range(0, count, 500), desc=f"rendering {split} images", disable=not progress, leave=False):
        out, batch = data.render(split, range(start, min(count, start + 500)))
        images.append((out.rgb * 255).round().to(torch.uint8))
        batches.append(batch)
    return torch.cat(images), SceneBatch.cat(batches)


def pool_batches(pool_size: int, batch_size: int, group: ProcessGroup, seed: int, iteration: int = 0):
    """An endless stream of (batch_size,) indices into a pool: this process's share of the pool
    (a DistributedSampler, reshuffled every epoch), from iteration `iteration`'s batch on. One
    process with batch size k x B sees the same images per step as k processes with B each."""
    sampler = DistributedSampler(range(pool_size), num_replicas=group.world_size, rank=group.rank, seed=seed)
    epoch, offset = divmod(iteration * batch_size, len(sampler))
    batch: list[int] = []
    while True:
        sampler.set_epoch(epoch)
        for index in list(sampler)[offset:]:
            batch.append(index)
            if len(batch) == batch_size:
                yield torch.tensor(batch)
                batch = []
        epoch, offset = epoch + 1, 0


def _restore(checkpoint: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, group: ProcessGroup,
             device: torch.device) -> tuple:
    """Model, optimizer and RNG states from a checkpoint (any device's: tensors are read onto the CPU
    and moved to the model's); (history, iteration, seconds trained, skipped). Each process takes its
    own RNG states back when the run had as many processes."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])  # its state follows the parameters' device
    states = checkpoint.get("torch_rng_per_rank") or [checkpoint["torch_rng"]]
    if len(states) == group.world_size:
        set_rng_state(states[group.rank], device)
    else:  # another process count: fresh streams, one per process
        torch.manual_seed(checkpoint["iteration"] * 1009 + group.rank)
    return checkpoint["history"], checkpoint["iteration"], checkpoint["train_seconds"], checkpoint.get("skipped", 0)


class _LossStep(torch.nn.Module):
    """The model with step_loss as its forward, so that DistributedDataParallel sees the loss made."""

    def __init__(self, model: torch.nn.Module, step_loss: Callable):
        super().__init__()
        self.model, self.step_loss = model, step_loss

    def forward(self, index: torch.Tensor, iteration: int):
        return self.step_loss(index, iteration)


def _gradient_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   grad_clip: float, group: ProcessGroup) -> str | None:
    """One optimizer step on loss (under DDP the backward averages the gradients over the processes);
    what was wrong, and the step not taken by any process, if a loss or the gradient is not finite."""
    optimizer.zero_grad()
    if loss.requires_grad:
        loss.backward()  # also for a bad loss: DDP expects a backward after every forward
    if group.any(not torch.isfinite(loss)):
        optimizer.zero_grad()
        return f"loss is {float(loss.detach())}" if not torch.isfinite(loss) else "another process's loss is not finite"
    if not torch.isfinite(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)):
        optimizer.zero_grad()
        return "gradient has NaN or Inf"
    optimizer.step()
    return None


def _validation(model: torch.nn.Module, validate: Callable[[], dict]) -> dict:
    """validate()'s metrics in eval mode, prefixed val_ (per-pair lists left out)."""
    was_training = model.training
    model.eval()
    metrics = validate()
    model.train(was_training)
    return {f"val_{k}": v for k, v in metrics.items() if k not in ("count_pairs", "matches")}


def train_loop(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
               step_loss: Callable[[torch.Tensor, int], tuple[torch.Tensor, dict]],
               validate: Callable[[], dict], pool_size: int, payload: dict, resumed: dict | None = None,
               progress: bool = True, log=print, desc: str = "train", objective_label: str = "objective",
               device: torch.device = torch.device("cpu")) -> dict:
    """The training loop: out/checkpoint.pt (atomic, every cfg.checkpoint_every), history.json, curves.png.

    step_loss(index (batch,) into the pool, iteration) -> (scalar loss, averaged over the batch;
    info with 'objective' and 'mean_count'); validate() -> evaluate_planar's metrics. payload: what
    the checkpoint holds besides model, optimizer and progress. A step whose loss or gradient is not
    finite is skipped and logged. Under torchrun every process runs this with its own batches
    (cfg.batch_size each); gradients are averaged by DistributedDataParallel and rank 0 alone
    validates and writes. device: where model is (training_device); the batches step_loss makes
    must be there too."""
    out = Path(out)
    ckpt_path = out / "checkpoint.pt"
    group = process_group(device)
    if not group.is_main:
        progress, log = False, (lambda message: None)
    history, iteration, elapsed_before, skipped = [], 0, 0.0, 0
    if resumed is not None:
        history, iteration, elapsed_before, skipped = _restore(resumed, model, optimizer, group, device)
    elif group.active:
        torch.manual_seed(cfg.seed * 1009 + group.rank)  # the weights are rank 0's; the sampling is each one's
    model.train()
    if group.active:
        stepper = DistributedDataParallel(_LossStep(model, step_loss), find_unused_parameters=True,
                                          device_ids=[device.index] if device.type == "cuda" else None)
    else:
        stepper = _LossStep(model, step_loss)
    start = time.perf_counter()

    def train_seconds():
        return elapsed_before + time.perf_counter() - start

    def checkpoint():
        rng = group.gather(rng_state(device))
        if group.is_main:
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
                               "history": history, "train_seconds": train_seconds(), "skipped": skipped,
                               "torch_rng": rng[0]["cpu"], "torch_rng_per_rank": rng, "world_size": group.world_size,
                               "device": str(device), **payload}, ckpt_path)
            atomic_write_json(out / "history.json", history)

    bar = tqdm(total=cfg.iterations, initial=iteration, desc=desc, disable=not progress)
    last_val = {}
    batches = pool_batches(pool_size, cfg.batch_size, group, cfg.seed, iteration)
    while iteration < cfg.iterations:
        if group.any(train_seconds() > cfg.time_limit_minutes * 60):
            log(f"time limit of {cfg.time_limit_minutes} min reached at iteration {iteration}")
            break
        if cfg.lr_decay != "constant":  # by the budget used: the processes agree on the largest
            progress = group.max(max(iteration / max(cfg.iterations, 1), train_seconds() / (cfg.time_limit_minutes * 60)))
            for param_group in optimizer.param_groups:
                param_group.setdefault("initial_lr", param_group["lr"])  # saved with the optimizer's state
                param_group["lr"] = param_group["initial_lr"] * lr_factor(cfg, progress)
        loss, info = stepper(next(batches), iteration)
        problem = _gradient_step(model, optimizer, loss, cfg.grad_clip, group)
        iteration += 1
        if problem is not None:  # the step was skipped; the weights are kept
            skipped += 1
            log(f"iteration {iteration - 1}: {problem}; step skipped ({skipped} so far)")
            continue
        history.append({"iteration": iteration, **info, "loss": float(loss.detach()), "seconds": train_seconds(),
                        "lr": optimizer.param_groups[0]["lr"]})
        if group.is_main and (iteration % cfg.val_every == 0 or iteration == cfg.iterations):
            last_val = _validation(model, validate)
            history.append({"iteration": iteration, **last_val, "seconds": train_seconds()})
        if iteration % cfg.checkpoint_every == 0:
            checkpoint()
        bar.update(1)
        bar.set_postfix(objective=f"{info['objective']:.3g}", count=f"{info['mean_count']:.2f}",
                        val_count=f"{last_val.get('val_count_acc', float('nan')):.3f}")
    bar.close()
    validated = [h["iteration"] for h in history if "val_count_acc" in h]
    if group.is_main and (not validated or validated[-1] != iteration):  # stopped between validations
        last_val = _validation(model, validate)
        history.append({"iteration": iteration, **last_val, "seconds": train_seconds()})
    checkpoint()
    if group.is_main:
        save_curves(history, out / "curves.png", objective_label)
        release_output_folder(out)
    group.barrier()  # every process returns once the checkpoint is written
    return {"iteration": iteration, "train_minutes": train_seconds() / 60, "skipped": skipped, **last_val}
