import json
import math
from dataclasses import replace

import pytest
import torch

from inverse_graphics.air.config import AIRConfig
from inverse_graphics.air.train import train_air
from inverse_graphics.data.bop import generate_split, read_bop_results, write_bop_results
from inverse_graphics.optimise import OptimiseSettings, optimise_scene
from inverse_graphics.rendering.likelihood import make_planar_renderer
from inverse_graphics.rendering.renderer import SceneRenderer
from inverse_graphics.experiments.side_by_side import METHODS, BenchmarkConfig, run_benchmark
from inverse_graphics.scene import PlanarObjects, SceneBatch
from inverse_graphics.supervised import train_supervised
from inverse_graphics.training import TrainConfig


def _image(catalog, tabletop, category, position, yaw, color):
    batch = SceneBatch.from_planar(torch.tensor([category]), torch.tensor([position]), torch.tensor([yaw]),
                                   torch.tensor([color]), catalog, tabletop.camera, tabletop.config.table)
    with torch.no_grad():
        return SceneRenderer(catalog, mode="hard", gradients="none")(batch).rgb[0]


def test_optimiser_finds_count_identity_and_pose_from_random_starts(catalog, tabletop):
    cube = catalog.index_of("cube")
    image = _image(catalog, tabletop, [cube], [[0.03, -0.02]], [0.4], [[0.2, 0.5, 0.9]])
    fit = optimise_scene(make_planar_renderer("pytorch3d", catalog), image, tabletop.camera, tabletop.config.table,
                         len(catalog), OptimiseSettings(max_objects=2, starts=1), torch.Generator().manual_seed(0))
    assert fit.objects.category.tolist() == [[cube]]
    assert float((fit.objects.position[0, 0] - torch.tensor([0.03, -0.02])).norm()) < 0.004
    empty = _image(catalog, tabletop, [-1], [[0.0, 0.0]], [0.0], [[0.5, 0.5, 0.5]])
    nothing = optimise_scene(make_planar_renderer("pytorch3d", catalog), empty, tabletop.camera,
                             tabletop.config.table, len(catalog), OptimiseSettings(max_objects=1, starts=1))
    assert nothing.objects.slots == 0
    with pytest.raises(ValueError, match="NaN"):
        optimise_scene(None, image * float("nan"), tabletop.camera, tabletop.config.table, len(catalog))


def test_bop_results_csv_round_trips_and_matches_the_dataset_ground_truth(tmp_path, catalog, tabletop):
    generate_split(tabletop, "test", tmp_path / "ds", 3, progress=False)
    gt = json.loads((tmp_path / "ds" / "test" / "000000" / "scene_gt.json").read_text())
    truth = tabletop.scene_batch(tabletop.sample("test", range(3)))
    path = write_bop_results(tmp_path / "air_tabletop-test.csv", truth, [0, 1, 2], catalog, [0.1, 0.2, 0.3])
    rows = read_bop_results(path)
    assert len(rows) == int(truth.counts.sum())
    for im_id in range(3):
        mine = [r for r in rows if r["im_id"] == im_id]
        theirs = gt[str(im_id)]
        assert [r["obj_id"] for r in mine] == [g["obj_id"] for g in theirs]
        for r, g in zip(mine, theirs):
            assert r["R"].flatten() == pytest.approx(g["cam_R_m2c"], abs=1e-5)
            assert r["t"] == pytest.approx(g["cam_t_m2c"], abs=1e-3)
            assert r["scene_id"] == 0 and r["time"] == pytest.approx(0.1 * (im_id + 1))
    (tmp_path / "bad.csv").write_text("scene_id,im_id\n")
    with pytest.raises(ValueError, match="not a BOP results CSV"):
        read_bop_results(tmp_path / "bad.csv")
    R, t = truth.model_to_camera()
    assert R.shape == (3, 3, 3, 3) and t.shape == (3, 3, 3)
    # camera-frame poses: the camera's extrinsic after the object's pose, and the translation (the object's
    # origin) projects onto the object's own pixels in the rendered image
    rendered, _ = tabletop.render("test", range(3))
    K, cam_R, cam_t = (x.double() for x in (tabletop.camera.K, tabletop.camera.R, tabletop.camera.t))
    present = (truth.category >= 0).nonzero().tolist()
    assert len(present) == int(truth.counts.sum()) > 0
    for b, n in present:
        assert torch.allclose(R[b, n].double(), cam_R @ truth.rotation[b, n].double(), atol=1e-6)
        assert torch.allclose(t[b, n].double(), cam_R @ truth.translation[b, n].double() + cam_t, atol=1e-6)
        u, v, w = (K @ t[b, n].double()).tolist()
        rows_px, cols_px = (rendered.instance[b] == n).nonzero(as_tuple=True)
        assert len(rows_px) > 0 and w > 0, (b, n)
        assert float(((cols_px - u / w) ** 2 + (rows_px - v / w) ** 2).sqrt().min()) < 1.5, (b, n, u / w, v / w)


def test_benchmark_runs_every_method_and_writes_the_report(tmp_path, tabletop):
    tiny = dict(batch_size=4, train_pool=8, val_size=4)
    train_air(tmp_path / "air", AIRConfig(hidden=32), TrainConfig(iterations=2, **tiny), tabletop, progress=False,
              log=lambda m: None)
    train_air(tmp_path / "dair", AIRConfig(hidden=32, dair=True), TrainConfig(iterations=1, **tiny), tabletop,
              progress=False, log=lambda m: None)
    train_supervised(tmp_path / "sup", None, TrainConfig(iterations=2, **tiny), tabletop, progress=False,
                     log=lambda m: None)
    config = BenchmarkConfig(num=3, optimise_num=1, air=str(tmp_path / "air" / "checkpoint.pt"),
                             dair=str(tmp_path / "dair" / "checkpoint.pt"),
                             supervised=str(tmp_path / "sup" / "checkpoint.pt"),
                             optimiser=OptimiseSettings(max_objects=1, starts=1),
                             generalization={"extrap-test": {"supervised": str(tmp_path / "sup" / "checkpoint.pt"),
                                                             "air": str(tmp_path / "missing.pt")}})
    run_benchmark(config, tmp_path / "out", tabletop, log=lambda m: None, progress=False)
    import numpy as np

    out = tmp_path / "out"
    report = json.loads((out / "tabletop_report.json").read_text())
    assert set(report["methods"]) == set(METHODS) == set(report["common_subset"])
    assert report["scenes"] == 3 and report["optimise_scenes"] == 1
    true_counts = (tabletop.sample("test", range(3)).category >= 0).sum(1).tolist()
    obj_ids = {c.obj_id for c in tabletop.catalog.categories}
    markdown = (out / "tabletop_report.md").read_text()
    for name, m in report["methods"].items():
        scenes = 1 if name == "optimise" else 3
        assert m["scenes"] == scenes, name
        # count_confusion[true count][predicted count], over the split's first `scenes` scenes
        confusion = np.array(m["count_confusion"])
        assert confusion.shape == (4, 4) and confusion.sum() == scenes, (name, confusion)
        assert confusion.sum(1).tolist() == [true_counts[:scenes].count(k) for k in range(4)], (name, confusion)
        assert m["true_objects"] == sum(true_counts[:scenes]), name
        assert m["count_acc"] == pytest.approx(np.trace(confusion) / scenes), name
        # the BOP CSV lists every predicted object, so each image has as many rows as its predicted count
        rows = read_bop_results(out / m["bop_results"])
        per_image = [sum(r["im_id"] == i for r in rows) for i in range(scenes)]
        assert len(rows) == sum(per_image), name  # no row for an image the method did not see
        assert confusion.sum(0).tolist() == [per_image.count(k) for k in range(4)], (name, per_image, confusion)
        assert all(r["scene_id"] == 0 and r["obj_id"] in obj_ids for r in rows), name
        assert 0 <= m["matched"] <= min(m["true_objects"], len(rows)), name
        assert math.isnan(m["identity_acc"]) if m["matched"] == 0 else 0 <= m["identity_acc"] <= 1, name
        assert all(0 <= m[k] <= 1 for k in ("adds_recall", "mssd_recall", "mspd_recall")), name
        assert m["ms_per_image"] > 0, name
        assert f"| {name} | {scenes} | " in markdown, name
        # the common subset scores the same answers on the first scene alone
        sub = report["common_subset"][name]
        sub_confusion = np.array(sub["count_confusion"])
        assert sub["scenes"] == 1 and sub_confusion.sum() == 1 and (sub_confusion <= confusion).all(), name
        assert sub_confusion[min(true_counts[0], 3), per_image[0]] == 1, (name, sub_confusion, per_image)
        assert sub["count_acc"] == (true_counts[0] == per_image[0]), name
    # optimise saw exactly the common subset: its row there is its row in the main table
    optimise, optimise_sub = report["methods"]["optimise"], report["common_subset"]["optimise"]
    assert {k: repr(v) for k, v in optimise_sub.items()} == {k: repr(optimise[k]) for k in optimise_sub}
    assert report["speed_ratios"]["optimise_over_air"] > 1
    # generalization: the supervised checkpoint scored on extrap-test's scenes (3 objects each); the missing one skipped
    assert list(report["generalization"]["extrap-test"]) == ["supervised"]
    extrap = report["generalization"]["extrap-test"]["supervised"]
    assert extrap["scenes"] == 3 and extrap["true_objects"] == 9 and extrap["trained_on"] == "extrap-train"
    assert np.array(extrap["count_confusion"]).sum(1).tolist() == [0, 0, 0, 3]
    assert report["figures"]
    for figure in report["figures"]:
        assert (out / figure).stat().st_size > 1000


def test_optimise_command_writes_poses_and_bop_csv(tmp_path, catalog, tabletop):
    import numpy as np
    from PIL import Image

    from inverse_graphics.cli import main

    image = _image(catalog, tabletop, [catalog.index_of("bar")], [[-0.02, 0.03]], [1.0], [[0.9, 0.2, 0.2]])
    Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).save(tmp_path / "frame.png")
    assert main(["optimise", str(tmp_path / "frame.png"), "--out", str(tmp_path / "out"), "--max-objects", "1",
                 "--starts", "1"]) == 0
    poses = json.loads((tmp_path / "out" / "poses.json").read_text())
    assert poses[0]["count"] == 1 and poses[0]["objects"][0]["category"] == "bar"
    found = poses[0]["objects"][0]
    assert math.hypot(found["x_m"] + 0.02, found["y_m"] - 0.03) < 0.004, found  # the bar is where it was drawn,
    turn = math.degrees((found["yaw_rad"] - 1.0) % math.pi)  # (a bar is 2-fold symmetric)
    assert min(turn, 180 - turn) < 30 and found["color"] == pytest.approx([0.9, 0.2, 0.2], abs=0.1), found  # as drawn
    rows = read_bop_results(tmp_path / "out" / "optimise_images-test.csv")
    assert len(rows) == 1
    # the CSV row is that object: its id, and its pose in the camera frame (millimetres)
    bar = catalog[catalog.index_of("bar")]
    world = torch.tensor([found["x_m"], found["y_m"], bar.rest_height], dtype=torch.float64)
    expected_t = (tabletop.camera.R.double() @ world + tabletop.camera.t.double()) * 1000
    assert rows[0]["im_id"] == 0 and rows[0]["obj_id"] == bar.obj_id
    assert rows[0]["t"] == pytest.approx(expected_t.tolist(), abs=0.01)
    yaw = torch.tensor(found["yaw_rad"], dtype=torch.float64)
    Rz = torch.tensor([[torch.cos(yaw), -torch.sin(yaw), 0], [torch.sin(yaw), torch.cos(yaw), 0], [0, 0, 1]])
    assert rows[0]["R"].flatten() == pytest.approx((tabletop.camera.R.double() @ Rz).flatten().tolist(), abs=1e-5)
    Image.new("RGB", (32, 32)).save(tmp_path / "small.png")
    assert main(["optimise", str(tmp_path / "small.png"), "--out", str(tmp_path / "out2")]) == 2


@pytest.mark.parametrize("one_pass", [True, False])
def test_refinement_tries_the_second_guess_where_q_doubts(catalog, tabletop, one_pass):
    from inverse_graphics.optimise import refine_with_second_guess

    cube, sphere = catalog.index_of("cube"), catalog.index_of("sphere")
    image = _image(catalog, tabletop, [cube], [[0.02, 0.01]], [0.3], [[0.9, 0.3, 0.2]])[None]
    guess = PlanarObjects(torch.tensor([[sphere, -1]]), torch.tensor([[[0.024, 0.012], [0.0, 0.0]]]),
                          torch.tensor([[0.25, 0.0]]), torch.tensor([[[0.8, 0.4, 0.3], [0.0, 0.0, 0.0]]]))
    probs = torch.zeros(1, 2, len(catalog))
    probs[0, :, sphere], probs[0, :, cube] = 0.6, 0.4
    renderer = make_planar_renderer("pytorch3d", catalog)
    fixed = refine_with_second_guess(renderer, image, guess, probs, tabletop.camera, tabletop.config.table,
                                     one_pass=one_pass)
    assert fixed.category.tolist() == [[cube, -1]]
    assert float((fixed.position[0, 0] - torch.tensor([0.02, 0.01])).norm()) < 0.002
    confident = refine_with_second_guess(renderer, image, guess, probs, tabletop.camera, tabletop.config.table,
                                         doubt=0.5, one_pass=one_pass)
    assert confident.category.tolist() == [[sphere, -1]]


@pytest.mark.parametrize("one_pass", [True, False])
def test_count_revision_keeps_a_candidate_only_where_it_pays_for_itself(catalog, tabletop, one_pass):
    """Scene 0 holds a cube and a bar, and the proposal only the cube, with a candidate near the bar:
    refined, the bar lowers the image loss, so it is kept. Scene 1 holds only the cube, and its
    candidate sits on empty table: it explains nothing, so the count stays 1."""
    from inverse_graphics.optimise import refine_with_second_guess

    cube, bar = catalog.index_of("cube"), catalog.index_of("bar")
    both = _image(catalog, tabletop, [cube, bar], [[0.02, 0.01], [-0.05, -0.03]], [0.3, 0.8],
                  [[0.9, 0.3, 0.2], [0.2, 0.4, 0.9]])
    alone = _image(catalog, tabletop, [cube, -1], [[0.02, 0.01], [0.0, 0.0]], [0.3, 0.0],
                   [[0.9, 0.3, 0.2], [0.0, 0.0, 0.0]])
    images = torch.stack([both, alone])
    proposals = PlanarObjects(torch.tensor([[cube, -1], [cube, -1]]),
                              torch.tensor([[[0.021, 0.011], [-0.045, -0.027]], [[0.021, 0.011], [-0.05, 0.06]]]),
                              torch.tensor([[0.3, 0.7], [0.3, 0.0]]),
                              torch.tensor([[[0.85, 0.3, 0.2], [0.25, 0.4, 0.85]], [[0.85, 0.3, 0.2], [0.5, 0.5, 0.5]]]))
    candidates = replace(proposals, category=torch.tensor([[cube, bar], [cube, bar]]))
    probs = torch.zeros(2, 2, len(catalog))
    probs[:, 0, cube], probs[:, 1, bar] = 1.0, 1.0
    renderer = make_planar_renderer("pytorch3d", catalog)
    kept = refine_with_second_guess(renderer, images, proposals, probs, tabletop.camera, tabletop.config.table,
                                    one_pass=one_pass)
    assert kept.category.tolist() == [[cube, -1], [cube, -1]]
    revised = refine_with_second_guess(renderer, images, proposals, probs, tabletop.camera, tabletop.config.table,
                                       candidates=candidates, one_pass=one_pass)
    assert revised.category.tolist() == [[cube, bar], [cube, -1]]
    assert float((revised.position[0, 1] - torch.tensor([-0.05, -0.03])).norm()) < 0.003
