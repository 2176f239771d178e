import json
import math

import pytest
import torch

from inverse_graphics.air.model import AIRConfig
from inverse_graphics.air.train import train_air
from inverse_graphics.data.bop import generate_split, read_bop_results, write_bop_results
from inverse_graphics.metrics import evaluate_planar, symmetric_distances
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


def test_mssd_mspd_follow_symmetry_and_offset(catalog, tabletop):
    verts = catalog[catalog.index_of("cube")].verts.double()
    origin = torch.zeros(3, dtype=torch.float64)
    offset = torch.tensor([0.003, 0.004, 0.0], dtype=torch.float64)
    mssd, mspd = symmetric_distances(verts, origin, 0.0, offset, tabletop.camera)
    assert mssd == pytest.approx(0.005) and 0 < mspd < 5
    turned, _ = symmetric_distances(verts, origin, math.radians(10), torch.zeros(3, dtype=torch.float64))
    assert turned > 0.001
    # a cube a quarter turn off is a perfect estimate
    cube = catalog.index_of("cube")
    category = torch.tensor([[cube]])
    position = torch.tensor([[[0.01, 0.02]]])
    color = torch.zeros(1, 1, 3)
    truth = PlanarObjects(category, position, torch.tensor([[0.3]]), color)
    m = evaluate_planar(PlanarObjects(category, position, torch.tensor([[0.3 + math.pi / 2]]), color), truth, catalog,
                        tabletop.camera)
    assert m["mssd_recall"] == pytest.approx(1.0) and m["mspd_recall"] == pytest.approx(1.0)
    far = evaluate_planar(PlanarObjects(category, position + 0.05, torch.tensor([[0.3]]), color), truth, catalog,
                          tabletop.camera)
    assert far["mssd_recall"] < 0.5


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
    report = json.loads((tmp_path / "out" / "tabletop_report.json").read_text())
    assert set(report["methods"]) == set(METHODS)
    for name, m in report["methods"].items():
        for key in ("count_acc", "identity_acc", "pos_err_mm_median", "rot_err_deg_median", "adds_recall",
                    "mssd_recall", "mspd_recall", "ms_per_image", "count_confusion"):
            assert key in m, (name, key)
        assert m["scenes"] == (1 if name == "optimise" else 3)
        assert (tmp_path / "out" / m["bop_results"]).is_file()
    assert report["speed_ratios"]["optimise_over_air"] > 1
    assert list(report["generalization"]["extrap-test"]) == ["supervised"]
    for figure in report["figures"]:
        assert (tmp_path / "out" / figure).stat().st_size > 1000
    assert "| air+refine |" in (tmp_path / "out" / "tabletop_report.md").read_text()


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
    assert len(read_bop_results(tmp_path / "out" / "optimise_images-test.csv")) == 1
    Image.new("RGB", (32, 32)).save(tmp_path / "small.png")
    assert main(["optimise", str(tmp_path / "small.png"), "--out", str(tmp_path / "out2")]) == 2
