"""SceneBatch -> one PyTorch3D Meshes per scene (its objects plus the table)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch3d.structures import Meshes

from ..assets import ObjectCatalog
from ..scene import SceneBatch

TABLE_INSTANCE = -1  # instance id of table faces (object slots are 0..N-1)


@dataclass
class SceneMeshes:
    """meshes: B world-space meshes.  face_instance: (F,) int64 object slot per
    packed face, TABLE_INSTANCE for the table.  face_color: (F, 3) albedo.
    face_opacity: (F,) the owning object's opacity (1 for the table), or None."""

    meshes: Meshes
    face_instance: torch.Tensor
    face_color: torch.Tensor
    face_opacity: torch.Tensor | None = None


class CatalogMeshes:
    """The catalog's meshes padded into tensors, so posing M objects is one batched matmul."""

    def __init__(self, catalog: ObjectCatalog, device: torch.device | str = "cpu"):
        C = len(catalog)
        self.num_verts = torch.tensor([len(c.verts) for c in catalog.categories], device=device)
        self.verts = torch.zeros(C, int(self.num_verts.max()), 3, device=device)
        for i, c in enumerate(catalog.categories):
            self.verts[i, : len(c.verts)] = c.verts.to(device)
        self.faces = [c.faces.to(device) for c in catalog.categories]
        self._copies = {self.verts.device: self}

    def on(self, device: torch.device) -> "CatalogMeshes":
        """These meshes on device (copied once, then kept)."""
        if device not in self._copies:
            copy = CatalogMeshes.__new__(CatalogMeshes)
            copy.num_verts, copy.verts = self.num_verts.to(device), self.verts.to(device)
            copy.faces, copy._copies = [f.to(device) for f in self.faces], self._copies
            self._copies[device] = copy
        return self._copies[device]

    def build(self, batch: SceneBatch, table_cells: int = 1, with_table: bool = True) -> SceneMeshes:
        """table_cells: the table is split into a grid of table_cells^2 squares; with_table=False:
        the objects alone. The meshes are made on the device of the batch's poses."""
        device = batch.translation.device
        if self.verts.device != device:
            return self.on(device).build(batch, table_cells, with_table)
        B, N = batch.category.shape
        slots = batch.present.nonzero()  # (M, 2) in scene order
        category = batch.category[slots[:, 0], slots[:, 1]]
        R = batch.rotation[slots[:, 0], slots[:, 1]]
        t = batch.translation[slots[:, 0], slots[:, 1]]
        posed = self.verts.to(R)[category] @ R.transpose(1, 2) + t[:, None]  # (M, Vmax, 3)
        keep = torch.arange(self.verts.shape[1], device=device)[None] < self.num_verts[category][:, None]
        object_verts = posed[keep]  # packed, object after object
        table_verts, table_faces = batch.table.mesh(table_cells, device)
        table_verts = table_verts.to(object_verts)
        if not with_table:
            table_verts, table_faces = table_verts[:0], table_faces[:0]
        table_color = object_verts.new_tensor(batch.table.color)

        verts_per_scene = torch.zeros(B, dtype=torch.long, device=device).index_add_(0, slots[:, 0], self.num_verts[category])
        verts_list, faces_list, instance_list, color_list, opacity_list = [], [], [], [], []
        opacity = batch.opacity
        for b, scene_verts in enumerate(torch.split(object_verts, verts_per_scene.tolist())):
            faces, instances, colors, opacities, offset = [], [], [], [], 0
            for m in (slots[:, 0] == b).nonzero()[:, 0].tolist():
                c, n = int(category[m]), int(slots[m, 1])
                faces.append(self.faces[c] + offset)
                instances.append(torch.full((len(self.faces[c]),), n, device=device))
                colors.append(batch.color[b, n].expand(len(self.faces[c]), 3))
                if opacity is not None:
                    opacities.append(opacity[b, n].expand(len(self.faces[c])))
                offset += int(self.num_verts[c])
            faces.append(table_faces + offset)
            instances.append(table_faces.new_full((len(table_faces),), TABLE_INSTANCE))
            colors.append(table_color.expand(len(table_faces), 3))
            verts_list.append(torch.cat([scene_verts, table_verts]))
            faces_list.append(torch.cat(faces))
            instance_list.append(torch.cat(instances))
            color_list.append(torch.cat(colors))
            if opacity is not None:
                opacity_list.append(torch.cat([*opacities, opacity.new_ones(len(table_faces))]))
        return SceneMeshes(Meshes(verts_list, faces_list), torch.cat(instance_list), torch.cat(color_list),
                           torch.cat(opacity_list) if opacity is not None else None)
