"""Attend, Infer, Repeat for tabletop scenes: the inference network and the generative model.

Latents of step t (one object; Eslami et al. 2016, sec. 3.3, adapted):
- z_pres (B,): Bernoulli, 'is there another object?'; once 0, every later step is 0;
- z_where (B, 2): the object's position on the table (x, y), metres, Normal;
- z_what: identity (B,) Categorical over the catalog; yaw (B,) radians, Normal;
  colour (B, 3), Normal in logit space (colour = sigmoid).

The guide runs an LSTM for up to N steps. Each step sees the image code and the
previous step's latents, proposes z_pres and z_where, then takes a glimpse of
the image around the projection of z_where (a spatial transformer: the 'attend'
part) from which it proposes z_what. The DAIR variant encodes the difference
between the image and a render of the objects found so far instead of the image.

The generative model: truncated geometric p(n), uniform identity, position
Normal(0, prior_position_std) on the table, uniform yaw, Normal colour logits,
and a Gaussian likelihood of the image given the soft render of the scene
(occlusion comes from the renderer), evaluated on the image and on blurred
copies of it (a pyramid), so an object a few pixels off still has a gradient.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal, RelaxedBernoulli

from ..assets import ObjectCatalog
from ..rendering.likelihood import gaussian_blur, make_planar_renderer
from ..rendering.renderer import SceneRenderer
from ..camera import Camera, pixel_to_table
from ..scene import MEAN_SHADING, OBJECT_HEIGHT, PlanarObjects, Table

MAX_OFFSET = 0.03  # metres: how far the glimpse may move the attended position


@dataclass
class AIRConfig:
    max_steps: int = 3
    dair: bool = False
    renderer: str = "pytorch3d"  # likelihood renderer, rendering.likelihood.RENDERER_NAMES
    count_estimator: str = "reinforce"  # z_pres gradients: 'reinforce' (NVIL) or 'concrete' (relaxed)
    # Identity gradients: 'global' (score function, the ELBO as reward), 'local' (score function, the
    # log-likelihood of the pixels around the object as reward) or 'enumerate' (exact expectation over
    # the categories at one random step per image, the others held at their samples).
    identity_signal: str = "enumerate"
    enumerate_images: int = 8  # images per batch whose identity is enumerated (each costs C renders)
    # q(yaw | identity, x): a yaw proposal per category, each trained (in the enumeration) on the
    # render of its own category whatever q(identity) currently favours. With one shared yaw, the
    # yaw-free sphere explains every object best until yaw is right, and q(identity) moved there.
    yaw_per_category: bool = True
    # Identity's likelihood is tempered by this factor at first, annealed geometrically to 1: while
    # yaw is still unknown a sphere (yaw-free) explains every object best, and a q(identity) that
    # collapses onto it early never lets yaw learn for the other shapes.
    identity_temperature_start: float = 30.0
    identity_temperature_steps: int = 600
    # q(identity) gets no likelihood signal for this many iterations (with 'elbo', only its KL to
    # the prior), so that yaws can learn first; the temperature anneal starts after.
    identity_hold_steps: int = 0
    # How q(identity) learns from the enumeration: 'rws' (fit to the enumerated posterior, as in
    # reweighted wake-sleep) or 'elbo' (the ELBO's exact gradient; it collapses onto one category).
    identity_objective: str = "rws"
    hidden: int = 256
    glimpse_px: int = 24  # window side in image pixels
    glimpse_size: int = 16  # window resampled to this many pixels
    pixel_std: float = 0.1  # Gaussian likelihood std per pixel and channel
    blur_levels_px: tuple = (0.0, 4.0, 12.0)  # likelihood pyramid: the image and blurred copies
    level_weights: tuple = (1.0, 4.0, 30.0)  # per level (blurring shrinks differences; these even out gradients)
    fine_weight_start: float = 0.05  # the sharp level's weight is annealed from this to 1...
    fine_anneal_steps: int = 1500  # ...over these iterations (coarse to fine)
    prior_position_std: float = 0.08  # metres
    prior_color_std: float = 1.5  # colour logits
    z_pres_prior_start: float = 0.9  # p(another object | one more so far), annealed linearly...
    z_pres_prior_end: float = 0.5  # ...to this
    z_pres_prior_anneal_steps: int = 2000
    concrete_temperature: float = 0.5
    overlap_nats_per_mm: float = 200.0  # prior: objects rest side by side, never inside one another
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blur_levels_px"] = list(self.blur_levels_px)
        d["level_weights"] = list(self.level_weights)
        return d


def air_config_from_dict(d: dict) -> AIRConfig:
    # checkpoints from before these options had one shared yaw and the ELBO identity objective
    d = {"yaw_per_category": False, "identity_objective": "elbo", **d}
    return AIRConfig(**{**d, "blur_levels_px": tuple(d["blur_levels_px"]), "level_weights": tuple(d["level_weights"])})


class Step(NamedTuple):
    """One guide step's samples and the distributions they came from, all batched over B."""

    z_pres: torch.Tensor  # (B,) in {0, 1} (or relaxed in (0, 1))
    position: torch.Tensor  # (B, 2) metres
    identity: torch.Tensor  # (B,) int64
    yaw: torch.Tensor  # (B,) radians
    color: torch.Tensor  # (B, 3) in (0, 1)
    pres_prob: torch.Tensor  # (B,)
    log_q_continuous: torch.Tensor  # (B,) position, yaw, colour
    log_q_pres: torch.Tensor  # (B,)
    log_q_identity: torch.Tensor  # (B,)
    log_p_continuous: torch.Tensor  # (B,)
    identity_logits: torch.Tensor  # (B, C)
    glimpse_center: torch.Tensor  # (B, 2) pixels (u, v) of the object's position
    glimpse_code: torch.Tensor  # (B, 128) detached glimpse features, for the local baseline
    yaw_per_category: torch.Tensor  # (B, C) radians: a yaw sample for each category (the enumeration's)
    yaw_entropy: torch.Tensor  # (B, C) nats: entropy of q(yaw | category)


class Encoder(nn.Module):
    """(B, 3, H, W) image -> (B, out) code.  (ReLUs here act in place: they set the speed of
    batched inference, where a copy per activation cost a fifth of the time.)"""

    def __init__(self, out: int, channels=(32, 64, 64, 128)):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c
        self.conv = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(c_in * 16, out), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.fc(self.conv(x))


class GlimpseEncoder(nn.Module):
    """(B, 3, g, g) glimpse -> (B, out)."""

    def __init__(self, out: int, size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                 nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, out), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.net(x)


def image_to_window(images: torch.Tensor, center_px: torch.Tensor, window_px: int, size: int) -> torch.Tensor:
    """Spatial transformer: (B, 3, H, W) images, (B, 2) window centres (u, v) in pixels
    -> (B, 3, size, size) windows of window_px x window_px image pixels (differentiable in the centre)."""
    B, _, H, W = images.shape
    theta = torch.zeros(B, 2, 3, dtype=images.dtype)
    theta[:, 0, 0] = window_px / W
    theta[:, 1, 1] = window_px / H
    # align_corners=False: pixel u's centre is at normalized (2u + 1) / W - 1
    theta[:, 0, 2] = (2 * center_px[:, 0] + 1) / W - 1
    theta[:, 1, 2] = (2 * center_px[:, 1] + 1) / H - 1
    grid = F.affine_grid(theta, (B, 3, size, size), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="border")


class WhereMap(nn.Module):
    """(B, 6, H, W) image and what the background leaves unexplained -> (B, F, H/4, W/4) features
    and (B, H/4 * W/4) base logits of a spatial softmax over where the next object is.

    The base logits include the unexplained residual's magnitude per cell, so from the
    first iteration attention goes where the image differs from the bare table (the
    generative model's own background); training refines it.
    """

    def __init__(self, features: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(6, 32, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(64, features, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True))
        self.base = nn.Conv2d(features, 1, 1)
        # How strongly cells that differ from the bare table attract attention (learned).
        self.evidence_gain = nn.Parameter(torch.tensor(30.0))

    def forward(self, x):
        f = self.net(x)
        evidence = F.adaptive_avg_pool2d(x[:, 3:].abs().sum(1, keepdim=True), f.shape[-2:])
        return f, (self.base(f) + self.evidence_gain * evidence).flatten(1)


class Guide(nn.Module):
    """The inference network q(z | x)."""

    def __init__(self, config: AIRConfig, num_categories: int, camera: Camera):
        super().__init__()
        self.config, self.C, self.camera = config, num_categories, camera
        h = config.hidden
        self.encoder = Encoder(h)
        # previous latents: z_pres, position (2), identity one-hot (C), cos/sin yaw (2), colour (3)
        self.prev_dim = 1 + 2 + num_categories + 2 + 3
        self.lstm = nn.LSTMCell(h + self.prev_dim, h)
        # Where: a spatial softmax over image cells, queried by the LSTM state, so the proposal is
        # tied to image evidence from the start (a fully connected head learned to put every object
        # in the least visible corner, whatever the image).
        self.where_map = WhereMap(64)
        self.where_query = nn.Linear(h, 64)
        self.where_head = nn.Linear(h, 1 + 2)  # z_pres logit, position std (2)
        self.glimpse_encoder = GlimpseEncoder(128, config.glimpse_size)
        # identity, yaw (cos, sin, std; per category or shared), colour (mean, std), position offset
        # from the attention's cell (2)
        self.yaw_heads = num_categories if config.yaw_per_category else 1
        self.register_buffer("yaw_fold", torch.ones(num_categories), persistent=False)  # set by AIR
        self.what_head = nn.Sequential(nn.Linear(128 + h, 128), nn.ReLU(),
                                       nn.Linear(128, num_categories + 3 * self.yaw_heads + 6 + 2))
        self.pres_gain = nn.Parameter(torch.tensor(0.5))
        self.pres_threshold = nn.Parameter(torch.tensor(10.0))
        # Start with a wide position spread.
        nn.init.zeros_(self.where_head.weight)
        with torch.no_grad():
            self.where_head.bias.copy_(torch.tensor([0.0, -1.0, -1.0]))

    def initial_previous(self, B: int) -> torch.Tensor:
        prev = torch.zeros(B, self.prev_dim)
        prev[:, 0] = 1.0  # 'the previous step found an object'
        return prev

    def where_mean(self, h: torch.Tensor, where_maps, found: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected object position (B, 2) metres and the attention's peak logit (B,) (a soft max
        over cells: how much unexplained evidence is left) under the spatial softmax.

        found: pixel centres (B, 2) of earlier steps' objects, whose cells are suppressed
        (inhibition of return), so that AIR's steps attend to different objects.
        """
        features, base = where_maps
        B, Fdim, h_cells, w_cells = features.shape
        logits = base + torch.einsum("bfhw,bf->bhw", features, self.where_query(h)).flatten(1) / Fdim ** 0.5
        H, W = self.camera.image_size
        cell_v, cell_u = torch.meshgrid((torch.arange(h_cells) + 0.5) * H / h_cells - 0.5,
                                        (torch.arange(w_cells) + 0.5) * W / w_cells - 0.5, indexing="ij")
        cells = torch.stack([cell_u.flatten(), cell_v.flatten()], -1)  # (cells, 2) pixels
        for center in found:
            d2 = ((cells[None] - center[:, None].detach()) ** 2).sum(-1)
            logits = logits - 50.0 * torch.exp(-d2 / (2 * (1.5 * H / h_cells) ** 2))
        uv = logits.softmax(-1) @ cells
        return pixel_to_table(self.camera, uv, OBJECT_HEIGHT), logits.logsumexp(-1)

    def step(self, code: torch.Tensor, image: torch.Tensor, where_maps, found: list[torch.Tensor], state,
             prev: torch.Tensor, alive: torch.Tensor, greedy: bool = False):
        """One object.  code (B, hidden); image (B, 3, H, W); where_maps from WhereMap;
        found: earlier steps' glimpse centres; alive (B,) previous z_pres."""
        cfg = self.config
        h, c = self.lstm(torch.cat([code, prev], -1), state)
        where = self.where_head(h)
        mean, peak = self.where_mean(h, where_maps, found)
        # 'Another object?' also reads how much evidence the attention has left to explain.
        prob = torch.sigmoid(where[:, 0] + self.pres_gain * (peak - self.pres_threshold)).clamp(1e-4, 1 - 1e-4)
        alive_hard = (alive > 0.5).to(prob.dtype)
        pres_prob = prob * alive_hard  # 0 once an earlier step said 'no more objects'
        std = F.softplus(where[:, 1:3]) * 0.05 + 1e-4

        # Attend: a glimpse where the attention points; from it, what the object is and how far
        # its centre lies from the attended spot.
        coarse, _ = self.camera.project(torch.cat([mean, torch.full_like(mean[:, :1], OBJECT_HEIGHT)], -1))
        window = image_to_window(image, coarse, cfg.glimpse_px, cfg.glimpse_size)
        glimpse_code = self.glimpse_encoder(window)
        what = self.what_head(torch.cat([glimpse_code, h], -1))
        mean = mean + torch.tanh(what[:, -2:]) * MAX_OFFSET
        q_position = Normal(mean, std)
        position = mean if greedy else q_position.rsample()
        center, _ = self.camera.project(torch.cat([position, torch.full_like(position[:, :1], OBJECT_HEIGHT)], -1))
        logits = what[:, :self.C]
        q_identity = Categorical(logits=logits)
        identity = logits.argmax(-1) if greedy else q_identity.sample()
        yaw_params = what[:, self.C:self.C + 3 * self.yaw_heads].view(-1, self.yaw_heads, 3)
        # Per category, the head gives (cos k yaw, sin k yaw) for a k-fold symmetric shape: the
        # map from image to yaw is then continuous (yaw and yaw + 2 pi / k look the same).
        fold = self.yaw_fold if self.yaw_heads > 1 else torch.ones(1)
        yaw_means = (torch.atan2(yaw_params[..., 1], yaw_params[..., 0]) / fold).expand(-1, self.C)  # (B, C)
        q_yaws = Normal(yaw_means, ((F.softplus(yaw_params[..., 2]) + 1e-3) / fold).expand(-1, self.C))
        yaws = yaw_means if greedy else q_yaws.rsample()
        yaw = yaws.gather(1, identity[:, None])[:, 0]
        log_q_yaw = q_yaws.log_prob(yaws).gather(1, identity[:, None])[:, 0]
        # Colour starts from the glimpse's central colour, undoing the mean shading, so an object
        # placed on the right spot is roughly the right colour from the start.
        centre = window[:, :, cfg.glimpse_size // 2 - 2:cfg.glimpse_size // 2 + 2,
                        cfg.glimpse_size // 2 - 2:cfg.glimpse_size // 2 + 2].mean((2, 3))
        k = self.C + 3 * self.yaw_heads
        color_mean = torch.logit((centre / MEAN_SHADING).clamp(0.02, 0.98)) + what[:, k:k + 3]
        q_color = Normal(color_mean, F.softplus(what[:, k + 3:k + 6]) * 0.5 + 1e-3)
        color_logit = color_mean if greedy else q_color.rsample()

        if greedy:
            z_pres = (pres_prob > 0.5).to(image.dtype)
        elif cfg.count_estimator == "concrete":
            z_pres = RelaxedBernoulli(torch.tensor(cfg.concrete_temperature), probs=prob).rsample() * alive
        else:
            z_pres = Bernoulli(pres_prob).sample()
        hard_pres = (z_pres > 0.5).to(image.dtype)
        log_q_pres = Bernoulli(prob).log_prob(hard_pres) * alive_hard
        log_q_cont = (q_position.log_prob(position).sum(-1) + log_q_yaw
                      + q_color.log_prob(color_logit).sum(-1))
        log_p_cont = (Normal(0.0, cfg.prior_position_std).log_prob(position).sum(-1) - math.log(2 * math.pi)
                      + Normal(0.0, cfg.prior_color_std).log_prob(color_logit).sum(-1))
        step = Step(z_pres, position, identity, yaw, torch.sigmoid(color_logit), pres_prob,
                    log_q_cont * hard_pres, log_q_pres, q_identity.log_prob(identity) * hard_pres,
                    log_p_cont * hard_pres, logits, center, glimpse_code.detach(), yaws, q_yaws.entropy())
        prev = torch.cat([z_pres[:, None], position, F.one_hot(identity, self.C).to(image.dtype),
                          torch.stack([yaw.cos(), yaw.sin()], -1), step.color], -1)
        return step, (h, c), prev


class AIR(nn.Module):
    """Guide + generative model for one camera, table and catalog."""

    def __init__(self, config: AIRConfig, catalog: ObjectCatalog, camera: Camera, table: Table):
        super().__init__()
        self.config, self.catalog, self.camera, self.table = config, catalog, camera, table
        self.guide = Guide(config, len(catalog), camera)
        self.guide.yaw_fold.copy_(torch.tensor([max(1, c.yaw_symmetry_order()) for c in catalog.categories],
                                               dtype=torch.float32))
        self.renderer = make_planar_renderer(config.renderer, catalog)
        self.residual_renderer = SceneRenderer(catalog, mode="hard", gradients="none")  # DAIR's input
        # footprint radius (m) of each category seen from above, for the no-interpenetration prior
        self.register_buffer("footprint", catalog.footprint_radii(), persistent=False)
        # NVIL: a learned per-step baseline on the (detached) image code, and running reward statistics.
        self.baseline = nn.Sequential(nn.Linear(config.hidden, 128), nn.ReLU(), nn.Linear(128, config.max_steps))
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_var", torch.ones(()))
        self.register_buffer("signal_var", torch.ones(config.max_steps))
        # 'local' identity signal: a baseline per step from the glimpse, and running statistics.
        self.local_baseline = nn.Sequential(nn.Linear(128 + config.max_steps, 64), nn.ReLU(), nn.Linear(64, 1))
        self.register_buffer("local_mean", torch.zeros(config.max_steps))
        self.register_buffer("local_var", torch.ones(config.max_steps))

    def infer(self, images: torch.Tensor, greedy: bool = False) -> list[Step]:
        """images (B, H, W, 3) in [0, 1] -> one Step per guide step."""
        return self._run_guide(images, greedy)[0]

    def _run_guide(self, images: torch.Tensor, greedy: bool) -> tuple[list[Step], torch.Tensor]:
        """Steps, and the code (B, hidden) of the image itself (the baseline's input)."""
        if images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must have shape (B, H, W, 3), got {tuple(images.shape)}")
        if tuple(images.shape[1:3]) != tuple(self.camera.image_size):
            raise ValueError(f"images are {tuple(images.shape[1:3])} pixels, the model's camera expects "
                             f"{tuple(self.camera.image_size)}")
        B = images.shape[0]
        x = images.permute(0, 3, 1, 2)
        code = image_code = self.guide.encoder(x)
        state = (torch.zeros(B, self.config.hidden), torch.zeros(B, self.config.hidden))
        prev = self.guide.initial_previous(B)
        alive = torch.ones(B)
        steps, found = [], []
        if not self.config.dair:  # DAIR builds its maps at every step
            where_maps = self.guide.where_map(torch.cat([x, x - self.background().expand(B, -1, -1, -1)], 1))
        for t in range(self.config.max_steps):
            if self.config.dair:  # what the objects found so far (none at first: the bare table) leave unexplained
                with torch.no_grad():
                    residual = (images - self.render_steps(steps, hard=True, batch_size=B)).permute(0, 3, 1, 2)
                code = self.guide.encoder(residual)
                where_maps = self.guide.where_map(torch.cat([x, residual], 1))
            # DAIR, too, suppresses the cells of objects already found, as AIR does.
            step, state, prev = self.guide.step(code, x, where_maps, found, state, prev, alive, greedy)
            steps.append(step)
            found.append(step.glimpse_center)
            alive = step.z_pres
        return steps, image_code

    def background(self) -> torch.Tensor:
        """(1, 3, H, W) the bare table as the camera sees it (cached)."""
        if getattr(self, "_background", None) is None:
            with torch.no_grad():
                self._background = self.render_steps([], hard=True, batch_size=1).permute(0, 3, 1, 2)
        return self._background

    def objects(self, steps: list[Step]) -> PlanarObjects:
        """The objects the steps found, one slot per step (-1 where z_pres is 0)."""
        presence = torch.stack([s.z_pres for s in steps], 1)
        identity = torch.stack([s.identity for s in steps], 1)
        return PlanarObjects(torch.where(presence > 0.5, identity, -1), torch.stack([s.position for s in steps], 1),
                             torch.stack([s.yaw for s in steps], 1), torch.stack([s.color for s in steps], 1))

    def scene_tensors(self, steps: list[Step]):
        """category (B, N) (-1 absent), position (B, N, 2), yaw (B, N), color (B, N, 3), presence (B, N)."""
        o = self.objects(steps)
        return o.category, o.position, o.yaw, o.color, torch.stack([s.z_pres for s in steps], 1)

    def render_steps(self, steps: list[Step], hard: bool = False, batch_size: int | None = None) -> torch.Tensor:
        """(B, H, W, 3) soft render of the objects the steps found (hard: the non-differentiable render)."""
        if not steps:
            return self.residual_renderer(PlanarObjects.empty(batch_size).to_batch(
                self.catalog, self.camera, self.table)).rgb
        objects = self.objects(steps)
        if hard:
            return self.residual_renderer(objects.detach().to_batch(self.catalog, self.camera, self.table)).rgb
        if self.config.count_estimator == "concrete" and self.training:
            presence = torch.stack([s.z_pres for s in steps], 1)
            identity = torch.stack([s.identity for s in steps], 1)
            return self.renderer(replace(objects, category=identity), self.camera, self.table, opacity=presence)
        return self.renderer(objects, self.camera, self.table)

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
                frac = min(1.0, iteration / max(1, cfg.fine_anneal_steps))
                weight = weight * (cfg.fine_weight_start + frac * (1 - cfg.fine_weight_start))
            a, b = (images, rendered) if blur == 0 else (gaussian_blur(images, blur), gaussian_blur(rendered, blur))
            total = total + Normal(b, cfg.pixel_std / math.sqrt(weight)).log_prob(a).sum(-1)
        return total

    def local_rewards(self, log_lik_map: torch.Tensor, steps: list[Step]) -> torch.Tensor:
        """(B, T) log-likelihood of the pixels within glimpse_px of each step's object."""
        H, W = log_lik_map.shape[1:]
        v, u = torch.meshgrid(torch.arange(H, dtype=log_lik_map.dtype), torch.arange(W, dtype=log_lik_map.dtype),
                              indexing="ij")
        half = self.config.glimpse_px / 2
        rewards = []
        for s in steps:
            c = s.glimpse_center.detach()
            window = ((u[None] - c[:, 0, None, None]).abs() <= half) & ((v[None] - c[:, 1, None, None]).abs() <= half)
            rewards.append((log_lik_map * window).flatten(1).sum(1))
        return torch.stack(rewards, 1)

    def z_pres_prior(self, iteration: int) -> float:
        cfg = self.config
        frac = min(1.0, iteration / max(1, cfg.z_pres_prior_anneal_steps))
        return cfg.z_pres_prior_start + frac * (cfg.z_pres_prior_end - cfg.z_pres_prior_start)

    def log_prior_discrete(self, steps: list[Step], iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) log p(count) (truncated geometric) and (B,) log p(identities) (uniform)."""
        rho = self.z_pres_prior(iteration)
        alive = torch.ones_like(steps[0].pres_prob)
        log_count, log_identity = torch.zeros_like(alive), torch.zeros_like(alive)
        for s in steps:
            hard = (s.z_pres > 0.5).to(alive.dtype)
            log_count = log_count + alive * (hard * math.log(rho) + (1 - hard) * math.log(1 - rho))
            log_identity = log_identity - hard * math.log(len(self.catalog))
            alive = alive * hard
        return log_count, log_identity

    def log_prior_overlap(self, steps: list[Step]) -> torch.Tensor:
        """(B,) -overlap_nats_per_mm x the total overlap (mm) of present objects' footprints."""
        category, position, _, _, presence = self.scene_tensors(steps)
        radius = self.footprint[category.clamp(min=0)]
        distance = (position[:, :, None] - position[:, None]).norm(dim=-1)  # (B, T, T)
        overlap = torch.relu(radius[:, :, None] + radius[:, None] - distance)
        pairs = (presence[:, :, None] > 0.5) & (presence[:, None] > 0.5) & torch.ones_like(distance, dtype=bool).triu(1)
        return -self.config.overlap_nats_per_mm * 1000 * (overlap * pairs).flatten(1).sum(1)

    def z_pres_kl(self, steps: list[Step], iteration: int) -> torch.Tensor:
        """(B,) sum over live steps of KL(Bernoulli(q) || Bernoulli(prior)), for the relaxed estimator."""
        rho = torch.tensor(self.z_pres_prior(iteration))
        total = 0.0
        for s in steps:
            p = s.pres_prob.clamp(1e-4, 1 - 1e-4)
            kl = p * (p / rho).log() + (1 - p) * ((1 - p) / (1 - rho)).log()
            total = total + kl * (s.pres_prob > 0)
        return total

    def enumerated_identity(self, images: torch.Tensor, steps: list[Step], iteration: int) -> torch.Tensor:
        """(B,) identity's (and, with yaw_per_category, yaw's) objective for one random present
        step t per image, every category rendered with the other latents held fixed.

        identity_objective 'rws': the cross-entropy of q(identity_t) against the exact (tempered)
        posterior over categories; 'elbo': E_q[log p(x | z)] - KL(q || uniform), whose gradient
        in q's probabilities is exact for that step. With yaw_per_category, category c is
        rendered with its own yaw sample, and every q(yaw | c) is trained on its render
        (likelihood plus entropy) at full weight, not weighted by q(c): each learns 'if this
        were a c, how is it turned'.
        """
        C = len(self.catalog)
        B = min(images.shape[0], self.config.enumerate_images)  # the batch is shuffled: take the first B
        images = images[:B]
        category, position, yaw, color, presence = (x[:B] for x in self.scene_tensors(steps))
        present = presence > 0.5
        if not present.any():
            return torch.zeros(())
        # a random present step per image (images with no object keep t = 0 and are masked out)
        t = torch.multinomial(present.float() + 1e-6 * ~present.any(1, keepdim=True), 1)[:, 0]
        rows = torch.arange(B)
        flat = torch.arange(C * B)
        alternatives = category.repeat(C, 1)  # (C B, T), category-major
        alternatives[flat, t.repeat(C)] = torch.arange(C).repeat_interleave(B)
        per_category = self.config.yaw_per_category
        alternative_yaw = yaw.detach().repeat(C, 1)
        if per_category:
            yaws = torch.stack([s.yaw_per_category[:B] for s in steps], 1)[rows, t]  # (B, C)
            alternative_yaw = alternative_yaw.index_put((flat, t.repeat(C)), yaws.T.reshape(-1))
        with torch.set_grad_enabled(per_category and torch.is_grad_enabled()):
            rendered = self.renderer(PlanarObjects(alternatives, position.detach().repeat(C, 1, 1), alternative_yaw,
                                                   color.detach().repeat(C, 1, 1)), self.camera, self.table)
            ll = self.log_likelihood(images.repeat(C, 1, 1, 1), rendered, iteration).flatten(1).sum(1).view(C, B).T
        logits = torch.stack([s.identity_logits[:B] for s in steps], 1)[rows, t]  # (B, C)
        probs = logits.softmax(-1)
        kl = (probs * logits.log_softmax(-1)).sum(-1) + math.log(C)
        cfg = self.config
        frac = min(1.0, max(0, iteration - cfg.identity_hold_steps) / max(1, cfg.identity_temperature_steps))
        temperature = cfg.identity_temperature_start ** (1 - frac)
        held = iteration < cfg.identity_hold_steps
        if cfg.identity_objective == "rws":
            # Reweighted wake-sleep: q(identity) is fitted (cross-entropy, weighted as one image's
            # pixels) to the exact posterior over categories given the other latents, per object.
            # The ELBO's own gradient (the mode-seeking KL) moved every object onto whichever
            # category was best on average - the sphere - within a few hundred iterations.
            posterior = (ll.detach() / temperature).softmax(-1)
            fit = (posterior * logits.log_softmax(-1)).sum(-1) * images[0].numel()
            value = 0.0 if held else fit
        else:
            value = (0.0 if held else (probs * (ll.detach() - ll.detach().mean(1, keepdim=True))).sum(-1)
                     / temperature) - kl
        if per_category:  # every q(yaw | c) on its own render, at full sharpness (blur hides yaw)
            sharp = self.log_likelihood(images.repeat(C, 1, 1, 1), rendered).flatten(1).sum(1).view(C, B).T
            entropy = torch.stack([s.yaw_entropy[:B] for s in steps], 1)[rows, t]
            value = value + (sharp + entropy).sum(-1)
        return (value * present[rows, t]).sum() / len(steps[0].identity_logits)  # per image of the full batch

    def reward_statistics_unset(self) -> bool:
        """Whether the NVIL running statistics still hold their initial values (no batch seen)."""
        return bool(self.reward_mean == 0) and bool(self.reward_var == 1) and bool((self.signal_var == 1).all())

    def loss(self, images: torch.Tensor, iteration: int, score_weight: float = 1.0,
             baseline_momentum: float = 0.99) -> tuple[torch.Tensor, dict]:
        """Surrogate loss whose gradient estimates -grad ELBO, and diagnostics.

        Continuous latents: reparameterized, through the renderer. Identity (and
        z_pres with 'reinforce'): score function, with the NVIL learning signal
        (ELBO - running mean) / running std - learned baseline, per step, again
        normalized by its running std. With 'concrete', z_pres is relaxed and
        the render is differentiable in it (objects get opacity z_pres).
        """
        steps, image_code = self._run_guide(images, greedy=False)
        rendered = self.render_steps(steps)
        log_lik_map = self.log_likelihood(images, rendered, iteration)
        log_lik = log_lik_map.flatten(1).sum(1)
        relaxed = self.config.count_estimator == "concrete"
        log_p_count, log_p_identity = self.log_prior_discrete(steps, iteration)
        log_p = log_p_identity + sum(s.log_p_continuous for s in steps) + self.log_prior_overlap(steps)
        log_q_cont = sum(s.log_q_continuous for s in steps)
        log_q_identity = torch.stack([s.log_q_identity for s in steps], 1)  # (B, T)
        log_q_pres = torch.stack([s.log_q_pres for s in steps], 1) * (0.0 if relaxed else 1.0)
        log_q_disc = log_q_identity + log_q_pres
        if relaxed:  # z_pres's KL to its prior in closed form, differentiable in q's presence probabilities
            count_term = -self.z_pres_kl(steps, iteration)
        else:
            count_term = log_p_count
        elbo = log_lik + log_p + count_term - log_q_cont - log_q_disc.sum(1).detach()

        # A run's first batch sets the running statistics outright. ELBOs are -1e4 to -1e6 nats;
        # from the initial (0, 1) every early signal was hugely negative, which taught a guide
        # started from trained weights to say 'no object' everywhere.
        momentum = 0.0 if self.training and self.reward_statistics_unset() else baseline_momentum
        with torch.no_grad():
            reward = elbo.detach()
            if self.training:
                self.reward_mean.mul_(momentum).add_((1 - momentum) * reward.mean())
                self.reward_var.mul_(momentum).add_((1 - momentum) * reward.var(unbiased=False))
            centred = (reward - self.reward_mean) / self.reward_var.sqrt().clamp(min=1e-6)
        baseline = self.baseline(image_code.detach())  # (B, T)
        signal = centred[:, None] - baseline.detach()
        if self.training:
            with torch.no_grad():
                self.signal_var.mul_(momentum).add_((1 - momentum) * signal.pow(2).mean(0))
        signal = signal / self.signal_var.sqrt().clamp(min=1.0)
        # A step's discrete choices affect the likelihood only from that step on; the whole ELBO is
        # used as the reward, with the per-step baseline removing the shared part.
        local_loss = 0.0
        enumerated = 0.0
        if self.config.identity_signal == "enumerate":
            enumerated = self.enumerated_identity(images, steps, iteration)
            score = (signal * log_q_pres).sum(1)
        elif self.config.identity_signal == "local":
            # An object's identity mostly changes the pixels around it: rewarding it with those
            # pixels' log-likelihood drops the other objects' noise (biased where objects overlap).
            with torch.no_grad():
                local = self.local_rewards(log_lik_map, steps)
                if self.training:
                    self.local_mean.mul_(baseline_momentum).add_((1 - baseline_momentum) * local.mean(0))
                    self.local_var.mul_(baseline_momentum).add_((1 - baseline_momentum) * local.var(0, unbiased=False))
                local = (local - self.local_mean) / self.local_var.sqrt().clamp(min=1e-6)
            step_id = torch.eye(len(steps)).expand(images.shape[0], -1, -1)
            local_baseline = self.local_baseline(
                torch.cat([torch.stack([s.glimpse_code for s in steps], 1), step_id], -1))[..., 0]  # (B, T)
            local_signal = (local - local_baseline.detach()).clamp(-5, 5)
            present = torch.stack([(s.z_pres > 0.5) for s in steps], 1).to(local.dtype)
            local_loss = ((local_baseline - local).pow(2) * present).mean(1)
            score = (signal * log_q_pres).sum(1) + (local_signal * log_q_identity).sum(1)
        else:
            score = (signal * log_q_disc).sum(1)
        pixels = images[0].numel()
        surrogate = -(elbo / pixels) - score_weight * score / self.config.max_steps - enumerated / pixels
        baseline_loss = (baseline - centred[:, None]).pow(2).mean(1)
        loss = (surrogate + baseline_loss + local_loss).mean()
        counts = torch.stack([(s.z_pres > 0.5) for s in steps], 1).sum(1)
        return loss, {"elbo": float(elbo.detach().mean()), "log_lik": float(log_lik.detach().mean()), "counts": counts}
