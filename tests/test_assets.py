import json

import numpy as np
import pytest
import torch
import trimesh

from inverse_graphics.assets import AssetError, ObjectCatalog, load_mesh


def test_shipped_catalog_spans_symmetry_types(catalog):
    assert len(catalog) >= 5
    for c in catalog.categories:
        assert len(c.faces) <= 300, c.name
        assert 0.03 < c.diameter < 0.12, c.name  # metres, not millimetres
    types = {c.name: c.symmetry_type for c in catalog.categories}
    assert set(types.values()) >= {"none", "2-fold", "4-fold", "continuous"}, types


def test_continuous_symmetries_are_ones_bop_reads(catalog):
    """BOP reads each continuous axis on its own (never their combinations), so the sphere is
    written as the cylinder is: continuous about the vertical, plus the flip."""
    for name in ("cylinder", "sphere"):
        c = catalog[catalog.index_of(name)]
        assert len(c.symmetries_continuous) == 1, name
        axis, offset = c.symmetries_continuous[0]
        assert np.allclose(axis, [0, 0, 1]) and np.allclose(offset, 0), name
        assert len(c.symmetries_discrete) == 1 and np.allclose(c.symmetries_discrete[0][2, 2], -1), name


def test_models_info_is_bop_millimetres(catalog):
    info = json.loads((catalog[0].source.parent.parent / "models_info.json").read_text())
    entry = info[str(catalog[0].obj_id)]
    assert entry["diameter"] == pytest.approx(catalog[0].diameter * 1000, rel=1e-6)
    cube = info[str(catalog[catalog.index_of("cube")].obj_id)]
    assert len(cube["symmetries_discrete"]) == 23 and all(len(s) == 16 for s in cube["symmetries_discrete"])


def test_rest_height_puts_the_base_on_the_table(catalog):
    for c in catalog.categories:
        assert float(c.verts[:, 2].min()) + c.rest_height == pytest.approx(0.0, abs=1e-7)


def test_unknown_object_name_is_named(catalog):
    with pytest.raises(KeyError, match="teapot.*known: l_block"):
        catalog.index_of("teapot")


def test_missing_corrupt_and_degenerate_meshes_are_rejected(tmp_path):
    with pytest.raises(AssetError, match="not found"):
        load_mesh(tmp_path / "nope.ply")
    corrupt = tmp_path / "corrupt.ply"
    corrupt.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n\x00\x01garbage")
    with pytest.raises(AssetError, match="corrupt.ply"):
        load_mesh(corrupt)
    flat = tmp_path / "flat.obj"
    flat.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 2 4 3\n")
    with pytest.raises(AssetError, match="flat along an axis"):
        load_mesh(flat)
    with pytest.raises(AssetError, match="models_info.json not found"):
        ObjectCatalog.load(tmp_path)


def test_user_mesh_can_be_added_and_rendered(tmp_path, tabletop):
    path = tmp_path / "tetra.stl"
    tetra = trimesh.creation.cone(radius=30.0, height=50.0, sections=8)  # millimetres
    path.write_bytes(trimesh.exchange.stl.export_stl(tetra))
    catalog = ObjectCatalog.load()
    cone = catalog.add("cone", path, units="mm", symmetries_continuous=[{"axis": [0, 0, 1]}])
    assert cone.obj_id == max(c.obj_id for c in catalog.categories[:-1]) + 1
    assert cone.symmetry_type == "continuous"
    assert cone.diameter == pytest.approx(np.sqrt(50.0**2 + 30.0**2) * 1e-3, rel=0.05)
    with pytest.raises(AssetError, match="already exists"):
        catalog.add("cone", path)

    from inverse_graphics.rendering.renderer import SceneRenderer
    from inverse_graphics.scene import SceneBatch

    batch = SceneBatch.from_planar(torch.tensor([[catalog.index_of("cone")]]), torch.zeros(1, 1, 2),
                                   torch.zeros(1, 1), torch.ones(1, 1, 3), catalog, tabletop.camera,
                                   tabletop.config.table)
    out = SceneRenderer(catalog, mode="hard")(batch)
    assert out.mask.sum() > 20
