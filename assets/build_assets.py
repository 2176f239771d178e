"""Builds the shipped tabletop object meshes and their BOP models_info.json.

Run once (`python assets/build_assets.py`); the outputs are committed. Meshes are
written in millimetres (the BOP convention), centred on their bounding box, with
+Z up so that each rests on the table on its -Z face.
"""

import json
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial.distance import pdist
from scipy.spatial.transform import Rotation

HERE = Path(__file__).resolve().parent


def _centred(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    lo, hi = mesh.bounds
    mesh.apply_translation(-(lo + hi) / 2)
    return mesh


def cube_rotations() -> list[np.ndarray]:
    """The 24 proper rotations that map an axis-aligned cube onto itself."""
    mats = []
    for perm in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]:
        for signs in np.ndindex(2, 2, 2):
            m = np.zeros((3, 3))
            for row, col in enumerate(perm):
                m[row, col] = 1.0 if signs[row] == 0 else -1.0
            if np.linalg.det(m) > 0:
                mats.append(m)
    return mats


def half_turns(axes: str) -> list[np.ndarray]:
    return [Rotation.from_euler(a, np.pi).as_matrix() for a in axes]


def make_meshes() -> dict:
    """name -> (mesh in mm, discrete symmetry rotations, continuous axes)."""
    l_outline = np.array([[0, 0], [70, 0], [70, 25], [25, 25], [25, 50], [0, 50]], float)
    l_fan = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 5]])  # (0, 0) sees every corner
    objects = {
        # Yaw fully observable: an L with unequal arms has no rotational symmetry.
        "l_block": (trimesh.creation.extrude_triangulation(l_outline, l_fan, 30.0), [], []),
        # 2-fold: a box with three different side lengths.
        "bar": (trimesh.creation.box(extents=[80.0, 40.0, 30.0]), half_turns("xyz"), []),
        # 4-fold about the vertical axis (and the whole cube group).
        "cube": (trimesh.creation.box(extents=[50.0, 50.0, 50.0]),
                 [m for m in cube_rotations() if not np.allclose(m, np.eye(3))], []),
        # Continuous about the vertical axis, plus the top-bottom flip.
        "cylinder": (trimesh.creation.cylinder(radius=25.0, height=60.0, sections=16), half_turns("x"), [[0, 0, 1]]),
        # Every rotation leaves it unchanged, but BOP's models_info reads continuous axes one at a time
        # (rotations about x, or y, or z; never their combinations): written as the cylinder is,
        # continuous about the vertical plus the flip, which covers every pose resting on a table.
        "sphere": (trimesh.creation.icosphere(subdivisions=1, radius=30.0), half_turns("x"), [[0, 0, 1]]),
    }
    return objects


def main() -> None:
    models_dir = HERE / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    info = {}
    for obj_id, (name, (mesh, discrete, continuous)) in enumerate(make_meshes().items(), start=1):
        mesh = _centred(mesh)
        assert mesh.is_watertight and mesh.is_volume, name
        path = models_dir / f"obj_{obj_id:06d}.ply"
        path.write_bytes(trimesh.exchange.ply.export_ply(mesh, encoding="ascii"))
        lo, hi = mesh.bounds
        sym_discrete = []
        for rot in discrete:
            pose = np.eye(4)
            pose[:3, :3] = rot
            sym_discrete.append([float(round(v, 6)) + 0.0 for v in pose.ravel()])
        info[str(obj_id)] = {
            "name": name,
            "diameter": float(pdist(mesh.vertices).max()),
            "min_x": float(lo[0]), "min_y": float(lo[1]), "min_z": float(lo[2]),
            "size_x": float(hi[0] - lo[0]), "size_y": float(hi[1] - lo[1]), "size_z": float(hi[2] - lo[2]),
            **({"symmetries_discrete": sym_discrete} if sym_discrete else {}),
            **({"symmetries_continuous": [{"axis": a, "offset": [0, 0, 0]} for a in continuous]} if continuous else {}),
        }
        print(f"{name:10s} obj_{obj_id:06d}.ply  {len(mesh.faces):4d} faces  diameter {info[str(obj_id)]['diameter']:.1f} mm")
    (HERE / "models_info.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
