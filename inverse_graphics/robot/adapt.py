"""AIR adapted to a robot camera: trained without labels on the user's frames, as the paper fits
AIR to its own images. The CLI's `fit` command runs adapt_to_frames.

From a sleep-trained guide (air/sleep.py's architecture) this is reweighted wake-sleep: the
wake phase on the user's frames (air/wake.py, the table's albedo fitted too) with a sleep batch
of the prior drawn for this camera every iteration. From an ELBO-trained guide it is the ELBO on
the frames mixed with synthetic frames rendered for the same camera.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..air.config import air_config_from_dict
from ..air.train import TrainConfig, train_air, train_air_wake
from ..assets import ObjectCatalog
from ..paths import SHIPPED_AIR
from ..checkpoints import read_checkpoint
from .frames import iter_frames
from .view import Workspace, air_input, frames_table_color, rendered_table_rgb, robot_data


def adapt_to_frames(frames_dir: str | Path, out: str | Path, camera_path: str | Path | None = None,
                    init: str | Path | None = None, minutes: float = 20.0, iterations: int = 100_000, seed: int = 0,
                    train_pool: int = 3000, val_size: int = 100, resume: bool = False, progress: bool = True,
                    log=print, device: str | torch.device | None = None, models=None) -> dict:
    """Trains AIR for the frames' camera, without labels, from `init` (AIR weights; the
    shipped tabletop model by default) on the user's frames (downscaled, white-balanced, as
    view.air_input shows them): by the wake phase with sleep batches for a sleep-trained guide,
    else by the ELBO with `train_pool` synthetic frames of 1-3 objects for that camera added. Validation uses synthetic frames, whose truth is known.
    Writes out/checkpoint.pt, history.json, curves.png. Returns the last validation, with
    `frames`: how many of the user's frames were used. device: where to train (devices.resolve_device).
    models: the objects (a BOP models folder; default the shipped ones): the guide starts from
    `init`'s weights wherever their shapes fit these objects (air.train.start_guide)."""
    frames = list(iter_frames(frames_dir, camera_path,
                              on_problem=lambda p: log(f"skipping frame {p.name}: {p.reason}")))
    if not frames:
        raise ValueError(f"no usable frames in {frames_dir}")
    camera = frames[0].camera
    color = frames_table_color(frames)
    data = robot_data(camera, color, catalog=ObjectCatalog.load(models))
    init = Path(init) if init else SHIPPED_AIR
    air_config = air_config_from_dict(read_checkpoint(init, "AIR")["air_config"])
    table_rgb = rendered_table_rgb(color)  # the table as the model renders it
    workspace = Workspace.for_camera(camera)
    mask = workspace.mask(data.camera)
    smalls = [(air_input(f, data.camera, table_rgb, workspace, mask) * 255).round().to(torch.uint8) for f in frames]
    cfg = TrainConfig(split="frames-train", val_split="frames-test", iterations=iterations,
                      time_limit_minutes=minutes, seed=seed, train_pool=train_pool, val_size=val_size,
                      val_every=100)
    if air_config.second_glimpse:  # a sleep-trained guide: wake on the frames, sleep for this camera
        result = train_air_wake(out, torch.stack(smalls), train_config=replace(cfg, batch_size=8), data=data,
                                init=init, resume=resume, progress=progress, log=log, device=device)
    else:
        result = train_air(out, air_config, cfg, data, resume=resume, progress=progress, log=log, init=init,
                           extra_images=torch.stack(smalls), device=device)
    return {**result, "frames": len(frames)}
