"""Resting poses: the ways an object can lie on the table.

A resting pose is a rotation R_rest (3, 3) from the model frame to the frame of the object lying
on one of its faces, +Z up. An object on the table at planar pose (x, y, yaw) in resting pose k
has the object-to-world pose R = Rz(yaw) @ R_rest[k], t = (x, y, height[k]): (x, y) is where the
model origin lies and height[k] (m) lifts its lowest vertex onto the table. The identity is the
upright pose, the mesh's own frame resting on its lowest z (every object's only pose before
resting poses; the shipped objects keep it).

Where a category's resting poses come from (assets.category_from_bop):
- models_info.json's `resting_poses`, when an entry lists them: [{"R": 9 numbers, row-major,
  "probability": p (optional, default equal)}, ...], in that order;
- otherwise trimesh's stable poses (`Trimesh.compute_stable_poses`: the probability that the
  object, dropped at random, comes to rest on each face of its convex hull, from its centre of
  mass), with poses the object's symmetries make look alike merged into the most upright of them
  (their probabilities summed), then those below MIN_PROBABILITY dropped (the most likely is
  always kept), renormalised, most likely first. Each pose turns the face's outward normal to -Z
  by the smallest rotation (trimesh.geometry.align_vectors), so the upright pose is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import trimesh

MIN_PROBABILITY = 0.05  # resting poses less likely than this (after merging) are dropped
SAME_DIRECTION = 0.02  # two unit 'up' directions closer than this (about 1 degree) are one


class RestingPoseError(ValueError):
    """A resting pose that is not a rotation, or a probability that is not one."""


@dataclass(frozen=True)
class RestingPoses:
    """K ways to lie on the table: rotations (K, 3, 3) float64, model -> resting frame; probabilities
    (K,) summing to 1 (how often each occurs: what samplers draw from)."""

    rotations: np.ndarray
    probabilities: np.ndarray

    def __len__(self) -> int:
        return len(self.rotations)

    @classmethod
    def upright(cls) -> "RestingPoses":
        """The mesh's own frame only (the identity)."""
        return cls(np.eye(3)[None], np.ones(1))

    @cached_property  # read on every render's from_planar: computed once (the rotations never change)
    def is_upright(self) -> bool:
        """Whether the only pose is the identity (an object as every object was before resting poses)."""
        return len(self) == 1 and np.allclose(self.rotations[0], np.eye(3), atol=1e-9)

    @property
    def up(self) -> np.ndarray:
        """(K, 3) the model-frame direction that points up in each pose."""
        return self.rotations[:, 2, :]

    def heights(self, verts: np.ndarray) -> np.ndarray:
        """(K,) metres: how far above the table the model origin lies in each pose (verts (V, 3) m)."""
        return -(verts @ self.up.T).min(0)

    def to_info(self) -> list[dict]:
        """models_info.json's `resting_poses`."""
        return [{"R": [float(round(v, 9)) + 0.0 for v in R.ravel()], "probability": float(round(p, 6))}
                for R, p in zip(self.rotations, self.probabilities)]


def resting_poses_from_info(value, where: str, error: type[Exception] = RestingPoseError) -> RestingPoses:
    """models_info.json's `resting_poses` (see the module docstring) -> RestingPoses; a clear `error`
    naming `where` for anything that is not a list of rotations and probabilities."""
    if not isinstance(value, list) or not value:
        raise error(f"{where}: resting_poses must be a non-empty list of "
                               "{\"R\": [9 numbers, row-major], \"probability\": p}")
    rotations, probabilities = [], []
    for k, pose in enumerate(value):
        if not isinstance(pose, dict) or "R" not in pose:
            raise error(f"{where}: resting_poses[{k}] must be {{\"R\": [9 numbers, row-major], "
                                   "\"probability\": p}")
        try:
            R = np.asarray(pose["R"], dtype=float).reshape(3, 3)
            p = float(pose.get("probability", 1.0 / len(value)))
        except (TypeError, ValueError):
            raise error(f"{where}: resting_poses[{k}].R must be 9 numbers (a rotation, row-major) "
                                   "and its probability a number") from None
        if not (np.isfinite(R).all() and np.allclose(R @ R.T, np.eye(3), atol=1e-4) and np.linalg.det(R) > 0):
            raise error(f"{where}: resting_poses[{k}].R is not a rotation (orthonormal, determinant +1)")
        if not (np.isfinite(p) and p > 0):
            raise error(f"{where}: resting_poses[{k}].probability must be positive, got {p}")
        rotations.append(R)
        probabilities.append(p)
    probabilities = np.array(probabilities)
    return RestingPoses(np.stack(rotations), probabilities / probabilities.sum())


def look_alike(up_a: np.ndarray, up_b: np.ndarray, symmetries_discrete: np.ndarray,
               symmetries_continuous: list) -> bool:
    """Whether an object lying with model direction up_a (3,) up looks, turned about the vertical,
    like one lying with up_b up: some symmetry S (models_info's, rotations of the model frame)
    maps up_b to up_a, since the pose R S of a pose R shows the same shape."""
    axes = [np.asarray(a, float) / np.linalg.norm(a) for a, _ in symmetries_continuous]
    if len(axes) >= 2:  # continuous about two axes: every direction is every other
        return True
    for S in [np.eye(3), *(np.asarray(s)[:3, :3] for s in symmetries_discrete)]:
        turned = S @ up_b
        if np.linalg.norm(turned - up_a) < SAME_DIRECTION:
            return True
        # about a continuous axis, directions at the same angle to it are alike
        if axes and abs(float(axes[0] @ turned) - float(axes[0] @ up_a)) < SAME_DIRECTION / 2:
            return True
    return False


def stable_resting_poses(verts: np.ndarray, faces: np.ndarray, symmetries_discrete: np.ndarray,
                         symmetries_continuous: list, min_probability: float = MIN_PROBABILITY) -> RestingPoses:
    """A mesh's likely resting poses by the rule in the module docstring. verts (V, 3) (any unit),
    faces (F, 3); symmetries as in assets.Category."""
    mesh = trimesh.Trimesh(verts, faces, process=True)
    # a mesh that does not enclose a volume (parts stuck together, open shells) has no meaningful
    # mass integral: its convex hull's centre stands in
    center = mesh.center_mass if mesh.is_volume else mesh.convex_hull.center_mass
    transforms, probabilities = mesh.compute_stable_poses(center_mass=center)
    if len(transforms) == 0:  # no stable face found (a degenerate hull): as the mesh stands
        return RestingPoses.upright()
    ups = np.asarray(transforms)[:, 2, :3]  # each pose's up direction in the model frame
    classes: list[list[int]] = []
    for i in range(len(ups)):
        for members in classes:
            if look_alike(ups[members[0]], ups[i], symmetries_discrete, symmetries_continuous):
                members.append(i)
                break
        else:
            classes.append([i])
    merged = np.array([probabilities[m].sum() for m in classes])
    keep = [k for k in np.argsort(-merged, kind="stable") if merged[k] >= min_probability] or [int(merged.argmax())]
    # each class by its most upright member, turned onto the table by the smallest rotation
    rotations = [trimesh.geometry.align_vectors(ups[max(classes[k], key=lambda i: ups[i, 2])], [0.0, 0.0, 1.0])[:3, :3]
                 for k in keep]
    return RestingPoses(np.stack(rotations), merged[keep] / merged[keep].sum())
