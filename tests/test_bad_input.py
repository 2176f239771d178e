"""Bad input and faults, one class at a time: every case gets an error naming the file or value,
what is wrong and what is expected (exit code 2 from the command line), and nothing written is lost."""

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from inverse_graphics import files
from inverse_graphics.air.config import AIRConfig
from inverse_graphics.air.sleep import SLEEP_ARCHITECTURE, SleepConfig
from inverse_graphics.air.train import load_checkpoint, train_air, train_air_sleep
from inverse_graphics.assets import ASSETS_DIR, AssetError, ObjectCatalog
from inverse_graphics.cli import main
from inverse_graphics.data.prior import PriorConfig, PriorSamples, prior_batches
from inverse_graphics.data.tabletop import Tabletop, TabletopConfig
from inverse_graphics.files import lock_output_folder, prepare_output_folder, release_output_folder
from inverse_graphics.robot.frames import iter_frames, read_camera
from inverse_graphics.robot.simulate import CaptureConditions, write_frames
from inverse_graphics.training import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = "assets/weights/air_elbo_tabletop_v1.pt"


def _error(argv: list[str], capsys) -> str:
    """The command's error message; it must exit with code 2 and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Two RGB-D frames with their camera (with an extrinsic) and ground truth."""
    return write_frames(tmp_path_factory.mktemp("frames"), 2, CaptureConditions(), seed=5, progress=False)


def _copy(frames: Path, to: Path) -> Path:
    shutil.copytree(frames, to)
    return to


def _problems(folder: Path) -> dict[str, str]:
    found = {}
    list(iter_frames(folder, on_problem=lambda p: found.__setitem__(p.name, p.reason)))
    return found


# ------------------------------------------------------------------ images
def test_a_16_bit_image_is_refused_by_name(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 9).astype(np.uint16)).save(folder / "grey16.png")
    err = _error(["infer", str(folder), "--model", SHIPPED, "--out", str(tmp_path / "out")], capsys)
    assert "grey16.png is a 16-bit image" in err and "8-bit" in err
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(folder / "grey16.png")  # 8-bit grey is fine
    assert main(["infer", str(folder), "--model", SHIPPED, "--out", str(tmp_path / "out")]) == 0


# ------------------------------------------------------------------ frames folders
def test_two_files_of_one_frame_are_both_skipped_and_named(frames, tmp_path):
    folder = _copy(frames, tmp_path / "f")
    first = sorted((folder / "rgb").iterdir())[0]
    Image.open(first).save(first.with_suffix(".jpg"))
    problems = _problems(folder)
    assert set(problems) == {first.name, first.with_suffix(".jpg").name}
    assert "same frame name" in problems[first.name]


def test_a_folder_of_unusable_frames_fails_and_a_fixed_frame_is_no_longer_skipped(frames, tmp_path, capsys):
    folder = _copy(frames, tmp_path / "f")
    names = sorted(p.name for p in (folder / "depth").iterdir())
    kept = {n: (folder / "depth" / n).read_bytes() for n in names}
    for n in names:  # 8-bit depth cannot hold millimetres
        Image.fromarray(np.full((480, 640), 200, np.uint8)).save(folder / "depth" / n)
    out = tmp_path / "out"
    err = _error(["poses", str(folder), "--model", SHIPPED, "--out", str(out), "--quiet"], capsys)
    assert "no usable frame" in err and "16-bit" in err
    (folder / "depth" / names[0]).write_bytes(kept[names[0]])  # the user fixes one frame
    assert main(["poses", str(folder), "--model", SHIPPED, "--out", str(out), "--quiet", "--no-overlay"]) == 0
    results = json.loads((out / "poses.json").read_text())
    assert Path(names[0]).stem in results["frames"] and list(results["skipped"]) == [names[1]]


# ------------------------------------------------------------------ depth
@pytest.mark.parametrize("case", ["no return", "metres", "8-bit"])
def test_implausible_depth_is_skipped_with_the_reason(frames, tmp_path, case):
    folder = _copy(frames, tmp_path / "f")
    camera = json.loads((folder / "camera.json").read_text())
    camera.pop("camera_to_table")  # the table must come from depth
    (folder / "camera.json").write_text(json.dumps(camera))
    depth = sorted((folder / "depth").iterdir())[0]
    raw = np.array(Image.open(depth))
    array = {"no return": np.full_like(raw, 65535),
             "metres": np.round(raw / 1000.0).astype(np.uint16),
             "8-bit": (raw // 10).clip(0, 255).astype(np.uint8)}[case]
    Image.fromarray(array).save(depth)
    reason = _problems(folder)[depth.name]  # the frame's RGB file has the depth file's name
    assert ("depth_scale" in reason) if case != "8-bit" else ("16-bit" in reason), reason


@pytest.mark.parametrize("scale", [0, -1.0, "x", float("nan")])
def test_a_depth_scale_that_is_not_positive_is_an_error(frames, tmp_path, scale):
    camera = json.loads((frames / "camera.json").read_text())
    (tmp_path / "camera.json").write_text(json.dumps({**camera, "depth_scale": scale}))
    with pytest.raises(ValueError, match="depth_scale must be"):
        read_camera(tmp_path / "camera.json")


# ------------------------------------------------------------------ catalogs
def _models(tmp_path, edit) -> Path:
    folder = tmp_path / "models"
    shutil.copytree(ASSETS_DIR / "models", folder)
    info = json.loads((ASSETS_DIR / "models_info.json").read_text())
    edit(info, folder)
    (folder / "models_info.json").write_text(json.dumps(info))
    return folder


def _scaled(info, folder):
    info["3"]["symmetries_discrete"][0] = list(2 * np.asarray(info["3"]["symmetries_discrete"][0]))


def _nan(info, folder):
    info["3"]["symmetries_discrete"][0][0] = float("nan")


@pytest.mark.parametrize("edit, message", [
    (lambda info, folder: info.pop("2"), "obj_000002.ply .* has no entry"),
    (_scaled, r"symmetries_discrete\[0\] is not a rigid transform"),
    (_nan, "NaN"),
    (lambda info, folder: info["1"].__setitem__("diameter", -40.0), "diameter must be positive"),
    (lambda info, folder: info.__setitem__("first", info.pop("1")), "keys must be obj_ids"),
    (lambda info, folder: info["3"].__setitem__("symmetries_discrete", [[1, 0, 0]]), "must be 16 numbers"),
    (lambda info, folder: info["4"].__setitem__("symmetries_continuous", [{"axis": [0, 0]}]), "must be 3 numbers"),
], ids=["unlisted mesh", "scaled symmetry", "NaN symmetry", "negative diameter", "key not a number",
        "symmetry shape", "axis shape"])
def test_a_bad_catalog_is_named(tmp_path, edit, message):
    assert ObjectCatalog.load(_models(tmp_path, lambda info, folder: None))  # the copy itself is fine
    shutil.rmtree(tmp_path / "models")
    with pytest.raises(AssetError, match=message):
        ObjectCatalog.load(_models(tmp_path, edit))


# ------------------------------------------------------------------ checkpoints
def test_a_checkpoint_of_the_wrong_kind_is_named(tmp_path, capsys):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"weights": {}}, tmp_path / "dict.pt")
    out = tmp_path / "out"
    for bad, expected in (("tensor.pt", "holds a Tensor"), ("dict.pt", "without model weights")):
        err = _error(["infer", str(ROOT / "assets" / "examples"), "--model", str(tmp_path / bad), "--out", str(out)],
                     capsys)
        assert bad in err and expected in err, err
    # a supervised checkpoint in an AIR run's folder, resumed by train-air
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ROOT / "assets" / "weights" / "supervised_tabletop_v1.pt", run / "checkpoint.pt")
    err = _error(["train-air", "--sleep", "--out", str(run), "--resume", "--quiet"], capsys)
    assert "not a resumable AIR checkpoint" in err and "supervised-baseline checkpoint" in err


# ------------------------------------------------------------------ output locations
def test_an_output_path_that_is_a_file_fails_before_any_work(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("mine")
    err = _error(["train-air", "--sleep", "--out", str(target), "--quiet"], capsys)
    assert "is an existing file" in err and target.read_text() == "mine"


def test_a_read_only_output_folder_fails_before_any_work(tmp_path, monkeypatch):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root writes anyway: fail the write as a read-only filesystem would

        def refuse(self, data):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(ValueError, match="is not writable"):
        prepare_output_folder(folder / "run")


def test_a_full_disk_is_named_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match="no space left on the device for .*checkpoint.pt"):
        files.atomic_write_bytes(tmp_path / "checkpoint.pt", b"x" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_of_killed_runs_are_removed_on_the_next_run(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process id that has ended
    stale = tmp_path / "run" / "overlay" / f".000001.png.tmp{dead}"
    live = tmp_path / "run" / f".poses.json.tmp{os.getpid()}"  # this process's: it may still be writing
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    prepare_output_folder(tmp_path / "run")
    assert not stale.exists() and live.exists()


# ------------------------------------------------------------------ concurrency
def test_a_folder_in_use_by_another_run_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from inverse_graphics.files import "
                               f"lock_output_folder; lock_output_folder({str(run)!r}); print('held', flush=True); "
                               "time.sleep(60)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        err = _error(["train-air", "--sleep", "--out", str(run), "--quiet"], capsys)
        assert f"in use by another run (process {holder.pid})" in err
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.2)
    lock_output_folder(run)  # the holder is gone: the folder is free
    release_output_folder(run)
    assert not (run / files.LOCK_NAME).exists()


# ------------------------------------------------------------------ training values and resume
@pytest.mark.parametrize("option", ["--batch-size", "--train-pool", "--max-steps", "--checkpoint-every"])
def test_training_values_that_cannot_work_are_refused(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        main(["train-air", "--out", str(tmp_path / "run"), option, "0"])
    assert exit_.value.code == 2 and "0 is not a positive whole number" in capsys.readouterr().err
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="max_steps"):
        AIRConfig(max_steps=0)


def test_a_prior_stream_started_later_continues_the_same_stream(tabletop):
    config = PriorConfig(counts=(1, 2), workers=0)
    stream = prior_batches(tabletop, 4, config, seed=3)
    first = [next(stream)[1] for _ in range(3)]
    later = next(iter(PriorSamples(tabletop, 4, config, seed=3, start=2)))[1]
    assert torch.equal(later.position, first[2].position)
    in_two_workers = prior_batches(tabletop, 4, PriorConfig(counts=(1, 2), workers=2), seed=3)
    assert all(torch.equal(next(in_two_workers)[1].position, f.position) for f in first)


@pytest.mark.parametrize("phase", ["sleep", "elbo"])
def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, tabletop, phase):
    cfg = TrainConfig(iterations=4, batch_size=4, val_size=8, val_every=2, checkpoint_every=2, train_pool=16)
    if phase == "sleep":
        config = AIRConfig(hidden=64, max_steps=2, **SLEEP_ARCHITECTURE)

        def train(out, cfg, **kw):
            train_air_sleep(out, config, cfg, tabletop, SleepConfig(prior=PriorConfig(workers=0)), progress=False, **kw)
    else:
        def train(out, cfg, **kw):
            train_air(out, AIRConfig(hidden=32, max_steps=2, enumerate_images=2), cfg, tabletop, progress=False, **kw)
    train(tmp_path / "whole", cfg, log=lambda m: None)
    torch.manual_seed(123)  # whatever this process did in between does not matter
    train(tmp_path / "halves", TrainConfig(**{**cfg.__dict__, "iterations": 2}), log=lambda m: None)
    said = []
    train(tmp_path / "halves", cfg, resume=True, log=said.append)
    assert said[0].endswith("from iteration 2")
    whole, halves = (torch.load(tmp_path / n / "checkpoint.pt", weights_only=False) for n in ("whole", "halves"))
    assert whole["iteration"] == halves["iteration"] == 4
    assert all(torch.equal(whole["model"][k], halves["model"][k]) for k in whole["model"])


def test_resume_without_a_checkpoint_says_so(tmp_path, tabletop):
    said = []
    train_air_sleep(tmp_path / "new", AIRConfig(hidden=64, max_steps=2, **SLEEP_ARCHITECTURE),
                    TrainConfig(iterations=1, batch_size=2, val_size=4), tabletop,
                    SleepConfig(prior=PriorConfig(workers=0)), resume=True, progress=False, log=said.append)
    assert "no checkpoint" in said[0] and "starting from iteration 0" in said[0]


def test_a_checkpoint_goes_with_the_objects_it_was_trained_for(tmp_path, tabletop):
    def four_objects(info, folder):
        info.pop("5")
        (folder / "obj_000005.ply").unlink()
    four = ObjectCatalog.load(_models(tmp_path, four_objects))
    tiny = dict(iterations=1, batch_size=2, val_size=4, train_pool=4)
    run = tmp_path / "run"
    train_air(run, AIRConfig(hidden=32, max_steps=2), TrainConfig(**tiny), Tabletop(TabletopConfig(), four),
              progress=False, log=lambda m: None)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["catalog"]["names"] == four.names and ckpt["catalog"]["models"] == str(four.root)
    model, _ = load_checkpoint(run / "checkpoint.pt")  # the objects it recorded, found again
    assert model.catalog.names == four.names
    with pytest.raises(ValueError, match=r"was trained with the objects .*train-air --models DIR"):
        load_checkpoint(run / "checkpoint.pt", tabletop)  # the shipped five
    said = []  # a guide for the shipped five, started from the four-object one: what fits carries over
    train_air(tmp_path / "five", AIRConfig(hidden=32, max_steps=2), TrainConfig(**tiny), tabletop, progress=False,
              log=said.append, init=run / "checkpoint.pt")
    assert any("trained for 4 objects, these are 5" in m and "start fresh" in m for m in said), said


def test_infer_checks_the_models_folder_against_the_checkpoint(tmp_path, tabletop, capsys):
    def four_objects(info, folder):
        info.pop("5")
        (folder / "obj_000005.ply").unlink()
    four = ObjectCatalog.load(_models(tmp_path / "a", four_objects))
    run = tmp_path / "run"
    train_air(run, AIRConfig(hidden=32, max_steps=2), TrainConfig(iterations=1, batch_size=2, val_size=4, train_pool=4),
              Tabletop(TabletopConfig(), four), progress=False, log=lambda m: None)
    five = _models(tmp_path / "b", lambda info, folder: None)
    bigger = _models(tmp_path / "c", four_objects)  # the same names and ids, one mesh 10% larger
    mesh = trimesh.load(bigger / "obj_000001.ply")
    mesh.apply_scale(1.1)
    mesh.export(bigger / "obj_000001.ply")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(images / "grey.png")

    def infer(model, models):
        return ["infer", str(images), "--model", str(model), "--models", str(models), "--out", str(tmp_path / "out")]
    for other in (five, bigger):
        err = _error(infer(run / "checkpoint.pt", other), capsys)
        assert "was trained with the objects" in err and "train-air --models DIR" in err, err
        assert "fit --models DIR" in err, err
    err = _error(infer(SHIPPED, four.root), capsys)  # records no catalog: trained with the shipped objects
    assert "was trained with the objects" in err, err
    assert main(infer(run / "checkpoint.pt", four.root)) == 0
    assert main(infer(SHIPPED, five)) == 0
    poses = json.loads((tmp_path / "out" / "poses.json").read_text())
    assert {o["category"] for p in poses for o in p["objects"]} <= set(ObjectCatalog.load(five).names)
