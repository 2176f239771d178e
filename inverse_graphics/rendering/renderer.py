"""SceneRenderer: SceneBatch -> RGB, object mask, depth and instance ids (PyTorch3D).

Two modes:
- 'hard': one face per pixel, no blur; what the dataset is made of.
- 'soft': anti-aliased and differentiable with respect to poses and colours, by
  default through the fast CPU gradient path in fragments.py. Each of the K
  nearest front-facing fragments covers the pixel fully if the pixel is inside
  the face and with 2 sigmoid(-d / sigma) outside it (d the squared distance to
  the face, as in SoftRasterizer, but one-sided so shared edges stay closed),
  and they are alpha-composited front to back over the background.

Shading model (shared with every renderer of this project): flat Lambertian,
colour = albedo * (ambient + diffuse * max(0, n . l)), n the face normal and l the
world-space direction towards the light; no specular term. One light for every scene
(LIGHT_DIRECTION, AMBIENT, DIFFUSE) unless a render is given a Light, one per scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pytorch3d.renderer.cameras import try_get_projection_transform

from ..assets import ObjectCatalog
from ..camera import Camera
from ..scene import SceneBatch
from .fragments import rasterize
from .meshes import TABLE_INSTANCE, CatalogMeshes, SceneMeshes

LIGHT_DIRECTION = (0.35, -0.45, 0.82)  # world, towards the light
AMBIENT = 0.45
DIFFUSE = 0.55
BACKGROUND = (0.08, 0.08, 0.10)  # beyond the table's edge
# Soft mode interpolates z linearly in screen space: with blur, perspective-correct
# barycentrics of pixels outside nearly edge-on faces are ill-conditioned and their
# float32 gradients are noise. Linear z is exact enough on small faces; the table
# is split into a grid so its depth error stays about 2 mm (measured at 64x64).
SOFT_TABLE_CELLS = 4
SEAM_DEPTH = 0.003  # metres; faces closer than this in depth at a pixel are one surface there


@dataclass
class RenderSettings:
    mode: str = "soft"  # 'hard' or 'soft'
    sigma: float = 1e-4  # soft edge width (squared NDC units)
    faces_per_pixel: int = 6  # soft mode; 4 misses the covering face near vertices where many faces meet
    gradients: str = "fast"  # 'fast', 'stock' (PyTorch3D autograd) or 'none'

    def __post_init__(self):
        if self.mode not in ("hard", "soft"):
            raise ValueError(f"render mode must be 'hard' or 'soft', not {self.mode!r}")

    @property
    def blur_radius(self) -> float:
        """Coverage below 1e-4 is dropped, as in PyTorch3D's soft-rasterizer examples."""
        return float(np.log(1.0 / 1e-4 - 1.0) * self.sigma) if self.mode == "soft" else 0.0


@dataclass
class Light:
    """Each scene's light, for a batch whose scenes are lit differently (the prior's samples).
    direction: (B, 3) world, towards the light (any length: it is normalized).  ambient, diffuse:
    (B,) strengths, or None for AMBIENT and DIFFUSE. Any of them may require grad."""

    direction: torch.Tensor
    ambient: torch.Tensor | None = None
    diffuse: torch.Tensor | None = None


@dataclass
class RenderOutput:
    """rgb: (B, H, W, 3) in [0, 1].  mask: (B, H, W) object coverage in [0, 1]
    (table excluded; soft in soft mode).  depth: (B, H, W) metres along the
    optical axis, 0 where nothing is hit.  instance: (B, H, W) int64 object slot,
    -1 for table or background."""

    rgb: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    instance: torch.Tensor


def composite_front_to_back(colors: torch.Tensor, coverage: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """colors (B, H, W, K, 3) and coverage (B, H, W, K) in [0, 1] of depth-sorted fragments
    over background (3,) or (B, H, W, 3) -> (B, H, W, 3), each fragment seen through the ones
    in front of it.

    Why not PyTorch3D's softmax_rgb_blend: it weighs a fragment by
    coverage * exp(-z / gamma), so an object a few cm in front of the table wins
    wherever its coverage exceeds ~exp(-dz / gamma); the visible edge then sits at
    the blur radius, where coverage has almost no gradient, and pose gradients
    come out several times too small and often of the wrong sign.
    """
    transmittance = torch.cumprod(1.0 - coverage, dim=-1)
    in_front = torch.cat([torch.ones_like(coverage[..., :1]), transmittance[..., :-1]], -1)
    return (in_front[..., None] * coverage[..., None] * colors).sum(-2) + transmittance[..., -1:] * background


def shade_faces(scene: SceneMeshes, light: Light | None = None) -> torch.Tensor:
    """(F, 3) colour of each packed face under the flat Lambertian model, lit by LIGHT_DIRECTION
    or, given a Light, each face by its own scene's light.

    Flat shading is constant over a face, so it is computed once per face rather
    than per fragment; normals come from a torch cross product because
    PyTorch3D's CPU face-normal backward is serial and costs ~7 ms per image.
    """
    verts = scene.meshes.verts_packed()
    v0, v1, v2 = verts[scene.meshes.faces_packed()].unbind(1)
    normals = torch.nn.functional.normalize(torch.linalg.cross(v1 - v0, v2 - v0), dim=-1)
    if light is None:
        light = torch.nn.functional.normalize(verts.new_tensor(LIGHT_DIRECTION), dim=0)
        return scene.face_color * (AMBIENT + DIFFUSE * torch.relu(normals @ light))[:, None]
    B = len(scene.meshes)
    if tuple(light.direction.shape) != (B, 3):
        raise ValueError(f"Light direction must have shape {(B, 3)}, got {tuple(light.direction.shape)}")
    scene_of_face = scene.meshes.faces_packed_to_mesh_idx()
    direction = torch.nn.functional.normalize(light.direction.to(verts), dim=-1)[scene_of_face]
    ambient = AMBIENT if light.ambient is None else light.ambient.to(verts)[scene_of_face]
    diffuse = DIFFUSE if light.diffuse is None else light.diffuse.to(verts)[scene_of_face]
    return scene.face_color * (ambient + diffuse * torch.relu((normals * direction).sum(-1)))[:, None]


class SceneRenderer(torch.nn.Module):
    """Renders SceneBatches with PyTorch3D; see the module docstring for the model."""

    def __init__(self, catalog: ObjectCatalog, settings: RenderSettings | None = None, **overrides):
        super().__init__()
        self.catalog = catalog
        self.settings = settings or RenderSettings(**overrides)
        self.catalog_meshes = CatalogMeshes(catalog)
        self._ndc_transforms = {}  # camera -> its world-to-view and view-to-NDC matrices, made once

    def _to_ndc(self, verts: torch.Tensor, camera: Camera) -> torch.Tensor:
        """(B, V, 3) world metres -> (B, V, 3): PyTorch3D NDC x, y and view-space z (metres), as
        MeshRasterizer.transform computes them, with the camera's two matrices built once (building
        PyTorch3D cameras and composing their transforms costs ~6 ms a render)."""
        key = str((camera.K.tolist(), camera.R.tolist(), camera.t.tolist(), tuple(camera.image_size), verts.device))
        if key not in self._ndc_transforms:
            if len(self._ndc_transforms) > 256:  # a window camera per proposal: keep the recent ones
                self._ndc_transforms.clear()
            cameras = camera.to_pytorch3d(1, verts.device)
            to_view = cameras.get_world_to_view_transform().get_matrix()[0]
            to_ndc = try_get_projection_transform(cameras, {}).compose(cameras.get_ndc_camera_transform())
            to_ndc = to_ndc.get_matrix()[0]
            self._ndc_transforms[key] = (to_view.to(verts.dtype), to_ndc.to(verts.dtype))
        to_view, to_ndc = self._ndc_transforms[key]
        ones = torch.ones_like(verts[..., :1])
        view = torch.cat([verts, ones], -1) @ to_view  # row vectors, PyTorch3D's convention
        view = view[..., :3] / view[..., 3:]
        ndc = torch.cat([view, ones], -1) @ to_ndc
        return torch.cat([ndc[..., :2] / ndc[..., 3:], view[..., 2:]], -1)

    def forward(self, batch: SceneBatch, behind: RenderOutput | None = None,
                crop_offset: torch.Tensor | None = None, light: Light | None = None) -> RenderOutput:
        """behind: what lies behind the objects, already rendered for this camera (B or 1 scenes;
        the bare table, say): the objects are rasterized alone and composited over it, which is
        the render of the whole scene (but for a pixel where more than faces_per_pixel object
        fragments would have pushed the table out) at a fraction of the cost when the objects
        cover a small part of the image.
        crop_offset: (B, 2) pixels (du, dv), or None: scene b is seen by batch.camera cropped
        that much further right and down (Camera.cropped), its pixel (u, v) the camera's
        (u + du, v + dv); windows of one frame at several places render as one batch."""
        s = self.settings
        hard = s.mode == "hard"
        scene = self.catalog_meshes.build(batch, table_cells=1 if hard else SOFT_TABLE_CELLS, with_table=behind is None)
        background = batch.translation.new_tensor(BACKGROUND) if behind is None else behind.rgb
        verts_ndc = self._to_ndc(scene.meshes.verts_padded(), batch.camera)
        if crop_offset is not None:
            # NDC x = (W - 2u - 1) / S (+x left), y = (H - 2v - 1) / S, S the shorter side: a
            # point at the camera's pixel u lies at u - du in the crop
            S = min(batch.camera.image_size)
            shift = torch.cat([2 * crop_offset.to(verts_ndc) / S, verts_ndc.new_zeros(len(crop_offset), 1)], -1)
            verts_ndc = verts_ndc + shift[:, None]
        meshes_ndc = scene.meshes.update_padded(verts_ndc)
        fragments = rasterize(meshes_ndc, batch.camera.image_size, blur_radius=s.blur_radius,
                              faces_per_pixel=1 if hard else s.faces_per_pixel,
                              perspective_correct=hard, gradients=s.gradients, cull_backfaces=not hard)
        covered = fragments.pix_to_face >= 0
        face = fragments.pix_to_face.clamp(min=0)
        colors = torch.where(covered[..., None], shade_faces(scene, light)[face], 0.0)  # (B, H, W, K, 3)
        instance_per_fragment = torch.where(covered, scene.face_instance[face], TABLE_INSTANCE)

        # The nearest fragment that truly covers the pixel (blurred ones lie outside their face).
        inside = covered & (fragments.dists <= 0)
        first = inside.float().argmax(-1, keepdim=True)
        hit = inside.any(-1)
        depth = torch.where(hit, fragments.zbuf.gather(-1, first)[..., 0], 0.0 if behind is None else behind.depth)
        instance = torch.where(hit, instance_per_fragment.gather(-1, first)[..., 0],
                               TABLE_INSTANCE if behind is None else behind.instance)

        if hard:
            rgb = torch.where(covered[..., 0, None], colors[..., 0, :], background)
            mask = (instance != TABLE_INSTANCE).to(rgb.dtype)
        else:
            # Inside a face: covered. Outside: a soft edge falling from 1 at the face's edge, so that
            # edges shared by two faces of one surface (the table's grid, a mesh's own triangles)
            # do not let the background show through, as a sigmoid centred on every edge would.
            outside = 2 * torch.sigmoid(-fragments.dists.clamp(min=0) / s.sigma)
            # A pixel inside one face of a surface is not also partly covered by that surface's
            # neighbouring faces at the same depth (their soft edges would bleed facet colours
            # across shared edges); a face of the same object well in front still occludes softly.
            same_surface = instance_per_fragment[..., :, None] == instance_per_fragment[..., None, :]
            same_depth = (fragments.zbuf[..., :, None] - fragments.zbuf[..., None, :]).abs() < SEAM_DEPTH
            within_surface = (same_surface & same_depth & inside[..., None, :]).any(-1)
            coverage = torch.where(inside, 1.0, outside * (covered & ~within_surface))
            if scene.face_opacity is not None:
                coverage = coverage * scene.face_opacity[face]
            rgb = composite_front_to_back(colors, coverage, background)
            object_coverage = coverage * (instance_per_fragment != TABLE_INSTANCE)
            mask = 1.0 - torch.prod(1.0 - object_coverage, dim=-1)
            if behind is not None:
                mask = 1.0 - (1.0 - mask) * (1.0 - behind.mask)
        return RenderOutput(rgb=rgb, mask=mask, depth=depth, instance=instance)
