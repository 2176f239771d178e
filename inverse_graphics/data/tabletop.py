"""tabletop-v1: seeded scenes of 0-3 known objects resting on a table.

Every scene is drawn from its own random stream, seeded by (seed, split, index),
so a scene is the same whether it is made alone, in a batch, or on another day.
Counts are uniform over the split's allowed counts; categories uniform; each
object's colour is drawn independently of its category (identity must come
from shape); positions uniform over the placement square, rejecting overlaps of
the objects' bounding circles (their largest over resting poses); yaw uniform in
[0, 2pi); last, for a category with more than one resting pose, the pose, drawn with
its probability (resting.py). A category with one resting pose draws nothing for it,
so the scenes of such catalogs (the shipped one) are what they were before resting poses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import colorsys

import numpy as np
import torch

from ..assets import ObjectCatalog
from ..rendering.renderer import RenderOutput, SceneRenderer
from ..camera import Camera
from ..scene import PlanarObjects, SceneBatch, Table

NAME = "tabletop-v1"


@dataclass(frozen=True)
class Split:
    counts: tuple[int, ...]  # allowed object counts, drawn uniformly
    size: int  # number of scenes
    stream: int  # random-stream id, distinct per split


# The generalization splits follow the paper: extrapolation trains on 0-2 objects
# and tests on exactly 3; interpolation trains on 0, 1 and 3 and tests on 2.
SPLITS = {
    "train": Split((0, 1, 2, 3), 50_000, 1),
    "val": Split((0, 1, 2, 3), 500, 2),
    "test": Split((0, 1, 2, 3), 1000, 3),
    "extrap-train": Split((0, 1, 2), 50_000, 4),
    "extrap-test": Split((3,), 1000, 5),
    "interp-train": Split((0, 1, 3), 50_000, 6),
    "interp-test": Split((2,), 1000, 7),
    # robot frames (inverse_graphics.robot): 1-3 objects, as in the frames users fit
    "frames-train": Split((1, 2, 3), 50_000, 8),
    "frames-test": Split((1, 2, 3), 1000, 9),
}


@dataclass
class TabletopConfig:
    """Scene parameters. Lengths in metres, angles in degrees where named so."""

    image_size: tuple[int, int] = (64, 64)
    seed: int = 2016
    max_objects: int = 3
    placement_half_extent: float = 0.12  # objects' centres lie in [-e, e]^2
    min_gap: float = 0.005  # between bounding circles
    camera_eye: tuple[float, float, float] = (0.0, -0.32, 0.36)
    camera_target: tuple[float, float, float] = (0.0, 0.01, 0.0)
    fov_y_deg: float = 40.0
    # Large enough to fill the view, and wholly in front of the camera.
    table: Table = field(default_factory=lambda: Table(size=(0.6, 0.72), center=(0.0, 0.06)))
    # A robot camera (Camera.to_dict(), world = table frame) replaces the look-at camera when given;
    # image_size then follows it. Objects are placed around placement_center (m).
    camera_override: dict | None = None
    placement_center: tuple[float, float] = (0.0, 0.0)

    def camera(self) -> Camera:
        if self.camera_override is not None:
            return Camera.from_dict(self.camera_override)
        return Camera.look_at(self.camera_eye, self.camera_target, self.fov_y_deg, self.image_size)

    def to_dict(self) -> dict:
        return {"name": NAME, "image_size": list(self.image_size), "seed": self.seed,
                "max_objects": self.max_objects, "placement_half_extent": self.placement_half_extent,
                "min_gap": self.min_gap, "camera": self.camera().to_dict(),
                "table": {"size": list(self.table.size), "color": list(self.table.color),
                          "center": list(self.table.center)}}

    def to_fields(self) -> dict:
        """The constructor's arguments, JSON-ready: TabletopConfig.from_fields(c.to_fields()) == c."""
        return {"image_size": list(self.image_size), "seed": self.seed, "max_objects": self.max_objects,
                "placement_half_extent": self.placement_half_extent, "min_gap": self.min_gap,
                "camera_eye": list(self.camera_eye), "camera_target": list(self.camera_target),
                "fov_y_deg": self.fov_y_deg, "table": {"size": list(self.table.size),
                                                       "color": list(self.table.color),
                                                       "center": list(self.table.center)},
                "camera_override": self.camera_override, "placement_center": list(self.placement_center)}

    @classmethod
    def from_fields(cls, d: dict) -> "TabletopConfig":
        t = d["table"]
        return cls(image_size=tuple(d["image_size"]), seed=d["seed"], max_objects=d["max_objects"],
                   placement_half_extent=d["placement_half_extent"], min_gap=d["min_gap"],
                   camera_eye=tuple(d["camera_eye"]), camera_target=tuple(d["camera_target"]),
                   fov_y_deg=d["fov_y_deg"], table=Table(size=tuple(t["size"]), color=tuple(t["color"]),
                                                         center=tuple(t["center"])),
                   camera_override=d.get("camera_override"),
                   placement_center=tuple(d.get("placement_center", (0.0, 0.0))))


class Tabletop:
    """The tabletop-v1 scene distribution for one configuration and catalog."""

    def __init__(self, config: TabletopConfig | None = None, catalog: ObjectCatalog | None = None):
        self.config = config or TabletopConfig()
        self.catalog = catalog or ObjectCatalog.load()
        self.camera = self.config.camera()
        # Bounding-circle radius (m) of each category seen from above, for rejecting overlaps.
        self.footprint = self.catalog.footprint_radii().double().numpy()
        self.resting = [c.resting_poses for c in self.catalog.categories]

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; known: {', '.join(SPLITS)}")
        return SPLITS[name]

    def sample(self, split: str, indices) -> PlanarObjects:
        """The objects of the given scene indices of a split (deterministic), in max_objects slots."""
        spec = self.split(split)
        indices = [int(i) for i in indices]
        N = self.config.max_objects
        if max(spec.counts) > N:
            raise ValueError(f"split {split} needs {max(spec.counts)} object slots, config has {N}")
        for index in indices:
            if not 0 <= index < spec.size:
                raise IndexError(f"scene index {index} outside split {split} of {spec.size} scenes")
        return self._draw([np.random.default_rng([self.config.seed, spec.stream, index]) for index in indices],
                          spec.counts, N)

    def draw(self, rng: np.random.Generator, batch_size: int, counts: tuple[int, ...]) -> PlanarObjects:
        """batch_size fresh scenes from the same distribution (count uniform over `counts`), drawn
        from rng rather than from a split's stream: the sleep phase's prior samples."""
        if max(counts) > self.config.max_objects:
            raise ValueError(f"counts up to {max(counts)} need more than the config's {self.config.max_objects} slots")
        return self._draw([rng] * batch_size, counts, self.config.max_objects)

    def _draw(self, rngs: list[np.random.Generator], counts: tuple[int, ...], slots: int) -> PlanarObjects:
        """One scene per generator, in `slots` slots."""
        B = len(rngs)
        category = np.full((B, slots), -1, dtype=np.int64)
        position = np.zeros((B, slots, 2))
        yaw = np.zeros((B, slots))
        color = np.zeros((B, slots, 3))
        rest = np.zeros((B, slots), dtype=np.int64)
        for b, rng in enumerate(rngs):
            count = int(rng.choice(counts))
            cats, xy = self._place(rng, count)
            for n in range(count):
                category[b, n] = cats[n]
                position[b, n] = xy[n]
                yaw[b, n] = rng.uniform(0.0, 2 * np.pi)
                color[b, n] = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.45, 1.0), rng.uniform(0.35, 1.0))
                poses = self.resting[cats[n]]
                if len(poses) > 1:  # no draw for one pose: those streams stay as they were
                    rest[b, n] = rng.choice(len(poses), p=poses.probabilities)
        return PlanarObjects(torch.from_numpy(category), torch.from_numpy(position).float(),
                             torch.from_numpy(yaw).float(), torch.from_numpy(color).float(),
                             rest=torch.from_numpy(rest))

    def _place(self, rng: np.random.Generator, count: int) -> tuple[list[int], list[np.ndarray]]:
        e = self.config.placement_half_extent
        for _ in range(1000):  # restart the whole scene if a placement gets stuck
            cats, xy = [], []
            for _ in range(count):
                c = int(rng.integers(len(self.catalog)))
                for _ in range(100):
                    p = rng.uniform(-e, e, size=2) + self.config.placement_center
                    if all(np.linalg.norm(p - q) >= self.footprint[c] + self.footprint[d] + self.config.min_gap
                           for q, d in zip(xy, cats)):
                        cats.append(c)
                        xy.append(p)
                        break
                else:
                    break
            if len(cats) == count:
                return cats, xy
        raise RuntimeError(f"could not place {count} objects without overlap; enlarge the placement area")

    def scene_batch(self, objects: PlanarObjects) -> SceneBatch:
        """The objects on this configuration's table, seen by its camera."""
        return objects.to_batch(self.catalog, self.camera, self.config.table)

    def render(self, split: str, indices, renderer: SceneRenderer | None = None) -> tuple[RenderOutput, SceneBatch]:
        """Hard renders of the given scenes, with their ground truth."""
        renderer = renderer or SceneRenderer(self.catalog, mode="hard", gradients="none")
        batch = self.scene_batch(self.sample(split, indices))
        with torch.no_grad():
            return renderer(batch), batch
