"""The sleep phase of reweighted wake-sleep (Bornschein and Bengio 2015): q(z | x) trained on
the generative model's own samples, with no renderer gradients and no dataset labels.

Each batch draws fresh scenes from the prior (data/prior.py: count, identity, position where
the tabletop camera and table put objects, yaw, colour, appearance nuisances), hard-rendered
in a DataLoader worker process while the main process trains, and maximises log q of the
whole trace:
- steps are assigned to objects one at a time: each step takes the not yet assigned object
  q's position density finds most likely (or, without truth glimpses, the weighted sum below),
  and the next step is conditioned on that object (teacher forcing); the step after the last
  object must say 'no more objects';
- the terms are weighted and their densities floored so that no density dominates the shared
  layers: with plain log q, the position and colour stds shrank to 0.1 mm and identity stalled
  at 37.6% after 608 iterations (notes/air-training.md). Yaw is scored in k-fold coordinates
  (k yaw for a k-fold symmetric shape), and not at all for shapes with continuous symmetry.

DAIR (AIRConfig.dair) is trained the same way. At each step its guide reads what the objects found
so far leave unexplained, as at inference (Guide.forward), where 'found so far' are the true objects
the trace assigned to the earlier steps: the image minus their hard render (AIR.render_found, no
gradients; the bare table at the first step). So DAIR's encoder learns from the same kind of
residual that its own found objects leave at inference: the render has the renderer's one light and
plain table, so the prior's light, table texture and shadows stay in it, as a camera's do.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch
from torch.distributions import Bernoulli, Normal, VonMises

from ..data.prior import PriorConfig
from ..scene import PlanarObjects
from .guide import Attention, Guide


# The guide the sleep phase trains: glimpses at native resolution (24 px), each read by the deep
# 4-layer CNN; presence also from the first glimpse (count 94-96% against 88-91% without); identity,
# yaw, colour and the position's last correction from a second glimpse where the first placed the
# object. The image encoder and the where-map are the slim ones (a fifth of the full ones' cost).
# The strided glimpse encoder (a quarter of the deep one's cost) placed the first glimpse worse and
# cost identity: 85-87% against 93%, with the deep one only at the second glimpse too.
# At inference the second glimpse is read twice more, each where the last placed the object
# (AIRConfig.glimpse_repeats).
SLEEP_ARCHITECTURE = {"glimpse_size": 24, "glimpse_encoder": "deep", "second_glimpse": True,
                      "second_glimpse_offset": True, "glimpse_presence": True, "encoder_channels": (16, 32, 64, 64),
                      "where_map": "pooled", "glimpse_repeats": 2}


@dataclass
class SleepConfig:
    prior: PriorConfig = field(default_factory=PriorConfig)
    # Weights of the trace's log q terms, and the floors of their stds, chosen so that no term
    # dominates the layers they share: at the start, in the second glimpse's encoder, these give
    # gradient norms identity 1.1, yaw 1.4, colour 0.4 (the prototype's identity x10, yaw x5 with a
    # Normal on k yaw gave 0.5 against 12, and identity stayed at chance for 600 iterations).
    # Presence x10: in the layers it shares with position (LSTM, where-map, encoder) its gradient
    # norm at the start is then 4.0 against position's 4.8; at x3 (1.2) a 25-minute run undercounted
    # 2- and 3-object scenes (count 89.7%, 95.5% of presence decisions right on its own samples).
    # Yaw x5: at x1 the guide learned the bar's yaw (5 deg) but not the cube's (12-23 deg) or the
    # l_block's (29-80 deg; errors spread over every angle, not 180-degree flips). At x5, same
    # iterations, the cube's and the l_block's fell to a few degrees and identity rose (results.md,
    # the cos and yw5 runs).
    presence_weight: float = 10.0
    position_weight: float = 1.0
    identity_weight: float = 20.0
    yaw_weight: float = 5.0
    color_weight: float = 1.0
    position_std_floor_m: float = 0.002
    yaw_std_floor: float = 0.05  # radians of k yaw
    color_std_floor: float = 0.5  # colour logits
    # With a second glimpse: steps are assigned to objects by q's position density alone, and the
    # identity glimpse is taken at the assigned object's true position, jittered by this std (px):
    # an untrained guide's own estimate often misses the object, and a glimpse that misses it cannot
    # teach identity (at 500 iterations the joint rule had 28% identity). None: the joint rule and
    # q's own glimpse, as at inference.
    truth_glimpse_jitter_px: float | None = 1.0
    # The share of each batch's steps whose identity glimpse is taken, instead, where the step's
    # first glimpse placed the object (as at inference), the rest at the jittered truth. A trained
    # guide's identity errors are objects it placed 2-6 px off (fp28 seed 2, 500 validation scenes:
    # 65% identity beyond 10 mm of position error, 99% within 4 mm), where a glimpse centred 1 px
    # from the truth never trained it to look. At 0.5 (og28 seed 0, 28 minutes) it identified more
    # of its far-placed objects but placed many more far off, and validation identity fell (95.5%
    # against fp28 seed 0's 96.9%, benchmarks/identity_errors.py): off.
    own_glimpse_fraction: float = 0.0
    # The share of each batch's steps that also read a glimpse where the step's first glimpse placed
    # the object and score identity there, besides everything at the jittered truth: identity learns
    # where the guide looks while position and yaw keep learning from glimpses near the object. (Taking
    # the only glimpse there instead, own_glimpse_fraction 0.5, cost seed 0 position and yaw on 500
    # validation scenes: 4.85 mm and 1.5 deg against 3.26 mm and 0.8 deg.) At 0.5 (oi28 seed 2, 28
    # minutes, 18% fewer iterations) validation identity fell to 91.3% against fp28 seed 2's 94.1%: off.
    own_glimpse_identity_fraction: float = 0.0
    # Scenes with two objects closer than crowded_px pixels count this many times in the presence
    # term. Such neighbours are rare in the prior (a tenth of 2-3 object scenes is under 12 px), and
    # they are where trained guides miscount: the step that stops looks at the missed object, 9-12 px
    # from a found one, and says no (benchmarks/count_errors.py).
    crowded_presence_weight: float = 1.0
    crowded_px: float = 12.0
    # Where the next steps are told an assigned object lies (the LSTM's input, and the spot whose
    # where-map cells are suppressed): False, its true position; True, where this step's guide placed
    # it, as at inference, where the guide's own estimates (1-4 px off) are all it has. Every
    # overcount of trained guides is a step that lands 0.3-4.2 px from an object an earlier step
    # found, and says yes (benchmarks/count_errors.py): a trace told true positions never shows
    # presence the evidence an estimate 1-4 px off leaves unsuppressed. Three seeds with it (fp28)
    # overcounted 6 / 4 / 8 test scenes against 9 / 11 / 10 without (cp28), and each counted at
    # least 98% (docs/results.md).
    found_where_placed: bool = False
    # The trace reads each prior image balanced to the table (AIR.guide_input), as inference does
    # by default (AIRConfig.balance_to_table): the table's drawn albedo, the exposure and the white
    # balance are then undone before the guide sees them, and what is left for it to learn to see
    # past is texture, shading and shadows. False: the images as drawn (every run before this field).
    # With it and the default (wide) prior, one seed (bw28 seed 0, 28 minutes) counted 98.3% and
    # identified 96.3% of tabletop-v1 test scenes and 97.5% and 95.4% of tabletop-v1-appearance
    # (docs/results.md); off by default until more seeds are measured.
    balance_images: bool = False

    def __post_init__(self):
        for name in ("own_glimpse_fraction", "own_glimpse_identity_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SleepConfig.{name} is a share of steps, 0 to 1; got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "prior": self.prior.to_dict()}

    def drawing_counts(self, counts: tuple[int, ...]) -> "SleepConfig":
        """The same, its prior drawing these object counts (a split's: extrap-train 0-2, say)."""
        return replace(self, prior=replace(self.prior, counts=tuple(counts)))

    @classmethod
    def from_dict(cls, d: dict) -> "SleepConfig":
        return cls(**{**d, "prior": PriorConfig.from_dict(d["prior"])})


def _position_terms(mean: torch.Tensor, std: torch.Tensor, truth: PlanarObjects, config: SleepConfig) -> torch.Tensor:
    """(B, N) log q of each true object's position under Normal(mean (B, 2), std (B, 2) floored)."""
    std = std.clamp(min=config.position_std_floor_m)
    return Normal(mean[:, None], std[:, None]).log_prob(truth.position).sum(-1)


def _candidate_terms(guide: Guide, attention: Attention, truth: PlanarObjects, yaw_orders: torch.Tensor,
                     config: SleepConfig) -> dict[str, torch.Tensor]:
    """log q of each true object (B, N) under one step's distributions, per term (floored stds)."""
    what = attention.what
    position = _position_terms(attention.position_mean, attention.position_std, truth, config)
    category = truth.category.clamp(min=0)
    identity = what.identity_logits.log_softmax(-1).gather(1, category)
    head = category if guide.yaw_heads > 1 else torch.zeros_like(category)
    k = yaw_orders[category]
    # k yaw is an angle: a von Mises density (concentration 1 / std^2) keeps its gradients bounded where
    # a Normal on the wrapped error gave the shared glimpse layers 23x identity's gradient at the start.
    yaw_std = what.folded_yaw_std.gather(1, head).clamp(min=config.yaw_std_floor)
    q_yaw = VonMises(what.folded_yaw.gather(1, head), yaw_std.pow(-2))
    yaw = torch.where(k > 0, q_yaw.log_prob(torch.remainder(k * truth.yaw, 2 * math.pi)), 0.0)  # continuous: no yaw
    color_mean = guide.color_mean(attention.window, what)
    color_std = what.color_std.clamp(min=config.color_std_floor)
    color = Normal(color_mean[:, None], color_std[:, None]).log_prob(
        torch.logit(truth.color.clamp(0.02, 0.98))).sum(-1)
    return {"position": position, "identity": identity, "yaw": yaw, "color": color}


def _identity_where_placed(guide: Guide, x: torch.Tensor, attention: Attention, truth: PlanarObjects,
                           config: SleepConfig) -> torch.Tensor:
    """(B, N) log q of each true object's identity read from a glimpse where the step's first
    glimpse placed its object (attention.coarse_mean), for a random config.own_glimpse_identity_fraction
    of the images x (B, 3, H, W); 0 for the rest."""
    B, N = truth.category.shape
    own = (torch.rand(B, device=x.device) < config.own_glimpse_identity_fraction).nonzero()[:, 0]
    if not len(own):
        return x.new_zeros(B, N)
    _, _, what = guide.read_at(x[own], attention.h[own], guide.project(attention.coarse_mean[own].detach()))
    identity = what.identity_logits.log_softmax(-1).gather(1, truth.category[own].clamp(min=0))
    return x.new_zeros(B, N).index_put((own,), identity)


def unexplained(x: torch.Tensor, background: torch.Tensor, truth: PlanarObjects,
                assigned: torch.Tensor, render_found: Callable[[PlanarObjects], torch.Tensor]) -> torch.Tensor:
    """(B, 3, H, W) what truth's objects assigned to earlier steps (assigned (B, N) bool) leave
    unexplained of the image x (B, 3, H, W): x minus their hard render (the bare table, background
    (1, 3, H, W), where none is assigned yet), without gradients."""
    with torch.no_grad():
        if not assigned.any():
            return x - background.expand(x.shape[0], -1, -1, -1)
        found = replace(truth, category=torch.where(assigned, truth.category, -1))
        return x - render_found(found).permute(0, 3, 1, 2)


def trace_log_q(guide: Guide, images: torch.Tensor, background: torch.Tensor, truth: PlanarObjects,
                yaw_orders: torch.Tensor, config: SleepConfig,
                render_found: Callable[[PlanarObjects], torch.Tensor] | None = None,
                ) -> tuple[dict[str, torch.Tensor], dict]:
    """Per term, (B,) log q of the trace that explains truth's objects (steps assigned greedily,
    teacher-forced); and diagnostics: identity and presence accuracy of the steps.
    images (B, H, W, 3); background (1, 3, H, W) the bare table. DAIR needs render_found: objects
    (B, N slots, identity classes as truth's, -1: none) -> (B, H, W, 3) their hard render
    (AIR.render_found); each step then reads images minus the render of the objects assigned before it."""
    B = images.shape[0]
    if guide.config.dair:
        if render_found is None:
            raise ValueError("DAIR's sleep trace reads the image minus a render of the objects assigned so far: "
                             "pass render_found (AIR.render_found)")
        x, state = images.permute(0, 3, 1, 2), guide.initial_state(B)
    else:
        x, code, where_maps, state = guide.read_image(images, background)
    available = truth.present.clone()
    rows = torch.arange(B, device=images.device)
    weights = {"position": config.position_weight, "identity": config.identity_weight, "yaw": config.yaw_weight,
               "color": config.color_weight}
    totals = {name: images.new_zeros(B) for name in (*weights, "presence")}
    right, seen, presence_right = 0, 0, 0
    at_truth = guide.config.second_glimpse and config.truth_glimpse_jitter_px is not None
    for _ in range(guide.config.max_steps):
        if guide.config.dair:
            residual = unexplained(x, background, truth, truth.present & ~available, render_found)
            code, where_maps = guide.read_unexplained(x, residual)
        attention = guide.attend(code, x, where_maps, state, second_glimpse=not at_truth)  # taken below
        if at_truth:
            coarse = _position_terms(attention.coarse_mean, attention.position_std, truth, config)
            pick = coarse.detach().masked_fill(~available, -math.inf).argmax(1)
            center = guide.project(truth.position[rows, pick])
            center = center + config.truth_glimpse_jitter_px * torch.randn_like(center)
            if config.own_glimpse_fraction > 0:
                own = torch.rand(B, device=center.device) < config.own_glimpse_fraction
                center = torch.where(own[:, None], guide.project(attention.coarse_mean.detach()), center)
            window, glimpse_code, what = guide.read_at(x, attention.h, center)
            if guide.config.second_glimpse_offset:  # both glimpses place the object: train both
                attention = attention._replace(position_mean=guide.placed_at(center, what))
            else:
                what = what._replace(position_offset=attention.what.position_offset)
            attention = attention._replace(window=window, glimpse_code=glimpse_code, what=what)
            terms = _candidate_terms(guide, attention, truth, yaw_orders, config)
            terms["position"] = terms["position"] + coarse if guide.config.second_glimpse_offset else coarse
            if config.own_glimpse_identity_fraction > 0:
                terms["identity"] = terms["identity"] + _identity_where_placed(guide, x, attention, truth, config)
        else:
            terms = _candidate_terms(guide, attention, truth, yaw_orders, config)
            score = sum(weights[name] * terms[name] for name in weights).detach()
            pick = score.masked_fill(~available, -math.inf).argmax(1)
        alive = state.alive > 0.5
        target = available.any(1).to(images.dtype)  # another object to explain?
        totals["presence"] = totals["presence"] + Bernoulli(attention.pres_prob).log_prob(target) * alive
        chosen = (target > 0) & alive
        for name in weights:
            totals[name] = totals[name] + terms[name][rows, pick] * chosen
        available[rows[chosen], pick[chosen]] = False
        with torch.no_grad():
            right += int(((attention.what.identity_logits.argmax(-1) == truth.category[rows, pick]) & chosen).sum())
            seen += int(chosen.sum())
            presence_right += int((((attention.pres_prob > 0.5).to(target.dtype) == target) | ~alive).sum())
        picked = chosen[:, None]
        found_at = attention.position_mean.detach() if config.found_where_placed else truth.position[rows, pick]
        state = guide.next_state(attention.h, attention.c, target,
                                 torch.where(picked, found_at, attention.position_mean.detach()),
                                 torch.where(chosen, truth.category[rows, pick], 0),
                                 torch.where(chosen, truth.yaw[rows, pick], 0.0),
                                 torch.where(picked, truth.color[rows, pick], 0.0), state)
    return totals, {"identity_acc": right / max(1, seen), "presence_acc": presence_right / (B * guide.config.max_steps)}


def nearest_pair_px(guide: Guide, truth: PlanarObjects) -> torch.Tensor:
    """(B,) pixels between the two closest present objects of each scene in the guide's image (inf
    where fewer than two are present)."""
    B, N = truth.present.shape
    uv = guide.project(truth.position.reshape(B * N, 2)).reshape(B, N, 2)
    apart = torch.cdist(uv, uv)
    pair = truth.present[:, :, None] & truth.present[:, None] & ~torch.eye(N, dtype=torch.bool, device=uv.device)
    return apart.masked_fill(~pair, math.inf).flatten(1).amin(1)


def sleep_loss(guide: Guide, images: torch.Tensor, background: torch.Tensor, truth: PlanarObjects,
               yaw_orders: torch.Tensor, config: SleepConfig,
               render_found: Callable[[PlanarObjects], torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
    """Scalar loss (minus the weighted log q of the traces, per image) and diagnostics (render_found:
    DAIR's, as trace_log_q)."""
    totals, stats = trace_log_q(guide, images, background, truth, yaw_orders, config, render_found)
    presence_weight = torch.full_like(totals["presence"], config.presence_weight)
    if config.crowded_presence_weight != 1.0:
        crowded = nearest_pair_px(guide, truth) < config.crowded_px
        presence_weight = torch.where(crowded, presence_weight * config.crowded_presence_weight, presence_weight)
    weighted = (presence_weight * totals["presence"] + config.position_weight * totals["position"]
                + config.identity_weight * totals["identity"] + config.yaw_weight * totals["yaw"]
                + config.color_weight * totals["color"])
    info = {name: float(value.detach().mean()) for name, value in totals.items()}
    return -weighted.mean(), {**info, **stats}
