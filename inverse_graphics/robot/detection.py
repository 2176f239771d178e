"""What fitting a frame answers: a Detection per object found (category, 6-DoF pose in the camera
frame, score, which proposal found it, resting pose), a proposal's best Hypothesis, and where a
shape's top centres (the blob of points a camera above sees of it)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..scene import PlanarObjects


@dataclass
class Detection:
    """category: name; pose_camera (4, 4) model-to-camera, metres; planar (x, y, yaw) on the table;
    color (3,); score in [0, 1]: the share of the window's difference from the bare table that the
    object explains x the category's share of the evidence among categories; source: which
    proposal found it, 'air', 'depth' (a blob of points above the table) or 'colour' (of pixels
    not of the table's chromaticity); rest: the resting pose it lies in (an index into its
    category's, resting.py)."""

    category: str
    obj_id: int
    pose_camera: torch.Tensor
    planar: tuple[float, float, float]
    color: tuple[float, float, float]
    score: float
    source: str = "air"
    rest: int = 0

    def to_json(self) -> dict:
        x, y, yaw = self.planar
        return {"category": self.category, "obj_id": self.obj_id, "score": round(self.score, 4),
                "pose_camera": [[round(float(v), 6) for v in row] for row in self.pose_camera],
                "x_m": round(x, 5), "y_m": round(y, 5), "yaw_rad": round(yaw, 5), "rest": self.rest,
                "color": [round(c, 4) for c in self.color], "source": self.source}


@dataclass
class Hypothesis:
    """A proposal's best explanation: objects, one scene of one object (PlanarObjects (1, 1));
    loss, its robust loss on the window; gain, the bare table's loss minus it; explained, the
    share of the bare table's loss it removes; category_prob, its category's share of the evidence."""

    objects: PlanarObjects
    loss: float
    gain: float
    explained: float
    category_prob: float

    @property
    def score(self) -> float:
        """In [0, 1]: the share of the window it explains x its category's share of the evidence."""
        return self.explained * self.category_prob

    @property
    def position(self) -> torch.Tensor:
        """(2,) metres on the table."""
        return self.objects.position[0, 0]


def one_scene(hypotheses: list[Hypothesis]) -> PlanarObjects:
    """The hypotheses' objects as one scene: PlanarObjects (1, N)."""
    parts = [h.objects for h in hypotheses]
    return PlanarObjects(*(torch.cat([getattr(p, name) for p in parts], 1)
                           for name in ("category", "position", "yaw", "color")),
                         parts[0].position.new_tensor([[h.score for h in hypotheses]]),
                         torch.cat([p.rest_index for p in parts], 1))


def top_centre(category, rest: int) -> torch.Tensor:
    """(2,) metres: the middle (x, y) of a category's top surface, its faces that look up, in its
    resting pose `rest` at yaw 0, from its origin: where a blob of the points a camera above sees
    of it centres."""
    rotation = torch.as_tensor(category.resting_poses.rotations[rest], dtype=torch.float64)
    verts = category.verts.double() @ rotation.T
    a, b, c = verts[category.faces].unbind(1)
    normal = torch.linalg.cross(b - a, c - a)
    area = normal.norm(dim=-1)
    up = normal[:, 2] > 0.5 * area  # faces within 60 degrees of facing up
    middle = ((a + b + c)[up, :2] / 3 * area[up, None]).sum(0) / area[up].sum().clamp(min=1e-12)
    return middle.float()
