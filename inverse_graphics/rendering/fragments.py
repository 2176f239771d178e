"""Rasterization to PyTorch3D Fragments, with a fast differentiable path for CPU.

PyTorch3D's CPU rasterizer backward is serial and slow (tens to hundreds of ms
per 64x64 image). The fast path splits rasterization in two:
1. the search (which faces touch which pixel, `pix_to_face`) runs in PyTorch3D
   under no_grad; it needs no gradient;
2. what the shader reads from the fragments (barycentrics, z, signed squared
   distance to the face) is recomputed from the differentiable NDC vertices in
   vectorized torch, so autograd's backward is a few batched kernels.
The recomputation follows PyTorch3D's CPU kernel step by step, so values and
gradients agree with PyTorch3D's own autograd (tests/test_rendering.py).

PyTorch3D NDC: +X left, +Y up; the shorter image side spans [-1, 1]. The
centre of pixel (row i, col j) of an H x W image is at
x = (W - 2j - 1) / S, y = (H - 2i - 1) / S with S = min(H, W).
"""

from __future__ import annotations

import torch
from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
from pytorch3d.renderer.mesh.rasterizer import Fragments
from pytorch3d.structures import Meshes

K_EPSILON = 1e-8  # PyTorch3D's kEpsilon in the rasterizer kernels


def pixel_centers_ndc(image_size: tuple[int, int], dtype=torch.float32, device=None) -> torch.Tensor:
    """(H, W, 2) NDC (x, y) of pixel centres."""
    H, W = image_size
    S = min(H, W)
    x = (W - 2 * torch.arange(W, dtype=dtype, device=device) - 1) / S
    y = (H - 2 * torch.arange(H, dtype=dtype, device=device) - 1) / S
    return torch.stack(torch.meshgrid(x, y, indexing="xy"), -1)


def _edge_function(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (p[..., 0] - a[..., 0]) * (b[..., 1] - a[..., 1]) - (p[..., 1] - a[..., 1]) * (b[..., 0] - a[..., 0])


def _point_segment_sq_distance(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ab = b - a
    length_sq = (ab * ab).sum(-1)
    t = ((p - a) * ab).sum(-1) / length_sq.clamp(min=K_EPSILON)
    closest = a + t.clamp(0.0, 1.0)[..., None] * ab
    dist = ((p - closest) ** 2).sum(-1)
    # A degenerate edge is a point: distance to its end, as the kernel does.
    return torch.where(length_sq <= K_EPSILON, ((p - b) ** 2).sum(-1), dist)


def fragments_from_faces(
    face_verts: torch.Tensor,
    pix_to_face: torch.Tensor,
    image_size: tuple[int, int],
    perspective_correct: bool,
    clip_barycentric_coords: bool,
) -> Fragments:
    """Recomputes zbuf, barycentrics and signed distances for a known pix_to_face.

    face_verts: (F, 3, 3) NDC x, y and view-space z (metres), differentiable.
    pix_to_face: (N, H, W, K) int64, -1 where empty.
    Returns Fragments with zbuf (N, H, W, K), bary_coords (N, H, W, K, 3) and
    dists (N, H, W, K) (squared NDC distance, negative inside), -1 where empty.
    """
    covered = pix_to_face >= 0
    _, i, j, _ = covered.nonzero(as_tuple=True)
    tri = face_verts[pix_to_face[covered]]  # (P, 3, 3)
    p = pixel_centers_ndc(image_size, face_verts.dtype, face_verts.device)[i, j]  # (P, 2)
    v0, v1, v2 = tri[:, 0], tri[:, 1], tri[:, 2]

    area = _edge_function(v2[:, :2], v0[:, :2], v1[:, :2]) + K_EPSILON
    bary = torch.stack([_edge_function(p, v1[:, :2], v2[:, :2]),
                        _edge_function(p, v2[:, :2], v0[:, :2]),
                        _edge_function(p, v0[:, :2], v1[:, :2])], -1) / area[:, None]
    inside = (bary > 0).all(-1)
    z = tri[..., 2]  # (P, 3)
    if perspective_correct:
        top = bary * z.roll(-1, -1) * z.roll(-2, -1)  # w0 z1 z2, w1 z2 z0, w2 z0 z1
        bary = top / top.sum(-1, keepdim=True).clamp(min=K_EPSILON)
    if clip_barycentric_coords:
        clipped = bary.clamp(min=0.0)
        bary = clipped / clipped.sum(-1, keepdim=True).clamp(min=1e-5)
    zbuf = (bary * z).sum(-1)
    dist = torch.stack([_point_segment_sq_distance(p, v0[:, :2], v1[:, :2]),
                        _point_segment_sq_distance(p, v1[:, :2], v2[:, :2]),
                        _point_segment_sq_distance(p, v2[:, :2], v0[:, :2])], -1).min(-1).values
    dist = torch.where(inside, -dist, dist)

    def scatter(values: torch.Tensor, tail: tuple = ()) -> torch.Tensor:
        """(P, *tail) covered entries -> (N, H, W, K, *tail), -1 elsewhere."""
        out = values.new_full((*pix_to_face.shape, *tail), -1.0)
        mask = covered.view(*covered.shape, *([1] * len(tail))).expand_as(out)
        return out.masked_scatter(mask, values)

    return Fragments(pix_to_face=pix_to_face, zbuf=scatter(zbuf), bary_coords=scatter(bary, (3,)),
                     dists=scatter(dist))


def rasterize(
    meshes_ndc: Meshes,
    image_size: tuple[int, int],
    blur_radius: float = 0.0,
    faces_per_pixel: int = 1,
    perspective_correct: bool = True,
    gradients: str = "fast",
    cull_backfaces: bool = False,
) -> Fragments:
    """Rasterizes NDC meshes (x, y NDC, z view-space metres) to Fragments.

    gradients: 'fast' (no-grad search + vectorized recomputation, see module
    docstring; without a graph to build, as 'none'), 'stock' (PyTorch3D's own
    autograd), or 'none' (no graph).
    """
    clip = blur_radius > 0.0  # PyTorch3D's MeshRasterizer default
    kwargs = dict(image_size=image_size, blur_radius=blur_radius, faces_per_pixel=faces_per_pixel, bin_size=0,
                  perspective_correct=perspective_correct, clip_barycentric_coords=clip,
                  cull_backfaces=cull_backfaces)
    if gradients not in ("fast", "stock", "none"):
        raise ValueError(f"gradients must be 'fast', 'stock' or 'none', not {gradients!r}")
    if gradients == "stock":
        return Fragments(*rasterize_meshes(meshes_ndc, **kwargs))
    # Fill Meshes' packed cache while grad is on: a cache filled under no_grad has no graph.
    verts = meshes_ndc.verts_packed()
    if gradients == "none" or not (torch.is_grad_enabled() and verts.requires_grad):
        # No graph wanted: the search's own zbuf, barycentrics and distances are the ones the
        # fast path would recompute (to 1e-9), so they are used as they are.
        with torch.no_grad():
            return Fragments(*rasterize_meshes(meshes_ndc, **kwargs))
    face_verts = verts[meshes_ndc.faces_packed()]
    with torch.no_grad():
        pix_to_face = rasterize_meshes(meshes_ndc, **kwargs)[0]
    return fragments_from_faces(face_verts, pix_to_face, image_size, perspective_correct, clip)
