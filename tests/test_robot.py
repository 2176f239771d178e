"""Robot frames: camera files, the table plane from depth, bad frames, and poses under the camera's gap."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inverse_graphics.assets import ObjectCatalog
from inverse_graphics.cli import main
from inverse_graphics.data.bop import read_bop_results
from inverse_graphics.metrics import evaluate_poses
from inverse_graphics.robot.adapt import adapt_to_frames
from inverse_graphics.paths import EXAMPLE_FRAMES
from inverse_graphics.robot.frames import frame_ids, iter_frames, read_camera, table_from_depth
from inverse_graphics.robot.pipeline import RESULTS_CSV, detections_of, run_poses, write_bop_results
from inverse_graphics.robot.poses import FramePoseEstimator
from inverse_graphics.robot.simulate import CaptureConditions, example_camera, read_truth, write_frames
from inverse_graphics.robot.view import Workspace, air_input, load_for_camera

SHIPPED = "assets/weights/air_elbo_tabletop_v1.pt"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Four 640x480 RGB-D frames with changed lighting, shadows, noise and clutter."""
    return write_frames(tmp_path_factory.mktemp("frames"), 4, CaptureConditions(), seed=3, progress=False)


def test_camera_files(tmp_path):
    cam = example_camera()
    K = cam.K.tolist()
    (tmp_path / "ours.json").write_text(json.dumps({"K": K, "width": 640, "height": 480}))
    setup = read_camera(tmp_path / "ours.json")
    assert setup.image_size == (480, 640) and setup.table_to_camera is None
    bop = {"0": {"cam_K": sum(K, []), "cam_R_w2c": cam.R.flatten().tolist(),
                 "cam_t_w2c": (cam.t * 1000).tolist(), "depth_scale": 0.1}}
    (tmp_path / "scene_camera.json").write_text(json.dumps(bop))
    setup = read_camera(tmp_path / "scene_camera.json", (480, 640))
    assert torch.allclose(setup.camera().t, cam.t, atol=1e-6) and setup.depth_scale == 0.1
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_camera(tmp_path / "broken.json")
    (tmp_path / "nok.json").write_text(json.dumps({"width": 640, "height": 480}))
    with pytest.raises(ValueError, match="no 'K'"):
        read_camera(tmp_path / "nok.json")
    (tmp_path / "bad_r.json").write_text(json.dumps({"K": K, "width": 640, "height": 480,
                                                     "camera_to_table": (2 * np.eye(4)).tolist()}))
    with pytest.raises(ValueError, match="not a rotation"):
        read_camera(tmp_path / "bad_r.json")


def test_table_plane_from_depth(frames):
    """RANSAC on the noisy depth recovers the table: the true table points lie on the estimated plane."""
    depth = torch.from_numpy(np.array(Image.open(frames / "depth" / "000000.png")).astype(np.float32)) / 1000
    cam = example_camera()
    T = table_from_depth(depth, cam.K)
    normal_true = cam.R[:, 2]  # the table's +z in camera coordinates
    angle = torch.rad2deg(torch.arccos((T[:3, 2] @ normal_true).clamp(-1, 1)))
    assert angle < 1.0
    points = torch.tensor([[0.1, 0.1, 0.0], [-0.1, 0.05, 0.0], [0.0, -0.1, 0.0]])  # on the true table
    in_camera = points @ cam.R.T + cam.t
    height = (in_camera - T[:3, 3]) @ T[:3, 2]
    assert height.abs().max() < 0.003


def test_bad_frames_are_named_and_skipped(frames, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(frames, folder)
    (folder / "rgb" / "000001.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((240, 320, 3), np.uint8)).save(folder / "rgb" / "000002.png")
    Image.fromarray(np.zeros((480, 640), np.uint16)).save(folder / "depth" / "000003.png")
    problems = []
    loaded = list(iter_frames(folder, on_problem=problems.append))
    assert [f.name for f in loaded] == ["000000"]
    reasons = {p.name: p.reason for p in problems}
    assert "unreadable" in reasons["000001.png"]
    assert "320x240" in reasons["000002.png"]
    assert "empty" in reasons["000003.png"]
    # without an extrinsic the table comes from depth; with neither, a clear error
    camera = json.loads((folder / "camera.json").read_text())
    del camera["camera_to_table"]
    (folder / "camera.json").write_text(json.dumps(camera))
    assert len(list(iter_frames(folder, on_problem=problems.append))) == 1
    shutil.rmtree(folder / "depth")
    with pytest.raises(ValueError, match="table cannot be located"):
        list(iter_frames(folder))


def test_poses_under_changed_lighting_and_noise(frames, tmp_path):
    """End to end through the CLI with the shipped weights: ADD-S recall on frames from the
    black-box renderer under other lighting, shadows, noise and clutter; BOP CSV; resume."""
    out = tmp_path / "poses"
    assert main(["poses", str(frames), "--model", SHIPPED, "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "poses.json").read_text())
    truth = read_truth(frames)
    names = sorted(truth)
    predicted = detections_of(results, names)
    metrics = evaluate_poses(predicted, [truth[n] for n in names], ObjectCatalog.load())
    assert metrics["adds_recall"] >= 0.75, metrics
    rows = read_bop_results(out / RESULTS_CSV)
    assert len(rows) == sum(len(p) for p in predicted)
    assert all((out / "overlay" / f"{n}.png").is_file() for n in names)
    before = json.loads((out / "poses.json").read_text())
    assert before["provenance"]["model"]["sha256"] and before["provenance"]["catalog"]["names"]
    # killed after two frames: the resumed run computes the last two exactly as the whole run did
    (out / "poses.json").write_text(json.dumps({**before, "frames": {n: before["frames"][n] for n in names[:2]}}))
    assert main(["poses", str(frames), "--model", SHIPPED, "--out", str(out), "--quiet"]) == 0
    resumed = json.loads((out / "poses.json").read_text())["frames"]
    assert all(resumed[n]["objects"] == before["frames"][n]["objects"] for n in names)


def test_poses_never_returns_poses_made_otherwise(frames, tmp_path, capsys):
    out = tmp_path / "poses"
    assert main(["poses", str(frames), "--model", SHIPPED, "--out", str(out), "--quiet", "--no-overlay",
                 "--objects", "cube,cylinder,sphere"]) == 0
    before = (out / "poses.json").read_text()
    capsys.readouterr()
    rc = main(["poses", str(frames), "--model", SHIPPED, "--out", str(out), "--quiet", "--objects", "cube"])
    assert rc == 2 and "made with another settings" in capsys.readouterr().err
    assert (out / "poses.json").read_text() == before  # nothing lost
    assert main(["poses", str(frames), "--model", SHIPPED, "--out", str(out), "--quiet", "--no-overlay",
                 "--objects", "cube", "--overwrite"]) == 0
    after = json.loads((out / "poses.json").read_text())
    assert after["provenance"]["settings"]["categories"] == ["cube"]
    assert {o["category"] for f in after["frames"].values() for o in f["objects"]} <= {"cube"}


def test_air_proposes_the_objects(frames):
    """The shipped AIR weights, on the frames' camera, attend to the objects: most true objects
    have one of AIR's proposals within 25 px (an object is 60-90 px across). AIR's input shows
    only what stands in the workspace: clutter, shadows and the table's texture are painted over."""
    loaded = list(iter_frames(frames))
    truth = read_truth(frames)
    model, _ = load_for_camera(SHIPPED, loaded[0].camera)
    estimator = FramePoseEstimator(model)
    near, total = 0, 0
    for frame in loaded:
        proposals = torch.stack(estimator.propose(estimator.view(frame))).double()
        for o in truth[frame.name]:
            uvw = frame.camera.K.double() @ o["pose"][:3, 3]
            near += float((proposals - uvw[:2] / uvw[2]).norm(dim=1).min()) < 25
            total += 1
    assert near / total >= 0.75, (near, total)
    table_rgb = model.background()[0, :, 0, 0]
    area = Workspace((0.0, 0.02), 0.10)
    assert area.contains(torch.tensor([0.12, -0.1])) and not area.contains(torch.tensor([0.14, 0.02]))
    mask = area.mask(model.camera)
    assert 0.2 < mask.float().mean() < 0.9 and not mask[0, 0] and mask[30, 40]
    small = air_input(loaded[0], model.camera, table_rgb, area, mask)
    assert ((small - table_rgb).abs().sum(-1) < 1e-6).float().mean() > 0.8  # little but the objects remains


def test_adapt_to_frames_trains_from_frames(frames, tmp_path):
    result = adapt_to_frames(frames, tmp_path / "fit", init=SHIPPED, minutes=5, iterations=2, train_pool=8,
                             val_size=4, progress=False, log=lambda *_: None)
    assert result["iteration"] == 2 and result["frames"] == 4
    assert (tmp_path / "fit" / "checkpoint.pt").is_file() and (tmp_path / "fit" / "curves.png").is_file()
    # training continues the shipped weights' annealing schedules, not restarting them
    shipped = torch.load(SHIPPED, weights_only=False)
    fitted = torch.load(tmp_path / "fit" / "checkpoint.pt", weights_only=False)
    assert fitted["train_config"]["schedule_start"] == shipped["iteration"] > 0


def test_unknown_object_names_are_named(frames, tmp_path, capsys):
    assert main(["poses", str(frames), "--model", SHIPPED, "--out", str(tmp_path), "--objects", "cube,teapot",
                 "--quiet"]) == 2
    assert "teapot" in capsys.readouterr().err


def test_image_ids_survive_a_skipped_frame(tmp_path):
    """BOP im_ids come from the frame names, so an unreadable frame shifts no other frame onto the
    wrong ground truth; the example frames are a BOP scene folder too (scene_camera.json is read
    when there is no camera.json)."""
    folder = tmp_path / "000007"  # a BOP scene folder: its number is the scene_id
    shutil.copytree(EXAMPLE_FRAMES, folder)
    (folder / "camera.json").unlink()
    (folder / "rgb" / "000001.jpg").write_bytes(b"not an image")
    results = run_poses(folder, SHIPPED, tmp_path / "out", write_overlays=False, progress=False, log=lambda m: None)
    assert set(results["skipped"]) == {"000001.jpg"}
    rows = read_bop_results(tmp_path / "out" / RESULTS_CSV)
    assert {r["im_id"] for r in rows} == {0, 2, 3} and {r["scene_id"] for r in rows} == {7}
    assert {n: e["im_id"] for n, e in results["frames"].items()} == {"000000": 0, "000002": 2, "000003": 3}
    assert frame_ids([Path("b.png"), Path("a.png"), Path("c.png")]) == {"b": 0, "a": 1, "c": 2}


def test_frames_folder_is_a_bop_scene_with_its_dataset_files(frames, tmp_path):
    info = json.loads((frames / "scene_gt_info.json").read_text())
    gt = json.loads((frames / "scene_gt.json").read_text())
    assert {k: len(v) for k, v in info.items()} == {k: len(v) for k, v in gt.items()}
    assert all(0 <= i["visib_fract"] <= 1 for v in info.values() for i in v)
    targets = json.loads((frames / "test_targets_bop19.json").read_text())
    assert sum(t["inst_count"] for t in targets) == sum(i["visib_fract"] >= 0.1 for v in info.values() for i in v)
    camera = json.loads((frames / "camera.json").read_text())
    assert {"fx", "fy", "cx", "cy", "width", "height", "depth_scale", "K"} <= set(camera)
    assert (frames / "models_eval" / "models_info.json").is_file() and (frames / "scene_camera.json").is_file()
    bop_only = {k: camera[k] for k in ("fx", "fy", "cx", "cy", "width", "height", "depth_scale")}
    (tmp_path / "camera.json").write_text(json.dumps(bop_only))  # BOP's dataset camera.json is read too
    assert torch.allclose(read_camera(tmp_path / "camera.json").K, read_camera(frames / "camera.json").K)


def test_evaluate_counts_what_was_found_missed_and_made_up(frames, tmp_path, capsys):
    """Results made from the ground truth, but one frame misses its most visible object and another
    has an object that is not there: `evaluate` finds exactly that, from poses.json and from the
    BOP CSV alike."""
    catalog = ObjectCatalog.load()
    truth = read_truth(frames)
    names = sorted(truth)
    results = {"frames": {}}
    for k, name in enumerate(names):
        objects = [{"category": o["category"], "obj_id": catalog[catalog.index_of(o["category"])].obj_id,
                    "pose_camera": o["pose"].tolist(), "score": 0.9} for o in truth[name]]
        if k == 0:
            objects.pop(max(range(len(objects)), key=lambda i: truth[name][i]["visib_fract"]))
        if k == 1:
            ghost = torch.tensor(objects[0]["pose_camera"])
            ghost[0, 3] += 0.3
            objects.append({**objects[0], "pose_camera": ghost.tolist(), "score": 0.5})
        results["frames"][name] = {"scene_id": 0, "im_id": int(name), "objects": objects, "seconds": 1.0}
    (tmp_path / "poses.json").write_text(json.dumps(results))
    write_bop_results(results, tmp_path / "results.csv")
    reports = []
    for given in ("poses.json", "results.csv"):
        assert main(["evaluate", str(tmp_path / given), str(frames), "--out", str(tmp_path / f"{given}.eval")]) == 0
        reports.append(json.loads((tmp_path / f"{given}.eval").read_text()))
    assert "false positives" in capsys.readouterr().out
    for report in reports:
        per_frame = {f["frame"]: f for f in report["frames"]}
        assert per_frame[names[0]]["misses"] == 1 and per_frame[names[0]]["false_positives"] == 0
        assert per_frame[names[1]]["misses"] == 0 and per_frame[names[1]]["false_positives"] == 1
        assert all(per_frame[n]["misses"] == per_frame[n]["false_positives"] == 0 for n in names[2:])
        overall = report["overall"]
        assert overall["misses"] == 1 and overall["false_positives"] == 1
        assert overall["adds_recall"] == pytest.approx((overall["targets"] - 1) / overall["targets"])
        guide = {g["min_score"]: g for g in report["score"]["guide"]}  # the made-up object scores 0.5, the rest 0.9
        assert guide[0.0]["precision"] == pytest.approx(overall["found"] / overall["estimated"])
        assert guide[0.6]["precision"] == 1.0 and guide[0.6]["recall"] == pytest.approx(overall["adds_recall"])
        assert report["score"]["median_of_false_positives"] == 0.5 and report["score"]["median_of_found"] == 0.9
    json_overall, csv_overall = (r["overall"] for r in reports)  # the CSV keeps fewer digits
    assert csv_overall["translation_err_mm_median"] == pytest.approx(json_overall["translation_err_mm_median"], abs=0.01)
    assert {k: v for k, v in json_overall.items() if k != "translation_err_mm_median"} == {
        k: v for k, v in csv_overall.items() if k != "translation_err_mm_median"}


def test_the_readme_one_frame_snippet_runs_and_finds_the_objects(capsys, monkeypatch):
    """The README's `estimate` snippet, exactly as written there, on an example frame."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    code = readme.index("```python\n", readme.index("**From Python, one frame**")) + len("```python\n")
    monkeypatch.chdir(root)  # the snippet's paths are the repository's
    exec(compile(readme[code:readme.index("```\n", code)], "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    truth = read_truth(EXAMPLE_FRAMES)["000003"]
    assert sorted(line.split()[0] for line in printed) == sorted(o["category"] for o in truth)


def test_estimate_names_arrays_it_cannot_use():
    from inverse_graphics.robot.estimate import estimate

    K = [[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]]
    rgb = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(ValueError, match=r"rgb must be an \(H, W, 3\) array"):
        estimate(np.zeros((480, 640)), K)
    with pytest.raises(ValueError, match="float rgb must hold finite values"):
        estimate(np.full((480, 640, 3), np.nan), K)
    with pytest.raises(ValueError, match="depth must be"):
        estimate(rgb, K, depth=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="give camera_to_table, or depth"):
        estimate(rgb, K)
    with pytest.raises(ValueError, match="camera_to_table must be a finite"):
        estimate(rgb, K, camera_to_table=np.eye(3))


def test_your_own_meshes_and_camera_through_the_command_line(tmp_path, capsys):
    """A models folder the toolkit never shipped (a box and a flat puck) and a camera of one's own:
    frames simulated for them, poses found over those meshes (AIR, trained on other shapes, says
    only where to look) and scored, all with --models."""
    import trimesh

    models = tmp_path / "models"
    models.mkdir()
    info = {}
    for obj_id, (name, mesh) in enumerate((("box", trimesh.creation.box(extents=[70.0, 35.0, 90.0])),
                                           ("puck", trimesh.creation.cylinder(radius=45.0, height=30.0))), start=1):
        (models / f"obj_{obj_id:06d}.ply").write_bytes(trimesh.exchange.ply.export_ply(mesh, encoding="ascii"))
        info[str(obj_id)] = {"name": name, "diameter": float(np.linalg.norm(mesh.extents))}
    (models / "models_info.json").write_text(json.dumps(info))
    from inverse_graphics.camera import Camera
    from inverse_graphics.robot.frames import write_camera
    write_camera(tmp_path / "camera.json", Camera.look_at((0.05, -0.4, 0.55), (0.0, 0.0, 0.0), 48.0, (480, 640)))
    frames, out = tmp_path / "frames", tmp_path / "poses"
    assert main(["frames", str(frames), "--models", str(models), "--camera", str(tmp_path / "camera.json"),
                 "--count", "3", "--seed", "2", "--quiet"]) == 0
    assert main(["poses", str(frames), "--models", str(models), "--out", str(out), "--quiet", "--no-overlay"]) == 0
    assert main(["evaluate", str(out / "poses.json"), str(frames), "--models", str(models)]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert {o["category"] for f in json.loads((out / "poses.json").read_text())["frames"].values()
            for o in f["objects"]} <= {"box", "puck"}
    assert report["overall"]["adds_recall"] >= 0.75 and report["overall"]["identity_acc"] >= 0.75, report["overall"]
    capsys.readouterr()
    assert main(["poses", str(frames), "--out", str(tmp_path / "shipped"), "--quiet", "--objects", "puck"]) == 2
    assert "unknown object names ['puck']" in capsys.readouterr().err  # not among the shipped objects


def test_hypotheses_put_the_middle_of_their_top_where_the_points_centre():
    """An L-shaped block's top centres 8 mm off its origin, towards its filled corner: its
    hypotheses stand that far from the blob of points, turned with their yaw; a bar's is on it."""
    from inverse_graphics.robot.detection import top_centre

    catalog = ObjectCatalog.load()
    l_block = top_centre(catalog[catalog.index_of("l_block")], 0)
    assert 0.005 < float(l_block.norm()) < 0.012
    for name in ("bar", "cube", "cylinder", "sphere"):
        assert float(top_centre(catalog[catalog.index_of(name)], 0).norm()) < 1e-6, name


def test_frames_folder_never_mixes_frames_made_otherwise(tmp_path, capsys):
    out = tmp_path / "frames"
    args = ["frames", str(out), "--num", "2", "--quiet", "--ideal", "--seed", "4"]
    assert main(args) == 0
    first = (out / "rgb" / "000000.png").read_bytes()
    (out / "rgb" / "000001.png").unlink()  # a killed run: the same settings resume, keeping frame 0
    assert main(args) == 0 and (out / "rgb" / "000001.png").is_file()
    assert (out / "rgb" / "000000.png").read_bytes() == first
    truth = (out / "scene_gt.json").read_text()
    capsys.readouterr()
    assert main([*args[:-1], "5"]) == 2  # another seed: other scenes, so not these images
    assert "made with another seed" in capsys.readouterr().err
    assert (out / "scene_gt.json").read_text() == truth  # nothing lost
    assert main(["frames", str(out), "--num", "1", "--seed", "5", "--quiet", "--ideal", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "rgb").iterdir()) == ["000000.png"]  # none left from seed 4
    assert (out / "rgb" / "000000.png").read_bytes() != first
    assert list(json.loads((out / "scene_gt.json").read_text())) == ["000000"]


def test_colour_blobs_find_coloured_objects_not_shadows():
    """Without depth, objects AIR missed are looked for among pixels not of the table's
    chromaticity: a red and a blue square on textured wood are blobs; a shadow (the wood darker),
    what lies outside `within` and what `exclude` covers are not."""
    from inverse_graphics.robot.window import colour_blobs

    gen = torch.Generator().manual_seed(0)
    wood = torch.tensor([0.55, 0.5, 0.44])
    rgb = (wood * (1 + 0.08 * torch.randn(60, 80, 1, generator=gen))).clamp(0, 1)
    rgb[30:50, 5:35] *= 0.6  # a shadow
    rgb[10:20, 10:20] = torch.tensor([0.8, 0.15, 0.1])
    rgb[35:45, 50:60] = torch.tensor([0.1, 0.2, 0.7])
    rgb[5:15, 70:78] = torch.tensor([0.1, 0.6, 0.1])  # outside `within`
    within = torch.zeros(60, 80, dtype=torch.bool)
    within[:, :68] = True
    labels, count = colour_blobs(rgb, within, 0.05)
    assert count == 2
    centres = sorted(tuple(np.argwhere(labels == k).mean(0).round().tolist()) for k in (1, 2))
    assert centres == [(14.0, 14.0), (40.0, 54.0)]  # (row, column), the squares' middles (opened: a pixel in)
    exclude = torch.zeros(60, 80, dtype=torch.bool)
    exclude[8:22, 8:22] = True
    assert colour_blobs(rgb, within, 0.05, exclude=exclude)[1] == 1
