"""The ELBO and its gradient estimators, each a small function.

Continuous latents are reparameterized, through the renderer. The discrete ones:
- z_pres: NVIL's score function ('reinforce'), or the Concrete relaxation ('concrete': z_pres
  relaxed, the render differentiable in it, its KL to the prior in closed form);
- identity: NVIL's score function with the ELBO as reward ('global'), or with the pixels
  around the object as reward ('local'), or an exact expectation over the categories at one
  step per image ('enumerate').
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..scene import PlanarObjects
from .config import AIRConfig, anneal
from .generative import GenerativeModel
from .guide import Step

BASELINE_MOMENTUM = 0.99  # running statistics of the rewards (NVIL's and the local signal's)


class ELBO(NamedTuple):
    """A one-sample estimate of the ELBO, and the parts the estimators read."""

    value: torch.Tensor  # (B,) nats; the discrete latents' log q detached (their gradient is the score's)
    log_lik: torch.Tensor  # (B,) nats, log p(x | z)
    log_lik_map: torch.Tensor  # (B, H, W) nats per pixel
    log_q_pres: torch.Tensor  # (B, T); zero with the Concrete relaxation (z_pres is reparameterized)
    log_q_identity: torch.Tensor  # (B, T)


class IdentityTerms(NamedTuple):
    """An identity estimator's part of the surrogate loss."""

    score: torch.Tensor  # (B,) the score-function surrogate, (signal x log q) summed over steps
    objective: torch.Tensor | float  # () an objective maximised besides the ELBO, nats per image
    baseline_loss: torch.Tensor | float  # (B,) a learned baseline's regression loss


def sample_elbo(generative: GenerativeModel, images: torch.Tensor, rendered: torch.Tensor, steps: list[Step],
                objects: PlanarObjects, presence: torch.Tensor, iteration: int) -> ELBO:
    """images, rendered (B, H, W, 3); objects, presence (B, T): the steps' scene."""
    relaxed = generative.config.count_estimator == "concrete"
    log_lik_map = generative.log_likelihood(images, rendered, iteration)
    log_lik = log_lik_map.flatten(1).sum(1)
    log_p_count, log_p_identity = generative.log_prior_discrete(presence, iteration)
    log_p = (log_p_identity + sum(s.log_p_continuous for s in steps)
             + generative.log_prior_overlap(objects, presence))
    log_q_cont = sum(s.log_q_continuous for s in steps)
    log_q_identity = torch.stack([s.log_q_identity for s in steps], 1)
    log_q_pres = torch.stack([s.log_q_pres for s in steps], 1) * (0.0 if relaxed else 1.0)
    if relaxed:  # z_pres's KL to its prior in closed form, differentiable in q's presence probabilities
        count_term = -z_pres_kl(steps, generative.z_pres_prior(iteration))
    else:
        count_term = log_p_count
    value = log_lik + log_p + count_term - log_q_cont - (log_q_identity + log_q_pres).sum(1).detach()
    return ELBO(value, log_lik, log_lik_map, log_q_pres, log_q_identity)


def z_pres_kl(steps: list[Step], rho: float) -> torch.Tensor:
    """(B,) sum over live steps of KL(Bernoulli(q) || Bernoulli(rho)), for the Concrete relaxation."""
    total = 0.0
    for s in steps:
        p = s.pres_prob.clamp(1e-4, 1 - 1e-4)
        kl = p * (p / rho).log() + (1 - p) * ((1 - p) / (1 - rho)).log()
        total = total + kl * (s.pres_prob > 0)
    return total


def statistics_unset(reward_mean: torch.Tensor, reward_var: torch.Tensor, signal_var: torch.Tensor) -> bool:
    """Whether NVIL's running statistics still hold their initial values (no batch seen)."""
    return bool(reward_mean == 0) and bool(reward_var == 1) and bool((signal_var == 1).all())


def nvil_signal(elbo: torch.Tensor, baseline: torch.Tensor, reward_mean: torch.Tensor, reward_var: torch.Tensor,
                signal_var: torch.Tensor, update: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """NVIL's learning signal (B, T): (ELBO - running mean) / running std - the learned baseline
    (B, T), again normalized by its running std per step; and the baseline's loss (B,).
    update: move the running statistics (buffers, () () (T,)) towards this batch."""
    # A run's first batch sets the running statistics outright. ELBOs are -1e4 to -1e6 nats;
    # from the initial (0, 1) every early signal was hugely negative, which taught a guide
    # started from trained weights to say 'no object' everywhere.
    momentum = 0.0 if update and statistics_unset(reward_mean, reward_var, signal_var) else BASELINE_MOMENTUM
    with torch.no_grad():
        reward = elbo.detach()
        if update:
            reward_mean.mul_(momentum).add_((1 - momentum) * reward.mean())
            reward_var.mul_(momentum).add_((1 - momentum) * reward.var(unbiased=False))
        centred = (reward - reward_mean) / reward_var.sqrt().clamp(min=1e-6)
    signal = centred[:, None] - baseline.detach()
    if update:
        with torch.no_grad():
            signal_var.mul_(momentum).add_((1 - momentum) * signal.pow(2).mean(0))
    # A step's discrete choices affect the likelihood only from that step on; the whole ELBO is
    # used as the reward, with the per-step baseline removing the shared part.
    return signal / signal_var.sqrt().clamp(min=1.0), (baseline - centred[:, None]).pow(2).mean(1)


def global_identity(signal: torch.Tensor, elbo: ELBO) -> IdentityTerms:
    """Identity and z_pres by the score function, the ELBO as reward."""
    return IdentityTerms((signal * (elbo.log_q_identity + elbo.log_q_pres)).sum(1), 0.0, 0.0)


def local_identity(signal: torch.Tensor, elbo: ELBO, steps: list[Step], local_baseline: nn.Module,
                   local_mean: torch.Tensor, local_var: torch.Tensor, glimpse_px: int, update: bool) -> IdentityTerms:
    """Identity by the score function with the pixels around each object as reward."""
    # An object's identity mostly changes the pixels around it: rewarding it with those
    # pixels' log-likelihood drops the other objects' noise (biased where objects overlap).
    with torch.no_grad():
        local = local_rewards(elbo.log_lik_map, steps, glimpse_px)
        if update:
            local_mean.mul_(BASELINE_MOMENTUM).add_((1 - BASELINE_MOMENTUM) * local.mean(0))
            local_var.mul_(BASELINE_MOMENTUM).add_((1 - BASELINE_MOMENTUM) * local.var(0, unbiased=False))
        local = (local - local_mean) / local_var.sqrt().clamp(min=1e-6)
    step_id = torch.eye(len(steps), device=local.device).expand(local.shape[0], -1, -1)
    baseline = local_baseline(torch.cat([torch.stack([s.glimpse_code for s in steps], 1), step_id], -1))[..., 0]
    local_signal = (local - baseline.detach()).clamp(-5, 5)  # (B, T)
    present = torch.stack([(s.z_pres > 0.5) for s in steps], 1).to(local.dtype)
    score = (signal * elbo.log_q_pres).sum(1) + (local_signal * elbo.log_q_identity).sum(1)
    return IdentityTerms(score, 0.0, ((baseline - local).pow(2) * present).mean(1))


def local_rewards(log_lik_map: torch.Tensor, steps: list[Step], glimpse_px: int) -> torch.Tensor:
    """(B, T) log-likelihood of the pixels within glimpse_px of each step's object."""
    H, W = log_lik_map.shape[1:]
    v, u = torch.meshgrid(torch.arange(H, dtype=log_lik_map.dtype, device=log_lik_map.device),
                          torch.arange(W, dtype=log_lik_map.dtype, device=log_lik_map.device),
                          indexing="ij")
    half = glimpse_px / 2
    rewards = []
    for s in steps:
        c = s.glimpse_center.detach()
        window = ((u[None] - c[:, 0, None, None]).abs() <= half) & ((v[None] - c[:, 1, None, None]).abs() <= half)
        rewards.append((log_lik_map * window).flatten(1).sum(1))
    return torch.stack(rewards, 1)


def enumerated_identity(signal: torch.Tensor, elbo: ELBO, generative: GenerativeModel, images: torch.Tensor,
                        steps: list[Step], objects: PlanarObjects, presence: torch.Tensor,
                        iteration: int, enumerate_images: int | None = None) -> IdentityTerms:
    """z_pres by the score function; identity (and, with yaw_per_category, yaw) by enumeration:
    the objective is, per image of the full batch, for one random present step t per image of
    the first enumerate_images (config.enumerate_images unless given), every category rendered
    with the other latents held fixed.

    identity_objective 'rws': the cross-entropy of q(identity_t) against the exact (tempered)
    posterior over categories; 'elbo': E_q[log p(x | z)] - KL(q || uniform), whose gradient
    in q's probabilities is exact for that step. With yaw_per_category, category c is
    rendered with its own yaw sample, and every q(yaw | c) is trained on its render
    (likelihood plus entropy) at full weight, not weighted by q(c): each learns 'if this
    were a c, how is it turned'.
    """
    score = (signal * elbo.log_q_pres).sum(1)
    cfg, C = generative.config, len(generative.catalog)
    B = min(images.shape[0], enumerate_images or cfg.enumerate_images)  # the batch is shuffled: take the first B
    present = presence[:B] > 0.5
    if not present.any():
        return IdentityTerms(score, score.new_zeros(()), 0.0)
    # a random present step per image (images with no object keep t = 0 and are masked out)
    t = torch.multinomial(present.float() + 1e-6 * ~present.any(1, keepdim=True), 1)[:, 0]
    rows = torch.arange(B, device=images.device)
    images = images[:B].repeat(C, 1, 1, 1)  # (C B, H, W, 3), category-major
    yaws = torch.stack([s.yaw_per_category[:B] for s in steps], 1)[rows, t] if cfg.yaw_per_category else None
    with torch.set_grad_enabled(cfg.yaw_per_category and torch.is_grad_enabled()):
        rendered = generative.render(every_category_at(objects.select(slice(0, B)), t, C, yaws))
        ll = generative.log_likelihood(images, rendered, iteration).flatten(1).sum(1).view(C, B).T  # (B, C)
    logits = torch.stack([s.identity_logits[:B] for s in steps], 1)[rows, t]  # (B, C)
    value = identity_fit(cfg, logits, ll, iteration, images[0].numel())
    if cfg.yaw_per_category:  # every q(yaw | c) on its own render, at full sharpness (blur hides yaw)
        sharp = generative.log_likelihood(images, rendered).flatten(1).sum(1).view(C, B).T
        entropy = torch.stack([s.yaw_entropy[:B] for s in steps], 1)[rows, t]
        value = value + (sharp + entropy).sum(-1)
    return IdentityTerms(score, (value * present[rows, t]).sum() / len(steps[0].identity_logits), 0.0)


def every_category_at(objects: PlanarObjects, t: torch.Tensor, num_categories: int,
                      yaws: torch.Tensor | None = None) -> PlanarObjects:
    """(C B, N) detached copies of objects (B, N), category-major: copy c has category c in slot
    t (B,) (and, given yaws (B, C), yaw yaws[:, c] there)."""
    C, B = num_categories, len(t)
    flat = torch.arange(C * B, device=t.device)
    category = objects.category.repeat(C, 1)
    category[flat, t.repeat(C)] = torch.arange(C, device=t.device).repeat_interleave(B)
    yaw = objects.yaw.detach().repeat(C, 1)
    if yaws is not None:
        yaw = yaw.index_put((flat, t.repeat(C)), yaws.T.reshape(-1))
    return PlanarObjects(category, objects.position.detach().repeat(C, 1, 1), yaw,
                         objects.color.detach().repeat(C, 1, 1))


def identity_fit(cfg: AIRConfig, logits: torch.Tensor, ll: torch.Tensor, iteration: int,
                 pixels: int) -> torch.Tensor:
    """(B,) q(identity)'s objective from its logits (B, C) and each category's log-likelihood
    ll (B, C), tempered by a temperature annealed geometrically to 1 after identity_hold_steps."""
    temperature = anneal(iteration - cfg.identity_hold_steps, cfg.identity_temperature_steps,
                         cfg.identity_temperature_start, 1.0, "geometric")
    held = iteration < cfg.identity_hold_steps
    if cfg.identity_objective == "rws":
        # Reweighted wake-sleep: q(identity) is fitted (cross-entropy, weighted as one image's
        # pixels) to the exact posterior over categories given the other latents, per object.
        # The ELBO's own gradient (the mode-seeking KL) moved every object onto whichever
        # category was best on average - the sphere - within a few hundred iterations.
        posterior = (ll.detach() / temperature).softmax(-1)
        fit = (posterior * logits.log_softmax(-1)).sum(-1) * pixels
        return 0.0 if held else fit
    probs = logits.softmax(-1)
    kl = (probs * logits.log_softmax(-1)).sum(-1) + math.log(logits.shape[-1])
    return (0.0 if held else (probs * (ll.detach() - ll.detach().mean(1, keepdim=True))).sum(-1) / temperature) - kl
