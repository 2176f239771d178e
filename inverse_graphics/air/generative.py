"""The generative model p(x, z) of tabletop images, for one camera, table and catalog.

Truncated geometric p(n), uniform identity, position Normal(0, prior_position_std) on the
table, uniform yaw, Normal colour logits (these continuous priors are evaluated in the guide's
step, at its samples), no two objects inside one another, and a Gaussian likelihood of the
image given the soft render of the scene (occlusion comes from the renderer), evaluated on
the image and on blurred copies of it (a pyramid), so an object a few pixels off still has a
gradient. Latents come in as PlanarObjects (B, N slots) and a presence (B, N) in [0, 1].

Optionally (fit_appearance, used by the wake phase, air/wake.py) the table's albedo and a global
light gain are parameters fitted to the user's images; without it nothing here changes.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn
from torch.distributions import Normal

from ..assets import ObjectCatalog
from ..camera import Camera
from ..rendering.likelihood import gaussian_blur, make_planar_renderer
from ..rendering.renderer import SceneRenderer
from ..scene import PlanarObjects, Table
from .config import AIRConfig, anneal


class TableAppearance(nn.Module):
    """Appearance nuisances fitted by the wake phase: the table's albedo (3 logits) and, optionally,
    a global light gain (its log) that multiplies the whole render."""

    def __init__(self, color: tuple[float, float, float], gain: bool = False):
        super().__init__()
        self.table_logits = nn.Parameter(torch.logit(torch.tensor(color, dtype=torch.float32).clamp(1e-3, 1 - 1e-3)))
        self.register_parameter("log_gain", nn.Parameter(torch.zeros(())) if gain else None)

    def color(self) -> torch.Tensor:
        """(3,) the table's albedo in (0, 1)."""
        return torch.sigmoid(self.table_logits)

    def gain(self) -> torch.Tensor:
        """() the light gain (1 when not fitted)."""
        return self.log_gain.exp() if self.log_gain is not None else self.table_logits.new_ones(())

    def key(self) -> tuple:
        """The current values, as floats: what a cached render of the bare table depends on."""
        return tuple(torch.cat([self.table_logits.detach(), self.gain().detach().reshape(1)]).tolist())


class GenerativeModel(nn.Module):
    """Priors and likelihood; no parameters (the renderers are modules, for train/eval) unless
    fit_appearance added the table's albedo and light gain (self.appearance)."""

    def __init__(self, config: AIRConfig, catalog: ObjectCatalog, camera: Camera, table: Table):
        super().__init__()
        self.config, self.catalog, self.camera, self.table = config, catalog, camera, table
        self.renderer = make_planar_renderer(config.renderer, catalog)
        self.hard_renderer = SceneRenderer(catalog, mode="hard", gradients="none")  # DAIR's input, the background
        # footprint radius (m) of each category seen from above, for the no-interpenetration prior
        self.register_buffer("footprint", catalog.footprint_radii(), persistent=False)
        self.register_module("appearance", None)  # TableAppearance once fit_appearance is called
        self._background, self._background_key = None, None

    @property
    def device(self) -> torch.device:
        """Where the model computes (it follows .to(device))."""
        return self.footprint.device

    def fit_appearance(self, gain: bool = False) -> TableAppearance:
        """Makes the table's albedo (initialised from self.table's) and, with gain, a global light gain
        parameters of the model (the wake phase fits them); returns them. Idempotent."""
        if self.appearance is None:
            self.appearance = TableAppearance(self.table.color, gain)
        return self.appearance

    def fitted_table(self) -> Table:
        """self.table with the fitted albedo (self.table itself when there is none)."""
        if self.appearance is None:
            return self.table
        return replace(self.table, color=tuple(self.appearance.color().detach().tolist()))

    def render(self, objects: PlanarObjects, opacity: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H, W, 3) soft render, differentiable in the objects (and in opacity (B, N) in [0, 1])
        and in the fitted appearance, if any."""
        if self.appearance is None:
            return self.renderer(objects, self.camera, self.table, opacity=opacity)
        table = self.fitted_table()
        rgb = self.renderer(objects, self.camera, table, opacity=opacity)
        color = self.appearance.color()
        if torch.is_grad_enabled() and color.requires_grad:
            # The render is linear in the table's albedo (rgb = bare + visible x albedo, per channel):
            # the renderers take it as constants, so its gradient comes from a render with a black table.
            with torch.no_grad():
                bare = self.renderer(objects, self.camera, replace(table, color=(0.0, 0.0, 0.0)), opacity=opacity)
            visible = (rgb.detach() - bare) / color.detach()
            rgb = rgb + visible * (color - color.detach())
        return rgb * self.appearance.gain()

    def render_hard(self, objects: PlanarObjects) -> torch.Tensor:
        """(B, H, W, 3) the non-differentiable render."""
        if self.appearance is None:
            return self.hard_renderer(objects.to_batch(self.catalog, self.camera, self.table)).rgb
        rgb = self.hard_renderer(objects.to_batch(self.catalog, self.camera, self.fitted_table())).rgb
        return rgb * self.appearance.gain().detach()

    def background(self) -> torch.Tensor:
        """(1, 3, H, W) the bare table as the camera sees it (cached; rendered again when the
        fitted appearance has changed)."""
        key = (self.device, None if self.appearance is None else self.appearance.key())
        if self._background is None or key != self._background_key:
            with torch.no_grad():
                self._background = self.render_hard(PlanarObjects.empty(1, device=self.device)).permute(0, 3, 1, 2)
            self._background_key = key
        return self._background

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint with a fitted appearance makes one to load it into (a model is built without).
        if self.appearance is None and any(k.startswith(prefix + "appearance.") for k in state_dict):
            self.fit_appearance(gain=prefix + "appearance.log_gain" in state_dict)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def log_likelihood(self, images: torch.Tensor, rendered: torch.Tensor, iteration: int | None = None) -> torch.Tensor:
        """(B, H, W) Gaussian log p(x | z) per pixel, summed over channels and pyramid levels.

        Level l has std pixel_std / sqrt(weight_l). Blurred levels make an object
        centimetres off still see the one it should explain (tests of the gradient
        field: at blur 12 px, 61% of far starts point towards the truth, at 0 px 28%).
        During training (iteration given) the sharp level's weight grows from
        fine_weight_start to 1, coarse to fine.
        """
        cfg = self.config
        total = 0.0
        for level, (blur, weight) in enumerate(zip(cfg.blur_levels_px, cfg.level_weights)):
            if level == 0 and iteration is not None:
                weight = weight * anneal(iteration, cfg.fine_anneal_steps, cfg.fine_weight_start, 1.0)
            a, b = (images, rendered) if blur == 0 else (gaussian_blur(images, blur), gaussian_blur(rendered, blur))
            total = total + Normal(b, cfg.pixel_std / math.sqrt(weight)).log_prob(a).sum(-1)
        return total

    def z_pres_prior(self, iteration: int) -> float:
        """p(another object | one more so far), annealed linearly over training."""
        cfg = self.config
        return anneal(iteration, cfg.z_pres_prior_anneal_steps, cfg.z_pres_prior_start, cfg.z_pres_prior_end)

    def log_prior_discrete(self, presence: torch.Tensor, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """presence (B, N) -> (B,) log p(count) (truncated geometric) and (B,) log p(identities) (uniform)."""
        rho = self.z_pres_prior(iteration)
        alive = torch.ones_like(presence[:, 0])
        log_count, log_identity = torch.zeros_like(alive), torch.zeros_like(alive)
        for z_pres in presence.unbind(1):
            hard = (z_pres > 0.5).to(alive.dtype)
            log_count = log_count + alive * (hard * math.log(rho) + (1 - hard) * math.log(1 - rho))
            log_identity = log_identity - hard * math.log(len(self.catalog))
            alive = alive * hard
        return log_count, log_identity

    def log_prior_overlap(self, objects: PlanarObjects, presence: torch.Tensor) -> torch.Tensor:
        """(B,) -overlap_nats_per_mm x the total overlap (mm) of present objects' footprints."""
        radius = self.footprint[objects.category.clamp(min=0)]
        distance = (objects.position[:, :, None] - objects.position[:, None]).norm(dim=-1)  # (B, N, N)
        overlap = torch.relu(radius[:, :, None] + radius[:, None] - distance)
        pairs = (presence[:, :, None] > 0.5) & (presence[:, None] > 0.5) & torch.ones_like(distance, dtype=bool).triu(1)
        return -self.config.overlap_nats_per_mm * 1000 * (overlap * pairs).flatten(1).sum(1)
