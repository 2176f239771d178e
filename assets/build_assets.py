"""Builds the shipped tabletop object meshes and their BOP models_info.json.

Run once (`python assets/build_assets.py`); the outputs are committed. Meshes are
written in millimetres (the BOP convention), centred on their bounding box, with
+Z up so that each rests on the table on its -Z face.

Two models folders:
- models/ + models_info.json: the default catalog. Each object lists one resting pose, the
  identity (upright, as modelled): trimesh's stable poses would also lay the bar, the L-block
  and the cylinder on their sides, and changing the catalog would change the tabletop-v1 scenes
  and every checkpoint trained on them.
- models_resting/ (`--models assets/models_resting`): objects that lie on any of their faces, their
  resting poses computed (inverse_graphics/resting.py) and written into its models_info.json.
"""

import json
import sys
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial.distance import pdist
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from inverse_graphics.resting import RestingPoses, stable_resting_poses  # noqa: E402

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


def make_resting_meshes() -> dict:
    """The objects of models_resting/, as make_meshes: name -> (mesh in mm, discrete symmetries, continuous)."""
    wedge = trimesh.creation.extrude_triangulation(np.array([[0, 0], [80, 0], [0, 40]], float),
                                                   np.array([[0, 1, 2]]), 50.0)
    wedge.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))  # the triangle in xz
    return {
        # 6 x 3 x 10 cm, standing on its small face as modelled; lies on its broad face most often
        "box": (trimesh.creation.box(extents=[60.0, 30.0, 100.0]), half_turns("xyz"), []),
        # a right-angled wedge (legs 80 and 40 mm, 50 mm wide): no symmetry, five ways to lie
        "wedge": (wedge, [], []),
    }


def write_models(objects: dict, models_dir: Path, info_path: Path, upright: bool) -> None:
    """PLY files and models_info.json; upright: list the identity as the only resting pose, else
    the computed ones."""
    models_dir.mkdir(parents=True, exist_ok=True)
    info = {}
    for obj_id, (name, (mesh, discrete, continuous)) in enumerate(objects.items(), start=1):
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
        resting = RestingPoses.upright() if upright else stable_resting_poses(
            mesh.vertices, mesh.faces, np.array(sym_discrete).reshape(-1, 4, 4),
            [(np.array(a, float), np.zeros(3)) for a in continuous])
        info[str(obj_id)] = {
            "name": name,
            "diameter": float(pdist(mesh.vertices).max()),
            "min_x": float(lo[0]), "min_y": float(lo[1]), "min_z": float(lo[2]),
            "size_x": float(hi[0] - lo[0]), "size_y": float(hi[1] - lo[1]), "size_z": float(hi[2] - lo[2]),
            **({"symmetries_discrete": sym_discrete} if sym_discrete else {}),
            **({"symmetries_continuous": [{"axis": a, "offset": [0, 0, 0]} for a in continuous]} if continuous else {}),
            "resting_poses": resting.to_info(),
        }
        print(f"{name:10s} obj_{obj_id:06d}.ply  {len(mesh.faces):4d} faces  diameter {info[str(obj_id)]['diameter']:.1f} mm"
              f"  resting poses {np.round(resting.probabilities, 3).tolist()}")
    info_path.write_text(json.dumps(info, indent=2) + "\n")


def main() -> None:
    write_models(make_meshes(), HERE / "models", HERE / "models_info.json", upright=True)
    write_models(make_resting_meshes(), HERE / "models_resting", HERE / "models_resting" / "models_info.json",
                 upright=False)


if __name__ == "__main__":
    main()
