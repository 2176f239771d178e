"""Per-image render-and-compare fitting: count, identity and pose by gradient descent through the renderer.

What a differentiable-renderer user writes today, without a learned proposal:
objects are added one at a time. For each new object every category is tried from
`starts` random positions (drawn where the image differs most from the current
render, a pixel's chance growing with its squared residual; random yaw; colour read
from the image there); each hypothesis, together with the objects already accepted, is fitted by
`refine.refine`, and the best is kept if it lowers the image loss by more than
`object_penalty`. Fitting stops when an object no longer pays for itself or at
`max_objects`. All hypotheses of a round are one batched render.

`refine_proposals` is the same optimiser started from another method's answer
(AIR + refinement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from .refine import RefineSettings, image_loss, refine
from .rendering.likelihood import PlanarRenderer
from .rendering.likelihood import gaussian_blur
from .scene import MEAN_SHADING, OBJECT_HEIGHT, Camera, Table, pixel_to_table



@dataclass
class OptimiseSettings:
    max_objects: int = 3
    starts: int = 2  # random positions per category for each new object
    object_penalty: float = 2.0  # image-loss decrease (blurred sum of squares) an object must bring
    refine: RefineSettings = field(default_factory=lambda: RefineSettings(
        steps=30, blur_start_px=6.0, blur_end_px=0.5, position_lr=0.004, yaw_lr=0.08))


@dataclass
class Fit:
    """category (N,) (-1 absent), position (N, 2) m, yaw (N,) rad, colour (N, 3), loss (final image loss)."""

    category: torch.Tensor
    position: torch.Tensor
    yaw: torch.Tensor
    color: torch.Tensor
    loss: float


def _color_at(image: torch.Tensor, camera: Camera, position: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) image, (K, 2) table positions m -> (K, 3) the image's colour there, unshaded."""
    points = torch.cat([position, torch.full_like(position[:, :1], OBJECT_HEIGHT)], -1)
    uv, _ = camera.project(points)
    H, W = image.shape[:2]
    u = uv[:, 0].round().long().clamp(0, W - 1)
    v = uv[:, 1].round().long().clamp(0, H - 1)
    return (image[v, u] / MEAN_SHADING).clamp(0.0, 1.0)


def _starts(image: torch.Tensor, rendered: torch.Tensor, camera: Camera, count: int,
            generator: torch.Generator | None) -> torch.Tensor:
    """(count, 2) table positions m under pixels drawn with probability proportional to the
    squared residual between image and rendered (both (H, W, 3)), blurred by 1 px."""
    residual = gaussian_blur((image - rendered)[None], 1.0)[0].pow(2).sum(-1)  # (H, W)
    pixel = torch.multinomial(residual.flatten() + 1e-12, count, replacement=True, generator=generator)
    W = image.shape[1]
    uv = torch.stack([pixel % W, pixel // W], -1).to(image.dtype)
    return pixel_to_table(camera, uv, OBJECT_HEIGHT)


def optimise_scene(renderer: PlanarRenderer, image: torch.Tensor, camera: Camera, table: Table, num_categories: int,
                   settings: OptimiseSettings | None = None, generator: torch.Generator | None = None) -> Fit:
    """Fits one image (H, W, 3) in [0, 1] from random starts; see the module's docstring."""
    s = settings or OptimiseSettings()
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ValueError("image has NaN or Inf values")
    C = num_categories
    category = torch.empty(0, dtype=torch.long)
    position, yaw, color = torch.empty(0, 2), torch.empty(0), torch.empty(0, 3)
    with torch.no_grad():
        current = renderer(torch.full((1, 1), -1), torch.zeros(1, 1, 2), torch.zeros(1, 1), torch.zeros(1, 1, 3),
                           camera, table)
        best_loss = float(image_loss(current, image[None], s.refine.blur_end_px)[0])
    H = C * s.starts  # hypotheses for the next object: every category from each start
    for _ in range(s.max_objects):
        n = len(category)
        start = _starts(image, current[0], camera, s.starts, generator).repeat(C, 1)
        hyp_category = torch.cat([category.expand(H, n), torch.arange(C).repeat_interleave(s.starts)[:, None]], 1)
        hyp_position = torch.cat([position.expand(H, n, 2), start[:, None]], 1)
        hyp_yaw = torch.cat([yaw.expand(H, n), torch.rand(H, 1, generator=generator) * 2 * math.pi], 1)
        hyp_color = torch.cat([color.expand(H, n, 3), _color_at(image, camera, start)[:, None]], 1)
        fitted = refine(renderer, image.expand(H, -1, -1, -1), hyp_category, hyp_position, hyp_yaw, hyp_color,
                        camera, table, s.refine)
        h = int(fitted.loss.argmin())
        if best_loss - float(fitted.loss[h]) <= s.object_penalty:
            break
        best_loss = float(fitted.loss[h])
        category, position, yaw, color = hyp_category[h], fitted.position[h], fitted.yaw[h], fitted.color[h]
        with torch.no_grad():
            current = renderer(category[None], position[None], yaw[None], color[None], camera, table)
    return Fit(category, position, yaw, color, best_loss)


def optimise(renderer: PlanarRenderer, images: torch.Tensor, camera: Camera, table: Table, num_categories: int,
             settings: OptimiseSettings | None = None, seed: int = 0, progress=None):
    """images (B, H, W, 3) -> category (B, N) (-1 absent), position (B, N, 2), yaw (B, N), colour (B, N, 3),
    with N = settings.max_objects."""
    s = settings or OptimiseSettings()
    generator = torch.Generator().manual_seed(seed)
    B, N = images.shape[0], s.max_objects
    category = torch.full((B, N), -1, dtype=torch.long)
    position, yaw, color = torch.zeros(B, N, 2), torch.zeros(B, N), torch.zeros(B, N, 3)
    for b in range(B):
        fit = optimise_scene(renderer, images[b], camera, table, num_categories, s, generator)
        k = len(fit.category)
        category[b, :k], position[b, :k], yaw[b, :k], color[b, :k] = fit.category, fit.position, fit.yaw, fit.color
        if progress is not None:
            progress(b + 1, B)
    return category, position, yaw, color


def refine_proposals(renderer: PlanarRenderer, images: torch.Tensor, category: torch.Tensor, position: torch.Tensor,
                     yaw: torch.Tensor, color: torch.Tensor, camera: Camera, table: Table,
                     settings: RefineSettings | None = None, batch_size: int = 64):
    """Another method's answer (B, N) ... refined through the renderer, identity and count kept:
    (position, yaw, colour) of the same shapes."""
    s = settings or replace(OptimiseSettings().refine, steps=40, blur_start_px=2.0)
    out = [], [], []
    for chunk in torch.split(torch.arange(len(images)), batch_size):
        fitted = refine(renderer, images[chunk], category[chunk], position[chunk], yaw[chunk], color[chunk],
                        camera, table, s)
        for part, value in zip(out, (fitted.position, fitted.yaw, fitted.color)):
            part.append(value)
    return tuple(torch.cat(part) for part in out)
