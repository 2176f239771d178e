"""A second, independent renderer: Open3D ray casting (CPU, Embree), no autograd.

It takes the same SceneBatch and produces the same RenderOutput as the PyTorch3D
hard mode, with the same shading model (renderer.shade_faces on the same scene
meshes), so either can stand in for the other; the finite-difference gradient
path uses renderers like this one as black boxes.

Rays leave the camera centre through pixel centres: for pixel (row i, col j) the
camera-frame direction is K^-1 (j, i, 1), whose z is 1, so the hit distance t
along it is the depth along the optical axis (metres).
"""

from __future__ import annotations

import numpy as np
import torch

from ..assets import ObjectCatalog
from ..camera import Camera
from ..scene import SceneBatch
from .meshes import TABLE_INSTANCE, CatalogMeshes
from .renderer import BACKGROUND, Light, RenderOutput, shade_faces


def camera_rays(camera: Camera) -> np.ndarray:
    """(H, W, 6) float32 rays (origin, direction) in world metres, one per pixel centre."""
    H, W = camera.image_size
    K_inv = torch.linalg.inv(camera.K.double())
    j, i = torch.meshgrid(torch.arange(W, dtype=torch.float64), torch.arange(H, dtype=torch.float64), indexing="xy")
    pixels = torch.stack([j, i, torch.ones_like(i)], -1)  # (H, W, 3)
    directions = pixels @ K_inv.T @ camera.R.double()  # camera frame -> world: R^T d
    origin = (-camera.R.double().T @ camera.t.double()).expand(H, W, 3)
    return torch.cat([origin, directions], -1).float().numpy()


class Open3DRenderer:
    """Renders SceneBatches by ray casting; same outputs and shading as SceneRenderer's hard mode."""

    def __init__(self, catalog: ObjectCatalog):
        self.catalog = catalog
        self.catalog_meshes = CatalogMeshes(catalog)

    @torch.no_grad()
    def __call__(self, batch: SceneBatch, light: Light | None = None) -> RenderOutput:
        """light: each scene's light, as SceneRenderer takes it (None: LIGHT_DIRECTION for all)."""
        import open3d as o3d  # imported here: it needs the system's libusb-1.0, the rest of the package does not

        scene = self.catalog_meshes.build(batch)
        colors = shade_faces(scene, light)  # (F, 3) packed over the batch
        rays = o3d.core.Tensor(camera_rays(batch.camera))
        verts_list, faces_list = scene.meshes.verts_list(), scene.meshes.faces_list()
        face_offset = scene.meshes.mesh_to_faces_packed_first_idx().tolist()
        H, W = batch.camera.image_size
        rgb = torch.empty(len(batch), H, W, 3)
        depth = torch.zeros(len(batch), H, W)
        instance = torch.full((len(batch), H, W), TABLE_INSTANCE, dtype=torch.long)
        for b in range(len(batch)):
            raycaster = o3d.t.geometry.RaycastingScene()
            raycaster.add_triangles(o3d.core.Tensor(verts_list[b].numpy().astype(np.float32)),
                                    o3d.core.Tensor(faces_list[b].numpy().astype(np.uint32)))
            hits = raycaster.cast_rays(rays)
            t_hit = torch.from_numpy(hits["t_hit"].numpy())
            hit = torch.isfinite(t_hit)
            face = torch.from_numpy(hits["primitive_ids"].numpy().astype(np.int64)).clamp(max=len(faces_list[b]) - 1)
            face = face + face_offset[b]
            rgb[b] = torch.where(hit[..., None], colors[face], torch.tensor(BACKGROUND))
            depth[b] = torch.where(hit, t_hit, 0.0)
            instance[b] = torch.where(hit, scene.face_instance[face], TABLE_INSTANCE)
        mask = (instance != TABLE_INSTANCE).float()
        return RenderOutput(rgb=rgb, mask=mask, depth=depth, instance=instance)
