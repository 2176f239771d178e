"""The metrics follow BOP's definitions: identity is required, top-n by score, dense evaluation
meshes, symmetries as the toolkit enumerates them, and visibility as calc_gt_info computes it."""

import json
import math

import numpy as np
import pytest
import torch
import trimesh

from inverse_graphics.data.bop import bop_results_name, generate_split, targets_file
from inverse_graphics.metrics import evaluate_planar, evaluation_models
from inverse_graphics.metrics.bop_recall import ImagePoses, bop_recalls
from inverse_graphics.metrics.pose_errors import evaluation_mesh, mssd_mspd, symmetry_transformations
from inverse_graphics.rendering.visibility import object_visibility
from inverse_graphics.scene import PlanarObjects

def _one(catalog, name, position, yaw, score=None):
    return PlanarObjects(torch.tensor([[catalog.index_of(name)]]), torch.tensor([[position]]), torch.tensor([[yaw]]),
                         torch.zeros(1, 1, 3), None if score is None else torch.tensor([[score]]))


def test_evaluation_mesh_is_dense_and_on_the_surface(catalog):
    for c in catalog.categories:
        verts, faces = evaluation_mesh(c)
        mesh = trimesh.Trimesh(verts, faces, process=False)
        edges = mesh.edges_unique_length
        assert edges.max() <= 0.002 + 1e-9 and 0.0005 < np.median(edges) <= 0.002, (c.name, edges.max())
        original = trimesh.Trimesh(c.verts.double().numpy(), c.faces.numpy(), process=False)
        # subdivided, not moved: the same surface
        assert mesh.area == pytest.approx(original.area, rel=1e-9) and mesh.volume == pytest.approx(original.volume)
        assert len(verts) > 20 * len(c.verts), c.name


def test_symmetries_are_enumerated_as_the_toolkit_does(catalog):
    cube = catalog[catalog.index_of("cube")]
    R, t = symmetry_transformations(cube)
    assert len(R) == 24 and np.allclose(R[0], np.eye(3))
    cylinder = catalog[catalog.index_of("cylinder")]
    R, _ = symmetry_transformations(cylinder)
    assert len(R) == 2 * math.ceil(math.pi / 0.01)  # {identity, flip} x 315 steps about the axis
    assert np.allclose(np.einsum("sij,skj->sik", R, R), np.eye(3), atol=1e-9)


def test_mssd_and_mspd_follow_symmetry_and_offset(catalog, tabletop):
    models = evaluation_models(catalog)
    cube = catalog[catalog.index_of("cube")]
    model = models[cube.obj_id]
    R = np.eye(3)
    t = np.array([0.0, 0.0, 0.5])
    mssd, mspd = mssd_mspd(model, R, t + [0.003, 0.004, 0.0], R, t, tabletop.camera.K.numpy())
    assert mssd == pytest.approx(0.005, abs=1e-9) and 0 < mspd < 5
    quarter = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    assert mssd_mspd(model, quarter, t, R, t)[0] == pytest.approx(0.0, abs=1e-9)  # the cube looks the same
    l_block = models[catalog[catalog.index_of("l_block")].obj_id]
    assert mssd_mspd(l_block, quarter, t, R, t)[0] > 0.01  # the L does not
    # far apart: bounding spheres do not overlap, the error is infinite as in the toolkit
    assert mssd_mspd(model, R, t + [0.2, 0, 0], R, t)[0] == math.inf


def test_identity_is_required_for_a_pose_to_count(catalog, tabletop):
    truth = _one(catalog, "cube", [0.01, 0.02], 0.3)
    right = evaluate_planar(_one(catalog, "cube", [0.01, 0.02], 0.3 + math.pi / 2), truth, catalog, tabletop.camera)
    assert right["adds_recall"] == right["mssd_recall"] == right["mspd_recall"] == 1.0
    # the same place, another object of nearly the same size: matched by position, but BOP scores it a miss
    wrong = evaluate_planar(_one(catalog, "bar", [0.01, 0.02], 0.3), truth, catalog, tabletop.camera)
    assert wrong["matched"] == 1 and wrong["identity_acc"] == 0.0
    assert wrong["adds_recall"] == wrong["mssd_recall"] == wrong["mspd_recall"] == 0.0
    assert wrong["estimates_ignored"] == 1  # a bar is not a target of this image


def test_top_n_by_score_keeps_the_most_confident_estimate(catalog, tabletop):
    truth = _one(catalog, "cube", [0.01, 0.02], 0.3)
    good, bad = _one(catalog, "cube", [0.01, 0.02], 0.3), _one(catalog, "cube", [-0.05, 0.0], 0.3)
    both = PlanarObjects.cat([good, bad])  # two scenes; make them one scene of two estimates
    two = PlanarObjects(both.category.reshape(1, 2), both.position.reshape(1, 2, 2), both.yaw.reshape(1, 2),
                        both.color.reshape(1, 2, 3), torch.tensor([[0.2, 0.9]]))
    ranked_wrong = evaluate_planar(two, truth, catalog, tabletop.camera)
    assert ranked_wrong["adds_recall"] == 0.0 and ranked_wrong["estimates_kept"] == 1
    ranked_right = evaluate_planar(PlanarObjects(two.category, two.position, two.yaw, two.color,
                                                 torch.tensor([[0.9, 0.2]])), truth, catalog, tabletop.camera)
    assert ranked_right["adds_recall"] == 1.0
    # tied scores keep the estimates' order, as the toolkit's stable sort does
    tied = evaluate_planar(PlanarObjects(two.category, two.position, two.yaw, two.color), truth, catalog,
                           tabletop.camera)
    assert tied["adds_recall"] == 1.0


def test_hardly_visible_objects_are_not_targets(catalog):
    models = evaluation_models(catalog)
    cube = catalog[catalog.index_of("cube")].obj_id
    pose = np.eye(3), np.array([[0.0, 0.0, 0.5], [0.2, 0.0, 0.5]])
    truth = ImagePoses([cube, cube], np.stack([pose[0]] * 2), pose[1], visib_fract=[0.05, 0.8])
    only_hidden = ImagePoses([cube], pose[0][None], pose[1][:1], score=[1.0])
    result = bop_recalls([only_hidden], [truth], models)
    assert result["targets"] == 1 and result["adds_recall"] == 0.0  # the visible one was missed
    only_visible = ImagePoses([cube], pose[0][None], pose[1][1:], score=[1.0])
    assert bop_recalls([only_visible], [truth], models)["adds_recall"] == 1.0


def test_visibility_counts_an_occluded_object(catalog, tabletop):
    # a sphere behind a cube along the camera's line of sight
    cam_centre = -tabletop.camera.R.T @ tabletop.camera.t
    front = torch.tensor([0.0, 0.0])
    away = (torch.tensor([0.0, 0.0]) - cam_centre[:2])
    behind = front + 0.07 * away / away.norm()
    objects = PlanarObjects(torch.tensor([[catalog.index_of("cube"), catalog.index_of("sphere")]]),
                            torch.stack([front, behind])[None], torch.zeros(1, 2), torch.zeros(1, 2, 3))
    vis = object_visibility(objects.to_batch(catalog, tabletop.camera), catalog)
    assert vis.visib_fract[0, 0] == 1.0 and 0 < vis.visib_fract[0, 1] < 0.9
    assert vis.px_count_visib[0, 1] < vis.px_count_all[0, 1] == vis.px_count_valid[0, 1]
    x, y, w, h = vis.bbox_visib[0, 0].tolist()
    assert 0 <= x < x + w < 64 and 0 <= y < y + h < 64


def test_generated_split_has_the_files_bop_reads(tmp_path, tabletop):
    root = tmp_path / "tabletop"
    generate_split(tabletop, "test", root, num_scenes=4, progress=False)
    for path in ("models/models_info.json", "models_eval/models_info.json", "models_eval/obj_000003.ply",
                 "camera.json", targets_file("test"), "test/000000/scene_gt_info.json"):
        assert (root / path).is_file(), path
    assert targets_file("test") == "test_targets_bop19.json"
    camera = json.loads((root / "camera.json").read_text())
    assert set(camera) == {"fx", "fy", "cx", "cy", "width", "height", "depth_scale"}
    gt = json.loads((root / "test/000000/scene_gt.json").read_text())
    info = json.loads((root / "test/000000/scene_gt_info.json").read_text())
    assert {k: len(v) for k, v in gt.items()} == {k: len(v) for k, v in info.items()}
    targets = json.loads((root / targets_file("test")).read_text())
    visible = sum(i["visib_fract"] >= 0.1 for v in info.values() for i in v)
    assert sum(t["inst_count"] for t in targets) == visible > 0
    assert bop_results_name("air+refine", "test") == "air-refine_tabletop-test.csv"
    assert bop_results_name("my_method", "extrap-test") == "my-method_tabletop-extrap-test.csv"
    # the generalization splits' folders are named as BOP parses tabletop-extrap-test
    generate_split(tabletop, "extrap-test", root, num_scenes=1, progress=False)
    assert (root / "extrap_test" / "000000" / "scene_gt.json").is_file()
