"""Render-and-compare refinement of planar poses (and colours) by gradient descent.

What a differentiable-renderer user writes by hand: render the current guess,
compare with the image, step the parameters along the gradient. The renderer is
any PlanarRenderer (likelihood.make_planar_renderer), so the same loop runs on
analytic PyTorch3D gradients or on finite differences through a black box.
The image loss is coarse to fine: both images are blurred with a Gaussian whose
width shrinks from `blur_start_px` to `blur_end_px`, so a start a few pixels off
still sees the object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .rendering.likelihood import PlanarRenderer, gaussian_blur
from .scene import Camera, Table


@dataclass
class RefineSettings:
    steps: int = 60
    position_lr: float = 0.002  # metres per Adam step
    yaw_lr: float = 0.03  # radians per Adam step
    color_lr: float = 0.02
    fit_color: bool = True
    blur_start_px: float = 2.0
    blur_end_px: float = 0.5


@dataclass
class Refined:
    """position (B, N, 2) m, yaw (B, N) rad, color (B, N, 3), loss (B,) final blurred MSE per scene."""

    position: torch.Tensor
    yaw: torch.Tensor
    color: torch.Tensor
    loss: torch.Tensor


def image_loss(rendered: torch.Tensor, target: torch.Tensor, blur_px: float) -> torch.Tensor:
    """(B, H, W, 3) x2 -> (B,) sum of squared differences of the blurred images."""
    return ((gaussian_blur(rendered, blur_px) - gaussian_blur(target, blur_px)) ** 2).flatten(1).sum(1)


def fit_planar(objective, position: torch.Tensor, yaw: torch.Tensor, color: torch.Tensor,
               settings: RefineSettings | None = None, progress=None) -> Refined:
    """Adam on position (B, N, 2), yaw (B, N) and colour (B, N, 3) against
    objective(position, yaw, color, blur_px) -> (B,) loss, with the blur annealed
    from settings.blur_start_px to blur_end_px. Scenes are independent (the loss is summed)."""
    s = settings or RefineSettings()
    position = position.detach().clone().requires_grad_()
    yaw = yaw.detach().clone().requires_grad_()
    color = color.detach().clone().requires_grad_(s.fit_color)
    groups = [{"params": [position], "lr": s.position_lr}, {"params": [yaw], "lr": s.yaw_lr}]
    if s.fit_color:
        groups.append({"params": [color], "lr": s.color_lr})
    optimizer = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, s.steps, eta_min=0.0)
    for step in range(s.steps):
        blur = s.blur_start_px * (s.blur_end_px / s.blur_start_px) ** (step / max(1, s.steps - 1))
        loss = objective(position, yaw, color, blur)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            color.clamp_(0.0, 1.0)
        if progress is not None:
            progress(step + 1, s.steps)
    with torch.no_grad():
        final = objective(position, yaw, color, s.blur_end_px)
    return Refined(position.detach(), yaw.detach(), color.detach(), final)


def refine(renderer: PlanarRenderer, image: torch.Tensor, category: torch.Tensor, position: torch.Tensor,
           yaw: torch.Tensor, color: torch.Tensor, camera: Camera, table: Table | None = None,
           settings: RefineSettings | None = None, progress=None) -> Refined:
    """Fits position, yaw (and colour) of the objects in `category` (B, N) to image (B, H, W, 3)."""
    if image.shape[1:3] != tuple(camera.image_size):
        raise ValueError(f"image is {tuple(image.shape[1:3])} pixels, camera expects {tuple(camera.image_size)}")

    def objective(position, yaw, color, blur):
        return image_loss(renderer(category, position, yaw, color, camera, table), image, blur)

    return fit_planar(objective, position, yaw, color, settings, progress)
