"""The table: a rectangle in the plane z = 0 of the world frame (scene.py states the
conventions), metres, and its colour (linear RGB in [0, 1])."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .camera import Camera


@dataclass
class Table:
    """The table: a rectangle of `size` (m) centred at `center` (m) in the plane z = 0."""

    size: tuple[float, float] = (0.6, 0.6)
    color: tuple[float, float, float] = (0.62, 0.52, 0.40)
    center: tuple[float, float] = (0.0, 0.0)

    def mesh(self, cells: int = 1, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The table top as a cells x cells grid: verts ((cells+1)^2, 3) metres and
        faces (2 cells^2, 3), counter-clockwise seen from above (normal +Z)."""
        x = self.center[0] + torch.linspace(-self.size[0] / 2, self.size[0] / 2, cells + 1, device=device)
        y = self.center[1] + torch.linspace(-self.size[1] / 2, self.size[1] / 2, cells + 1, device=device)
        gx, gy = torch.meshgrid(x, y, indexing="xy")
        verts = torch.stack([gx.flatten(), gy.flatten(), torch.zeros_like(gx.flatten())], -1)
        cell = torch.arange(cells, device=device)
        corner = (cell[:, None] * (cells + 1) + cell[None]).flatten()
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
