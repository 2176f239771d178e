"""The robot camera's view of AIR: where objects may be (the workspace), the table's colour,
AIR's input image, and the tabletop model seen through the user's camera.

AIR works at a low resolution (`air_size_for`: 80x60 for a 640x480 frame): the frame is
area-downscaled and white-balanced so the table has the model's table colour, and shows
only the workspace. A FrameView gathers what one frame's proposal and fitting steps share;
it is built once per frame.

Units: metres and radians in the table frame (z = 0 the table top, +z up); images
(H, W, 3) in [0, 1]; depth (H, W) metres, 0 = no reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..air.train import load_checkpoint
from ..assets import ObjectCatalog
from ..camera import Camera, pixel_to_table
from ..data.tabletop import Tabletop, TabletopConfig
from ..rendering.appearance import balance_to_table
from ..rendering.renderer import AMBIENT, DIFFUSE, LIGHT_DIRECTION
from ..scene import Table
from ..checkpoints import checkpoint_catalog, read_checkpoint
from .frames import Frame

# How far (m) beyond the workspace AIR still looks: an object's footprint reaches past its centre.
AIR_VIEW_MARGIN = 0.04
DEFAULT_TABLE_COLOR = (0.55, 0.5, 0.44)  # albedo, when neither frames nor a checkpoint give one


def air_size_for(image_size: tuple[int, int], width: int = 80) -> tuple[int, int]:
    """AIR's (H, W) for a frame of image_size: `width` columns, the frame's aspect ratio."""
    H, W = image_size
    return (max(8, round(width * H / W)), width)


# --- pixels ------------------------------------------------------------------------------------
def area_downscale(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, C) -> (h, w, C) by area averaging."""
    return F.interpolate(image.permute(2, 0, 1)[None], size=size, mode="area")[0].permute(1, 2, 0)


def depth_downscale(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) metres, 0 = none -> (h, w): the mean of the valid readings per cell (0 if none)."""
    valid = (depth > 0).float()
    total = F.interpolate(torch.stack([depth * valid, valid])[None], size=size, mode="area")[0]
    return torch.where(total[1] > 0.2, total[0] / total[1].clamp(min=1e-6), 0.0)


def table_points(depth: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(H, W) depth metres -> (H, W, 3) the points in the table frame (z: height above the
    table, m), NaN where there is no reading."""
    H, W = depth.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    world = camera.backproject(torch.stack([u, v], -1), depth)
    return torch.where((depth > 0)[..., None], world, float("nan"))


# --- the table's colour ------------------------------------------------------------------------
def table_shading() -> float:
    """The renderer's shading of the table top (normal +z): rendered colour = albedo x this."""
    light = torch.tensor(LIGHT_DIRECTION)
    return AMBIENT + DIFFUSE * max(0.0, float(light[2] / light.norm()))


def table_albedo(colors: torch.Tensor) -> torch.Tensor:
    """(N, 3) colours of table pixels -> (3,) the table's albedo in [0, 1]: their median over
    the renderer's shading. The one way this package reads the table's colour off pixels."""
    return (colors.median(0).values / table_shading()).clamp(0, 1)


def rendered_table_rgb(albedo) -> torch.Tensor:
    """A table albedo (3 numbers) -> (3,) the colour the renderer gives the table top."""
    return torch.as_tensor(albedo, dtype=torch.float32) * table_shading()


def frames_table_color(frames: list[Frame]) -> tuple[float, float, float]:
    """The table's albedo in the frames: from the median colour of each frame (the table fills
    most of it)."""
    return tuple(table_albedo(torch.stack([f.rgb.flatten(0, 1).median(0).values for f in frames])).tolist())


# --- the workspace -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Workspace:
    """Where objects may be: the square of half extent `half_extent` (m) around `center` (x, y)
    (m, table frame). Elsewhere is clutter."""

    center: tuple[float, float]
    half_extent: float

    @classmethod
    def for_camera(cls, camera: Camera, margin: float = 0.08) -> "Workspace":
        """Centred on the table under the image centre, the largest half extent (m, at most 0.2)
        of a square whose points, up to 3 cm high and 3 cm beyond its edge, all project inside
        the image's central (1 - 2 margin) part (margin: a fraction of the image's side)."""
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
        return cls((float(centre[0]), float(centre[1])), best)

    def contains(self, position: torch.Tensor, margin: float = 0.03) -> bool:
        """Whether a table position (2,) (m) lies in the workspace, widened by `margin` m."""
        (cx, cy), e = self.center, self.half_extent
        return abs(float(position[0]) - cx) < e + margin and abs(float(position[1]) - cy) < e + margin

    def mask(self, camera: Camera, margin: float = AIR_VIEW_MARGIN, top: float = 0.05) -> torch.Tensor:
        """(H, W) bool for `camera`'s image: the pixels that can see an object standing in the
        workspace, those whose ray crosses the column over it, widened by `margin` m, between
        the table and `top` m above it. Outside it is what AIR need not look at (clutter at the
        frame's border)."""
        H, W = camera.image_size
        v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                              indexing="ij")
        uv = torch.stack([u.flatten(), v.flatten()], -1)
        (cx, cy), e = self.center, self.half_extent
        inside = torch.zeros(H * W, dtype=torch.bool)
        for height in torch.linspace(0.0, top, 6).tolist():
            xy = pixel_to_table(camera, uv, height)
            inside |= ((xy[:, 0] - cx).abs() < e + margin) & ((xy[:, 1] - cy).abs() < e + margin)
        return inside.view(H, W)


# --- AIR's input and model ---------------------------------------------------------------------
def air_input(frame: Frame, camera: Camera, table_rgb: torch.Tensor, workspace: Workspace, mask: torch.Tensor,
              min_height_m: float = 0.008, margin: float = AIR_VIEW_MARGIN) -> torch.Tensor:
    """A Frame as AIR sees it, (h, w, 3) in [0, 1] for `camera` (the frame's camera at AIR's
    resolution): area-downscaled, white-balanced so the table has the colour the model renders
    it with, table_rgb (3,), and the bare table outside the workspace's mask (h, w;
    Workspace.mask). With depth,
    also wherever the points lie on the table (shadows, texture) or outside the workspace
    column (clutter): AIR then looks only at what stands in the workspace."""
    size = tuple(mask.shape)
    small = balance_to_table(area_downscale(frame.rgb, size)[None], table_rgb)[0]
    keep = mask
    if frame.depth is not None:
        points = table_points(depth_downscale(frame.depth, size), camera)
        (cx, cy), e = workspace.center, workspace.half_extent
        outside = ((points[..., 0] - cx).abs() > e + margin) | ((points[..., 1] - cy).abs() > e + margin)
        keep = keep & ~((points[..., 2] < min_height_m) | outside)  # NaN (no reading) compares False: kept
    return torch.where(keep[..., None], small, table_rgb.to(small))


def robot_data(camera: Camera, table_color=DEFAULT_TABLE_COLOR, air_size: tuple[int, int] | None = None,
               catalog: ObjectCatalog | None = None, seed: int = 2016) -> Tabletop:
    """The tabletop scene distribution (1-3 objects in the 'frames-*' splits) seen by `camera`
    (full resolution, world = table frame) at AIR's resolution, objects placed in its workspace."""
    size = air_size or air_size_for(camera.image_size)
    small = camera.resized(size)
    workspace = Workspace.for_camera(camera)
    config = TabletopConfig(image_size=size, seed=seed, camera_override=small.to_dict(),
                            placement_half_extent=workspace.half_extent, placement_center=workspace.center,
                            table=Table.in_view(small, table_color))
    return Tabletop(config, catalog)


def load_for_camera(checkpoint: str | Path, camera: Camera, table_color=DEFAULT_TABLE_COLOR, device="cpu"):
    """An AIR checkpoint (tabletop or fitted) rebuilt for `camera` (full resolution): the guide's
    weights do not depend on the camera, only its geometry does. A fitted checkpoint keeps the
    table colour it was fitted with. Returns (model on device, checkpoint)."""
    ckpt = read_checkpoint(checkpoint, "AIR")
    fields = ckpt.get("data_config", {})
    size = tuple(fields["image_size"]) if fields.get("camera_override") else None
    if fields.get("camera_override") and fields.get("table"):
        table_color = fields["table"]["color"]
    catalog = checkpoint_catalog(ckpt, checkpoint)  # the objects it was trained with
    return load_checkpoint(checkpoint, robot_data(camera, table_color, size, catalog), device)


@dataclass(frozen=True)
class FrameView:
    """What one frame's proposal and fitting steps share, built once per frame (FrameView.of).

    frame: the Frame (full resolution); workspace: where objects may be, from frame.camera;
    air_camera: AIR's camera (the model's, at AIR's resolution); air_mask: (h, w) bool, the
    pixels of AIR's image that see the workspace; table_rgb: (3,) the table's colour as the
    model renders it."""

    frame: Frame
    workspace: Workspace
    air_camera: Camera
    air_mask: torch.Tensor
    table_rgb: torch.Tensor

    @classmethod
    def of(cls, frame: Frame, model) -> "FrameView":
        """model: an AIR model for the robot camera (load_for_camera)."""
        workspace = Workspace.for_camera(frame.camera)
        return cls(frame, workspace, model.camera, workspace.mask(model.camera), rendered_table_rgb(model.table.color))

    def air_input(self, min_height_m: float = 0.008) -> torch.Tensor:
        """(h, w, 3) in [0, 1]: the frame as AIR sees it (air_input)."""
        return air_input(self.frame, self.air_camera, self.table_rgb, self.workspace, self.air_mask, min_height_m)
