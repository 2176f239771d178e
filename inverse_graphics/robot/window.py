"""What render-and-compare sees of a frame: the frame at a fine resolution (1 / fine_scale of
the frame's) and a square window of it around each proposal, with the window's own camera
and its local table colour; and where in it objects AIR did not propose may be (standing_blobs:
points standing above the table; colour_blobs, without depth: pixels not of the table's
chromaticity).

Units: metres in the table frame; images (h, w, 3) in [0, 1]; depth (h, w) metres, 0 = none.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
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


def standing_blobs(points: torch.Tensor, min_height_m: float, jump_m: float = 0.01, open_iterations: int = 0,
                   exclude: torch.Tensor | None = None) -> tuple[np.ndarray, int]:
    """(h, w, 3) points in the table frame (NaN: no reading) -> (labels (h, w), count): the blobs
    of points standing more than min_height_m above the table, but for exclude (h, w) bool
    (then open_iterations of binary opening), cut where two standing neighbours lie more than
    jump_m apart in space, then each grown back over the standing pixels within 2 pixels of it
    (the cut ones: edges, mixed pixels)."""
    above = points[..., 2] > min_height_m
    above = (above if exclude is None else above & ~exclude).numpy()
    if open_iterations:
        above = ndimage.binary_opening(above, iterations=open_iterations)
    # Why the cut: an object beside clutter or another object touches it in the image, not in
    # space; one blob would centre between them (and the objects' hypotheses start there)
    above_t = torch.from_numpy(above)
    jump = torch.zeros_like(above_t)
    for dim in (0, 1):
        first, second = [slice(None)] * 2, [slice(None)] * 2
        first[dim], second[dim] = slice(None, -1), slice(1, None)
        step = (((points.diff(dim=dim) ** 2).sum(-1) > jump_m ** 2) & above_t[tuple(first)]
                & above_t[tuple(second)])  # NaN compares False: no cut
        jump[tuple(first)] |= step
        jump[tuple(second)] |= step
    labels, count = ndimage.label(above & ~jump.numpy())
    if count:
        distance, nearest = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        labels = np.where(above & (distance <= 2), labels[tuple(nearest)], 0)
    return labels, count


def blob_centre(window: Window, min_height_m: float) -> torch.Tensor:
    """(2,) m: the centre of the blob (standing_blobs) of more than 10 of the window's depth
    points nearest the proposal, or the proposal's position where none lies within 4 cm. The
    window must have depth."""
    points, position = window.points, window.position
    labels, count = standing_blobs(points, min_height_m)
    if count:
        labels = torch.from_numpy(labels)
        large = torch.bincount(labels.flatten(), minlength=count + 1) > 10
        large[0] = False
        distance = torch.where(large[labels], (points[..., :2] - position).norm(dim=-1), float("inf"))
        if float(distance.min()) < 0.04:
            return points[labels == labels.flatten()[distance.argmin()]][:, :2].mean(0)
    return position


def colour_blobs(rgb: torch.Tensor, within: torch.Tensor, min_chroma: float, open_iterations: int = 1,
                 exclude: torch.Tensor | None = None) -> tuple[np.ndarray, int]:
    """(h, w, 3) image, within (h, w) bool (where objects may be seen) -> (labels (h, w), count):
    the blobs of pixels in `within`, but for exclude (h, w) bool, whose chromaticity (rgb over
    r + g + b) lies more than min_chroma from the table's (the median of `within`'s pixels: the
    table fills most of it), after open_iterations of binary opening. Chromaticity, not colour:
    a shadow darkens the table but keeps its chromaticity, a coloured object does not."""
    chroma = rgb / rgb.sum(-1, keepdim=True).clamp(min=1e-3)
    table = chroma[within].median(0).values if bool(within.any()) else chroma.flatten(0, 1).median(0).values
    coloured = ((chroma - table).norm(dim=-1) > min_chroma) & within
    coloured = (coloured if exclude is None else coloured & ~exclude).numpy()
    if open_iterations:
        coloured = ndimage.binary_opening(coloured, iterations=open_iterations)
    return ndimage.label(coloured)
