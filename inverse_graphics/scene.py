"""The scene model shared by every renderer and method.

Conventions, stated once:
- World frame: the table top is the plane z = 0, +Z up. Metres and radians.
- Camera: OpenCV. K maps camera coordinates (x right, y down, z forward) to
  pixels (u = column, v = row), with the centre of pixel (row i, col j) at
  (u, v) = (j, i). R, t map world to camera: X_cam = R @ X_world + t.
- Object pose: object-to-world (R, t). An object lying on the table in its
  category's resting pose k (resting.py) at planar pose (x, y, yaw) has
  R = Rz(yaw) @ R_rest[k], t = (x, y, height[k]); pose 0 of the shipped objects
  is upright (R_rest = I), and pose 0 is what an object without a resting-pose
  index lies in.
- Colours: linear RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from pytorch3d.transforms import axis_angle_to_matrix

from .assets import ObjectCatalog
from .camera import Camera, checked_tensor
from .table import Table  # the scene's table, imported from here by every user of the scene model


# Where a planar object is looked for in the image: its centre's height above the table
# (metres; objects are 3-5 cm tall), and the typical ambient + diffuse shading of a visible
# face (divided out to read an object's colour from its pixels).
OBJECT_HEIGHT = 0.02
MEAN_SHADING = 0.75


def yaw_to_matrix(yaw: torch.Tensor) -> torch.Tensor:
    """(...,) radians -> (..., 3, 3) rotations about +Z."""
    axis_angle = torch.stack([torch.zeros_like(yaw), torch.zeros_like(yaw), yaw], -1)
    return axis_angle_to_matrix(axis_angle)


def resting_pose_of(rotation: torch.Tensor, category: torch.Tensor,
                    catalog: ObjectCatalog) -> tuple[torch.Tensor, torch.Tensor]:
    """Object-to-world rotations (..., 3, 3) of objects of `category` (...) -> the resting pose
    each lies in, (...) int64 (the one whose up direction points most nearly up; 0 for empty
    slots), and the yaw (...) radians in [0, 2pi) that turns it there: R = Rz(yaw) @ R_rest."""
    rotations, _ = catalog.resting_table(rotation.device)
    counts = torch.tensor(catalog.resting_counts(), device=rotation.device)
    c = category.clamp(min=0)
    R_rest = rotations.to(rotation)[c]  # (..., K, 3, 3)
    # how far up each pose's model-frame up direction points once the object is turned by `rotation`
    upness = torch.einsum("...j,...kj->...k", rotation[..., 2, :], R_rest[..., 2, :])
    valid = torch.arange(rotations.shape[1], device=rotation.device) < counts[c][..., None]
    rest = torch.where(valid, upness, -2.0).argmax(-1) * (category >= 0)
    turn = rotation @ R_rest.gather(-3, rest[..., None, None, None].expand(*rest.shape, 1, 3, 3))[..., 0, :, :].transpose(-1, -2)
    yaw = torch.atan2(turn[..., 1, 0], turn[..., 0, 0]) % (2 * np.pi)
    return rest, yaw


@dataclass
class ObjectInstance:
    """One object: category name, object-to-world pose (4, 4) metres, colour (3,)."""

    category: str
    pose: torch.Tensor
    color: torch.Tensor = field(default_factory=lambda: torch.tensor([0.8, 0.8, 0.8]))

    def __post_init__(self):
        self.pose = checked_tensor(self.pose, (4, 4), f"pose of {self.category}")
        self.color = checked_tensor(self.color, (3,), f"colour of {self.category}")

    @classmethod
    def on_table(cls, category: str, x: float, y: float, yaw: float, color, catalog: ObjectCatalog,
                 rest: int = 0) -> "ObjectInstance":
        """An object lying on the table in resting pose `rest` at (x, y) metres, turned by yaw radians."""
        c = catalog[catalog.index_of(category)]
        if not 0 <= rest < len(c.resting_poses):
            raise ValueError(f"{category} has {len(c.resting_poses)} resting poses; there is no pose {rest}")
        pose = torch.eye(4)
        pose[:3, :3] = yaw_to_matrix(torch.tensor(float(yaw)))
        if not c.resting_poses.is_upright:
            pose[:3, :3] = pose[:3, :3] @ torch.from_numpy(c.resting_poses.rotations[rest]).float()
        pose[:3, 3] = torch.tensor([x, y, c.rest_height if rest == 0 else float(c.rest_heights()[rest])])
        return cls(category, pose, torch.as_tensor(color, dtype=torch.float32))

    @property
    def planar(self) -> tuple[float, float, float]:
        """(x, y, yaw): position on the table (m) and yaw (rad, in [0, 2pi)) of an upright object
        (resting_pose_of reads any resting pose's)."""
        R = self.pose[:3, :3]
        yaw = float(torch.atan2(R[1, 0], R[0, 0])) % (2 * np.pi)
        return float(self.pose[0, 3]), float(self.pose[1, 3]), yaw


@dataclass
class Scene:
    """A table, a camera and the objects on the table."""

    objects: list[ObjectInstance]
    camera: Camera
    table: Table = field(default_factory=Table)


class ObjectSlots:
    """What B scenes of N object slots have in common, given category (B, N), -1 for an empty slot."""

    category: torch.Tensor

    def __len__(self) -> int:
        return self.category.shape[0]

    @property
    def slots(self) -> int:
        return self.category.shape[1]

    @property
    def present(self) -> torch.Tensor:
        """(B, N) bool."""
        return self.category >= 0

    @property
    def counts(self) -> torch.Tensor:
        """(B,) number of objects per scene."""
        return self.present.sum(1)


@dataclass
class PlanarObjects(ObjectSlots):
    """Objects resting on the table, B scenes of N slots: the one planar description every
    method reads and writes (samplers, renderers' planar front end, AIR, the baseline,
    refinement, the optimiser, metrics).

    category: (B, N) int64 catalog index, -1 for an empty slot.  position: (B, N, 2) metres
    on the table.  yaw: (B, N) radians about +Z.  color: (B, N, 3) albedo in [0, 1].
    score: optional (B, N) confidence in [0, 1] of each found object (what BOP ranks estimates
    by); None where a method gives none. rest: optional (B, N) int64, each object's resting pose
    (an index into its category's, resting.py); None means pose 0 for every object (what a method
    that knows no resting poses gives). Position, yaw and colour may require grad.
    """

    category: torch.Tensor
    position: torch.Tensor
    yaw: torch.Tensor
    color: torch.Tensor
    score: torch.Tensor | None = None
    rest: torch.Tensor | None = None

    def __post_init__(self):
        if self.category.dim() != 2:
            raise ValueError(f"PlanarObjects category must have shape (B, N), got {tuple(self.category.shape)}")
        B, N = self.category.shape
        fields = [("position", self.position, (2,)), ("yaw", self.yaw, ()), ("color", self.color, (3,))]
        if self.score is not None:
            fields.append(("score", self.score, ()))
        if self.rest is not None:
            fields.append(("rest", self.rest, ()))
        for name, t, tail in fields:
            if tuple(t.shape) != (B, N, *tail):
                raise ValueError(f"PlanarObjects {name} must have shape {(B, N, *tail)}, got {tuple(t.shape)}")

    @property
    def rest_index(self) -> torch.Tensor:
        """(B, N) int64 resting-pose indices (0 where none are given)."""
        return torch.zeros_like(self.category) if self.rest is None else self.rest

    @classmethod
    def empty(cls, batch_size: int, slots: int = 1, device=None) -> "PlanarObjects":
        """The bare table, batch_size times."""
        return cls(torch.full((batch_size, slots), -1, dtype=torch.long, device=device),
                   torch.zeros(batch_size, slots, 2, device=device), torch.zeros(batch_size, slots, device=device),
                   torch.zeros(batch_size, slots, 3, device=device))

    def select(self, index) -> "PlanarObjects":
        """The scenes at index (an int, a slice or a (K,) tensor of indices); an int keeps the scene axis."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return PlanarObjects(self.category[index], self.position[index], self.yaw[index], self.color[index],
                             None if self.score is None else self.score[index],
                             None if self.rest is None else self.rest[index])

    def padded(self, slots: int) -> "PlanarObjects":
        """The same objects in `slots` slots per scene (empty slots appended)."""
        extra = slots - self.slots
        if extra < 0:
            raise ValueError(f"cannot pad {self.slots} object slots down to {slots}")
        if extra == 0:
            return self
        pad = PlanarObjects.empty(len(self), extra, self.category.device)
        return PlanarObjects(torch.cat([self.category, pad.category], 1),
                             torch.cat([self.position, pad.position.to(self.position)], 1),
                             torch.cat([self.yaw, pad.yaw.to(self.yaw)], 1),
                             torch.cat([self.color, pad.color.to(self.color)], 1),
                             None if self.score is None else torch.cat([self.score, pad.yaw.to(self.score)], 1),
                             None if self.rest is None else torch.cat([self.rest, pad.category.clamp(min=0)], 1))

    @classmethod
    def cat(cls, parts: list["PlanarObjects"]) -> "PlanarObjects":
        """Scenes joined along the scene axis (padded to the largest slot count)."""
        if not parts:
            raise ValueError("PlanarObjects.cat needs at least one part")
        slots = max(p.slots for p in parts)
        parts = [p.padded(slots) for p in parts]
        joined = [torch.cat([getattr(p, name) for p in parts]) for name in ("category", "position", "yaw", "color")]
        scored = any(p.score is not None for p in parts)  # a part without scores counts as scored 1
        score = torch.cat([p.score if p.score is not None else p.present.float() for p in parts]) if scored else None
        rest = torch.cat([p.rest_index for p in parts]) if any(p.rest is not None for p in parts) else None
        return cls(*joined, score, rest)

    def to(self, device) -> "PlanarObjects":
        """The same objects on device."""
        return PlanarObjects(self.category.to(device), self.position.to(device), self.yaw.to(device),
                             self.color.to(device), None if self.score is None else self.score.to(device),
                             None if self.rest is None else self.rest.to(device))

    def detach(self) -> "PlanarObjects":
        return PlanarObjects(self.category, self.position.detach(), self.yaw.detach(), self.color.detach(),
                             None if self.score is None else self.score.detach(), self.rest)

    def to_batch(self, catalog: ObjectCatalog, camera: Camera, table: Table | None = None,
                 opacity: torch.Tensor | None = None) -> "SceneBatch":
        """The SceneBatch these objects make, lying on the table (differentiable in position, yaw, colour)."""
        return SceneBatch.from_planar(self.category, self.position, self.yaw, self.color, catalog, camera, table,
                                      opacity, self.rest)


@dataclass
class SceneBatch(ObjectSlots):
    """B scenes sharing one camera and table, padded to N object slots.

    category: (B, N) int64 category index, -1 for an empty slot.
    rotation: (B, N, 3, 3) object-to-world.  translation: (B, N, 3) metres.
    color: (B, N, 3) in [0, 1].  Rotation, translation and colour may require grad.
    opacity: optional (B, N) in [0, 1], how much each object occludes (soft renders
    only; a relaxed 'is present' for training). None means fully opaque.
    """

    category: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    color: torch.Tensor
    camera: Camera
    table: Table = field(default_factory=Table)
    opacity: torch.Tensor | None = None

    def __post_init__(self):
        B, N = self.category.shape
        if self.opacity is not None and tuple(self.opacity.shape) != (B, N):
            raise ValueError(f"SceneBatch opacity must have shape {(B, N)}, got {tuple(self.opacity.shape)}")
        for name, t, tail in [("rotation", self.rotation, (3, 3)), ("translation", self.translation, (3,)),
                              ("color", self.color, (3,))]:
            if tuple(t.shape) != (B, N, *tail):
                raise ValueError(f"SceneBatch {name} must have shape {(B, N, *tail)}, got {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise ValueError(f"SceneBatch {name} has NaN or Inf entries")

    @classmethod
    def from_planar(cls, category: torch.Tensor, position: torch.Tensor, yaw: torch.Tensor, color: torch.Tensor,
                    catalog: ObjectCatalog, camera: Camera, table: Table | None = None,
                    opacity: torch.Tensor | None = None, rest: torch.Tensor | None = None) -> "SceneBatch":
        """Objects lying on the table from planar poses (differentiable in position, yaw, colour).

        category: (B, N) int64, -1 empty.  position: (B, N, 2) metres.  yaw: (B, N) radians.
        color: (B, N, 3).  opacity: optional (B, N).  rest: optional (B, N) int64 resting-pose
        index of each object (None: pose 0).
        """
        if category.numel() and int(category.max()) >= len(catalog):
            raise ValueError(f"category index {int(category.max())} out of range for {len(catalog)} categories")
        if catalog.upright_only:  # the one pose is the identity: exactly the rotations and heights of old
            height = catalog.rest_heights(position.device).to(position)[category.clamp(min=0)] * (category >= 0)
            rotation = yaw_to_matrix(yaw)
        else:
            rest = torch.zeros_like(category) if rest is None else rest.to(category.device)
            counts = torch.tensor(catalog.resting_counts(), device=category.device)[category.clamp(min=0)]
            if bool(((rest < 0) | (rest >= counts))[category >= 0].any()):
                raise ValueError(f"a resting-pose index is out of range (the categories have "
                                 f"{catalog.resting_counts()} resting poses)")
            rotations, heights = catalog.resting_table(position.device)
            index = (category.clamp(min=0), rest.clamp(min=0) * (category >= 0))
            height = heights.to(position)[index] * (category >= 0)
            rotation = yaw_to_matrix(yaw) @ rotations.to(yaw)[index]
        translation = torch.cat([position, height[..., None]], -1)
        return cls(category, rotation, translation, color, camera, table or Table(), opacity)

    @classmethod
    def from_scenes(cls, scenes: list[Scene], catalog: ObjectCatalog, max_objects: int | None = None) -> "SceneBatch":
        if not scenes:
            raise ValueError("from_scenes needs at least one scene")
        N = max_objects if max_objects is not None else max(1, max(len(s.objects) for s in scenes))
        B = len(scenes)
        category = torch.full((B, N), -1, dtype=torch.long)
        pose = torch.eye(4).repeat(B, N, 1, 1)
        color = torch.zeros(B, N, 3)
        for b, scene in enumerate(scenes):
            if len(scene.objects) > N:
                raise ValueError(f"scene {b} has {len(scene.objects)} objects, more than {N} slots")
            for n, obj in enumerate(scene.objects):
                category[b, n] = catalog.index_of(obj.category)
                pose[b, n] = obj.pose
                color[b, n] = obj.color
        return cls(category, pose[..., :3, :3], pose[..., :3, 3], color, scenes[0].camera, scenes[0].table)

    def to_scenes(self, catalog: ObjectCatalog) -> list[Scene]:
        scenes = []
        for b in range(len(self)):
            objects = []
            for n in range(self.category.shape[1]):
                c = int(self.category[b, n])
                if c < 0:
                    continue
                pose = torch.eye(4)
                pose[:3, :3] = self.rotation[b, n].detach()
                pose[:3, 3] = self.translation[b, n].detach()
                objects.append(ObjectInstance(catalog[c].name, pose, self.color[b, n].detach().clone()))
            scenes.append(Scene(objects, self.camera, self.table))
        return scenes

    def to(self, device) -> "SceneBatch":
        """The same scenes with their tensors on device (camera and table are shared)."""
        return SceneBatch(self.category.to(device), self.rotation.to(device), self.translation.to(device),
                          self.color.to(device), self.camera, self.table,
                          None if self.opacity is None else self.opacity.to(device))

    def select(self, index) -> "SceneBatch":
        """The scenes at index (a slice, or a (K,) tensor of indices) as a SceneBatch."""
        opacity = None if self.opacity is None else self.opacity[index]
        return SceneBatch(self.category[index], self.rotation[index], self.translation[index], self.color[index],
                          self.camera, self.table, opacity)

    @classmethod
    def cat(cls, batches: list["SceneBatch"]) -> "SceneBatch":
        """Batches of one camera and table (and the same N) joined along the scene axis."""
        first = batches[0]
        return cls(torch.cat([b.category for b in batches]), torch.cat([b.rotation for b in batches]),
                   torch.cat([b.translation for b in batches]), torch.cat([b.color for b in batches]),
                   first.camera, first.table)

    def planar(self, catalog: ObjectCatalog | None = None) -> PlanarObjects:
        """The objects' planar description: position (m), yaw (radians in [0, 2pi)) about +Z and,
        given the catalog, the resting pose each lies in (resting_pose_of); without it, upright."""
        if catalog is None or catalog.upright_only:
            yaw = torch.atan2(self.rotation[..., 1, 0], self.rotation[..., 0, 0]) % (2 * np.pi)
            return PlanarObjects(self.category, self.translation[..., :2], yaw, self.color)
        rest, yaw = resting_pose_of(self.rotation, self.category, catalog)
        return PlanarObjects(self.category, self.translation[..., :2], yaw, self.color, rest=rest)

    def model_to_camera(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Objects' poses in the camera frame: R_m2c (B, N, 3, 3) and t_m2c (B, N, 3) metres."""
        R = self.camera.R.to(self.rotation)
        return R @ self.rotation, self.translation @ R.T + self.camera.t.to(self.translation)
