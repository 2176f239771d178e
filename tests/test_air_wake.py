from dataclasses import replace

import pytest
import torch

from inverse_graphics.air.config import AIRConfig
from inverse_graphics.air.model import AIR
from inverse_graphics.air.sleep import SLEEP_ARCHITECTURE, SleepConfig
from inverse_graphics.air.train import load_checkpoint, train_air_wake
from inverse_graphics.air.wake import WakeConfig, draw_samples, replay_log_q, robust_log_likelihood, wake_loss
from inverse_graphics.data.prior import PriorConfig
from inverse_graphics.rendering.renderer import SceneRenderer
from inverse_graphics.scene import PlanarObjects
from inverse_graphics.training import TrainConfig

SMALL = dict(hidden=64, max_steps=2, **SLEEP_ARCHITECTURE)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _render(tabletop, objects: PlanarObjects, table=None) -> torch.Tensor:
    with torch.no_grad():
        batch = objects.to_batch(tabletop.catalog, tabletop.camera, table or tabletop.config.table)
        return SceneRenderer(tabletop.catalog, mode="hard", gradients="none")(batch).rgb


def _model(tabletop, **overrides) -> AIR:
    return AIR(AIRConfig(**{**SMALL, **overrides}), tabletop.catalog, tabletop.camera, tabletop.config.table)


def test_student_t_bounds_the_cost_of_texture_and_still_pays_for_a_real_object(tabletop):
    names = tabletop.catalog.index_of
    objects = PlanarObjects(torch.tensor([[names("cube"), names("cylinder")], [names("bar"), names("sphere")]]),
                            torch.tensor([[[-0.06, 0.0], [0.06, 0.03]], [[0.0, -0.05], [0.02, 0.06]]]),
                            torch.tensor([[0.3, 0.0], [1.0, 0.0]]),
                            torch.tensor([[[0.8, 0.2, 0.2], [0.2, 0.3, 0.8]]] * 2))
    rendered = _render(tabletop, objects)
    # planks: every other 3-pixel stripe darkened by 0.3 or 0.6, which the flat renderer cannot draw
    stripes = ((torch.arange(64) // 3) % 2).float()[None, :, None, None]
    costs = {}
    for name in ("student_t", "gaussian"):
        config = WakeConfig(likelihood=name)
        costs[name] = [robust_log_likelihood(rendered, rendered, config)
                       - robust_log_likelihood((rendered - depth * stripes).clamp(0, 1), rendered, config)
                       for depth in (0.3, 0.6)]
        assert all(bool((c > 0).all()) for c in costs[name])
    textured = (rendered - 0.6 * stripes).clamp(0, 1)
    # a Gaussian's cost grows with the square of the texture's depth, a Student-t's far slower
    assert bool((costs["student_t"][1] < 1.6 * costs["student_t"][0]).all()), costs
    assert bool((costs["gaussian"][1] > 2.2 * costs["gaussian"][0]).all()), costs
    assert bool((costs["student_t"][1] < 0.45 * costs["gaussian"][1]).all()), costs
    # the texture's cost is bounded per pixel value: at most (df + 1) / 2 log(1 + r^2 / (df s^2)) for |r| <= 0.6
    config = WakeConfig()
    bound = (config.student_dof + 1) / 2 * torch.log(torch.tensor(1 + 0.36 / (config.student_dof * 0.01)))
    assert bool((costs["student_t"][1] <= bound * rendered[0].numel()).all())
    # on the textured image, the scene with both objects still beats the scene without the second
    first = PlanarObjects(objects.category.clone(), objects.position, objects.yaw, objects.color)
    first.category[:, 1:] = -1
    with_both = robust_log_likelihood(textured, rendered, config)
    without = robust_log_likelihood(textured, _render(tabletop, first), config)
    assert bool((with_both > without + 200).all()), (with_both, without)


def test_wake_q_is_the_score_of_q_at_fixed_samples(tabletop):
    model = _model(tabletop)
    with torch.no_grad():
        model.guide.pres_threshold.fill_(-1000.0)  # every step present: the position terms count
    images = _render(tabletop, tabletop.sample("train", range(2)))
    config = WakeConfig(samples=1, fit_table=False)
    torch.manual_seed(3)
    samples = draw_samples(model, images, config, 0)
    assert all(bool((s.z_pres == 1).all()) for s in samples.steps)
    assert not any(s.position.requires_grad or s.log_q_continuous.requires_grad for s in samples.steps)
    # the teacher-forced replay gives the densities the samples were drawn with
    replayed = replay_log_q(model.guide, samples.images, model.background(), samples.steps)
    assert torch.allclose(sum(replayed.values()), samples.log_q[:, 0], atol=1e-3)
    # K = 1: the weight is 1 and the loss is -log q of the sample
    torch.manual_seed(3)
    loss, info = wake_loss(model, images, config, 0)
    assert info["ess"] == pytest.approx(1.0)
    assert float(loss.detach()) == pytest.approx(-float(samples.log_q.mean()), abs=1e-3)
    model.zero_grad()
    loss.backward()
    bias = model.guide.where_head.bias
    analytic = float(bias.grad[1])
    # ... whose gradient is that of log q in q's parameters with the samples held fixed (the score)
    eps = 1e-3
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            bias[1] += sign * eps
            values.append(-float(sum(replay_log_q(model.guide, samples.images, model.background(),
                                                  samples.steps).values()).mean()))
            bias[1] -= sign * eps
    score = (values[0] - values[1]) / (2 * eps)
    assert analytic == pytest.approx(score, rel=0.02, abs=1e-3)
    # ... not the pathwise gradient through the reparameterised sample, which differs
    torch.manual_seed(3)
    steps = model.infer(samples.images)
    model.zero_grad()
    (-sum(s.log_q_continuous for s in steps).mean()).backward()
    assert abs(float(bias.grad[1]) - analytic) > 0.05 * abs(analytic) + 1e-3
    # K = 2: normalised weights, finite gradients
    samples = draw_samples(model, images, WakeConfig(samples=2, fit_table=False), 0)
    assert samples.log_w.shape == (2, 2)
    assert torch.allclose(samples.weights.sum(1), torch.ones(2))
    loss, info = wake_loss(model, images, WakeConfig(samples=2, fit_table=False), 0)
    model.zero_grad()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.guide.parameters() if p.grad is not None)
    assert 1.0 <= info["ess"] <= 2.0
    with pytest.raises(ValueError, match="fit_appearance"):
        wake_loss(model, images, WakeConfig(samples=2), 0)


def test_wake_p_moves_the_table_towards_the_images_table(tabletop):
    model = _model(tabletop)
    appearance = model.generative.fit_appearance()
    before_background = model.background().clone()
    target = torch.tensor([0.3, 0.5, 0.7])
    table = replace(tabletop.config.table, color=tuple(target.tolist()))
    images = _render(tabletop, tabletop.sample("train", range(2)), table)
    optimizer = torch.optim.Adam(appearance.parameters(), lr=0.1)
    start = (appearance.color() - target).abs().detach()
    for iteration in range(6):
        loss, info = wake_loss(model, images, WakeConfig(samples=2), iteration)
        model.zero_grad()
        loss.backward()
        optimizer.step()
    end = (appearance.color() - target).abs().detach()
    assert bool((end[[0, 2]] < 0.7 * start[[0, 2]]).all()), (start, end)  # red and blue were 0.3 off
    assert float(end.sum()) < 0.7 * float(start.sum())
    # the guide's background input is the fitted table now
    assert (model.background() - before_background).abs().max() > 0.05


def test_wake_training_writes_a_checkpoint_that_loads_and_resumes(tmp_path, tabletop):
    images, _ = tabletop.render("train", range(4))
    pool = (images.rgb * 255).round().to(torch.uint8)
    tiny = TrainConfig(iterations=2, batch_size=2, val_size=2, val_every=2)
    sleep = SleepConfig(prior=PriorConfig(workers=0))
    result = train_air_wake(tmp_path / "run", pool, AIRConfig(**SMALL), tiny, tabletop, WakeConfig(samples=2), sleep,
                            progress=False, log=lambda m: None)
    assert result["iteration"] == 2 and result["skipped"] == 0
    model, ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt", tabletop)
    assert ckpt["wake_config"]["samples"] == 2 and ckpt["sleep_config"]["prior"]["workers"] == 0
    assert model.generative.appearance is not None  # the fitted table travels with the weights
    assert {"wake_q", "wake_p", "ess", "sleep_loss"} <= set(ckpt["history"][0])
    longer = TrainConfig(iterations=3, batch_size=2, val_size=2, val_every=3)
    resumed = train_air_wake(tmp_path / "run", pool, None, longer, tabletop, resume=True, progress=False,
                             log=lambda m: None)
    assert resumed["iteration"] == 3
    # a run started from a trained checkpoint takes its guide and its architecture (wake only here)
    messages = []
    train_air_wake(tmp_path / "from", pool, None, TrainConfig(iterations=1, batch_size=2, val_size=2, val_every=1),
                   tabletop, WakeConfig(samples=2, sleep_every=0), init=tmp_path / "run" / "checkpoint.pt",
                   progress=False, log=messages.append)
    assert any("starting from" in m for m in messages)
    with pytest.raises(ValueError, match="uint8"):
        train_air_wake(tmp_path / "bad", pool.float(), AIRConfig(**SMALL), tiny, tabletop, progress=False)


def test_train_air_wake_command_needs_a_start_and_trains_from_one(tmp_path, tabletop, capsys):
    from PIL import Image

    from inverse_graphics.cli import main

    images, _ = tabletop.render("train", range(2))
    for k in range(2):
        Image.fromarray((images.rgb[k].numpy() * 255).round().astype("uint8")).save(tmp_path / f"{k}.png")
    with pytest.raises(SystemExit, match="--init"):
        main(["train-air", "--out", str(tmp_path / "run"), "--wake", str(tmp_path)])
    tiny = TrainConfig(iterations=1, batch_size=2, val_size=2, val_every=1)
    train_air_wake(tmp_path / "start", (images.rgb * 255).round().to(torch.uint8), AIRConfig(**SMALL), tiny, tabletop,
                   WakeConfig(samples=2, sleep_every=0), progress=False, log=lambda m: None)
    rc = main(["train-air", "--out", str(tmp_path / "run"), "--wake", str(tmp_path / "0.png"), str(tmp_path / "1.png"),
               "--init", str(tmp_path / "start" / "checkpoint.pt"), "--iterations", "1", "--batch-size", "2",
               "--val-size", "2", "--quiet"])
    assert rc == 0 and (tmp_path / "run" / "checkpoint.pt").is_file()
