import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from inverse_graphics.air.config import AIRConfig, anneal
from inverse_graphics.air.model import AIR
from inverse_graphics.air.networks import MAX_OFFSET, WhatHead
from inverse_graphics.air.train import TrainConfig, load_checkpoint, train_air
from inverse_graphics.cli import main
from inverse_graphics.metrics import evaluate_planar
from inverse_graphics.paths import SHIPPED_AIR, SHIPPED_DAIR, SHIPPED_ELBO_AIR
from inverse_graphics.scene import PlanarObjects

SMALL = dict(hidden=32)


def _tiny_train(out, tabletop, **overrides):
    cfg = dict(iterations=4, batch_size=4, train_pool=16, val_size=8, val_every=2, checkpoint_every=2)
    cfg.update(overrides)
    return train_air(out, AIRConfig(**SMALL), TrainConfig(**cfg), tabletop, progress=False, log=lambda m: None)


@pytest.mark.parametrize("estimator,dair", [("reinforce", False), ("concrete", False), ("reinforce", True)])
def test_air_loss_is_finite_and_reaches_every_part_of_the_guide(catalog, tabletop, estimator, dair):
    model = AIR(AIRConfig(count_estimator=estimator, dair=dair, **SMALL), catalog, tabletop.camera,
                tabletop.config.table)
    images = tabletop.render("train", range(4))[0].rgb
    loss, info = model.loss(images, iteration=0)
    assert torch.isfinite(loss)
    loss.backward()
    for name in ("guide.encoder.fc.0.weight", "guide.where_head.weight", "guide.what_head.2.weight",
                 "guide.glimpse_encoder.net.0.weight", "baseline.2.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert info["counts"].shape == (4,) and int(info["counts"].max()) <= 3


@pytest.mark.parametrize("path", [SHIPPED_AIR, SHIPPED_ELBO_AIR, SHIPPED_DAIR], ids=["air", "air-elbo", "dair"])
def test_shipped_weights_load_into_the_model(tabletop, path):
    """The modules' parameter names are the shipped checkpoints' (loading is strict)."""
    model, ckpt = load_checkpoint(path, tabletop)
    assert sorted(model.state_dict()) == sorted(ckpt["model"])
    assert model.guide.yaw_fold.tolist() == [max(1, c.yaw_symmetry_order()) for c in model.catalog.categories]


def test_what_head_names_its_outputs():
    head = WhatHead(40, num_categories=5, yaw_heads=5)
    out = head(torch.randn(7, 40) * 10)
    assert [n for n, _ in head.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert out.identity_logits.shape == (7, 5) and out.folded_yaw.shape == out.folded_yaw_std.shape == (7, 5)
    assert out.color_offset.shape == out.color_std.shape == (7, 3) and out.position_offset.shape == (7, 2)
    assert (out.folded_yaw.abs() <= math.pi).all() and (out.folded_yaw_std > 0).all() and (out.color_std > 0).all()
    assert (out.position_offset.abs() <= MAX_OFFSET).all()


def test_anneal_runs_from_start_to_end():
    assert [anneal(i, 100, 0.9, 0.5) for i in (-5, 0, 100, 500)] == [0.9, 0.9, 0.5, 0.5]
    assert anneal(25, 100, 0.9, 0.5) == pytest.approx(0.8)
    assert anneal(50, 100, 30.0, 1.0, "geometric") == pytest.approx(30.0 ** 0.5)
    with pytest.raises(ValueError, match="schedule"):
        anneal(0, 1, 1.0, 2.0, "cosine")


def test_first_training_batch_sets_the_reward_statistics(catalog, tabletop):
    """NVIL's running mean starts at the first batch's ELBO, not at 0: ELBOs are ~1e5 nats, and a
    mean starting at 0 made every early signal hugely negative (a fine-tuned guide stopped
    proposing objects)."""
    model = AIR(AIRConfig(**SMALL), catalog, tabletop.camera, tabletop.config.table).train()
    images = tabletop.render("train", range(4))[0].rgb
    assert model.reward_statistics_unset()
    _, info = model.loss(images, iteration=0)
    assert not model.reward_statistics_unset()
    first = float(model.reward_mean)
    assert abs(first - info["elbo"]) < 1e-3 * abs(info["elbo"])
    _, info2 = model.loss(images, iteration=1)
    assert float(model.reward_mean) == pytest.approx(0.99 * first + 0.01 * info2["elbo"], rel=1e-4)


def test_guide_rejects_images_of_the_wrong_size(catalog, tabletop):
    model = AIR(AIRConfig(**SMALL), catalog, tabletop.camera, tabletop.config.table)
    with pytest.raises(ValueError, match=r"\(32, 32\).*\(64, 64\)"):
        model.infer(torch.zeros(1, 32, 32, 3))


def test_training_checkpoints_atomically_and_resumes(tmp_path, tabletop):
    import os
    from pathlib import Path
    from unittest import mock

    run = tmp_path / "run"

    def leftovers():  # temporary files of any form: `name.tmp`, the hidden `.name.tmp<pid>`, ...
        return sorted(p.name for p in run.rglob("*") if ".tmp" in p.name)

    with mock.patch("os.replace", wraps=os.replace) as renames:
        first = _tiny_train(run, tabletop)
    assert first["iteration"] == 4
    assert (run / "curves.png").stat().st_size > 0
    # every file of the run was written beside itself under another name, then renamed over itself ...
    moves = [(Path(c.args[0]), Path(c.args[1])) for c in renames.call_args_list if Path(c.args[1]).parent == run]
    assert sorted({dst.name for _, dst in moves}) == sorted(p.name for p in run.iterdir())
    assert [dst.name for _, dst in moves].count("checkpoint.pt") >= 2  # checkpoint_every=2 of 4 iterations
    assert all(src.parent == run and src.name != dst.name and not src.exists() for src, dst in moves)
    # ... and no temporary file is left, of those or any other
    assert leftovers() == []
    assert load_checkpoint(run / "checkpoint.pt", tabletop)[1]["iteration"] == 4
    with pytest.raises(ValueError, match="--resume"):
        _tiny_train(tmp_path / "run", tabletop)
    resumed = train_air(tmp_path / "run", None, TrainConfig(iterations=6), tabletop, resume=True, progress=False,
                        log=lambda m: None)
    assert resumed["iteration"] == 6
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["iteration"] for h in history if "objective" in h] == [1, 2, 3, 4, 5, 6]
    assert leftovers() == [] and load_checkpoint(run / "checkpoint.pt", tabletop)[1]["iteration"] == 6


def test_a_nan_loss_skips_the_step(tmp_path, tabletop, monkeypatch):
    calls = []
    original = AIR.loss

    def sometimes_nan(self, images, iteration, *args, **kwargs):
        loss, info = original(self, images, iteration, *args, **kwargs)
        calls.append(iteration)
        return (loss * float("nan") if len(calls) == 2 else loss), info

    monkeypatch.setattr(AIR, "loss", sometimes_nan)
    messages = []
    result = train_air(tmp_path / "run", AIRConfig(**SMALL),
                       TrainConfig(iterations=3, batch_size=2, train_pool=4, val_size=4), tabletop, progress=False,
                       log=messages.append)
    assert result["skipped"] == 1 and any("skipped" in m for m in messages)
    model, _ = load_checkpoint(tmp_path / "run" / "checkpoint.pt", tabletop)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_corrupt_checkpoint_is_named(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint.pt is not a readable AIR checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="no AIR checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_infer_command_writes_poses_and_overlay(tmp_path, tabletop, capsys):
    _tiny_train(tmp_path / "run", tabletop, iterations=2)
    images = tabletop.render("test", range(3))[0].rgb
    for k in range(3):
        Image.fromarray((images[k].numpy() * 255).astype(np.uint8)).save(tmp_path / f"frame{k}.png")
    rc = main(["infer", str(tmp_path / "frame0.png"), str(tmp_path / "frame1.png"), str(tmp_path / "frame2.png"),
               "--model", str(tmp_path / "run" / "checkpoint.pt"), "--out", str(tmp_path / "out"), "--samples", "2"])
    assert rc == 0
    poses = json.loads((tmp_path / "out" / "poses.json").read_text())
    assert len(poses) == 3 and all(len(p["samples"]) == 2 for p in poses)
    assert [p["image"] for p in poses] == [str(tmp_path / f"frame{k}.png") for k in range(3)]
    catalog, camera = tabletop.catalog, tabletop.camera  # the checkpoint's: trained on this tabletop
    extrinsic = np.eye(4)  # world to camera
    extrinsic[:3, :3], extrinsic[:3, 3] = camera.R.numpy(), camera.t.numpy()
    assert sum(p["count"] for p in poses) > 0  # (the pose checks below see objects)
    for entry in poses:
        # the mode keeps the guide's steps while their presence probability exceeds 0.5
        assert entry["count"] == len(entry["objects"]) == sum(p > 0.5 for p in entry["presence_prob"]) <= 3
        for obj in entry["objects"]:
            world, cam = np.array(obj["pose_world"]), np.array(obj["pose_camera"])
            # pose_world rests on the table at the reported planar pose: R = Rz(yaw), t = (x, y, rest height)
            c, s = math.cos(obj["yaw_rad"]), math.sin(obj["yaw_rad"])
            assert np.allclose(world[:3, :3], [[c, -s, 0], [s, c, 0], [0, 0, 1]], atol=1e-5)
            rest = catalog[catalog.index_of(obj["category"])].rest_height
            assert np.allclose(world[:3, 3], [obj["x_m"], obj["y_m"], rest], atol=1e-6)
            assert np.allclose(world[3], [0, 0, 0, 1])
            # pose_camera is pose_world seen from the camera: a rotation (orthonormal, det +1) and
            # the camera's extrinsic composed with pose_world
            assert np.allclose(cam[:3, :3] @ cam[:3, :3].T, np.eye(3), atol=1e-5)
            assert np.linalg.det(cam[:3, :3]) == pytest.approx(1.0, abs=1e-5)
            assert np.allclose(cam, extrinsic @ world, atol=1e-5)
    assert (tmp_path / "out" / "overlay.png").stat().st_size > 0

    Image.new("RGB", (40, 30)).save(tmp_path / "small.png")
    rc = main(["infer", str(tmp_path / "small.png"), "--model", str(tmp_path / "run" / "checkpoint.pt"),
               "--out", str(tmp_path / "out2")])
    assert rc == 2 and "(30, 40) pixels" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    rc = main(["infer", str(tmp_path / "broken.png"), "--model", str(tmp_path / "run" / "checkpoint.pt")])
    assert rc == 2 and "cannot read image" in capsys.readouterr().err


def test_metrics_match_by_position_and_respect_symmetry(catalog, tabletop):
    cube, l_block = catalog.index_of("cube"), catalog.index_of("l_block")
    true_category = torch.tensor([[cube, l_block, -1], [l_block, -1, -1]])
    true_position = torch.tensor([[[0.0, 0.0], [0.05, 0.05], [0, 0]], [[0.02, 0.0], [0, 0], [0, 0]]])
    true_yaw = torch.tensor([[0.1, 0.2, 0.0], [1.0, 0.0, 0.0]])
    # Prediction lists scene 0's objects in the other order, the cube turned by 90 degrees (a symmetry)
    # and 3 mm off; scene 1 gets a spurious second object.
    pred_category = torch.tensor([[l_block, cube], [l_block, cube]])
    pred_position = torch.tensor([[[0.05, 0.05], [0.003, 0.0]], [[0.02, 0.0], [-0.08, 0.0]]])
    pred_yaw = torch.tensor([[0.2, 0.1 + math.pi / 2], [1.0, 0.0]])
    truth = PlanarObjects(true_category, true_position, true_yaw, torch.zeros(2, 3, 3))
    m = evaluate_planar(PlanarObjects(pred_category, pred_position, pred_yaw, torch.zeros(2, 2, 3)), truth, catalog,
                        tabletop.camera)
    assert m["count_acc"] == 0.5
    assert m["identity_acc"] == 1.0
    assert m["pos_err_mm_median"] == pytest.approx(0.0, abs=1e-3)
    assert m["rot_err_deg_median"] == pytest.approx(0.0, abs=1e-3)
    assert m["adds_recall"] == 1.0
    wrong = evaluate_planar(PlanarObjects(pred_category, pred_position, pred_yaw + math.pi / 3,
                                          torch.zeros(2, 2, 3)), truth, catalog)
    assert wrong["rot_err_deg_median"] == pytest.approx(60.0, abs=1e-3)


def test_air_trains_through_the_black_box_renderer_by_name(catalog, tabletop):
    """--renderer open3d-fd: the same loss, with finite-difference gradients through Open3D."""
    model = AIR(AIRConfig(renderer="open3d-fd", **SMALL), catalog, tabletop.camera, tabletop.config.table)
    assert model.renderer.name == "open3d-fd"
    images = tabletop.render("train", range(2))[0].rgb
    loss, _ = model.loss(images, iteration=0)
    loss.backward()
    assert model.renderer.scenes_rendered > 2  # forward plus finite-difference renders
    grad = model.guide.what_head[2].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_exported_weights_keep_the_nvil_statistics_finite(tmp_path, tabletop):
    from inverse_graphics.checkpoints import export_weights

    _tiny_train(tmp_path / "run", tabletop, iterations=2)
    full = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    assert float(full["reward_var"]) > torch.finfo(torch.float16).max  # ELBO variances overflow float16
    slim = torch.load(export_weights(tmp_path / "run" / "checkpoint.pt", tmp_path / "slim.pt"), weights_only=False)
    assert all(torch.isfinite(v.float()).all() for v in slim["model"].values())
    assert slim["model"]["guide.encoder.fc.0.weight"].dtype == torch.float16  # the weights still shrink
    assert torch.equal(slim["model"]["reward_var"], full["reward_var"])
    model, _ = load_checkpoint(tmp_path / "slim.pt", tabletop)
    model.train()
    loss, _ = model.loss(torch.rand(4, 64, 64, 3), iteration=10)
    assert torch.isfinite(loss)
