"""One call from numpy arrays to poses: `estimate(rgb, K, depth=..., camera_to_table=...)`.

The same pipeline as `inverse-graphics poses` on one frame: AIR proposes where objects are,
render-and-compare on windows decides what they are and how they lie. Each call builds the
model for the frame's camera and table colour (about a second), so results do not depend on
earlier calls; for folders of frames, `poses` (run_poses) builds it once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..assets import ObjectCatalog
from ..devices import resolve_device
from ..paths import SHIPPED_AIR
from .frames import CameraSetup, Frame, table_from_depth
from .poses import FramePoseEstimator, PoseSettings
from .view import frames_table_color, load_for_camera


def _rgb(rgb) -> torch.Tensor:
    array = np.asarray(rgb)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"rgb must be an (H, W, 3) array, got shape {array.shape}")
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / 255.0)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"rgb must be uint8 (0-255) or float (0-1), got {array.dtype}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError("a float rgb must hold finite values in [0, 1]")
    return torch.from_numpy(array.astype(np.float32))


def _depth(depth, size: tuple[int, int]) -> torch.Tensor:
    array = np.asarray(depth)
    if array.shape != size:
        raise ValueError(f"depth must be (H, W) = {size} like rgb, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):  # a depth image: millimetres
        metres = array.astype(np.float32) / 1000.0
    elif np.issubdtype(array.dtype, np.floating):
        metres = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)  # no reading: 0
    else:
        raise ValueError(f"depth must be float metres or integer millimetres, got {array.dtype}")
    if metres.min() < 0 or not (metres > 0).any():
        raise ValueError("depth must be non-negative with some readings (0 = no reading)")
    return torch.from_numpy(metres)


def estimate(rgb, K, depth=None, camera_to_table=None, model: str | Path = SHIPPED_AIR,
             objects: list[str] | None = None, models: str | Path | None = None,
             device: str | torch.device = "cpu") -> list[dict]:
    """One frame's objects.

    rgb: (H, W, 3) uint8 or float in [0, 1]. K: (3, 3) pixel intrinsics (OpenCV). depth: (H, W)
    float metres or integer millimetres (0 or NaN: no reading), or None. camera_to_table: (4, 4)
    metres, the camera's pose in a frame whose z = 0 plane is the table top, +z up; without it the
    table is found in depth (one of the two is needed). model: AIR weights (the shipped ones by
    default, or a `fit` checkpoint). models: a BOP models folder, the objects that may appear
    (default the shipped ones). objects: the names among them that may appear (default all).

    Returns one dict per object: "category", "obj_id", "pose" (4, 4) float64 numpy, model to
    camera, metres; "score" in [0, 1] (a confidence: see the README); "x_m", "y_m", "yaw_rad" on
    the table and "rest", the resting pose it lies in (an index into its category's; 0 = upright
    for the shipped objects).
    """
    rgb_t = _rgb(rgb)
    size = tuple(rgb_t.shape[:2])
    depth_t = None if depth is None else _depth(depth, size)
    setup = CameraSetup(torch.as_tensor(np.asarray(K, float), dtype=torch.float32), size)
    if camera_to_table is not None:
        T = np.asarray(camera_to_table, float)
        if T.shape != (4, 4) or not np.isfinite(T).all():
            raise ValueError(f"camera_to_table must be a finite (4, 4) matrix, got shape {T.shape}")
        table_to_camera = torch.linalg.inv(torch.as_tensor(T)).float()
    elif depth_t is not None:
        table_to_camera = table_from_depth(depth_t, setup.K)
    else:
        raise ValueError("give camera_to_table, or depth to find the table in")
    frame = Frame("frame", rgb_t, depth_t, setup.camera(table_to_camera))
    air, _ = load_for_camera(model, frame.camera, frames_table_color([frame]), resolve_device(device))
    settings = PoseSettings(categories=tuple(objects)) if objects else None
    detections, _ = FramePoseEstimator(air, settings, ObjectCatalog.load(models)).estimate(frame)
    return [{"category": d.category, "obj_id": d.obj_id, "pose": d.pose_camera.double().numpy(), "score": d.score,
             "x_m": d.planar[0], "y_m": d.planar[1], "yaw_rad": d.planar[2], "rest": d.rest} for d in detections]
