"""What render-and-compare sees of a frame: the frame at a fine resolution (1 / fine_scale of
the frame's) and a square window of it around each proposal, with the window's own camera
and its local table colour.

Units: metres in the table frame; images (h, w, 3) in [0, 1]; depth (h, w) metres, 0 = none.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from scipy import ndimage

from ..camera import Camera, pixel_to_table
from ..scene import OBJECT_HEIGHT, Table
from .frames import Frame
from .view import area_downscale, depth_downscale, table_albedo, table_points


class FineFrame(NamedTuple):
    """The frame at 1 / scale: its camera, rgb (h, w, 3), depth (h, w) metres or None."""

    camera: Camera
    rgb: torch.Tensor
    depth: torch.Tensor | None


class Window(NamedTuple):
    """A square of the fine frame around a proposal: its camera, rgb (n, n, 3), depth (n, n)
    metres or None, depth's points in the table frame (n, n, 3) or None, the table with the
    window's local table colour, and the proposal's table position (2,) m."""

    camera: Camera
    rgb: torch.Tensor
    depth: torch.Tensor | None
    points: torch.Tensor | None
    table: Table
    position: torch.Tensor


def fine_frame(frame: Frame, scale: int) -> FineFrame:
    """The frame area-downscaled by `scale`, with its camera."""
    H, W = frame.camera.image_size
    size = (H // scale, W // scale)
    return FineFrame(frame.camera.resized(size), area_downscale(frame.rgb, size),
                     None if frame.depth is None else depth_downscale(frame.depth, size))


def window_around(fine: FineFrame, center: torch.Tensor, scale: int, size_px: int) -> Window:
    """The size_px x size_px window of `fine` (the frame at 1 / scale) around a full-resolution
    pixel centre (2,) (u, v), kept inside the image. Its table colour is the local one: from the
    pixels whose depth lies on the table, or without depth the window's border."""
    Hf, Wf = fine.camera.image_size
    n = size_px
    cu = (float(center[0]) + 0.5) / scale - 0.5
    cv = (float(center[1]) + 0.5) / scale - 0.5
    left = int(min(max(round(cu - n / 2), 0), Wf - n))
    top = int(min(max(round(cv - n / 2), 0), Hf - n))
    camera = fine.camera.cropped(top, left, (n, n))
    rgb = fine.rgb[top:top + n, left:left + n]
    depth = None if fine.depth is None else fine.depth[top:top + n, left:left + n]
    points = None if depth is None else table_points(depth, camera)
    if points is not None:
        table_pixels = rgb[points[..., 2].abs() < 0.004]
    else:
        table_pixels = torch.cat([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    if len(table_pixels) < 10:
        table_pixels = rgb.flatten(0, 1)
    position = pixel_to_table(camera, torch.tensor([[cu - left, cv - top]]), OBJECT_HEIGHT)[0]
    table = Table(size=(1.0, 1.0), color=tuple(table_albedo(table_pixels).tolist()),
                  center=tuple(position.tolist()))
    return Window(camera, rgb, depth, points, table, position)


def window_on(window: Window, device: torch.device) -> Window:
    """The window with its rgb, depth, points and position on device (where the fits run)."""
    def moved(t):
        return None if t is None else t.to(device)
    return window._replace(rgb=moved(window.rgb), depth=moved(window.depth), points=moved(window.points),
                           position=moved(window.position))


def blob_centre(window: Window, min_height_m: float) -> torch.Tensor:
    """(2,) m: the centre of the blob of the window's depth points standing more than
    min_height_m above the table nearest the proposal, or the proposal's position where no
    blob of more than 10 points lies within 4 cm. The window must have depth."""
    points, position = window.points, window.position
    labels, count = ndimage.label((points[..., 2] > min_height_m).numpy())
    if count:
        labels = torch.from_numpy(labels)
        distance = torch.where(labels > 0, (points[..., :2] - position).norm(dim=-1), float("inf"))
        blob = labels == labels.flatten()[distance.argmin()]
        if int(blob.sum()) > 10 and float(distance.min()) < 0.04:
            return points[blob][:, :2].mean(0)
    return position
