"""The generative model's prior, sampled and rendered: fresh scenes every batch, never a pool.

Scenes come from the tabletop distribution (count uniform over `counts`, identity, position
where the tabletop camera and table put objects, yaw, colour) and each image gets its own
appearance nuisances (rendering.appearance): a light to be rendered under, then what the camera
adds. A DataLoader with worker processes renders while the training process trains, so both
cores work. Used by AIR's sleep phase (no labels are read: these are the model's own samples)
and by the supervised baseline (as labelled data).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..distributed import current
from ..rendering.appearance import AppearanceRanges, apply_appearance, draw_light
from ..rendering.renderer import Light, SceneRenderer
from .tabletop import Tabletop


@dataclass
class PriorConfig:
    counts: tuple[int, ...] = (0, 1, 2, 3)  # object counts, drawn uniformly
    appearance: AppearanceRanges = field(default_factory=AppearanceRanges)
    workers: int = 1  # renderer processes beside the training process (0: render in it)

    def to_dict(self) -> dict:
        return {**asdict(self), "counts": list(self.counts), "appearance": self.appearance.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        """The config to_dict wrote; one written before the light was drawn keeps the renderer's light."""
        return cls(counts=tuple(d["counts"]), workers=d["workers"], appearance=AppearanceRanges.from_dict(d["appearance"]))


class PriorSamples(IterableDataset):
    """An endless stream of (images (B, H, W, 3) in [0, 1], truth PlanarObjects) drawn from the
    prior and rendered. Batch k of a stream is drawn from its own seed (seed, rank, k), whichever
    worker process renders it, so a stream started at batch `start` (a resumed run) continues
    exactly where an uninterrupted one would be; the workers take batches in turn, which is the
    order a DataLoader hands them out in."""

    def __init__(self, data: Tabletop, batch_size: int, config: PriorConfig, seed: int = 0, rank: int = 0,
                 start: int = 0):
        super().__init__()
        self.data, self.batch_size, self.config, self.seed, self.rank = data, batch_size, config, seed, rank
        self.start = start

    def draw(self, k: int) -> tuple[object, Light | None, torch.Generator]:
        """Batch k's scenes (PlanarObjects), their lights (None: the renderer's own) and the
        generator that draws the rest of their nuisances, all from batch k's seed."""
        rng = np.random.default_rng([self.seed, self.rank, k])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        truth = self.data.draw(rng, self.batch_size, self.config.counts)
        return truth, draw_light(self.config.appearance, self.batch_size, generator), generator

    def batch(self, k: int, renderer: SceneRenderer) -> tuple[torch.Tensor, object]:
        """Batch k of the stream."""
        truth, light, generator = self.draw(k)
        with torch.no_grad():
            out = renderer(self.data.scene_batch(truth), light=light)
            images = apply_appearance(out, self.data.camera, self.data.config.table, self.config.appearance,
                                      generator, light)
        return images, truth

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            torch.set_num_threads(1)  # the training process has the other core
        renderer = SceneRenderer(self.data.catalog, mode="hard", gradients="none")
        k = self.start + worker
        while True:
            yield self.batch(k, renderer)
            k += workers


def prior_batches(data: Tabletop, batch_size: int, config: PriorConfig, seed: int = 0, start: int = 0):
    """An iterator of prior batches from batch `start` on, rendered on the CPU by config.workers
    worker processes (0: in this one); under torchrun, each training process draws its own (seeded
    by its rank: the trainers join the process group first, training.training_device)."""
    dataset = PriorSamples(data, batch_size, config, seed, current().rank, start)
    loader = DataLoader(dataset, batch_size=None, num_workers=config.workers,
                        prefetch_factor=4 if config.workers else None, persistent_workers=config.workers > 0,
                        collate_fn=lambda batch: batch)
    return iter(loader)
