"""What a camera adds to a render: the appearance nuisances of the generative model's prior.

Drawn per image. One acts in the render itself: the light's direction and its ambient/diffuse
balance (draw_light, before rendering: renderer.Light), so faces are lit from any side. The rest
apply_appearance applies to the hard render (RenderOutput: rgb, instance, depth) in image space:
- the table's albedo (any hue, saturation up to 0.8: wood, laminate, grey, paint) and its texture:
  planks of random width and direction with dark seams, wood-like grain and speckle;
- light: a brightness per object and for the table, a planar illumination gradient across
  the image, and a cast shadow (each object's silhouette swept away from the render's light, as
  far as the light's elevation casts it, blurred, darkening the table under it);
- the sensor: exposure, white balance, Gaussian blur and pixel noise.
Lengths in metres, angles in degrees, blur and shifts in pixels of the render.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import asdict, dataclass

import torch

from ..camera import Camera, pixel_to_table
from ..scene import Table
from .likelihood import gaussian_blur
from .meshes import TABLE_INSTANCE
from .renderer import LIGHT_DIRECTION, Light, RenderOutput


@dataclass
class AppearanceRanges:
    """Uniform ranges (low, high) of each nuisance; (0, 0) or (1, 1) switches one off, and None
    keeps the renderer's own light (LIGHT_DIRECTION; AMBIENT and DIFFUSE)."""

    # Up to 0.8: red-brown and orange woods and painted tables. At 0.5 a per-scene table colour cost
    # the shipped guide 9 points of count (benchmarks/appearance_factors.py, validation scenes).
    table_saturation: tuple[float, float] = (0.0, 0.8)
    table_value: tuple[float, float] = (0.3, 0.9)
    texture: tuple[float, float] = (0.0, 0.15)  # grain amplitude, relative to the albedo
    plank_width_m: tuple[float, float] = (0.05, 0.2)
    seam_darkening: tuple[float, float] = (0.0, 0.5)
    speckle: tuple[float, float] = (0.0, 0.05)
    object_gain: tuple[float, float] = (0.8, 1.2)  # light intensity on each object
    table_gain: tuple[float, float] = (0.8, 1.2)
    gradient: tuple[float, float] = (0.0, 0.25)  # brightness change from the image's centre to its edge
    # Darkening of the table in the shadow: a direct light's share of the table's brightness, up to
    # 0.7 under a bright lamp (at most 0.45, ray-traced shadows cost 9 points of identity, same study).
    shadow: tuple[float, float] = (0.0, 0.7)
    shadow_shift_px: tuple[float, float] = (0.0, 4.0)  # the shadow's length when no light is given
    # How tall objects stand, in pixels: with a light, the shadow reaches this x cot(elevation) from
    # the silhouette (a low light casts long shadows). None: the length is drawn from shadow_shift_px
    # whatever the light (the lengths of checkpoints saved before this field).
    shadow_height_px: tuple[float, float] | None = (3.0, 8.0)
    shadow_max_px: float = 16.0  # the longest shadow
    shadow_blur_px: tuple[float, float] = (0.5, 2.5)
    exposure: tuple[float, float] = (0.75, 1.25)
    white_balance: tuple[float, float] = (0.88, 1.12)  # per channel
    blur_px: tuple[float, float] = (0.0, 0.8)
    noise: tuple[float, float] = (0.0, 0.03)  # pixel noise std, [0, 1] units
    # The light, in the render: azimuth about +Z from world +X (any side), elevation above the
    # table from a low window or lamp to nearly overhead (the renderer's own: 308 and 55 degrees).
    # Ambient's share of the light, diffuse the rest (the renderer's own: 0.45 of 1.0).
    light_azimuth_deg: tuple[float, float] = (0.0, 360.0)
    light_elevation_deg: tuple[float, float] | None = (20.0, 85.0)  # None: LIGHT_DIRECTION
    light_ambient: tuple[float, float] | None = (0.3, 0.6)  # None: AMBIENT and DIFFUSE

    @classmethod
    def none(cls) -> "AppearanceRanges":
        """The renderer's own image: nothing added, its own light."""
        return cls(table_saturation=(-1.0, -1.0), texture=(0.0, 0.0), seam_darkening=(0.0, 0.0),
                   speckle=(0.0, 0.0), object_gain=(1.0, 1.0), table_gain=(1.0, 1.0), gradient=(0.0, 0.0),
                   shadow=(0.0, 0.0), exposure=(1.0, 1.0), white_balance=(1.0, 1.0), blur_px=(0.0, 0.0),
                   noise=(0.0, 0.0), light_elevation_deg=None, light_ambient=None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AppearanceRanges":
        """The ranges to_dict wrote. A dict from before the light was drawn (an older checkpoint's)
        lacks the light's fields: it keeps the renderer's own light, the prior it was trained under."""
        older = {"light_elevation_deg": None, "light_ambient": None, "shadow_height_px": None}
        return cls(**{**older, **{k: v if v is None or isinstance(v, float | int) else tuple(v)
                                  for k, v in d.items()}})


def draw_light(ranges: AppearanceRanges, num: int, generator: torch.Generator) -> Light | None:
    """Each of num scenes' light drawn from `ranges` (renderer.Light), or None where the ranges keep
    the renderer's own light (then nothing is drawn from the generator)."""
    r, g = ranges, generator
    if r.light_elevation_deg is None and r.light_ambient is None:
        return None
    if r.light_elevation_deg is None:
        direction = torch.tensor(LIGHT_DIRECTION).expand(num, 3)
    else:
        azimuth = torch.deg2rad(_uniform(r.light_azimuth_deg, num, g))
        elevation = torch.deg2rad(_uniform(r.light_elevation_deg, num, g))
        direction = torch.stack([elevation.cos() * azimuth.cos(), elevation.cos() * azimuth.sin(), elevation.sin()], 1)
    if r.light_ambient is None:
        return Light(direction)
    ambient = _uniform(r.light_ambient, num, g)
    return Light(direction, ambient, 1.0 - ambient)


def _uniform(bounds: tuple[float, float], shape, generator: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator)


def _table_pattern(xy: torch.Tensor, r: AppearanceRanges, g: torch.Generator) -> torch.Tensor:
    """(B, H, W, 2) table coordinates (m) -> (B, H, W) relative albedo change: planks, seams, grain."""
    B = xy.shape[0]
    angle = _uniform((0.0, math.pi), (B, 1, 1), g)
    along = xy[..., 0] * angle.cos() + xy[..., 1] * angle.sin()
    across = -xy[..., 0] * angle.sin() + xy[..., 1] * angle.cos()
    width = _uniform(r.plank_width_m, (B, 1, 1), g)
    plank = torch.floor(across / width)
    plank_shade = torch.sin(plank * 12.9898 + _uniform((0, 100), (B, 1, 1), g)) * 0.5  # per-plank offset
    seam = ((across / width) - plank < 0.004 / width).float() * _uniform(r.seam_darkening, (B, 1, 1), g)
    phase = _uniform((0, 2 * math.pi), (B, 1, 1), g)
    grain = torch.sin(across * 400 + 2 * torch.sin(along * 25 + phase) + plank * 3.1)
    amplitude = _uniform(r.texture, (B, 1, 1), g)
    return amplitude * (0.6 * grain + plank_shade) - seam


def apply_appearance(out: RenderOutput, camera: Camera, table: Table, ranges: AppearanceRanges,
                     generator: torch.Generator, light: Light | None = None) -> torch.Tensor:
    """A hard render (B, H, W) -> rgb (B, H, W, 3) in [0, 1] as a camera might see it, each image
    with its own nuisances drawn from `ranges`. light: the Light the render was lit by (draw_light);
    the shadows fall away from it. None: they fall in a random direction."""
    r, g = ranges, generator
    rgb, instance = out.rgb.clone(), out.instance
    B, H, W, _ = rgb.shape
    on_table = (instance == TABLE_INSTANCE) & (out.depth > 0)
    # the table's albedo: a new colour, then its texture, as a gain on the rendered table
    if r.table_saturation[1] >= 0:
        hsv = torch.stack([torch.rand(B, generator=g), _uniform(r.table_saturation, B, g),
                           _uniform(r.table_value, B, g)], 1)
        albedo = torch.tensor([colorsys.hsv_to_rgb(*v) for v in hsv.tolist()], dtype=rgb.dtype)
        gain = albedo / torch.tensor(table.color, dtype=rgb.dtype).clamp(min=1e-3)
        rgb = torch.where(on_table[..., None], rgb * gain[:, None, None], rgb)
    v, u = torch.meshgrid(torch.arange(H, dtype=rgb.dtype), torch.arange(W, dtype=rgb.dtype), indexing="ij")
    xy = pixel_to_table(camera, torch.stack([u.flatten(), v.flatten()], -1), 0.0).view(1, H, W, 2).expand(B, -1, -1, -1)
    pattern = _table_pattern(xy, r, g) + _uniform(r.speckle, (B, 1, 1), g) * torch.randn(B, H, W, generator=g)
    rgb = torch.where(on_table[..., None], rgb * (1 + pattern[..., None]), rgb)
    # light: per-object and table intensity, a soft shadow, a gradient over the image
    slots = int(instance.max()) + 1 if instance.numel() else 0
    gains = torch.cat([_uniform(r.table_gain, (B, 1), g), _uniform(r.object_gain, (B, max(slots, 1)), g)], 1)
    rgb = rgb * gains.gather(1, (instance + 1).clamp(min=0).flatten(1)).view(B, H, W, 1)
    away = None if light is None else _away_from(light, camera)
    length = _shadow_length(r, g, B, light)
    rgb = rgb * (1 - _shadow(instance >= 0, r, g, length, away) * on_table.to(rgb.dtype))[..., None]
    direction = torch.randn(B, 2, generator=g)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-6)
    ramp = (direction[:, 0, None, None] * (u - W / 2) / W + direction[:, 1, None, None] * (v - H / 2) / H) * 2
    rgb = rgb * (1 + _uniform(r.gradient, (B, 1, 1), g) * ramp)[..., None]
    # the sensor
    rgb = rgb * _uniform(r.exposure, (B, 1, 1, 1), g) * _uniform(r.white_balance, (B, 1, 1, 3), g)
    sigma = _uniform(r.blur_px, B, g)
    rgb = torch.stack([gaussian_blur(rgb[b:b + 1], float(s))[0] if s > 0.05 else rgb[b] for b, s in enumerate(sigma)])
    rgb = rgb + _uniform(r.noise, (B, 1, 1, 1), g) * torch.randn(rgb.shape, generator=g)
    return rgb.clamp(0.0, 1.0)


def _away_from(light: Light, camera: Camera) -> torch.Tensor:
    """(B,) radians: the direction in the image, atan2(dv, du), of a step along the table away from
    each scene's light, taken at the table point under the image's centre."""
    H, W = camera.image_size
    centre = pixel_to_table(camera, torch.tensor([[(W - 1) / 2, (H - 1) / 2]]), 0.0)  # (1, 2)
    away = -torch.nn.functional.normalize(light.direction[:, :2].float(), dim=1)  # a light overhead: any way
    step = torch.cat([centre + 0.01 * away, torch.zeros(len(away), 1)], 1)
    uv, _ = camera.project(step)
    start, _ = camera.project(torch.cat([centre, torch.zeros(1, 1)], 1))
    return torch.atan2(uv[:, 1] - start[:, 1], uv[:, 0] - start[:, 0])


def _shadow_length(r: AppearanceRanges, g: torch.Generator, B: int, light: Light | None) -> torch.Tensor:
    """(B,) pixels: how far each image's shadows reach from the objects' silhouettes."""
    if light is None or r.shadow_height_px is None:
        return _uniform(r.shadow_shift_px, B, g)
    d = light.direction.float()
    cot = d[:, :2].norm(dim=1) / d[:, 2].clamp(min=1e-3)  # elevation's cotangent
    return (_uniform(r.shadow_height_px, B, g) * cot).clamp(max=r.shadow_max_px)


def _shadow(objects: torch.Tensor, r: AppearanceRanges, g: torch.Generator, length: torch.Tensor,
            angle: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, W) bool object pixels -> (B, H, W) shadow strength in [0, 1): the silhouettes swept
    `length` (B,) pixels towards `angle` (B,) radians in the image (atan2(dv, du); None: a random
    direction), so that a shadow starts at its object, blurred."""
    B, H, W = objects.shape
    angle = _uniform((0, 2 * math.pi), B, g) if angle is None else angle
    moved = torch.zeros(B, H, W)
    longest = float(length.max()) if B else 0.0
    for fraction in torch.linspace(0, 1, max(2, math.ceil(longest) + 1)):  # a step a pixel at most
        shift = length * fraction
        theta = torch.zeros(B, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = -2 * shift * angle.cos() / W  # sampling from -shift moves the silhouette by +shift
        theta[:, 1, 2] = -2 * shift * angle.sin() / H
        grid = torch.nn.functional.affine_grid(theta, (B, 1, H, W), align_corners=False)
        step = torch.nn.functional.grid_sample(objects[:, None].float(), grid, align_corners=False)[:, 0]
        moved = torch.maximum(moved, step)
    blur = float(_uniform(r.shadow_blur_px, (), g))
    soft = gaussian_blur(moved[..., None], max(blur, 0.3))[..., 0]
    return soft.clamp(0, 1) * _uniform(r.shadow, (B, 1, 1), g)


# A gain beyond these bounds is no camera's white balance: the image is (nearly) all one dark or
# saturated object, not a table, and balancing it would only amplify noise.
BALANCE_GAIN_RANGE = (0.2, 5.0)


def balance_to_table(images: torch.Tensor, table_rgb: torch.Tensor) -> torch.Tensor:
    """The sensor's exposure and white balance and the table's albedo, undone in closed form:
    images (B, H, W, 3) in [0, 1] -> images whose median colour (per image and channel: the table,
    which covers most of a tabletop image) is table_rgb (3,), the colour the model renders its table.
    A gain per image and channel (clamped to BALANCE_GAIN_RANGE), then a clip to [0, 1]; applied
    twice it changes nothing more. Shadows, texture and shading are left as they are."""
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (B, H, W, 3), got {tuple(images.shape)}")
    if table_rgb.shape != (3,):
        raise ValueError(f"table_rgb must have shape (3,), got {tuple(table_rgb.shape)}")
    median = images.flatten(1, 2).median(1).values  # (B, 3)
    gain = (table_rgb.to(images) / median.clamp(min=1e-3)).clamp(*BALANCE_GAIN_RANGE)
    return (images * gain[:, None, None, :]).clamp(0.0, 1.0)
