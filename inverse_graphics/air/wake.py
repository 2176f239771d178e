"""The wake phase of reweighted wake-sleep (Bornschein and Bengio 2015): q(z | x) and the
generative model's appearance nuisances trained on the user's own (unlabelled) images.

For each image, K samples z_k ~ q(z | x) are drawn and weighed by importance,
log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x), w~ = softmax_k(log w) (held constant);
- wake-q: maximise sum_k w~_k log q(z_k | x) at the samples held fixed (the score of q, not a
  path through its reparameterised samples): log q is computed again by a teacher-forced run of
  the guide over the detached samples (replay_log_q), the way sleep.py's trace_log_q runs it over
  a prior sample's truth;
- wake-p: maximise sum_k w~_k log p(x, z_k) in the generative model's parameters: the table's
  albedo and (optionally) a global light gain (GenerativeModel.fit_appearance), whose gradients
  come through the soft render.
The likelihood is a Student-t per pixel and channel (robust_log_likelihood): texture, shadows and
shading the flat renderer cannot draw cost a bounded, slowly growing amount per pixel, where a
Gaussian's quadratic cost makes an extra object pay for itself by painting over them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch.distributions import Bernoulli, Categorical, Normal, StudentT

from .guide import Guide, Step
from .model import AIR

LIKELIHOODS = ("student_t", "gaussian")


@dataclass
class WakeConfig:
    samples: int = 4  # K importance samples per image
    likelihood: str = "student_t"  # per pixel and channel: 'student_t' (robust) or 'gaussian'
    student_dof: float = 3.0
    pixel_scale: float = 0.1  # the Student-t's scale, the Gaussian's std ([0, 1] pixel units)
    fit_table: bool = True  # fit the table's albedo by wake-p (GenerativeModel.fit_appearance)
    fit_gain: bool = False  # ... and a global light gain
    appearance_lr: float = 0.01  # Adam's step for the appearance parameters (logits, log gain)
    sleep_every: int = 1  # one sleep batch per this many wake batches (0: wake only)

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        if self.samples < 1 or self.sleep_every < 0:
            raise ValueError(f"samples must be >= 1 and sleep_every >= 0, got {self.samples}, {self.sleep_every}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WakeConfig":
        return cls(**d)


def robust_log_likelihood(images: torch.Tensor, rendered: torch.Tensor, config: WakeConfig) -> torch.Tensor:
    """(B,) log p(x | z) of images given rendered (both (B, H, W, 3)), summed over pixels and
    channels: Student-t (df student_dof, scale pixel_scale) or Gaussian (std pixel_scale) per value.

    A Student-t's cost grows as (df + 1) / 2 log(1 + r^2 / (df s^2)) in the residual r: at df 3,
    s 0.1, a residual of 0.3 costs 2.8 nats more than a perfect match (Gaussian: 4.5), 0.6 costs 5.1
    (Gaussian: 18)."""
    if config.likelihood == "student_t":
        density = StudentT(rendered.new_tensor(config.student_dof), rendered, config.pixel_scale)
    else:
        density = Normal(rendered, config.pixel_scale)
    return density.log_prob(images).flatten(1).sum(1)


def replay_log_q(guide: Guide, images: torch.Tensor, background: torch.Tensor,
                 steps: list[Step]) -> dict[str, torch.Tensor]:
    """Per term, (B,) log q(z | x) of the steps' samples, by a teacher-forced run of the guide:
    each step's distributions come from the previous steps' samples (detached), and are evaluated
    at this step's (detached) samples, so gradients reach q's density parameters only, never a
    reparameterised sample's path. The terms and their masks are those of Guide.step
    (log_q_pres, log_q_continuous = position + yaw + colour, log_q_identity), so at the same
    weights the sum equals the steps' own log q. images (B, H, W, 3); background (1, 3, H, W)."""
    B = images.shape[0]
    x, code, where_maps, state = guide.read_image(images, background)
    totals = {name: images.new_zeros(B) for name in ("presence", "position", "identity", "yaw", "color")}
    C = guide.num_categories
    fold = guide.yaw_fold if guide.yaw_heads > 1 else guide.yaw_fold.new_ones(1)
    for step in steps:
        z_pres, position, identity = step.z_pres.detach(), step.position.detach(), step.identity.detach()
        yaw, color = step.yaw.detach(), step.color.detach()
        attention = guide.attend(code, x, where_maps, state)
        what = attention.what
        alive = (state.alive > 0.5).to(x.dtype)
        present = (z_pres > 0.5).to(x.dtype)
        totals["presence"] = totals["presence"] + Bernoulli(attention.pres_prob).log_prob(present) * alive
        totals["position"] = totals["position"] + Normal(attention.position_mean, attention.position_std).log_prob(
            position).sum(-1) * present
        totals["identity"] = totals["identity"] + Categorical(logits=what.identity_logits).log_prob(identity) * present
        # q(yaw | identity): Guide._yaw's Normal for the sampled category (yaw is not wrapped there)
        yaw_mean = (what.folded_yaw / fold).expand(-1, C).gather(1, identity[:, None])[:, 0]
        yaw_std = (what.folded_yaw_std / fold).expand(-1, C).gather(1, identity[:, None])[:, 0]
        totals["yaw"] = totals["yaw"] + Normal(yaw_mean, yaw_std).log_prob(yaw) * present
        # q(colour logits): the sample's logits are recovered from its colour (exact to ~1e-4 in float32
        # for |logit| < 9; beyond, clamped at +-13.8)
        color_logit = torch.logit(color, eps=1e-6)
        totals["color"] = totals["color"] + Normal(guide.color_mean(attention.window, what), what.color_std).log_prob(
            color_logit).sum(-1) * present
        state = guide.next_state(attention.h, attention.c, z_pres, position, identity, yaw, color, state)
    return totals


class WakeSamples(NamedTuple):
    """K samples of q(z | x) per image and their importance weights; (B, K) tensors, image-major."""

    images: torch.Tensor  # (B K, H, W, 3) each image repeated K times
    steps: list[Step]  # the guide's steps on images, drawn without gradients
    log_lik: torch.Tensor  # (B, K) robust log p(x | z_k), differentiable in the fitted appearance (if fit_table)
    log_p_z: torch.Tensor  # (B, K) log p(z_k): count, identities, overlap and the continuous priors
    log_q: torch.Tensor  # (B, K) log q(z_k | x) as drawn
    log_w: torch.Tensor  # (B, K) log p(x | z_k) + log p(z_k) - log q(z_k | x)
    weights: torch.Tensor  # (B, K) softmax over k of log_w, constant


def draw_samples(model: AIR, images: torch.Tensor, config: WakeConfig, iteration: int) -> WakeSamples:
    """K = config.samples samples of the guide per image of images (B, H, W, 3) in [0, 1], weighed
    by importance (the prior's schedules at `iteration`)."""
    if model.config.count_estimator == "concrete":
        raise ValueError("the wake phase needs Bernoulli presence samples; count_estimator is 'concrete'")
    generative = model.generative
    B, K = images.shape[0], config.samples
    x = images.repeat_interleave(K, 0)  # (B K, H, W, 3), image-major
    with torch.no_grad():  # the samples: held fixed by both wake updates
        # as they are, not balanced to the table (AIRConfig.balance_to_table): wake-p fits the table's
        # albedo to them, and the replay (replay_log_q) reads them so too
        steps = model.infer(x, greedy=False, balance=False)
        objects, presence = model.objects(steps), torch.stack([s.z_pres for s in steps], 1)
        log_p_count, log_p_identity = generative.log_prior_discrete(presence, iteration)
        if not model.classes.are_categories:  # uniform categories, then each resting pose's probability
            class_prior = torch.tensor(model.classes.log_prior, device=x.device) + math.log(len(model.catalog))
            log_p_identity = log_p_identity + sum(class_prior[s.identity] * (s.z_pres > 0.5) for s in steps)
        log_p_z = (log_p_count + log_p_identity + sum(s.log_p_continuous for s in steps)
                   + generative.log_prior_overlap(objects, presence))
        log_q = sum(s.log_q_continuous + s.log_q_pres + s.log_q_identity for s in steps)
    with torch.set_grad_enabled(config.fit_table and torch.is_grad_enabled()):
        log_lik = robust_log_likelihood(x, model.render_steps(steps), config)  # gradients: appearance only
    log_w = (log_lik.detach() + log_p_z - log_q).view(B, K)
    return WakeSamples(x, steps, log_lik.view(B, K), log_p_z.view(B, K), log_q.view(B, K), log_w, log_w.softmax(1))


def wake_loss(model: AIR, images: torch.Tensor, config: WakeConfig, iteration: int) -> tuple[torch.Tensor, dict]:
    """Scalar loss (wake-q, nats per image, plus with fit_table wake-p, nats per pixel value) and
    diagnostics, for images (B, H, W, 3) in [0, 1] and the prior's schedules at `iteration`.

    With fit_table the model must have its appearance parameters (model.generative.fit_appearance())
    and they must be in the optimizer. info: wake_q, wake_p, iwae (log mean_k w_k per image, a lower
    bound on log p(x)), log_lik (mean over samples), ess (mean over images of 1 / sum_k w~_k^2),
    mean_count (of the samples), and the fitted table colour (table_r, _g, _b) and light gain."""
    generative = model.generative
    if config.fit_table and generative.appearance is None:
        raise ValueError("fit_table: call model.generative.fit_appearance() (and put its parameters in the "
                         "optimizer) before the wake phase")
    samples = draw_samples(model, images, config, iteration)
    weights = samples.weights
    log_q = sum(replay_log_q(model.guide, samples.images, model.background(), samples.steps).values())
    wake_q = -(weights * log_q.view(weights.shape)).sum(1).mean()
    loss = wake_q
    info = {"wake_q": float(wake_q.detach())}
    if config.fit_table:
        wake_p = -(weights * (samples.log_lik + samples.log_p_z)).sum(1).mean() / images[0].numel()
        loss = loss + wake_p
        info["wake_p"] = float(wake_p.detach())
        info.update({f"table_{c}": float(v) for c, v in zip("rgb", generative.appearance.color().detach())})
        if generative.appearance.log_gain is not None:
            info["light_gain"] = float(generative.appearance.gain().detach())
    presence = torch.stack([s.z_pres for s in samples.steps], 1)
    info.update({"iwae": float((samples.log_w.logsumexp(1) - math.log(config.samples)).mean()),
                 "log_lik": float(samples.log_lik.detach().mean()), "ess": float((1 / weights.pow(2).sum(1)).mean()),
                 "mean_count": float((presence > 0.5).sum(1).float().mean())})
    return loss, info
