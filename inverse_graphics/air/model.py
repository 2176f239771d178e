"""Attend, Infer, Repeat for tabletop scenes: the guide (guide.py) and the generative model
(generative.py) side by side, trained by the estimators of objectives.py.

AIR(config, catalog, camera, table): `infer` runs the guide on images; `loss` is the surrogate
whose gradient estimates -grad ELBO; `objects` turns the guide's steps into PlanarObjects.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..assets import ObjectCatalog
from ..camera import Camera
from ..rendering.appearance import balance_to_table
from ..scene import PlanarObjects, Table
from .classes import RestingClasses
from .config import AIRConfig
from .generative import GenerativeModel
from .guide import Guide, Step, found_objects
from .objectives import (enumerated_identity, global_identity, local_identity, nvil_signal, sample_elbo,
                         statistics_unset)


class AIR(nn.Module):
    """Guide + generative model for one camera, table and catalog."""

    def __init__(self, config: AIRConfig, catalog: ObjectCatalog, camera: Camera, table: Table):
        super().__init__()
        self.config, self.catalog, self.camera, self.table = config, catalog, camera, table
        # identity ranges over (category, resting pose) classes: the categories for upright-only catalogs
        self.classes = RestingClasses.of(catalog)
        self.guide = Guide(config, camera, [max(1, k) for k in self.classes.yaw_orders])
        self.generative = GenerativeModel(config, catalog, camera, table)
        # NVIL: a learned per-step baseline on the (detached) image code, and running reward statistics.
        self.baseline = nn.Sequential(nn.Linear(config.hidden, 128), nn.ReLU(), nn.Linear(128, config.max_steps))
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_var", torch.ones(()))
        self.register_buffer("signal_var", torch.ones(config.max_steps))
        # 'local' identity signal: a baseline per step from the glimpse, and running statistics.
        self.local_baseline = nn.Sequential(nn.Linear(128 + config.max_steps, 64), nn.ReLU(), nn.Linear(64, 1))
        self.register_buffer("local_mean", torch.zeros(config.max_steps))
        self.register_buffer("local_var", torch.ones(config.max_steps))

    @property
    def renderer(self) -> nn.Module:
        """The likelihood's (soft, differentiable) planar renderer."""
        return self.generative.renderer

    def infer(self, images: torch.Tensor, greedy: bool = False, balance: bool | None = None) -> list[Step]:
        """images (B, H, W, 3) in [0, 1] -> one Step per guide step, read as guide_input gives them
        (balance: None, config.balance_to_table; False, as they are)."""
        return self._run_guide(self.guide_input(images, balance), greedy)[0]

    def guide_input(self, images: torch.Tensor, balance: bool | None = None) -> torch.Tensor:
        """images (B, H, W, 3) in [0, 1] as inference reads them: balanced to the table's render
        (rendering.appearance.balance_to_table) where balance is True (None: config.balance_to_table),
        or as they are."""
        if not (self.config.balance_to_table if balance is None else balance):
            return images
        return balance_to_table(images, self.table_rgb())

    def table_rgb(self) -> torch.Tensor:
        """(3,) the colour the model renders its bare table (the median of background())."""
        return self.background()[0].flatten(1).median(1).values

    def _run_guide(self, images: torch.Tensor, greedy: bool) -> tuple[list[Step], torch.Tensor]:
        """Steps, and the code (B, hidden) of the image itself (the baseline's input)."""
        return self.guide(images, self.background(),
                          lambda steps, B: self.render_steps(steps, hard=True, batch_size=B), greedy)

    def background(self) -> torch.Tensor:
        """(1, 3, H, W) the bare table as the camera sees it (cached)."""
        return self.generative.background()

    def objects(self, steps: list[Step]) -> PlanarObjects:
        """The objects the steps found, one slot per step (-1 where z_pres is 0), with their
        categories and resting poses."""
        return self.classes.to_objects(found_objects(steps))

    def objects_with_candidate(self, steps: list[Step], min_prob: float) -> PlanarObjects:
        """The objects the steps found, and in the slot of the step that stopped its proposal too,
        where q(another object) was above min_prob there (a candidate for render-and-compare to
        accept or reject: where AIR misses a close neighbour, the step that stopped usually looked
        at it; benchmarks/count_errors.py)."""
        found = found_objects(steps)
        pres_prob = torch.stack([s.pres_prob for s in steps], 1)  # (B, N)
        # the first step that said 'no more' (a step dropped as found again, AIRConfig.duplicate_skip,
        # said yes; every step after the first 'no' has q 0)
        said_no = pres_prob <= self.config.presence_threshold
        stop = said_no & (said_no.cumsum(1) == 1)
        candidate = stop & (pres_prob > min_prob)
        identity = torch.stack([s.identity for s in steps], 1)
        return self.classes.to_objects(replace(found, category=torch.where(candidate, identity, found.category)))

    def render_steps(self, steps: list[Step], hard: bool = False, batch_size: int | None = None) -> torch.Tensor:
        """(B, H, W, 3) soft render of the objects the steps found (hard: the non-differentiable render;
        no steps: the bare table, batch_size times)."""
        if not steps:
            return self.generative.render_hard(PlanarObjects.empty(batch_size, device=self.generative.device))
        if hard:
            return self.render_found(found_objects(steps))
        objects = self.objects(steps)
        if self.config.count_estimator == "concrete" and self.training:
            # the Concrete relaxation: every step's object is drawn, with opacity its relaxed z_pres
            presence = torch.stack([s.z_pres for s in steps], 1)
            identity = torch.stack([s.identity for s in steps], 1)
            return self.generative.render(replace(objects, category=identity), opacity=presence)
        return self.generative.render(objects)

    def render_found(self, found: PlanarObjects) -> torch.Tensor:
        """(B, H, W, 3) the hard render, without gradients, of objects whose `category` holds identity
        classes (-1: none; the guide's steps, or the true objects the sleep phase's trace has assigned
        to steps so far): what DAIR's steps read the image against."""
        with torch.no_grad():
            return self.generative.render_hard(self.classes.to_objects(found).detach())

    def log_likelihood(self, images: torch.Tensor, rendered: torch.Tensor, iteration: int | None = None) -> torch.Tensor:
        """(B, H, W) Gaussian log p(x | z) per pixel (GenerativeModel.log_likelihood)."""
        return self.generative.log_likelihood(images, rendered, iteration)

    def reward_statistics_unset(self) -> bool:
        """Whether the NVIL running statistics still hold their initial values (no batch seen)."""
        return statistics_unset(self.reward_mean, self.reward_var, self.signal_var)

    def loss(self, images: torch.Tensor, iteration: int, score_weight: float = 1.0,
             enumerate_images: int | None = None) -> tuple[torch.Tensor, dict]:
        """Surrogate loss whose gradient estimates -grad ELBO, and diagnostics; images (B, H, W, 3).
        enumerate_images: the images whose identity is enumerated (default config.enumerate_images;
        data-parallel training gives each process its share).

        Continuous latents: reparameterized, through the renderer. The discrete ones: the
        estimators config.count_estimator and config.identity_signal choose (objectives.py).
        Training mode moves the estimators' running statistics.
        """
        if not self.classes.are_categories:
            raise ValueError("the ELBO objective's estimators enumerate categories, not resting poses: train AIR "
                             "for objects that rest several ways by the sleep phase (train-air --sleep)")
        steps, image_code = self._run_guide(images, greedy=False)
        objects, presence = self.objects(steps), torch.stack([s.z_pres for s in steps], 1)
        elbo = sample_elbo(self.generative, images, self.render_steps(steps), steps, objects, presence, iteration)
        signal, baseline_loss = nvil_signal(elbo.value, self.baseline(image_code.detach()), self.reward_mean,
                                            self.reward_var, self.signal_var, self.training)
        if self.config.identity_signal == "enumerate":
            identity = enumerated_identity(signal, elbo, self.generative, images, steps, objects, presence, iteration,
                                           enumerate_images)
        elif self.config.identity_signal == "local":
            identity = local_identity(signal, elbo, steps, self.local_baseline, self.local_mean, self.local_var,
                                      self.config.glimpse_px, self.training)
        else:
            identity = global_identity(signal, elbo)
        pixels = images[0].numel()
        surrogate = (-(elbo.value / pixels) - score_weight * identity.score / self.config.max_steps
                     - identity.objective / pixels)
        loss = (surrogate + baseline_loss + identity.baseline_loss).mean()
        counts = (presence > 0.5).sum(1)
        return loss, {"elbo": float(elbo.value.detach().mean()), "log_lik": float(elbo.log_lik.detach().mean()),
                      "counts": counts}
