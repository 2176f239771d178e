"""How much of each object a camera sees: BOP's scene_gt_info.json fields, from hard renders,
following the BOP toolkit's calc_gt_info (bop19 visibility).

Each object is rendered alone on a canvas three times the image's width and height (the image
in its middle), and the whole scene once. Depths are distances from the camera centre along each
pixel's ray. An object's pixel inside the image is visible where the scene is no more than
VISIBILITY_TOLERANCE_M nearer there. px_count_all: the object's pixels on the whole canvas;
px_count_valid: those inside the image (rendered depth is valid everywhere); px_count_visib:
the visible ones; visib_fract = visib / all (0 when all is 0). Boxes are [x, y, w, h] pixels
with w = x_max - x_min (as the toolkit writes them), [-1, -1, -1, -1] when nothing is visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..assets import ObjectCatalog
from ..camera import Camera
from ..scene import SceneBatch
from .renderer import SceneRenderer

VISIBILITY_TOLERANCE_M = 0.015  # the toolkit's delta (15 mm)


@dataclass
class Visibility:
    """Per object slot (B, N): px_count_all, px_count_valid, px_count_visib (int64) and visib_fract;
    bbox_obj, bbox_visib (B, N, 4) int64 [x, y, w, h]."""

    px_count_all: torch.Tensor
    px_count_valid: torch.Tensor
    px_count_visib: torch.Tensor
    visib_fract: torch.Tensor
    bbox_obj: torch.Tensor
    bbox_visib: torch.Tensor

    def scene_gt_info(self, b: int, slots: list[int]) -> list[dict]:
        """Scene b's entries of scene_gt_info.json, in the order of `slots`."""
        return [{"bbox_obj": self.bbox_obj[b, n].tolist(), "bbox_visib": self.bbox_visib[b, n].tolist(),
                 "px_count_all": int(self.px_count_all[b, n]), "px_count_valid": int(self.px_count_valid[b, n]),
                 "px_count_visib": int(self.px_count_visib[b, n]),
                 "visib_fract": float(self.visib_fract[b, n])} for n in slots]


def _boxes(mask: torch.Tensor, shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """(K, H, W) bool -> (K, 4) int64 [x_min, y_min, x_max - x_min, y_max - y_min], moved by
    -shift (dx, dy); [-1, -1, -1, -1] where empty."""
    rows, cols = mask.any(2), mask.any(1)
    boxes = torch.full((len(mask), 4), -1, dtype=torch.long)
    for k in range(len(mask)):
        ys, xs = rows[k].nonzero()[:, 0], cols[k].nonzero()[:, 0]
        if len(ys):
            boxes[k] = torch.stack([xs[0] - shift[0], ys[0] - shift[1], xs[-1] - xs[0], ys[-1] - ys[0]])
    return boxes


def _ray_distance(depth: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(..., H, W) depth along the optical axis -> distance from the camera centre (0 stays 0)."""
    H, W = depth.shape[-2:]
    K = camera.K.double()
    x = (torch.arange(W, dtype=torch.float64) - K[0, 2]) / K[0, 0]
    y = (torch.arange(H, dtype=torch.float64) - K[1, 2]) / K[1, 1]
    return depth.double() * torch.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + 1)


def object_visibility(batch: SceneBatch, catalog: ObjectCatalog, scene_depth: torch.Tensor | None = None,
                      chunk: int = 256) -> Visibility:
    """The visibility of every object slot of a SceneBatch (empty slots: zeros and empty boxes).
    scene_depth: (B, H, W) metres along the optical axis, 0 = no reading: the depth a camera
    measured (with whatever else it saw), used instead of rendering the scene."""
    renderer = SceneRenderer(catalog, mode="hard", gradients="none")
    B, N = batch.category.shape
    H, W = batch.camera.image_size
    large = batch.camera.cropped(-H, -W, (3 * H, 3 * W))
    b_idx, n_idx = batch.present.nonzero(as_tuple=True)  # each present object, alone in a scene of its own
    alone = SceneBatch(batch.category[b_idx, n_idx][:, None], batch.rotation[b_idx, n_idx][:, None],
                       batch.translation[b_idx, n_idx][:, None], batch.color[b_idx, n_idx][:, None], large,
                       batch.table)
    alone_depth = torch.zeros(B, N, 3 * H, 3 * W)
    alone_mask = torch.zeros(B, N, 3 * H, 3 * W, dtype=torch.bool)
    with torch.no_grad():
        if scene_depth is None:
            scene = torch.cat([renderer(batch.select(slice(s, s + chunk))).depth for s in range(0, B, chunk)])
        elif tuple(scene_depth.shape) != (B, H, W):
            raise ValueError(f"scene_depth must have shape {(B, H, W)}, got {tuple(scene_depth.shape)}")
        else:
            scene = scene_depth
        for s in range(0, len(b_idx), chunk):
            out = renderer(alone.select(slice(s, s + chunk)))
            rows = (b_idx[s:s + chunk], n_idx[s:s + chunk])
            alone_depth[rows], alone_mask[rows] = out.depth, out.instance >= 0
    inside = alone_mask[..., H:2 * H, W:2 * W]
    object_distance = _ray_distance(alone_depth[..., H:2 * H, W:2 * W], batch.camera)
    scene_distance = _ray_distance(scene, batch.camera)[:, None]
    visible = inside & ((object_distance - scene_distance <= VISIBILITY_TOLERANCE_M) | (scene_distance == 0))
    px_all, px_valid, px_visib = (m.flatten(2).sum(-1) for m in (alone_mask, inside, visible))
    fract = torch.where(px_all > 0, px_visib / px_all.clamp(min=1), 0.0)
    seen = (px_visib > 0)[..., None]
    bbox_obj = torch.where(seen, _boxes(alone_mask.flatten(0, 1), (W, H)).reshape(B, N, 4), -1)
    bbox_visib = torch.where(seen, _boxes(visible.flatten(0, 1)).reshape(B, N, 4), -1)
    return Visibility(px_all, px_valid, px_visib, fract, bbox_obj, bbox_visib)
