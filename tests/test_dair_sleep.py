"""DAIR trained by the sleep phase: at each step of the teacher-forced trace the guide reads the image
minus a hard render of the true objects assigned to the earlier steps (air/sleep.py), and the
benchmark reports such runs on the generalization test splits (experiments/air_tabletop.py)."""

import math

import torch

from inverse_graphics.air.config import AIRConfig
from inverse_graphics.air.model import AIR
from inverse_graphics.air.sleep import SLEEP_ARCHITECTURE, SleepConfig, sleep_loss
from inverse_graphics.air.train import train_air_sleep
from inverse_graphics.cli import main
from inverse_graphics.data.prior import PriorConfig
from inverse_graphics.experiments.air_tabletop import evaluate_dair_generalization, split_max_steps
from inverse_graphics.rendering.appearance import AppearanceRanges
from inverse_graphics.rendering.renderer import SceneRenderer
from inverse_graphics.training import TrainConfig

SMALL = dict(hidden=64, **SLEEP_ARCHITECTURE)


def test_each_dair_step_reads_the_image_less_the_objects_assigned_before_it(catalog, tabletop):
    model = AIR(AIRConfig(dair=True, **SMALL), catalog, tabletop.camera, tabletop.config.table)
    truth = tabletop.sample("train", range(12))
    renderer = SceneRenderer(catalog, mode="hard", gradients="none")
    with torch.no_grad():
        images = renderer(tabletop.scene_batch(truth)).rgb
    orders = torch.tensor([c.yaw_symmetry_order() for c in catalog.categories])
    config = SleepConfig(prior=PriorConfig(workers=0, appearance=AppearanceRanges.none()))
    residuals, found = [], []
    read = model.guide.read_unexplained
    model.guide.read_unexplained = lambda x, residual: residuals.append(residual) or read(x, residual)

    def render_found(objects):
        found.append(objects)
        return model.render_found(objects)

    loss, info = sleep_loss(model.guide, images, model.background(), truth, orders, config, render_found)
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    for name in ("encoder", "where_map", "lstm", "glimpse_encoder2"):  # the residual's readers among them
        grads = [p.grad for p in getattr(model.guide, name).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    steps = model.config.max_steps
    assert len(residuals) == steps and len(found) == steps - 1  # the first step needs no render: the bare table
    x = images.permute(0, 3, 1, 2)
    first = x - model.background()
    assert torch.allclose(residuals[0], first)
    for k, objects in enumerate(found, start=1):
        # step k's objects: k of the true ones (all, in scenes with fewer), none twice over the trace
        assert torch.equal(objects.present.sum(1), truth.counts.clamp(max=k))
        assert torch.equal(objects.category[objects.present], truth.category[objects.present])
        assert torch.equal(objects.position, truth.position)
        with torch.no_grad():
            drawn = renderer(tabletop.scene_batch(objects)).instance >= 0  # (B, H, W) their pixels
        changed = (residuals[k] - first).abs().amax(1) > 1e-6
        assert torch.equal(changed, drawn), k  # exactly where the earlier objects are rendered
        assert drawn.any()
    assert torch.equal(found[-1].present.sum(1), truth.counts.clamp(max=steps - 1))


def test_dair_sleep_runs_are_reported_on_their_generalization_test_split(tmp_path, tabletop):
    assert (split_max_steps("train"), split_max_steps("extrap-train"), split_max_steps("interp-train")) == (3, 4, 3)
    tiny = TrainConfig(split="extrap-train", iterations=2, batch_size=4, val_size=4, val_every=2)
    sleep = SleepConfig(prior=PriorConfig(counts=(0, 1, 2), workers=0))
    train_air_sleep(tmp_path / "t_dair_extrap-train_seed0", AIRConfig(dair=True, **SMALL), tiny, tabletop, sleep,
                    progress=False, log=lambda m: None)
    elbo = {"dair_extrap-train_seed0": {"split": "extrap-test", "count_acc": 0.425, "iterations": 290},
            "air_extrap-train_seed0": {"split": "interp-test", "count_acc": 0.5}}
    report = evaluate_dair_generalization(tmp_path, "t", 4, elbo, log=lambda m: None)
    assert list(report) == ["extrap-test"]  # no interp-train run
    entry = report["extrap-test"]
    assert entry["trained_on"] == "extrap-train" and entry["count_target"] == 0.8
    run = entry["sleep"]["t_dair_extrap-train_seed0"]
    assert 0 <= run["count_acc"] <= 1 and run["iterations"] == 2
    assert run["meets_count_target"] == (run["count_acc"] >= 0.8)
    assert entry["runs_meeting_count_target"] == int(run["meets_count_target"])
    assert entry["elbo"] == {"dair_extrap-train_seed0": {"count_acc": 0.425, "iterations": 290}}


def test_train_air_sleep_honours_dair_and_split(tmp_path):
    """`train-air --sleep --dair --split extrap-train`: a DAIR guide, and a prior drawing that split's counts."""
    out = tmp_path / "dair"
    assert main(["train-air", "--sleep", "--dair", "--split", "extrap-train", "--max-steps", "4", "--out", str(out),
                 "--iterations", "1", "--batch-size", "2", "--val-size", "2", "--val-every", "1",
                 "--prior-workers", "0", "--quiet"]) == 0
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["air_config"]["dair"] and ckpt["air_config"]["max_steps"] == 4
    assert tuple(ckpt["sleep_config"]["prior"]["counts"]) == (0, 1, 2)


def test_refinement_evaluation_times_both_methods_on_the_same_scenes_and_scores_more(tmp_path, tabletop):
    from inverse_graphics.experiments.air_tabletop import evaluate_refinement

    tiny = TrainConfig(iterations=2, batch_size=4, val_size=4, val_every=2)
    train_air_sleep(tmp_path / "run", AIRConfig(**SMALL), tiny, tabletop, SleepConfig(prior=PriorConfig(workers=0)),
                    progress=False, log=lambda m: None)
    result = evaluate_refinement(tmp_path / "run", 1, accuracy_num=3)
    assert result["scenes"] == 1 and result["on_more_scenes"]["scenes"] == 3
    before, after = result["air_refine_seconds_before_and_after"]
    assert math.isclose(result["air_refine"]["seconds_per_image"], (before + after) / 2)
    assert math.isclose(result["refine_speedup_over_optimise"],
                        result["optimise"]["seconds_per_image"] / result["air_refine"]["seconds_per_image"])
    for name in ("air", "air_refine"):
        assert 0 <= result["on_more_scenes"][name]["count_acc"] <= 1
