"""Resting poses: computed for any mesh, listed for the shipped objects, carried by the scene
model, the sampler, the renderer, BOP export and render-and-compare."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
import trimesh

from inverse_graphics.assets import AssetError, ObjectCatalog
from inverse_graphics.data.bop import generate_split, read_split
from inverse_graphics.data.tabletop import Tabletop, TabletopConfig
from inverse_graphics.optimise import OptimiseSettings, optimise_scene
from inverse_graphics.paths import ASSETS_DIR
from inverse_graphics.refine import RefineSettings
from inverse_graphics.rendering.likelihood import make_planar_renderer
from inverse_graphics.rendering.meshes import CatalogMeshes
from inverse_graphics.rendering.renderer import SceneRenderer
from inverse_graphics.resting import MIN_PROBABILITY, stable_resting_poses
from inverse_graphics.robot.view import table_points
from inverse_graphics.scene import ObjectInstance, PlanarObjects, Scene, SceneBatch

BOX_FLIPS = np.stack([np.diag([-1.0, -1.0, 1.0, 1.0]), np.diag([1.0, -1.0, -1.0, 1.0]), np.diag([-1.0, 1.0, -1.0, 1.0])])


@pytest.fixture(scope="module")
def resting_catalog():
    """The shipped objects that lie on any face: a 6 x 3 x 10 cm box and a wedge."""
    return ObjectCatalog.load(ASSETS_DIR / "models_resting")


def test_a_box_rests_on_three_faces_up_to_its_symmetries():
    box = trimesh.creation.box(extents=[0.06, 0.03, 0.10])
    poses = stable_resting_poses(box.vertices, box.faces, BOX_FLIPS, [])
    assert len(poses) == 3 and poses.probabilities.sum() == pytest.approx(1.0)
    # broad face down most often, then the long side, then standing on its end
    np.testing.assert_allclose(np.abs(poses.up), [[0, 1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-9)
    np.testing.assert_allclose(poses.probabilities, [0.655, 0.251, 0.094], atol=0.005)
    np.testing.assert_allclose(poses.heights(box.vertices), [0.015, 0.03, 0.05], atol=1e-9)
    assert np.allclose(poses.rotations[2], np.eye(3))  # standing, as modelled: the identity
    for R in poses.rotations:
        assert np.allclose(R @ R.T, np.eye(3)) and np.linalg.det(R) == pytest.approx(1.0)
    # without its symmetries, each face is its own pose: the ends (4.7% each) fall below the threshold
    plain = stable_resting_poses(box.vertices, box.faces, np.zeros((0, 4, 4)), [])
    assert len(plain) == 4 and plain.probabilities.min() > 0.1 and MIN_PROBABILITY == 0.05


def test_shipped_objects_rest_upright_only_as_before(catalog):
    """Each shipped object lists one resting pose, the identity, so heights, footprints, the
    catalog's fingerprint (checkpoints) and the scenes are what they were."""
    assert catalog.upright_only
    for c in catalog.categories:
        assert len(c.resting_poses) == 1 and np.array_equal(c.resting_poses.rotations[0], np.eye(3))
        assert c.rest_height == float(-c.verts[:, 2].min())
        assert c.yaw_symmetry_order() == {"l_block": 1, "bar": 2, "cube": 4, "cylinder": 0, "sphere": 0}[c.name]
    assert catalog.fingerprint()["sha256"] == "01a2366be9aec4c6cf399e3c615bc1e1ca8942636afdf04f4f2260a6bae1c1f2"
    # tabletop-v1's scenes as sampled before resting poses existed (no draw for a one-pose category)
    data, digest = Tabletop(TabletopConfig(), catalog), hashlib.sha256()
    for split in ("test", "train", "frames-test"):
        objects = data.sample(split, range(50))
        assert int(objects.rest.abs().sum()) == 0
        for t in (objects.category, objects.position, objects.yaw, objects.color):
            digest.update(t.numpy().tobytes())
    assert digest.hexdigest() == "6f1fc8dde553505a11b1e2eaf3b5080c7996f4857e6604a453f9922eafeb21b5"


def test_the_new_shipped_objects_have_several_likely_poses(resting_catalog):
    box, wedge = resting_catalog.categories
    assert len(box.resting_poses) == 3 and len(wedge.resting_poses) == 5
    assert not resting_catalog.upright_only
    assert box.resting_poses.probabilities[:2].sum() > 0.85  # lying down, mostly
    # a box lying on its broad face looks the same turned half way: 2-fold in every pose
    assert [box.yaw_symmetry_order(k) for k in range(3)] == [2, 2, 2]
    assert resting_catalog.fingerprint()["sha256"] != ObjectCatalog.load().fingerprint()["sha256"]


def test_sampled_boxes_lie_on_every_face_on_the_table(resting_catalog, tabletop):
    data = Tabletop(TabletopConfig(), resting_catalog)
    objects = data.sample("train", range(300))
    box = objects.category == 0
    frequency = torch.bincount(objects.rest[box], minlength=3).double() / int(box.sum())
    np.testing.assert_allclose(frequency.numpy(), resting_catalog[0].resting_poses.probabilities, atol=0.07)
    # every object, whatever its pose, has its lowest vertex on the table (world frame, as rendered)
    batch = data.scene_batch(objects.select(slice(0, 40)))
    posed = CatalogMeshes(resting_catalog).verts.to(batch.rotation)[batch.category.clamp(min=0)] \
        @ batch.rotation.transpose(-1, -2) + batch.translation[..., None, :]
    for b, n in batch.present.nonzero().tolist():
        c = resting_catalog[int(batch.category[b, n])]
        assert float(posed[b, n, : len(c.verts), 2].min()) == pytest.approx(0.0, abs=1e-6)
    # and the planar description (with the resting pose) comes back from the full rotations
    back = batch.planar(resting_catalog)
    assert torch.equal(back.rest, objects.rest[:40])
    present = back.present
    assert torch.allclose(back.yaw[present], objects.yaw[:40][present] % (2 * math.pi), atol=1e-4)


def test_a_box_on_its_side_renders_lying_on_the_table(resting_catalog, tabletop):
    box = resting_catalog[0]
    on_side = ObjectInstance.on_table("box", 0.01, -0.02, 0.4, (0.9, 0.2, 0.2), resting_catalog, rest=1)
    upright = ObjectInstance.on_table("box", 0.01, -0.02, 0.4, (0.9, 0.2, 0.2), resting_catalog, rest=2)
    for obj, height in ((on_side, 0.03), (upright, 0.05)):
        world = box.verts @ obj.pose[:3, :3].T + obj.pose[:3, 3]
        assert float(world[:, 2].min()) == pytest.approx(0.0, abs=1e-6)
        assert float(world[:, 2].max()) == pytest.approx(2 * height, abs=1e-6)
    # as rendered: the box's pixels, back to the table frame, lie between the table and its top
    camera = tabletop.camera.resized((128, 128))
    renderer = SceneRenderer(resting_catalog, mode="hard", gradients="none")
    scenes = [Scene([o], camera, tabletop.config.table) for o in (on_side, upright)]
    out = renderer(SceneBatch.from_scenes(scenes, resting_catalog))
    for k, height in enumerate((0.03, 0.05)):
        seen = table_points(out.depth[k], camera)[out.mask[k] > 0.5]
        assert len(seen) > 50
        assert float(seen[:, 2].min()) > -0.003 and float(seen[:, 2].max()) == pytest.approx(2 * height, abs=0.004)
    with pytest.raises(ValueError, match="no pose 3"):
        ObjectInstance.on_table("box", 0.0, 0.0, 0.0, (1, 1, 1), resting_catalog, rest=3)
    with pytest.raises(ValueError, match="resting-pose index is out of range"):
        PlanarObjects(torch.tensor([[0]]), torch.zeros(1, 1, 2), torch.zeros(1, 1), torch.ones(1, 1, 3),
                      rest=torch.tensor([[3]])).to_batch(resting_catalog, tabletop.camera)


def test_bop_export_of_objects_on_their_sides_round_trips(resting_catalog, tmp_path):
    data = Tabletop(TabletopConfig(), resting_catalog)
    generate_split(data, "test", tmp_path, 8, progress=False)
    _, _, batch = read_split(tmp_path, "test", resting_catalog)
    truth = data.scene_batch(data.sample("test", range(8)))
    present = truth.present
    assert torch.equal(batch.category, truth.category)
    assert torch.allclose(batch.rotation[present], truth.rotation[present], atol=1e-5)
    assert torch.allclose(batch.translation[present], truth.translation[present], atol=1e-5)
    back, sampled = batch.planar(resting_catalog), data.sample("test", range(8))
    assert torch.equal(back.rest, sampled.rest) and int((sampled.rest > 0).sum()) > 0
    info = json.loads((tmp_path / "models_info.json").read_text())
    assert len(info["1"]["resting_poses"]) == 3  # the folder loads back with the same resting poses
    for again, c in zip(ObjectCatalog.load(tmp_path).categories, resting_catalog.categories):
        np.testing.assert_allclose(again.resting_poses.rotations, c.resting_poses.rotations, atol=1e-9)
        np.testing.assert_allclose(again.resting_poses.probabilities, c.resting_poses.probabilities, atol=1e-6)


def test_render_and_compare_finds_a_box_on_its_side(resting_catalog, tabletop):
    """optimise tries each resting pose like each category: the box lying on its long side is
    found lying so, where it is."""
    renderer = make_planar_renderer("pytorch3d", resting_catalog)
    truth = PlanarObjects(torch.tensor([[0]]), torch.tensor([[[0.02, 0.01]]]), torch.tensor([[0.7]]),
                          torch.tensor([[[0.85, 0.3, 0.2]]]), rest=torch.tensor([[1]]))
    with torch.no_grad():
        image = SceneRenderer(resting_catalog, mode="hard", gradients="none")(
            truth.to_batch(resting_catalog, tabletop.camera, tabletop.config.table)).rgb[0]
    settings = OptimiseSettings(max_objects=1, starts=2, refine=RefineSettings(
        steps=25, blur_start_px=4.0, blur_end_px=0.5, position_lr=0.004, yaw_lr=0.08))
    found = optimise_scene(renderer, image, tabletop.camera, tabletop.config.table, 1, settings,
                           torch.Generator().manual_seed(0)).objects
    assert found.slots == 1 and int(found.category[0, 0]) == 0 and int(found.rest[0, 0]) == 1
    assert float((found.position[0, 0] - truth.position[0, 0]).norm()) < 0.006


def test_models_info_resting_poses_are_checked(tmp_path):
    box = trimesh.creation.box(extents=[60.0, 30.0, 100.0])
    (tmp_path / "obj_000001.ply").write_bytes(trimesh.exchange.ply.export_ply(box, encoding="ascii"))

    def load(resting):
        (tmp_path / "models_info.json").write_text(json.dumps({"1": {"diameter": 120.0, "resting_poses": resting}}))
        return ObjectCatalog.load(tmp_path)

    with pytest.raises(AssetError, match=r"resting_poses\[0\]\.R is not a rotation"):
        load([{"R": [1, 0, 0, 0, 1, 0, 0, 0, 2]}])
    with pytest.raises(AssetError, match=r"resting_poses\[1\]\.R is not a rotation"):
        load([{"R": np.eye(3).ravel().tolist()}, {"R": np.diag([1.0, -1.0, 1.0]).ravel().tolist()}])  # a mirror
    with pytest.raises(AssetError, match=r"resting_poses\[0\]\.R must be 9 numbers"):
        load([{"R": [1, 0, 0]}])
    with pytest.raises(AssetError, match="non-empty list"):
        load([])
    with pytest.raises(AssetError, match="probability must be positive"):
        load([{"R": np.eye(3).ravel().tolist(), "probability": 0}])
    # listed: used as given (a box standing on its end, then on its side), probabilities normalised
    side = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    listed = load([{"R": np.eye(3).ravel().tolist(), "probability": 3}, {"R": side.ravel().tolist(), "probability": 1}])
    np.testing.assert_allclose(listed[0].resting_poses.probabilities, [0.75, 0.25])
    np.testing.assert_allclose(listed[0].rest_heights(), [0.05, 0.015])
