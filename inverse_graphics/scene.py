"""The scene model shared by every renderer and method.

Conventions, stated once:
- World frame: the table top is the plane z = 0, +Z up. Metres and radians.
- Camera: OpenCV. K maps camera coordinates (x right, y down, z forward) to
  pixels (u = column, v = row), with the centre of pixel (row i, col j) at
  (u, v) = (j, i). R, t map world to camera: X_cam = R @ X_world + t.
- Object pose: object-to-world (R, t). A resting object's planar pose
  (x, y, yaw) is R = Rz(yaw), t = (x, y, rest_height).
- Colours: linear RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from pytorch3d.renderer import PerspectiveCameras
from pytorch3d.transforms import axis_angle_to_matrix
from pytorch3d.utils import cameras_from_opencv_projection

from .assets import ObjectCatalog


def _as_tensor(x, shape: tuple, name: str) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has NaN or Inf entries")
    return t


@dataclass
class Camera:
    """A pinhole camera in OpenCV convention.

    K: (3, 3) pixels.  R: (3, 3) world-to-camera rotation.  t: (3,) metres.
    image_size: (H, W) pixels.
    """

    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    image_size: tuple[int, int]

    def __post_init__(self):
        self.K = _as_tensor(self.K, (3, 3), "camera K")
        self.R = _as_tensor(self.R, (3, 3), "camera R")
        self.t = _as_tensor(self.t, (3,), "camera t")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if min(self.image_size) <= 0:
            raise ValueError(f"image_size must be positive (H, W), got {self.image_size}")
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise ValueError(f"camera K must have positive focal lengths, got fx={self.K[0, 0]}, fy={self.K[1, 1]}")
        if not torch.allclose(self.R @ self.R.T, torch.eye(3), atol=1e-4) or torch.det(self.R) < 0:
            raise ValueError("camera R must be a rotation matrix")

    @classmethod
    def look_at(cls, eye, target, fov_y_deg: float, image_size: tuple[int, int], up=(0.0, 0.0, 1.0)) -> "Camera":
        """A camera at `eye` (m, world) looking at `target`, square pixels, centred principal point."""
        eye, target, up = (torch.as_tensor(v, dtype=torch.float64) for v in (eye, target, up))
        z = target - eye
        z = z / z.norm()
        x = torch.linalg.cross(z, up)  # image right = forward x up, since image y points down
        if x.norm() < 1e-8:
            raise ValueError("look_at: viewing direction is parallel to `up`")
        x = x / x.norm()
        y = torch.linalg.cross(z, x)
        R = torch.stack([x, y, z])
        H, W = image_size
        f = (H / 2) / np.tan(np.radians(fov_y_deg) / 2)
        K = torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
        return cls(K=K, R=R, t=-R @ eye, image_size=(H, W))

    def resized(self, image_size: tuple[int, int]) -> "Camera":
        """The same camera at another resolution (K scaled about pixel-edge coordinates)."""
        H, W = self.image_size
        sy, sx = image_size[0] / H, image_size[1] / W
        K = self.K.clone()
        K[0] *= sx
        K[1] *= sy
        # pixel centres sit at integer coordinates, so the principal point scales about -0.5
        K[0, 2] = (self.K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (self.K[1, 2] + 0.5) * sy - 0.5
        return replace(self, K=K, image_size=tuple(image_size))

    def cropped(self, top: int, left: int, image_size: tuple[int, int]) -> "Camera":
        """The window of `image_size` (H, W) pixels whose top-left pixel is (row top, col left)."""
        K = self.K.clone()
        K[0, 2] -= left
        K[1, 2] -= top
        return replace(self, K=K, image_size=tuple(image_size))

    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) world metres -> (..., 3) camera metres."""
        return points @ self.R.T.to(points) + self.t.to(points)

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., 3) world metres -> pixels (..., 2) as (u, v) and depth (...,) metres."""
        cam = self.world_to_camera(points)
        uvw = cam @ self.K.T.to(points)
        return uvw[..., :2] / uvw[..., 2:3], cam[..., 2]

    def backproject(self, uv: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Pixels (..., 2) (u, v) and depth (...,) metres along the optical axis -> (..., 3) world metres."""
        ones = torch.ones_like(uv[..., :1])
        rays = torch.cat([uv, ones], -1) @ torch.linalg.inv(self.K).T.to(uv)
        cam = rays * depth[..., None]
        return (cam - self.t.to(uv)) @ self.R.to(uv)

    def to_pytorch3d(self, batch_size: int = 1, device=None) -> PerspectiveCameras:
        """PyTorch3D cameras with the same projection.

        PyTorch3D puts pixel j's centre at screen coordinate j + 0.5 while OpenCV
        puts it at j, so the principal point moves by half a pixel.
        """
        K = self.K.clone()
        K[:2, 2] += 0.5
        H, W = self.image_size
        return cameras_from_opencv_projection(
            self.R[None].expand(batch_size, 3, 3),
            self.t[None].expand(batch_size, 3),
            K[None].expand(batch_size, 3, 3),
            torch.tensor([[H, W]]).expand(batch_size, 2),
        ).to(device or "cpu")

    def to_dict(self) -> dict:
        return {"K": self.K.tolist(), "R": self.R.tolist(), "t": self.t.tolist(), "image_size": list(self.image_size)}

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        try:
            return cls(K=d["K"], R=d["R"], t=d["t"], image_size=tuple(d["image_size"]))
        except KeyError as exc:
            raise ValueError(f"camera description lacks {exc}") from exc


def pixel_to_table(camera: Camera, uv: torch.Tensor, height: float) -> torch.Tensor:
    """(B, 2) pixels (u, v) -> (B, 2) world (x, y) metres where the pixel's ray meets the plane z = height."""
    ones = torch.ones_like(uv[:, :1])
    rays = torch.cat([uv, ones], -1) @ torch.linalg.inv(camera.K).T.to(uv) @ camera.R.to(uv)  # world directions
    origin = -camera.R.T.to(uv) @ camera.t.to(uv)
    s = (height - origin[2]) / rays[:, 2]
    return origin[:2] + s[:, None] * rays[:, :2]


# Where a planar object is looked for in the image: its centre's height above the table
# (metres; objects are 3-5 cm tall), and the typical ambient + diffuse shading of a visible
# face (divided out to read an object's colour from its pixels).
OBJECT_HEIGHT = 0.02
MEAN_SHADING = 0.75


@dataclass
class Table:
    """The table: a rectangle of `size` (m) centred at `center` (m) in the plane z = 0."""

    size: tuple[float, float] = (0.6, 0.6)
    color: tuple[float, float, float] = (0.62, 0.52, 0.40)
    center: tuple[float, float] = (0.0, 0.0)

    def mesh(self, cells: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The table top as a cells x cells grid: verts ((cells+1)^2, 3) metres and
        faces (2 cells^2, 3), counter-clockwise seen from above (normal +Z)."""
        x = self.center[0] + torch.linspace(-self.size[0] / 2, self.size[0] / 2, cells + 1)
        y = self.center[1] + torch.linspace(-self.size[1] / 2, self.size[1] / 2, cells + 1)
        gx, gy = torch.meshgrid(x, y, indexing="xy")
        verts = torch.stack([gx.flatten(), gy.flatten(), torch.zeros(gx.numel())], -1)
        corner = (torch.arange(cells)[:, None] * (cells + 1) + torch.arange(cells)[None]).flatten()
        a, b, c, d = corner, corner + 1, corner + cells + 1, corner + cells + 2
        faces = torch.cat([torch.stack([a, b, d], -1), torch.stack([a, d, c], -1)])
        return verts, faces

    @classmethod
    def in_view(cls, camera: "Camera", color=(0.62, 0.52, 0.40), margin: float = 0.05,
                max_range: float = 2.0) -> "Table":
        """The smallest table (axis-aligned, `margin` m beyond) that covers all the plane z = 0
        the camera sees, up to `max_range` m from the point below the camera. A larger table
        would not do: PyTorch3D drops faces with corners behind the camera, table and all."""
        H, W = camera.image_size
        border = torch.tensor([[u, v] for u in torch.linspace(-0.5, W - 0.5, 9).tolist() for v in (-0.5, H - 0.5)]
                              + [[u, v] for u in (-0.5, W - 0.5) for v in torch.linspace(-0.5, H - 0.5, 7).tolist()],
                              dtype=torch.float64)
        rays = torch.cat([border, torch.ones_like(border[:, :1])], -1) @ torch.linalg.inv(camera.K.double()).T \
            @ camera.R.double()
        origin = -camera.R.double().T @ camera.t.double()
        if origin[2] <= 0:
            raise ValueError(f"the camera is not above the table (height {float(origin[2]):.3f} m)")
        along = -origin[2] / rays[:, 2]  # where each ray meets z = 0; rays at or above the horizon never do
        ground = rays[:, :2] / rays[:, :2].norm(dim=1, keepdim=True).clamp(min=1e-9)
        far = origin[:2] + max_range * ground
        hit = origin[:2] + along[:, None] * rays[:, :2]
        reach = (hit - origin[:2]).norm(dim=1)
        points = torch.where(((along > 0) & (reach < max_range))[:, None], hit, far)
        low, high = points.min(0).values - margin, points.max(0).values + margin
        table = cls(size=tuple((high - low).tolist()), color=tuple(float(c) for c in color),
                    center=tuple(((low + high) / 2).tolist()))
        _, depth = camera.project(table.mesh()[0].to(camera.R.dtype))
        if bool((depth <= 0).any()):
            raise ValueError("no table rectangle covers this camera's view while staying in front of it")
        return table


def yaw_to_matrix(yaw: torch.Tensor) -> torch.Tensor:
    """(...,) radians -> (..., 3, 3) rotations about +Z."""
    axis_angle = torch.stack([torch.zeros_like(yaw), torch.zeros_like(yaw), yaw], -1)
    return axis_angle_to_matrix(axis_angle)


@dataclass
class ObjectInstance:
    """One object: category name, object-to-world pose (4, 4) metres, colour (3,)."""

    category: str
    pose: torch.Tensor
    color: torch.Tensor = field(default_factory=lambda: torch.tensor([0.8, 0.8, 0.8]))

    def __post_init__(self):
        self.pose = _as_tensor(self.pose, (4, 4), f"pose of {self.category}")
        self.color = _as_tensor(self.color, (3,), f"colour of {self.category}")

    @classmethod
    def on_table(cls, category: str, x: float, y: float, yaw: float, color, catalog: ObjectCatalog) -> "ObjectInstance":
        """An object resting on the table at (x, y) metres, rotated by yaw radians."""
        pose = torch.eye(4)
        pose[:3, :3] = yaw_to_matrix(torch.tensor(float(yaw)))
        pose[:3, 3] = torch.tensor([x, y, catalog[catalog.index_of(category)].rest_height])
        return cls(category, pose, torch.as_tensor(color, dtype=torch.float32))

    @property
    def planar(self) -> tuple[float, float, float]:
        """(x, y, yaw): position on the table (m) and yaw (rad, in [0, 2pi))."""
        R = self.pose[:3, :3]
        yaw = float(torch.atan2(R[1, 0], R[0, 0])) % (2 * np.pi)
        return float(self.pose[0, 3]), float(self.pose[1, 3]), yaw


@dataclass
class Scene:
    """A table, a camera and the objects on the table."""

    objects: list[ObjectInstance]
    camera: Camera
    table: Table = field(default_factory=Table)


@dataclass
class SceneBatch:
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
                    opacity: torch.Tensor | None = None) -> "SceneBatch":
        """Resting objects from planar poses (differentiable in position, yaw, colour).

        category: (B, N) int64, -1 empty.  position: (B, N, 2) metres.  yaw: (B, N) radians.
        color: (B, N, 3).  opacity: optional (B, N).
        """
        if category.numel() and int(category.max()) >= len(catalog):
            raise ValueError(f"category index {int(category.max())} out of range for {len(catalog)} categories")
        height = catalog.rest_heights().to(position)[category.clamp(min=0)] * (category >= 0)
        translation = torch.cat([position, height[..., None]], -1)
        return cls(category, yaw_to_matrix(yaw), translation, color, camera, table or Table(), opacity)

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

    def __len__(self) -> int:
        return self.category.shape[0]

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

    @property
    def present(self) -> torch.Tensor:
        """(B, N) bool."""
        return self.category >= 0

    @property
    def counts(self) -> torch.Tensor:
        """(B,) number of objects per scene."""
        return self.present.sum(1)

    def planar(self) -> tuple[torch.Tensor, torch.Tensor]:
        """position (B, N, 2) metres and yaw (B, N) radians in [0, 2pi)."""
        yaw = torch.atan2(self.rotation[..., 1, 0], self.rotation[..., 0, 0]) % (2 * np.pi)
        return self.translation[..., :2], yaw
