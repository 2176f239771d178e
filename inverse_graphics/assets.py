"""Object categories: meshes and their BOP metadata.

Files follow the BOP convention: meshes in millimetres, `models_info.json` keyed
by obj_id with `diameter` and `symmetries_discrete` / `symmetries_continuous`
in millimetres. Everything this module hands out is in metres.

A category's model frame is the one in its mesh file (+Z up, centred on the
bounding box for the shipped meshes). It lies on the table in one of its resting
poses (resting.py: listed in models_info.json's `resting_poses`, else computed);
`rest_heights()` says how far above the table that frame's origin sits in each.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import trimesh

from .paths import ASSETS_DIR
from .resting import RestingPoses, resting_poses_from_info, stable_resting_poses

MAX_FACES_WARNING = 300  # CPU rasterization cost grows with faces x pixels


class AssetError(ValueError):
    """A mesh or metadata file is missing, unreadable or unusable."""


@dataclass
class Category:
    """One object category.

    verts: (V, 3) float32, metres, model frame.  faces: (F, 3) int64.
    diameter: metres.  symmetries_discrete: (S, 4, 4) float64 rotations with
    translations in metres (identity not included).  symmetries_continuous:
    list of (axis (3,), offset (3,) metres).
    """

    name: str
    obj_id: int
    verts: torch.Tensor
    faces: torch.Tensor
    diameter: float
    symmetries_discrete: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))
    symmetries_continuous: list = field(default_factory=list)
    source: Path | None = None
    resting: RestingPoses | None = None

    @property
    def resting_poses(self) -> RestingPoses:
        """Its resting poses (K of them), pose 0 the most likely (or the first listed)."""
        if self.resting is None:
            self.resting = stable_resting_poses(self.verts.double().numpy(), self.faces.numpy(),
                                                self.symmetries_discrete, self.symmetries_continuous)
        return self.resting

    def rest_heights(self) -> np.ndarray:
        """(K,) metres: the model origin's height above the table in each resting pose."""
        return self.resting_poses.heights(self.verts.double().numpy())

    @property
    def rest_height(self) -> float:
        """Height (m) of the model origin above the table in resting pose 0 (upright: on its -Z face)."""
        return float(self.rest_heights()[0])

    @property
    def symmetry_type(self) -> str:
        """One of 'none', 'discrete', 'continuous', 'full'."""
        if len(self.symmetries_continuous) >= 2:
            return "full"
        if self.symmetries_continuous:
            return "continuous"
        if len(self.symmetries_discrete):
            return f"{self.yaw_symmetry_order()}-fold"
        return "none"

    def yaw_symmetry_order(self, rest: int = 0) -> int:
        """How many yaw angles in [0, 2pi) give the same shape lying in resting pose `rest` (0 =
        continuous): the symmetries that keep the pose's up direction where it is."""
        up = self.resting_poses.up[rest]
        if any(abs(abs(float(a @ up)) - np.linalg.norm(a)) < 1e-6 for a, _ in self.symmetries_continuous):
            return 0
        if len(self.symmetries_continuous) >= 2:
            return 0
        order = 1
        for sym in self.symmetries_discrete:
            if np.allclose(sym[:3, :3] @ up, up, atol=1e-6):
                order += 1
        return order


def load_mesh(path: str | Path, scale_to_m: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Loads and validates a triangle mesh file (PLY, OBJ, STL, ...).

    Returns verts (V, 3) float32 in metres and faces (F, 3) int64. Raises
    AssetError naming the file for a missing, unreadable, empty or degenerate mesh.
    """
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"mesh file not found: {path}")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise AssetError(f"cannot read mesh {path}: {exc}") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or len(mesh.vertices) < 3:
        raise AssetError(f"mesh {path} has no triangles")
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if not np.isfinite(verts).all():
        raise AssetError(f"mesh {path} has non-finite vertex coordinates")
    if faces.min() < 0 or faces.max() >= len(verts):
        raise AssetError(f"mesh {path} has face indices outside its {len(verts)} vertices")
    extent = verts.max(0) - verts.min(0)
    if (extent <= 0).any():
        raise AssetError(f"mesh {path} is degenerate: it is flat along an axis (extent {extent})")
    areas = trimesh.triangles.area(verts[faces])
    if (areas > 0).sum() == 0:
        raise AssetError(f"mesh {path} is degenerate: every triangle has zero area")
    faces = faces[areas > 0]  # zero-area triangles never rasterize and have no normal
    return torch.tensor(verts * scale_to_m, dtype=torch.float32), torch.from_numpy(faces)


class ObjectCatalog:
    """The object categories a scene may contain, indexed 0..C-1.

    Category index (used in tensors) and BOP obj_id (used in files) are kept apart:
    `index_of(name)`, `categories[i].obj_id`.
    """

    def __init__(self, categories: list[Category]):
        if not categories:
            raise AssetError("an object catalog needs at least one category")
        names = [c.name for c in categories]
        if len(set(names)) != len(names):
            raise AssetError(f"duplicate category names: {names}")
        self.categories = list(categories)
        self.root: Path | None = None  # the models folder it was loaded from (None: the shipped one)

    @classmethod
    def load(cls, models_dir: str | Path | None = None) -> "ObjectCatalog":
        """Loads a BOP models folder: models_info.json plus obj_NNNNNN.ply files.

        With no argument, the categories shipped in assets/.
        """
        root = Path(models_dir) if models_dir is not None else ASSETS_DIR
        info_path = root / "models_info.json"
        if not info_path.is_file():
            raise AssetError(f"models_info.json not found in {root}")
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as exc:
            raise AssetError(f"{info_path} is not valid JSON: {exc}") from exc
        if not isinstance(info, dict) or not info:
            raise AssetError(f"{info_path} must map obj_ids to entries ({{\"1\": {{\"diameter\": ...}}}})")
        bad = [k for k in info if not str(k).isdigit() or int(k) < 1]
        if bad:
            raise AssetError(f"{info_path}: keys must be obj_ids (positive whole numbers), got {bad[:3]}")
        mesh_dir = root / "models" if (root / "models").is_dir() else root  # BOP models/ folders hold the files
        unlisted = sorted(f.name for f in mesh_dir.glob("obj_*.ply")
                          if f.stem[4:].isdigit() and str(int(f.stem[4:])) not in {str(int(k)) for k in info})
        if unlisted:
            raise AssetError(f"{', '.join(unlisted)} in {mesh_dir} {'has' if len(unlisted) == 1 else 'have'} no entry "
                             f"in {info_path}: add one (diameter, symmetries) or move the file away")
        categories = []
        for key in sorted(info, key=int):
            obj_id = int(key)
            if not isinstance(info[key], dict):
                raise AssetError(f"{info_path}: the entry for obj_id {obj_id} must be a JSON object")
            mesh_path = mesh_dir / f"obj_{obj_id:06d}.ply"
            categories.append(category_from_bop(info[key], obj_id, mesh_path))
        catalog = cls(categories)
        catalog.root = root.resolve() if models_dir is not None else None
        return catalog

    def add(self, name: str, mesh_path: str | Path, units: str = "mm",
            symmetries_discrete: np.ndarray | None = None,
            symmetries_continuous: list | None = None, resting_poses: list | None = None) -> Category:
        """Adds a user mesh as a new category (next free obj_id) and returns it.

        units: 'mm' or 'm', the unit of the mesh file. Symmetries as in
        models_info.json but in metres: discrete (S, 4, 4); continuous a list of
        {'axis': (3,), 'offset': (3,)}. resting_poses as in models_info.json (resting.py);
        None: computed from the mesh.
        """
        if name in self.names:
            raise AssetError(f"category {name!r} already exists")
        if units not in ("mm", "m"):
            raise AssetError(f"units must be 'mm' or 'm', not {units!r}")
        verts, faces = load_mesh(mesh_path, 1e-3 if units == "mm" else 1.0)
        if len(faces) > MAX_FACES_WARNING:
            print(f"warning: {mesh_path} has {len(faces)} faces; CPU rendering cost grows with faces")
        category = Category(
            name=name,
            obj_id=max(c.obj_id for c in self.categories) + 1,
            verts=verts,
            faces=faces,
            diameter=float(torch.pdist(verts.double()).max()),
            symmetries_discrete=np.zeros((0, 4, 4)) if symmetries_discrete is None else np.asarray(symmetries_discrete),
            symmetries_continuous=[(np.asarray(s["axis"], float), np.asarray(s.get("offset", [0, 0, 0]), float))
                                   for s in (symmetries_continuous or [])],
            source=Path(mesh_path),
            resting=None if resting_poses is None else resting_poses_from_info(resting_poses, f"category {name!r}",
                                                                               AssetError),
        )
        self.categories.append(category)
        return category

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    def __len__(self) -> int:
        return len(self.categories)

    def __getitem__(self, index: int) -> Category:
        return self.categories[index]

    def index_of(self, name_or_obj_id: str | int) -> int:
        """Category index from a name or a BOP obj_id; clear error if unknown."""
        for i, c in enumerate(self.categories):
            if c.name == name_or_obj_id or (isinstance(name_or_obj_id, int) and c.obj_id == name_or_obj_id):
                return i
        raise KeyError(f"unknown object {name_or_obj_id!r}; known: {', '.join(self.names)}")

    def footprint_radii(self) -> torch.Tensor:
        """(C,) metres: radius of each category's bounding circle seen from above (about its origin),
        the largest over its resting poses."""
        lying = [torch.einsum("kij,vj->kvi", torch.from_numpy(c.resting_poses.rotations).to(c.verts), c.verts)
                 for c in self.categories]
        return torch.stack([v[..., :2].norm(dim=-1).max() for v in lying])

    @property
    def upright_only(self) -> bool:
        """Whether every category rests only upright (as every object did before resting poses)."""
        return all(c.resting_poses.is_upright for c in self.categories)

    def resting_counts(self) -> list[int]:
        """How many resting poses each category has (C entries)."""
        return [len(c.resting_poses) for c in self.categories]

    def resting_table(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every category's resting poses, padded to the most any has (K): rotations (C, K, 3, 3)
        and heights (C, K) metres, float32 (padding repeats pose 0)."""
        K = max(self.resting_counts())
        index = [list(range(n)) + [0] * (K - n) for n in self.resting_counts()]
        rotations = np.stack([c.resting_poses.rotations[i] for c, i in zip(self.categories, index)])
        heights = np.stack([c.rest_heights()[i] for c, i in zip(self.categories, index)])
        return torch.tensor(rotations, dtype=torch.float32, device=device), \
            torch.tensor(heights, dtype=torch.float32, device=device)

    def fingerprint(self) -> dict:
        """What identifies this catalog: its names, obj_ids and a SHA-256 of every category's mesh,
        diameter, symmetries and resting poses (recorded with results and checkpoints, compared on
        reuse). An upright-only category's resting pose is not hashed, so catalogs made before resting
        poses keep their fingerprint (and checkpoints trained on them still load)."""
        digest = hashlib.sha256()
        for c in self.categories:
            digest.update(f"{c.name}|{c.obj_id}|{c.diameter:.9g}|".encode())
            resting = () if c.resting_poses.is_upright else (c.resting_poses.rotations, c.resting_poses.probabilities)
            for array in (c.verts.numpy(), c.faces.numpy(), np.asarray(c.symmetries_discrete, float),
                          *(np.concatenate(s) for s in c.symmetries_continuous), *resting):
                digest.update(np.ascontiguousarray(array).tobytes())
        return {"names": self.names, "obj_ids": [c.obj_id for c in self.categories], "sha256": digest.hexdigest()}

    def record(self) -> dict:
        """What a checkpoint records of the catalog it was trained with: the fingerprint and the
        models folder (None: the shipped objects)."""
        return {**self.fingerprint(), "models": None if self.root is None else str(self.root)}

    def rest_heights(self, device=None) -> torch.Tensor:
        """(C,) metres: each category's model origin above the table in resting pose 0."""
        return torch.tensor([c.rest_height for c in self.categories], device=device)

    def models_info(self) -> dict:
        """The catalog as BOP models_info.json content (millimetres)."""
        info = {}
        for c in self.categories:
            v = c.verts.double().numpy() * 1e3
            lo, hi = v.min(0), v.max(0)
            entry = {"name": c.name, "diameter": c.diameter * 1e3,
                     "min_x": lo[0], "min_y": lo[1], "min_z": lo[2],
                     "size_x": hi[0] - lo[0], "size_y": hi[1] - lo[1], "size_z": hi[2] - lo[2]}
            if len(c.symmetries_discrete):
                sym = c.symmetries_discrete.copy()
                sym[:, :3, 3] *= 1e3
                entry["symmetries_discrete"] = [s.ravel().tolist() for s in sym]
            if c.symmetries_continuous:
                entry["symmetries_continuous"] = [{"axis": a.tolist(), "offset": (o * 1e3).tolist()}
                                                  for a, o in c.symmetries_continuous]
            entry["resting_poses"] = c.resting_poses.to_info()
            info[str(c.obj_id)] = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in entry.items()}
        return info


def _numbers(value, count: int, what: str) -> np.ndarray:
    """value as `count` finite floats, or an AssetError saying what `what` should be."""
    try:
        array = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise AssetError(f"{what} must be {count} numbers, got {value!r}") from None
    if array.size != count:
        raise AssetError(f"{what} must be {count} numbers, got {array.size}")
    if not np.isfinite(array).all():
        raise AssetError(f"{what} has NaN or Inf entries")
    return array


def category_from_bop(entry: dict, obj_id: int, mesh_path: Path) -> Category:
    """One models_info.json entry (mm) plus its mesh file -> Category (m). Every field is checked:
    the diameter positive, each discrete symmetry a rigid transform (a 4x4 rotation and translation,
    row-major), each continuous symmetry a non-zero axis, each resting pose a rotation."""
    where = f"models_info.json, obj_id {obj_id}"
    verts, faces = load_mesh(mesh_path)
    if "diameter" not in entry:
        raise AssetError(f"{where}: no diameter (mm)")
    diameter = float(_numbers(entry["diameter"], 1, f"{where}: diameter")[0]) * 1e-3
    if diameter <= 0:
        raise AssetError(f"{where}: the diameter must be positive, got {diameter * 1e3:g} mm")
    discrete = []
    for k, s in enumerate(entry.get("symmetries_discrete", [])):
        m = _numbers(s, 16, f"{where}: symmetries_discrete[{k}] (a 4x4 matrix, row-major)").reshape(4, 4)
        R = m[:3, :3]
        if not (np.allclose(R @ R.T, np.eye(3), atol=1e-4) and np.linalg.det(R) > 0
                and np.allclose(m[3], [0, 0, 0, 1], atol=1e-6)):
            raise AssetError(f"{where}: symmetries_discrete[{k}] is not a rigid transform (its 3x3 part must be a "
                             "rotation, its last row 0 0 0 1)")
        discrete.append(m)
    continuous = []
    for k, s in enumerate(entry.get("symmetries_continuous", [])):
        if not isinstance(s, dict) or "axis" not in s:
            raise AssetError(f"{where}: symmetries_continuous[{k}] must be {{\"axis\": [x, y, z], \"offset\": [...]}}")
        axis = _numbers(s["axis"], 3, f"{where}: symmetries_continuous[{k}].axis")
        if np.linalg.norm(axis) < 1e-9:
            raise AssetError(f"{where}: symmetries_continuous[{k}].axis is zero")
        offset = _numbers(s.get("offset", [0, 0, 0]), 3, f"{where}: symmetries_continuous[{k}].offset")
        continuous.append((axis, offset * 1e-3))
    discrete = np.array(discrete, dtype=float).reshape(-1, 4, 4)
    discrete[:, :3, 3] *= 1e-3
    resting = resting_poses_from_info(entry["resting_poses"], where, AssetError) if "resting_poses" in entry else None
    return Category(name=str(entry.get("name", f"obj_{obj_id:06d}")), obj_id=obj_id, verts=verts, faces=faces,
                    diameter=diameter, symmetries_discrete=discrete, symmetries_continuous=continuous,
                    source=mesh_path, resting=resting)
