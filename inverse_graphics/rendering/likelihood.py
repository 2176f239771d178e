"""The renderer a likelihood uses, chosen by name: one code path for every caller.

AIR training, refinement and the benchmarks render planar scenes (objects
resting on the table) and need d image / d (position, yaw, colour). Two
renderers provide that:

- 'pytorch3d': SceneRenderer in soft mode, analytic gradients (the fast CPU path);
- 'open3d-fd': Open3D ray casting, a black box, with finite-difference gradients
  ('central' or 'spsa'); optionally supersampled, which anti-aliases the hard
  render so that small steps see a smooth image.

`make_planar_renderer(name, catalog, ...)` returns a PlanarRenderer:
render(objects: PlanarObjects (B scenes), camera, table) -> rgb (B, H, W, 3),
differentiable in the objects' position, yaw and colour.
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass

import torch

from ..assets import ObjectCatalog
from ..camera import Camera
from ..scene import PlanarObjects, Table
from .finite_differences import finite_difference_render
from .open3d_renderer import Open3DRenderer
from .renderer import RenderSettings, SceneRenderer

RENDERER_NAMES = ("pytorch3d", "open3d-fd")


class PlanarRenderer(torch.nn.Module, abc.ABC):
    """Base: renders resting objects from planar parameters."""

    name = ""

    def __init__(self, catalog: ObjectCatalog):
        super().__init__()
        self.catalog = catalog

    @abc.abstractmethod
    def forward(self, objects: PlanarObjects, camera: Camera, table: Table | None = None,
                opacity: torch.Tensor | None = None) -> torch.Tensor:
        """rgb (B, H, W, 3) of B scenes; opacity: optional (B, N) in [0, 1] (a relaxed presence)."""


class PyTorch3DPlanarRenderer(PlanarRenderer):
    name = "pytorch3d"

    def __init__(self, catalog: ObjectCatalog, settings: RenderSettings | None = None):
        super().__init__(catalog)
        self.renderer = SceneRenderer(catalog, settings or RenderSettings(mode="soft"))

    def forward(self, objects, camera, table=None, opacity=None):
        return self.renderer(objects.to_batch(self.catalog, camera, table, opacity)).rgb


@dataclass
class FiniteDifferenceSettings:
    method: str = "central"  # 'central' or 'spsa'
    position_step: float = 0.004  # metres, ~0.7 px at the tabletop-v1 camera (64x64)
    yaw_step: float = 0.05  # radians
    color_step: float = 0.05  # the image is linear in colour, so any step is exact
    samples: int = 4  # SPSA directions per gradient
    supersample: int = 2  # render at s x the resolution and average s x s blocks (anti-aliasing)


class Open3DFiniteDifferenceRenderer(PlanarRenderer):
    name = "open3d-fd"

    def __init__(self, catalog: ObjectCatalog, settings: FiniteDifferenceSettings | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(catalog)
        self.settings = settings or FiniteDifferenceSettings()
        self.blackbox = Open3DRenderer(catalog)
        self.generator = generator
        self.scenes_rendered = 0  # black-box renders so far, forward and finite-difference

    def render_params(self, category: torch.Tensor, params: torch.Tensor, color: torch.Tensor | None,
                      camera: Camera, table: Table | None, rest: torch.Tensor | None = None) -> torch.Tensor:
        """params (M, N * D) -> rgb (M, H, W, 3), M = k B (category and rest (B, N) are tiled).

        D = 6 (x, y, yaw, r, g, b), or D = 3 with a fixed color (B, N, 3), which
        halves the renders of a central-difference gradient.
        """
        B, N = category.shape
        tiles = params.shape[0] // B
        p = params.reshape(params.shape[0], N, -1)
        color = p[..., 3:] if color is None else color.repeat(tiles, 1, 1)
        s = self.settings.supersample
        H, W = camera.image_size
        fine = camera.resized((H * s, W * s)) if s > 1 else camera
        batch = PlanarObjects(category.repeat(tiles, 1), p[..., :2], p[..., 2], color,
                              rest=None if rest is None else rest.repeat(tiles, 1)).to_batch(self.catalog, fine, table)
        rgb = self.blackbox(batch.to("cpu")).rgb.to(params.device)  # Open3D renders on the CPU
        self.scenes_rendered += len(batch)
        if s > 1:
            rgb = torch.nn.functional.avg_pool2d(rgb.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
        return rgb

    def forward(self, objects, camera, table=None, opacity=None):
        category, position, yaw, color = objects.category, objects.position, objects.yaw, objects.color
        if opacity is not None:
            raise ValueError("the open3d-fd renderer draws opaque objects only; partial opacity (a relaxed "
                             "presence) needs the 'pytorch3d' renderer")
        s = self.settings
        B, N = category.shape
        pose = torch.cat([position, yaw[..., None]], -1)
        steps = [s.position_step, s.position_step, s.yaw_step]
        if color.requires_grad:
            params, fixed_color = torch.cat([pose, color], -1), None
            steps += [s.color_step] * 3
        else:
            params, fixed_color = pose, color.detach()
        params = params.reshape(B, -1)
        return finite_difference_render(lambda p: self.render_params(category, p, fixed_color, camera, table,
                                                                    objects.rest),
                                        params, s.method, params.new_tensor(steps).repeat(N), s.samples, self.generator)


MATRIX_BLUR_MAX_PX = 128  # up to this side a blur is two small matmuls; beyond, mostly zeros to multiply


def _gaussian_kernel(sigma_px: float, dtype, device) -> torch.Tensor:
    """(2 r + 1,) normalised taps, r = max(1, int(3 sigma_px))."""
    radius = max(1, int(3 * sigma_px))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (t / sigma_px) ** 2)
    return kernel / kernel.sum()


@functools.lru_cache(maxsize=64)
def blur_matrix(n: int, sigma_px: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, n) M with (M @ x) the Gaussian blur of x (n,) along its one axis, edges replicated
    (the taps that fall beyond an edge are added to the edge's own weight)."""
    kernel = _gaussian_kernel(sigma_px, dtype, device)
    radius = (len(kernel) - 1) // 2
    source = torch.arange(n, device=device)[:, None] + torch.arange(-radius, radius + 1, device=device)
    source = source.clamp(0, n - 1)
    return torch.zeros(n, n, dtype=dtype, device=device).scatter_add_(1, source, kernel.expand(n, -1).contiguous())


def gaussian_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """(B, H, W, C) -> (B, H, W, C), separable Gaussian of std sigma_px pixels, edges replicated.
    Small images (sides up to MATRIX_BLUR_MAX_PX) are blurred as Mh @ image @ Mw^T: on CPU several
    times faster than the depthwise convolution, which larger ones use; the two agree to float rounding."""
    B, H, W, C = images.shape
    x = images.permute(0, 3, 1, 2)
    if max(H, W) <= MATRIX_BLUR_MAX_PX:
        x = blur_matrix(H, sigma_px, images.dtype, images.device) @ x \
            @ blur_matrix(W, sigma_px, images.dtype, images.device).T
        return x.permute(0, 2, 3, 1)
    kernel = _gaussian_kernel(sigma_px, images.dtype, images.device)
    radius = (len(kernel) - 1) // 2
    pad = torch.nn.functional.pad
    x = torch.nn.functional.conv2d(pad(x, (radius, radius, 0, 0), mode="replicate"),
                                   kernel.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    x = torch.nn.functional.conv2d(pad(x, (0, 0, radius, radius), mode="replicate"),
                                   kernel.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)
    return x.permute(0, 2, 3, 1)


def make_planar_renderer(name: str, catalog: ObjectCatalog, **options) -> PlanarRenderer:
    """The likelihood renderer called `name` ('pytorch3d' or 'open3d-fd').

    options: RenderSettings fields for 'pytorch3d' (e.g. sigma), FiniteDifferenceSettings
    fields for 'open3d-fd' (e.g. method='spsa'), plus generator for 'open3d-fd'.
    """
    if name == "pytorch3d":
        return PyTorch3DPlanarRenderer(catalog, RenderSettings(mode="soft", **options))
    if name == "open3d-fd":
        generator = options.pop("generator", None)
        return Open3DFiniteDifferenceRenderer(catalog, FiniteDifferenceSettings(**options), generator)
    raise ValueError(f"unknown renderer {name!r}; choose one of {', '.join(RENDERER_NAMES)}")
