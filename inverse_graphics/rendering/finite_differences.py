"""Gradients through any black-box renderer by finite differences.

`finite_difference_render(render, params, ...)` returns `render(params)` with an
autograd graph whose backward estimates the vector-Jacobian product
d<grad_out, render(p)>/dp by

- 'central': (f(p + h e_d) - f(p - h e_d)) / 2h for every dimension d (2D
  renders per estimate; exact for quadratic functions);
- 'spsa': simultaneous perturbation with Rademacher directions delta,
  (f(p + h delta) - f(p - h delta)) / 2h * delta, averaged over k directions
  (2k renders whatever the dimension; unbiased up to O(h^2)).

All perturbed parameter sets of a backward are rendered in one batched call.
`render` maps params (M, D) to images (M, ...) and is called without grad.
"""

from __future__ import annotations

from typing import Callable

import torch

Render = Callable[[torch.Tensor], torch.Tensor]


class _FiniteDifference(torch.autograd.Function):
    @staticmethod
    def forward(ctx, params, render, method, step, samples, generator):
        ctx.render, ctx.method, ctx.samples, ctx.generator = render, method, samples, generator
        ctx.save_for_backward(params.detach(), step)
        with torch.no_grad():
            return render(params.detach())

    @staticmethod
    def backward(ctx, grad_out):
        params, step = ctx.saved_tensors
        B, D = params.shape
        h = step.to(params).expand(D)
        if ctx.method == "central":
            eye = torch.eye(D, dtype=params.dtype, device=params.device)
            directions = eye.expand(B, D, D).permute(1, 0, 2)  # (D, B, D)
        else:
            signs = torch.randint(0, 2, (ctx.samples, B, D), generator=ctx.generator, device="cpu").to(params)
            directions = 2 * signs - 1  # (k, B, D), Rademacher
        offsets = directions * h
        perturbed = torch.cat([params + offsets, params - offsets]).reshape(-1, D)  # (2k B, D)
        with torch.no_grad():
            images = ctx.render(perturbed).reshape(2, -1, B, *grad_out.shape[1:])
        # directional derivative of <grad_out, f> along each offset, per scene: (k, B)
        slope = ((images[0] - images[1]) * grad_out).flatten(2).sum(-1) / 2
        if ctx.method == "central":
            grad = (slope / h[:, None]).T  # (B, D)
        else:
            grad = (slope[..., None] * directions / h).mean(0)  # delta^-1 = delta for +-1
        return grad, None, None, None, None, None


def finite_difference_render(render: Render, params: torch.Tensor, method: str = "central",
                             step: float | torch.Tensor = 1e-3, samples: int = 1,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """render(params) (M, D) -> (M, ...), differentiable in params by finite differences.

    step: h, a scalar or one per parameter dimension (D,), in the parameters' units.
    samples: k, the number of SPSA directions averaged (ignored by 'central').
    """
    if method not in ("central", "spsa"):
        raise ValueError(f"method must be 'central' or 'spsa', not {method!r}")
    if params.dim() != 2:
        raise ValueError(f"params must have shape (M, D), got {tuple(params.shape)}")
    if not torch.isfinite(params).all():
        raise ValueError("params has NaN or Inf entries")
    step = torch.as_tensor(step, dtype=params.dtype, device=params.device)
    if (step <= 0).any():
        raise ValueError(f"step must be positive, got {step}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    return _FiniteDifference.apply(params, render, method, step, samples, generator)
