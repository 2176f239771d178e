from pathlib import Path

import pytest
import torch

from inverse_graphics.air.config import AIRConfig
from inverse_graphics.air.train import train_air
from inverse_graphics.supervised import SetRegressor, SupervisedConfig, load_supervised, set_loss, train_supervised
from inverse_graphics.checkpoints import export_weights
from inverse_graphics.training import TrainConfig, render_pool

TINY = dict(batch_size=8, train_pool=16, val_size=8, checkpoint_every=5)


def test_set_loss_ignores_the_order_of_the_slots(catalog, tabletop):
    images, truth = render_pool(tabletop, "train", 6, progress=False)
    model = SetRegressor(SupervisedConfig(), len(catalog))
    prediction = model(images.float() / 255)
    loss, _ = set_loss(prediction, truth, model.config)
    order = torch.tensor([2, 0, 1])
    permuted = {k: (v[:, order] if k != "count_logits" else v) for k, v in prediction.items()}
    permuted_loss, _ = set_loss(permuted, truth, model.config)
    assert torch.isfinite(loss) and torch.allclose(loss, permuted_loss)
    loss.backward()
    assert model.encoder.fc[0].weight.grad.abs().sum() > 0


def test_supervised_training_fits_its_labels_and_resumes(tmp_path, tabletop):
    first = train_supervised(tmp_path / "run", None, TrainConfig(iterations=5, val_every=5, **TINY), tabletop,
                             progress=False, log=lambda m: None)
    assert first["iteration"] == 5 and (tmp_path / "run" / "curves.png").is_file()
    with pytest.raises(ValueError, match="--resume"):
        train_supervised(tmp_path / "run", None, TrainConfig(iterations=5, **TINY), tabletop, progress=False)
    resumed = train_supervised(tmp_path / "run", None, TrainConfig(iterations=400, val_every=400, **TINY), tabletop,
                               resume=True, progress=False, log=lambda m: None)
    assert resumed["iteration"] == 400
    # 400 steps on 16 labelled images: it must have learned to count them
    model, _ = load_supervised(export_weights(tmp_path / "run" / "checkpoint.pt", tmp_path / "slim.pt"))
    images, truth = render_pool(tabletop, "train", 16, progress=False)
    predicted = model.predict(images.float() / 255)
    assert predicted.category.shape == (16, 3) and predicted.position.shape == (16, 3, 2)
    assert (predicted.counts == truth.counts).float().mean() >= 0.75


def test_load_supervised_names_a_foreign_or_broken_file(tmp_path, tabletop):
    train_air(tmp_path / "air", AIRConfig(hidden=32), TrainConfig(iterations=1, **TINY), tabletop, progress=False,
              log=lambda m: None)
    with pytest.raises(ValueError, match="not a supervised checkpoint .*it is an AIR checkpoint"):
        load_supervised(tmp_path / "air" / "checkpoint.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pt is not a readable supervised checkpoint"):
        load_supervised(tmp_path / "broken.pt")
    with pytest.raises(FileNotFoundError, match="no supervised checkpoint"):
        load_supervised(tmp_path / "missing.pt")


def test_train_commands_run_and_refuse_to_overwrite(tmp_path):
    from inverse_graphics.cli import main

    tiny = ["--iterations", "2", "--train-pool", "8", "--val-size", "4", "--batch-size", "4", "--quiet"]
    assert main(["train-supervised", "--out", str(tmp_path / "sup"), *tiny]) == 0
    assert (tmp_path / "sup" / "checkpoint.pt").is_file()
    assert main(["train-supervised", "--out", str(tmp_path / "sup"), *tiny]) == 2  # exists: --resume or another --out
    assert main(["train-supervised", "--out", str(tmp_path / "sup"), *tiny[2:], "--iterations", "3", "--resume"]) == 0
    assert main(["train-air", "--out", str(tmp_path / "air"), *tiny]) == 0
    assert load_supervised(tmp_path / "sup" / "checkpoint.pt")[1]["iteration"] == 3
    assert main(["export-weights", str(tmp_path / "sup" / "checkpoint.pt"), str(tmp_path / "sup.pt")]) == 0
    model, slim = load_supervised(tmp_path / "sup.pt")
    assert "optimizer" not in slim and next(iter(slim["model"].values())).dtype == torch.float16
    assert main(["export-weights", str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 2


def test_supervised_trains_on_fresh_prior_renders_and_resumes(tmp_path, tabletop):
    from inverse_graphics.data.prior import PriorConfig

    seen = []
    cfg = TrainConfig(iterations=3, batch_size=4, val_size=4, val_every=3)
    fresh = PriorConfig(workers=0)
    result = train_supervised(tmp_path / "run", None, cfg, tabletop, progress=False, log=lambda m: None, fresh=fresh)
    assert result["iteration"] == 3
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["prior_config"] == fresh.to_dict()
    resumed = train_supervised(tmp_path / "run", None, TrainConfig(iterations=4, batch_size=4, val_size=4, val_every=4),
                               tabletop, resume=True, progress=False, log=seen.append)
    assert resumed["iteration"] == 4 and any("resuming" in m for m in seen)


def test_evaluate_supervised_updates_only_the_supervised_section(tmp_path, tabletop, monkeypatch):
    import importlib.util
    import json
    import types

    from inverse_graphics.data.prior import PriorConfig

    spec = importlib.util.spec_from_file_location("air_tabletop_benchmark",
                                                  Path(__file__).resolve().parent.parent / "benchmarks" / "air_tabletop.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cfg = TrainConfig(iterations=2, batch_size=4, val_size=4, val_every=2)
    train_supervised(tmp_path / "run", None, cfg, tabletop, progress=False, log=lambda m: None,
                     fresh=PriorConfig(workers=0))
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    monkeypatch.setattr(bench, "SUPERVISED", (checkpoint, tmp_path / "gone" / "checkpoint.pt"))
    monkeypatch.setattr(bench, "ROOT", tmp_path / "benchmarks")  # names are relative to ROOT's parent
    out = tmp_path / "air_tabletop.json"
    args = types.SimpleNamespace(out=str(out), num=4, device="cpu")
    with pytest.raises(SystemExit, match="run `evaluate` first"):
        bench.cmd_evaluate_supervised(args)
    out.write_text(json.dumps({"count_acc": 0.5, "supervised": {"gone/checkpoint.pt": {"test": {}}}}))
    bench.cmd_evaluate_supervised(args)
    result = json.loads(out.read_text())
    assert result["count_acc"] == 0.5 and "gone/checkpoint.pt" in result["supervised"]  # kept as measured
    entry = result["supervised"]["run/checkpoint.pt"]
    assert entry["training_data"] == "fresh prior samples every batch" and entry["iterations"] == 2
    assert 0.0 <= entry["test"]["count_acc"] <= 1.0 and "count_acc" in entry[bench.APPEARANCE_SPLIT]
