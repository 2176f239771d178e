"""A pinhole camera in OpenCV convention, and where its pixels meet the table.

The conventions (OpenCV axes, pixel centres, world = table frame, metres) are
stated once, in scene.py's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from pytorch3d.renderer import PerspectiveCameras
from pytorch3d.utils import cameras_from_opencv_projection


def checked_tensor(x, shape: tuple, name: str) -> torch.Tensor:
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
        self.K = checked_tensor(self.K, (3, 3), "camera K")
        self.R = checked_tensor(self.R, (3, 3), "camera R")
        self.t = checked_tensor(self.t, (3,), "camera t")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if min(self.image_size) <= 0:
            raise ValueError(f"image_size must be positive (H, W), got {self.image_size}")
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise ValueError(f"camera K must have positive focal lengths, got fx={self.K[0, 0]}, fy={self.K[1, 1]}")
        orthogonal = torch.allclose(self.R @ self.R.T, torch.eye(3, device=self.R.device), atol=1e-4)
        if not orthogonal or torch.det(self.R) < 0:
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
            torch.tensor([[H, W]], device=self.K.device).expand(batch_size, 2),
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
