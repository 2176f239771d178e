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

from dataclasses import dataclass, replace

import torch

from .rendering.likelihood import PlanarRenderer, gaussian_blur
from .camera import Camera
from .scene import PlanarObjects, Table


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
class Refinement:
    """The refined objects (B scenes; categories as given) and loss (B,), each scene's final image loss."""

    objects: PlanarObjects
    loss: torch.Tensor


def image_loss(rendered: torch.Tensor, target: torch.Tensor, blur_px: float) -> torch.Tensor:
    """(B, H, W, 3) x2 -> (B,) sum of squared differences of the blurred images."""
    return ((gaussian_blur(rendered, blur_px) - gaussian_blur(target, blur_px)) ** 2).flatten(1).sum(1)


def minimise_image_loss(objective, objects: PlanarObjects, settings: RefineSettings | None = None,
                        progress=None) -> Refinement:
    """Adam on the objects' position, yaw (and colour) against objective(objects, blur_px) -> (B,)
    loss, with the blur annealed from settings.blur_start_px to blur_end_px. Categories and resting
    poses stay as given (they are discrete: callers try each). Scenes are independent (the loss is summed)."""
    s = settings or RefineSettings()
    position = objects.position.detach().clone().requires_grad_()
    yaw = objects.yaw.detach().clone().requires_grad_()
    color = objects.color.detach().clone().requires_grad_(s.fit_color)
    current = PlanarObjects(objects.category, position, yaw, color, rest=objects.rest)
    groups = [{"params": [position], "lr": s.position_lr}, {"params": [yaw], "lr": s.yaw_lr}]
    if s.fit_color:
        groups.append({"params": [color], "lr": s.color_lr})
    optimizer = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, s.steps, eta_min=0.0)
    for step in range(s.steps):
        blur = s.blur_start_px * (s.blur_end_px / s.blur_start_px) ** (step / max(1, s.steps - 1))
        loss = objective(current, blur)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            color.clamp_(0.0, 1.0)
        if progress is not None:
            progress(step + 1, s.steps)
    with torch.no_grad():
        final = objective(current, s.blur_end_px)
    return Refinement(current.detach(), final)


def refine(renderer: PlanarRenderer, image: torch.Tensor, objects: PlanarObjects, camera: Camera,
           table: Table | None = None, settings: RefineSettings | None = None, progress=None) -> Refinement:
    """Fits position, yaw (and colour) of B scenes' objects to image (B, H, W, 3); categories and
    resting poses stay."""
    if image.shape[1:3] != tuple(camera.image_size):
        raise ValueError(f"image is {tuple(image.shape[1:3])} pixels, camera expects {tuple(camera.image_size)}")

    def objective(current: PlanarObjects, blur: float) -> torch.Tensor:
        return image_loss(renderer(current, camera, table), image, blur)

    return minimise_image_loss(objective, objects, settings, progress)


def fit_scores(renderer: PlanarRenderer, images: torch.Tensor, objects: PlanarObjects, camera: Camera,
               table: Table | None = None, blur_px: float = 0.5, batch_size: int = 64) -> torch.Tensor:
    """(B, N) how much each object's fit is worth, in [0, 1]: the share of the image loss without
    it that putting it back removes, 1 - loss(all) / loss(all but it); 0 for empty slots.
    images (B, H, W, 3); one extra render per object."""
    B, N = objects.category.shape
    scores = images.new_zeros(B, N)
    with torch.no_grad():
        for rows in torch.split(torch.arange(B, device=images.device), batch_size):
            part = objects.select(rows).detach()
            full = image_loss(renderer(part, camera, table), images[rows], blur_px)
            for n in range(N):
                without = part.category.clone()
                without[:, n] = -1
                loss = image_loss(renderer(replace(part, category=without), camera, table), images[rows], blur_px)
                share = (1 - full / loss.clamp(min=1e-12)).clamp(0, 1)
                scores[rows, n] = torch.where(part.category[:, n] >= 0, share, 0.0)
    return scores

