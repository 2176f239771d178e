"""The inference network q(z | x): one LSTM step per object (Eslami et al. 2016, sec. 3.3, adapted).

Latents of step t (one object):
- z_pres (B,): Bernoulli, 'is there another object?'; once 0, every later step is 0;
- z_where (B, 2): the object's position on the table (x, y), metres, Normal;
- z_what: identity (B,) Categorical over the catalog; yaw (B,) radians, Normal;
  colour (B, 3), Normal in logit space (colour = sigmoid).

Each step sees the image code and the previous step's latents, proposes z_pres and z_where,
then takes a glimpse of the image around the projection of z_where (a spatial transformer:
the 'attend' part) from which it proposes z_what. The DAIR variant encodes the difference
between the image and a render of the objects found so far instead of the image.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal, RelaxedBernoulli

from ..camera import Camera, pixel_to_table
from ..scene import MEAN_SHADING, OBJECT_HEIGHT, PlanarObjects
from .config import AIRConfig
from .networks import (GLIMPSE_ENCODERS, WHERE_MAPS, Encoder, PresenceEncoder, WhatHead, WhatOutput, found_marks,
                       image_to_window)


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


class Attention(NamedTuple):
    """One step's distributions, before anything is drawn, batched over B."""

    h: torch.Tensor  # (B, hidden) LSTM state
    c: torch.Tensor  # (B, hidden) LSTM cell
    pres_prob: torch.Tensor  # (B,) q(z_pres = 1), before the 'alive' mask
    position_mean: torch.Tensor  # (B, 2) metres: attention plus the what-head's offset
    position_std: torch.Tensor  # (B, 2) metres
    window: torch.Tensor  # (B, 3, g, g) the glimpse identity, yaw and colour are read from
    glimpse_code: torch.Tensor  # (B, 128)
    what: WhatOutput
    coarse_mean: torch.Tensor  # (B, 2) metres: the first glimpse's estimate (the second glimpse's centre)


class GuideState(NamedTuple):
    """What a step passes to the next, batched over B."""

    h: torch.Tensor  # (B, hidden) LSTM state
    c: torch.Tensor  # (B, hidden) LSTM cell
    previous: torch.Tensor  # (B, 1 + 2 + C + 2 + 3) the previous step's latents, encoded
    alive: torch.Tensor  # (B,) the previous step's z_pres
    found: tuple  # earlier steps' glimpse centres, each (B, 2) pixels


def found_objects(steps: list[Step]) -> PlanarObjects:
    """The objects the steps found, one slot per step (category -1 where z_pres is 0), each scored
    by q: the probability that it is present times that of its identity."""
    presence = torch.stack([s.z_pres for s in steps], 1)
    identity = torch.stack([s.identity for s in steps], 1)
    identity_prob = torch.stack([s.identity_logits.softmax(-1) for s in steps], 1).gather(
        2, identity[..., None])[..., 0]
    score = (torch.stack([s.pres_prob for s in steps], 1) * identity_prob).detach()
    return PlanarObjects(torch.where(presence > 0.5, identity, -1), torch.stack([s.position for s in steps], 1),
                         torch.stack([s.yaw for s in steps], 1), torch.stack([s.color for s in steps], 1), score)


class Guide(nn.Module):
    """The inference network q(z | x) for one camera. yaw_orders: each category's k (its shape
    looks the same turned by 2 pi / k); their count is the number of categories C."""

    def __init__(self, config: AIRConfig, camera: Camera, yaw_orders: list[int]):
        super().__init__()
        self.config, self.camera = config, camera
        self.num_categories = C = len(yaw_orders)
        h = config.hidden
        self.encoder = Encoder(h, config.encoder_channels)
        # previous latents: z_pres, position (2), identity one-hot (C), cos/sin yaw (2), colour (3)
        self.previous_dim = 1 + 2 + C + 2 + 3
        self.lstm = nn.LSTMCell(h + self.previous_dim, h)
        # Where: a spatial softmax over image cells, queried by the LSTM state, so the proposal is
        # tied to image evidence from the start (a fully connected head learned to put every object
        # in the least visible corner, whatever the image).
        self.where_map = WHERE_MAPS[config.where_map]()
        self.where_query = nn.Linear(h, self.where_map.features)
        self.where_head = nn.Linear(h, 1 + 2)  # z_pres logit, position std (2)
        self.glimpse_encoder = GLIMPSE_ENCODERS[config.glimpse_encoder](128, config.glimpse_size)
        self.yaw_heads = C if config.yaw_per_category else 1
        self.register_buffer("yaw_fold", torch.tensor(yaw_orders, dtype=torch.float32), persistent=False)
        self.what_head = WhatHead(128 + h, C, self.yaw_heads)
        if config.second_glimpse:  # identity, yaw and colour from a glimpse where the first put the object
            encoder2 = config.glimpse_encoder2 or config.glimpse_encoder
            self.glimpse_encoder2 = GLIMPSE_ENCODERS[encoder2](128, config.glimpse_size)
            self.what_head2 = WhatHead(128 + h, C, self.yaw_heads)
        if config.glimpse_presence:  # starts at 0: the untrained guide decides as before
            self.glimpse_presence = nn.Linear(128, 1)
            nn.init.zeros_(self.glimpse_presence.weight)
            nn.init.zeros_(self.glimpse_presence.bias)
        if config.presence_sees_found:
            self.presence_encoder = PresenceEncoder()
        self.pres_gain = nn.Parameter(torch.tensor(0.5))
        self.pres_threshold = nn.Parameter(torch.tensor(10.0))
        # Start with a wide position spread.
        nn.init.zeros_(self.where_head.weight)
        with torch.no_grad():
            self.where_head.bias.copy_(torch.tensor([0.0, -1.0, -1.0]))

    def forward(self, images: torch.Tensor, background: torch.Tensor,
                render_found: Callable[[list[Step], int], torch.Tensor],
                greedy: bool = False) -> tuple[list[Step], torch.Tensor]:
        """images (B, H, W, 3) in [0, 1] -> one Step per guide step, and the code (B, hidden) of
        the image itself (the NVIL baseline's input). background: (1, 3, H, W) the bare table;
        render_found(steps, B): (B, H, W, 3) render of the objects the steps found (DAIR's input)."""
        if images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must have shape (B, H, W, 3), got {tuple(images.shape)}")
        if tuple(images.shape[1:3]) != tuple(self.camera.image_size):
            raise ValueError(f"images are {tuple(images.shape[1:3])} pixels, the model's camera expects "
                             f"{tuple(self.camera.image_size)}")
        B = images.shape[0]
        x = images.permute(0, 3, 1, 2)
        code = image_code = self.encoder(x)
        state = self.initial_state(B)
        steps = []
        if not self.config.dair:  # DAIR builds its maps at every step
            where_maps = self.where_map(torch.cat([x, x - background.expand(B, -1, -1, -1)], 1))
        for _ in range(self.config.max_steps):
            if self.config.dair:  # what the objects found so far (none at first: the bare table) leave unexplained
                with torch.no_grad():
                    residual = (images - render_found(steps, B)).permute(0, 3, 1, 2)
                code, where_maps = self.read_unexplained(x, residual)
            # DAIR, too, suppresses the cells of objects already found, as AIR does.
            step, state = self.step(code, x, where_maps, state, greedy)
            steps.append(step)
        return steps, image_code

    def read_unexplained(self, x: torch.Tensor, residual: torch.Tensor):
        """What a DAIR step reads: the code (B, hidden) of residual (B, 3, H, W), the image x (B, 3, H, W)
        minus a hard render of the objects found before this step (the bare table at the first), and
        the where-maps of both. The forward pass and the sleep phase's trace (air/sleep.py) share it."""
        return self.encoder(residual), self.where_map(torch.cat([x, residual], 1))

    def read_image(self, images: torch.Tensor, background: torch.Tensor):
        """What every step of a teacher-forced trace (the sleep and wake phases) reads of images
        (B, H, W, 3): the image (B, 3, H, W), its code (B, hidden), the where-maps and the initial
        state. AIR only: DAIR reads what the objects found so far leave unexplained at each step
        (read_unexplained; the sleep phase's trace does so, the wake phase's replay does not)."""
        if self.config.dair:
            raise ValueError("this teacher-forced trace reads the image as AIR does; DAIR reads what the objects "
                             "found so far leave unexplained (the sleep phase does, the wake phase does not)")
        B = images.shape[0]
        x = images.permute(0, 3, 1, 2)
        where_maps = self.where_map(torch.cat([x, x - background.expand(B, -1, -1, -1)], 1))
        return x, self.encoder(x), where_maps, self.initial_state(B)

    def initial_state(self, B: int) -> GuideState:
        device = self.yaw_fold.device  # the guide's
        previous = torch.zeros(B, self.previous_dim, device=device)
        previous[:, 0] = 1.0  # 'the previous step found an object'
        h = torch.zeros(B, self.config.hidden, device=device)
        return GuideState(h, torch.zeros_like(h), previous, torch.ones(B, device=device), ())

    def where_mean(self, h: torch.Tensor, where_maps, found: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected object position (B, 2) metres and the attention's peak logit (B,) (a soft max
        over cells: how much unexplained evidence is left) under the spatial softmax.

        found: pixel centres (B, 2) of earlier steps' objects, whose cells are suppressed
        (inhibition of return), so that AIR's steps attend to different objects.
        """
        features, base = where_maps
        B, Fdim, h_cells, w_cells = features.shape
        logits = base + torch.einsum("bfhw,bf->bhw", features, self.where_query(h)).flatten(1) / Fdim ** 0.5
        H, W = self.camera.image_size
        cell_v, cell_u = torch.meshgrid((torch.arange(h_cells, device=logits.device) + 0.5) * H / h_cells - 0.5,
                                        (torch.arange(w_cells, device=logits.device) + 0.5) * W / w_cells - 0.5,
                                        indexing="ij")
        cells = torch.stack([cell_u.flatten(), cell_v.flatten()], -1)  # (cells, 2) pixels
        for center in found:
            d2 = ((cells[None] - center[:, None].detach()) ** 2).sum(-1)
            width = self.config.found_suppression_cells * H / h_cells  # pixels
            logits = logits - 50.0 * torch.exp(-d2 / (2 * width ** 2))
        uv = logits.softmax(-1) @ cells
        return pixel_to_table(self.camera, uv, OBJECT_HEIGHT), logits.logsumexp(-1)

    def attend(self, code: torch.Tensor, image: torch.Tensor, where_maps, state: GuideState,
               second_glimpse: bool = True) -> Attention:
        """The step's distributions before anything is drawn.  code (B, hidden); image (B, 3, H, W);
        where_maps from WhereMap. second_glimpse=False: the first glimpse's only (for a caller that
        takes the second glimpse itself, where it chooses)."""
        cfg = self.config
        h, c = self.lstm(torch.cat([code, state.previous], -1), (state.h, state.c))
        where = self.where_head(h)
        mean, peak = self.where_mean(h, where_maps, state.found)
        std = F.softplus(where[:, 1:3]) * 0.05 + 1e-4
        # Attend: a glimpse where the attention points; from it, what the object is and how far
        # its centre lies from the attended spot.
        attended = self.project(mean)  # (B, 2) pixels
        window = image_to_window(image, attended, cfg.glimpse_px, cfg.glimpse_size)
        glimpse_code = self.glimpse_encoder(window)
        # 'Another object?' also reads how much evidence the attention has left to explain.
        pres_logit = where[:, 0] + self.pres_gain * (peak - self.pres_threshold)
        if cfg.glimpse_presence:
            pres_logit = pres_logit + self.glimpse_presence(glimpse_code)[:, 0]
        if cfg.presence_sees_found:
            marks = found_marks(attended, state.found, cfg.glimpse_px, cfg.glimpse_size, cfg.found_mark_std_px)
            pres_logit = pres_logit + self.presence_encoder(window, marks)
        prob = torch.sigmoid(pres_logit).clamp(1e-4, 1 - 1e-4)
        what = self.what_head(torch.cat([glimpse_code, h], -1))
        mean = coarse = mean + what.position_offset
        if cfg.second_glimpse and second_glimpse:
            for _ in range(1 + cfg.glimpse_repeats):  # each glimpse where the last placed the object
                center = self.project(mean.detach())
                window, glimpse_code, second = self.read_at(image, h, center)
                if cfg.second_glimpse_offset:
                    mean, what = self.placed_at(center, second), second
                else:
                    what = second._replace(position_offset=what.position_offset)
        return Attention(h, c, prob, mean, std, window, glimpse_code, what, coarse)

    def placed_at(self, center_px: torch.Tensor, what: WhatOutput) -> torch.Tensor:
        """(B, 2) table position, metres: the point under a glimpse's centre (B, 2) pixels, moved
        by the what-head's offset read from that glimpse."""
        return pixel_to_table(self.camera, center_px, OBJECT_HEIGHT) + what.position_offset

    def read_at(self, image: torch.Tensor, h: torch.Tensor, center_px: torch.Tensor):
        """The second glimpse, at center_px (B, 2) pixels: its window, code and what-head output
        (identity, yaw and colour are read from it)."""
        window = image_to_window(image, center_px, self.config.glimpse_px, self.config.glimpse_size)
        glimpse_code = self.glimpse_encoder2(window)
        return window, glimpse_code, self.what_head2(torch.cat([glimpse_code, h], -1))

    def step(self, code: torch.Tensor, image: torch.Tensor, where_maps, state: GuideState,
             greedy: bool = False) -> tuple[Step, GuideState]:
        """One object.  code (B, hidden); image (B, 3, H, W); where_maps from WhereMap.
        (The latents are drawn in a fixed order: position, identity, yaw, colour, z_pres.)"""
        cfg = self.config
        h, c, prob, mean, std, window, glimpse_code, what, _ = self.attend(code, image, where_maps, state)
        alive_hard = (state.alive > 0.5).to(prob.dtype)
        pres_prob = prob * alive_hard  # 0 once an earlier step said 'no more objects'
        q_position = Normal(mean, std)
        position = mean if greedy else q_position.rsample()
        q_identity = Categorical(logits=what.identity_logits)
        identity = what.identity_logits.argmax(-1) if greedy else q_identity.sample()
        yaw, yaws, log_q_yaw, yaw_entropy = self._yaw(what, identity, greedy)
        color_logit, log_q_color = self._color(window, what, greedy)
        z_pres = go_on = self._z_pres(prob, pres_prob, state.alive, greedy)
        if greedy and cfg.duplicate_px > 0 and state.found:
            z_pres = z_pres * ~self.found_again(position, state.found)
            if not cfg.duplicate_skip:
                go_on = z_pres

        hard_pres = (z_pres > 0.5).to(image.dtype)
        log_q_pres = Bernoulli(prob).log_prob(hard_pres) * alive_hard
        log_q_cont = q_position.log_prob(position).sum(-1) + log_q_yaw + log_q_color
        # the prior's density at the guide's samples, here where the colour logits are at hand
        zero = position.new_zeros(())
        log_p_cont = (Normal(zero, cfg.prior_position_std).log_prob(position).sum(-1) - math.log(2 * math.pi)
                      + Normal(zero, cfg.prior_color_std).log_prob(color_logit).sum(-1))
        step = Step(z_pres, position, identity, yaw, torch.sigmoid(color_logit), pres_prob,
                    log_q_cont * hard_pres, log_q_pres, q_identity.log_prob(identity) * hard_pres,
                    log_p_cont * hard_pres, what.identity_logits, self.project(position), glimpse_code.detach(),
                    yaws, yaw_entropy)
        # a dropped step (duplicate_skip) still marks its spot as found, so the next step looks elsewhere
        return step, self.next_state(h, c, go_on, position, identity, yaw, step.color, state)

    def next_state(self, h: torch.Tensor, c: torch.Tensor, z_pres: torch.Tensor, position: torch.Tensor,
                   identity: torch.Tensor, yaw: torch.Tensor, color: torch.Tensor, state: GuideState) -> GuideState:
        """The state after a step whose latents were z_pres (B,), position (B, 2) m, identity (B,),
        yaw (B,) rad and colour (B, 3) (drawn by the guide, or given: the sleep phase's trace)."""
        previous = torch.cat([z_pres[:, None], position, F.one_hot(identity, self.num_categories).to(position.dtype),
                              torch.stack([yaw.cos(), yaw.sin()], -1), color], -1)
        return GuideState(h, c, previous, z_pres, state.found + (self.project(position),))

    def found_again(self, position: torch.Tensor, found: tuple) -> torch.Tensor:
        """(B,) bool: position (B, 2) m lies within config.duplicate_px pixels of an object already
        found (a tuple of (B, 2) pixel centres, GuideState.found)."""
        apart = torch.stack([(self.project(position) - f).norm(dim=-1) for f in found], 1)
        return apart.amin(1) < self.config.duplicate_px

    def project(self, position: torch.Tensor) -> torch.Tensor:
        """(B, 2) table position, metres -> (B, 2) pixels (u, v) of the point OBJECT_HEIGHT above it."""
        uv, _ = self.camera.project(torch.cat([position, torch.full_like(position[:, :1], OBJECT_HEIGHT)], -1))
        return uv

    def _yaw(self, what: WhatOutput, identity: torch.Tensor, greedy: bool):
        """yaw (B,) of the chosen category, a yaw per category (B, C), log q(yaw | identity) (B,)
        and q(yaw | category)'s entropy (B, C)."""
        fold = self.yaw_fold if self.yaw_heads > 1 else self.yaw_fold.new_ones(1)
        yaw_means = (what.folded_yaw / fold).expand(-1, self.num_categories)  # (B, C)
        q_yaws = Normal(yaw_means, (what.folded_yaw_std / fold).expand(-1, self.num_categories))
        yaws = yaw_means if greedy else q_yaws.rsample()
        yaw = yaws.gather(1, identity[:, None])[:, 0]
        log_q_yaw = q_yaws.log_prob(yaws).gather(1, identity[:, None])[:, 0]
        return yaw, yaws, log_q_yaw, q_yaws.entropy()

    def color_mean(self, window: torch.Tensor, what: WhatOutput) -> torch.Tensor:
        """(B, 3) q's mean colour logits."""
        # Colour starts from the glimpse's central colour, undoing the mean shading, so an object
        # placed on the right spot is roughly the right colour from the start.
        g = self.config.glimpse_size // 2
        centre = window[:, :, g - 2:g + 2, g - 2:g + 2].mean((2, 3))
        return torch.logit((centre / MEAN_SHADING).clamp(0.02, 0.98)) + what.color_offset

    def _color(self, window: torch.Tensor, what: WhatOutput, greedy: bool):
        """Colour logits (B, 3) and their log q (B,)."""
        color_mean = self.color_mean(window, what)
        q_color = Normal(color_mean, what.color_std)
        color_logit = color_mean if greedy else q_color.rsample()
        return color_logit, q_color.log_prob(color_logit).sum(-1)

    def _z_pres(self, prob: torch.Tensor, pres_prob: torch.Tensor, alive: torch.Tensor, greedy: bool):
        """(B,) z_pres: the mode, a Concrete (relaxed Bernoulli) sample, or a Bernoulli sample."""
        if greedy:
            return (pres_prob > self.config.presence_threshold).to(pres_prob.dtype)
        if self.config.count_estimator == "concrete":
            return RelaxedBernoulli(prob.new_tensor(self.config.concrete_temperature), probs=prob).rsample() * alive
        return Bernoulli(pres_prob).sample()
