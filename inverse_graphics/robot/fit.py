"""AIR for a robot camera: the tabletop scene model seen through the user's camera, and
`fit`, which trains AIR without labels on the user's frames (with synthetic frames rendered
for the same camera), as the paper fits AIR to its own images.

AIR works at a low resolution (`AIR_SIZE`, 80x60 for a 640x480 frame): the frame is
area-downscaled and white-balanced so the table has the model's table colour.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..assets import ObjectCatalog
from ..data.tabletop import Tabletop, TabletopConfig
from ..paths import SHIPPED_AIR
from ..camera import Camera, pixel_to_table
from ..scene import Table

AIR_SIZE = (60, 80)  # (H, W) AIR's input for a 4:3 frame
# How far (m) beyond the workspace AIR still looks: an object's footprint reaches past its centre.
AIR_VIEW_MARGIN = 0.04


def air_size_for(image_size: tuple[int, int], width: int = 80) -> tuple[int, int]:
    """AIR's (H, W) for a frame of image_size: `width` columns, the frame's aspect ratio."""
    H, W = image_size
    return (max(8, round(width * H / W)), width)


def workspace(camera: Camera, margin: float = 0.08) -> tuple[tuple[float, float], float]:
    """Where objects may be: the centre (m) of the table under the image centre and the largest
    half extent (m, at most 0.2) of a square around it whose points, up to 3 cm high and 3 cm
    beyond its edge, all project inside the image's central (1 - 2 margin) part."""
    H, W = camera.image_size
    centre = pixel_to_table(camera, torch.tensor([[(W - 1) / 2, (H - 1) / 2]]), 0.0)[0]
    best = 0.03
    for e in torch.arange(0.03, 0.2001, 0.01).tolist():
        r = e + 0.03
        corners = torch.tensor([[sx * r, sy * r, z] for sx in (-1, 1) for sy in (-1, 1) for z in (0.0, 0.03)])
        corners[:, :2] += centre
        uv, depth = camera.project(corners)
        inside = ((uv[:, 0] > margin * W) & (uv[:, 0] < (1 - margin) * W) & (uv[:, 1] > margin * H)
                  & (uv[:, 1] < (1 - margin) * H) & (depth > 0))
        if not bool(inside.all()):
            break
        best = e
    return (float(centre[0]), float(centre[1])), best


def workspace_mask(camera: Camera, area: tuple[tuple[float, float], float], margin: float = AIR_VIEW_MARGIN,
                   top: float = 0.05) -> torch.Tensor:
    """(H, W) bool: the pixels that can see an object standing in the workspace `area` (centre,
    half extent; `workspace`): those whose ray crosses the column over the area, widened by
    `margin` m, between the table and `top` m above it. Outside it is what AIR need not look at
    (clutter at the frame's border)."""
    H, W = camera.image_size
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    uv = torch.stack([u.flatten(), v.flatten()], -1)
    (cx, cy), e = area
    inside = torch.zeros(H * W, dtype=torch.bool)
    for height in torch.linspace(0.0, top, 6).tolist():
        xy = pixel_to_table(camera, uv, height)
        inside |= ((xy[:, 0] - cx).abs() < e + margin) & ((xy[:, 1] - cy).abs() < e + margin)
    return inside.view(H, W)


def air_input(frame, camera: Camera, table_rgb: torch.Tensor, area: tuple[tuple[float, float], float],
              mask: torch.Tensor, min_height_m: float = 0.008, margin: float = AIR_VIEW_MARGIN) -> torch.Tensor:
    """A Frame as AIR sees it, (h, w, 3) in [0, 1] for `camera` (the frame's camera at AIR's
    resolution): area-downscaled, white-balanced so the table has the colour the model renders
    it with, table_rgb (3,), and the bare table outside the workspace `area`'s mask (h, w;
    workspace_mask). With depth,
    also wherever the points lie on the table (shadows, texture) or outside the workspace
    column (clutter): AIR then looks only at what stands in the workspace."""
    from .poses import area_downscale, depth_downscale, table_points, white_balance

    size = tuple(mask.shape)
    small = white_balance(area_downscale(frame.rgb, size), table_rgb)
    keep = mask
    if frame.depth is not None:
        points = table_points(depth_downscale(frame.depth, size), camera)
        (cx, cy), e = area
        outside = ((points[..., 0] - cx).abs() > e + margin) | ((points[..., 1] - cy).abs() > e + margin)
        keep = keep & ~((points[..., 2] < min_height_m) | outside)  # NaN (no reading) compares False: kept
    return torch.where(keep[..., None], small, table_rgb.to(small))


def robot_data(camera: Camera, table_color=(0.55, 0.5, 0.44), air_size: tuple[int, int] | None = None,
               catalog: ObjectCatalog | None = None, seed: int = 2016) -> Tabletop:
    """The tabletop scene distribution (1-3 objects in the 'frames-*' splits) seen by `camera`
    (full resolution, world = table frame) at AIR's resolution."""
    size = air_size or air_size_for(camera.image_size)
    small = camera.resized(size)
    centre, half_extent = workspace(camera)
    config = TabletopConfig(image_size=size, seed=seed, camera_override=small.to_dict(),
                            placement_half_extent=half_extent, placement_center=centre,
                            table=Table.in_view(small, table_color))
    return Tabletop(config, catalog)


def load_for_camera(checkpoint: str | Path, camera: Camera, table_color=(0.55, 0.5, 0.44)):
    """An AIR checkpoint (tabletop or fitted) rebuilt for `camera` (full resolution): the guide's
    weights do not depend on the camera, only its geometry does. Returns (model, checkpoint)."""
    from ..air.train import load_checkpoint
    from ..training import read_checkpoint

    ckpt = read_checkpoint(checkpoint, "AIR")
    fields = ckpt.get("data_config", {})
    size = tuple(fields["image_size"]) if fields.get("camera_override") else None
    if fields.get("camera_override") and fields.get("table"):
        table_color = fields["table"]["color"]
    return load_checkpoint(checkpoint, robot_data(camera, table_color, size))


def frames_table_color(frames) -> tuple[float, float, float]:
    """The table's albedo under the renderer's shading: the median colour of the frames."""
    from .poses import table_shading

    medians = torch.stack([f.rgb.flatten(0, 1).median(0).values for f in frames])
    return tuple((medians.median(0).values / table_shading()).clamp(0, 1).tolist())


def fit(frames_dir: str | Path, out: str | Path, camera_path: str | Path | None = None,
        init: str | Path | None = None, minutes: float = 20.0, iterations: int = 100_000, seed: int = 0,
        train_pool: int = 3000, val_size: int = 100, resume: bool = False, progress: bool = True,
        log=print) -> dict:
    """Trains AIR for the frames' camera, without labels, from `init` (AIR weights; the
    shipped tabletop model by default): the pool is `train_pool` synthetic frames of 1-3
    objects rendered for that camera plus the user's frames (downscaled, white-balanced).
    Validation uses synthetic frames, whose truth is known. Writes out/checkpoint.pt,
    history.json, curves.png. Returns the last validation."""
    from ..air.model import air_config_from_dict
    from ..air.train import TrainConfig, train_air
    from ..training import read_checkpoint
    from .frames import iter_frames
    from .poses import table_shading

    frames = list(iter_frames(frames_dir, camera_path, on_problem=lambda p: log(f"skipping frame {p.name}: {p.reason}")))
    if not frames:
        raise ValueError(f"no usable frames in {frames_dir}")
    camera = frames[0].camera
    color = frames_table_color(frames)
    data = robot_data(camera, color)
    init = Path(init) if init else SHIPPED_AIR
    air_config = air_config_from_dict(read_checkpoint(init, "AIR")["air_config"])
    table_rgb = torch.tensor(color) * table_shading()  # the table as the model renders it
    area = workspace(camera)
    mask = workspace_mask(data.camera, area)
    smalls = [(air_input(f, data.camera, table_rgb, area, mask) * 255).round().to(torch.uint8) for f in frames]
    cfg = TrainConfig(split="frames-train", val_split="frames-test", iterations=iterations,
                      time_limit_minutes=minutes, seed=seed, train_pool=train_pool, val_size=val_size,
                      val_every=100)
    result = train_air(out, air_config, cfg, data, resume=resume, progress=progress, log=log, init=init,
                       extra_images=torch.stack(smalls))
    return {**result, "frames": len(frames)}
