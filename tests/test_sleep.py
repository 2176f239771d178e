from dataclasses import replace

import numpy as np
import pytest
import torch

from inverse_graphics.air.config import AIRConfig
from inverse_graphics.air.model import AIR
from inverse_graphics.air.sleep import SLEEP_ARCHITECTURE, SleepConfig, nearest_pair_px, sleep_loss, trace_log_q
from inverse_graphics.air.train import load_checkpoint, train_air_sleep
from inverse_graphics.data.prior import PriorConfig, PriorSamples, prior_batches
from inverse_graphics.rendering.appearance import AppearanceRanges, apply_appearance
from inverse_graphics.rendering.meshes import TABLE_INSTANCE
from inverse_graphics.rendering.renderer import SceneRenderer
from inverse_graphics.scene import PlanarObjects
from inverse_graphics.training import TrainConfig, render_pool

SMALL = dict(hidden=64, **SLEEP_ARCHITECTURE)


def _render(tabletop, objects):
    with torch.no_grad():
        return SceneRenderer(tabletop.catalog, mode="hard", gradients="none")(tabletop.scene_batch(objects))


def test_appearance_none_is_the_render_and_defaults_change_the_table_not_the_shapes(tabletop):
    objects = tabletop.sample("test", range(6))
    out = _render(tabletop, objects)
    same = apply_appearance(out, tabletop.camera, tabletop.config.table, AppearanceRanges.none(),
                            torch.Generator().manual_seed(0))
    assert torch.allclose(same, out.rgb.clamp(0, 1), atol=1e-6)
    changed = apply_appearance(out, tabletop.camera, tabletop.config.table, AppearanceRanges(),
                               torch.Generator().manual_seed(0))
    table = (out.instance == TABLE_INSTANCE) & (out.depth > 0)
    # every image's table is recoloured and textured: its pixels vary where the render's are uniform
    assert (changed - out.rgb).abs()[table].mean() > 0.02
    assert all(changed[b][table[b]].std(0).max() > out.rgb[b][table[b]].std(0).max() for b in range(6))
    # draws differ between images and between generators
    other = apply_appearance(out, tabletop.camera, tabletop.config.table, AppearanceRanges(),
                             torch.Generator().manual_seed(1))
    assert not torch.allclose(changed, other)


def test_shadows_darken_the_table_beside_objects_only(tabletop):
    cube = tabletop.catalog.index_of("cube")
    objects = PlanarObjects(torch.tensor([[cube]]), torch.zeros(1, 1, 2), torch.zeros(1, 1), torch.full((1, 1, 3), 0.5))
    out = _render(tabletop, objects)
    ranges = AppearanceRanges.none()
    ranges.shadow, ranges.shadow_shift_px, ranges.shadow_blur_px = (0.4, 0.4), (3.0, 3.0), (1.0, 1.0)
    shaded = apply_appearance(out, tabletop.camera, tabletop.config.table, ranges, torch.Generator().manual_seed(3))
    table = (out.instance == TABLE_INSTANCE) & (out.depth > 0)
    darker = (shaded.mean(-1) < out.rgb.mean(-1) - 0.02) & table
    assert darker.any()
    v, u = torch.nonzero(darker[0], as_tuple=True)
    ov, ou = torch.nonzero(out.instance[0] >= 0, as_tuple=True)
    # the shadow lies next to the object, within a few pixels of its silhouette
    distance = ((u[:, None] - ou[None]) ** 2 + (v[:, None] - ov[None]) ** 2).float().sqrt().min(1).values
    assert distance.max() <= 8
    assert torch.equal(shaded[0][~table[0]], out.rgb[0][~table[0]].clamp(0, 1))


def test_prior_samples_are_fresh_every_batch_and_within_the_prior(tabletop):
    config = PriorConfig(counts=(1, 2), workers=0)
    batches = prior_batches(tabletop, 8, config, seed=5)
    (a_images, a), (b_images, b) = next(batches), next(batches)
    assert a_images.shape == (8, 64, 64, 3) and float(a_images.min()) >= 0 and float(a_images.max()) <= 1
    assert set(a.counts.tolist()) <= {1, 2} and set(b.counts.tolist()) <= {1, 2}
    assert not torch.equal(a.position, b.position)
    e = tabletop.config.placement_half_extent
    assert (a.position[a.present].abs() <= e + 1e-6).all()
    # a worker's stream depends on its seed
    again = next(iter(PriorSamples(tabletop, 8, config, seed=5)))[1]
    other = next(iter(PriorSamples(tabletop, 8, config, seed=6)))[1]
    assert torch.equal(again.position, a.position) and not torch.equal(other.position, a.position)


def test_the_trace_assigns_each_object_once_and_learning_raises_its_log_q(catalog, tabletop):
    torch.manual_seed(0)
    model = AIR(AIRConfig(**SMALL), catalog, tabletop.camera, tabletop.config.table)
    config = SleepConfig(prior=PriorConfig(workers=0, appearance=AppearanceRanges.none()))
    truth = tabletop.sample("train", range(16))
    images = _render(tabletop, truth).rgb
    orders = torch.tensor([c.yaw_symmetry_order() for c in catalog.categories])
    optimizer = torch.optim.Adam(model.guide.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss, info = sleep_loss(model.guide, images, model.background(), truth, orders, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 10, losses  # nats per image
    assert info["presence_acc"] > 0.8  # 'another object?' follows the scenes' counts
    with pytest.raises(ValueError, match="DAIR"):
        dair = AIR(AIRConfig(dair=True, **SMALL), catalog, tabletop.camera, tabletop.config.table)
        sleep_loss(dair.guide, images, dair.background(), truth, orders, config)


def test_crowded_scenes_weigh_more_in_the_presence_term_only(catalog, tabletop):
    torch.manual_seed(0)
    model = AIR(AIRConfig(**SMALL), catalog, tabletop.camera, tabletop.config.table)
    truth = tabletop.sample("train", range(16))
    near = nearest_pair_px(model.guide, truth)
    present = truth.present.sum(1)
    assert torch.isinf(near[present < 2]).all() and torch.isfinite(near[present >= 2]).all()
    b = int(torch.nonzero(present >= 2)[0])
    pixels = model.guide.project(truth.position[b][truth.present[b]])
    assert torch.isclose(near[b], torch.pdist(pixels).min(), atol=1e-4)
    images = _render(tabletop, truth).rgb
    orders = torch.tensor([c.yaw_symmetry_order() for c in catalog.categories])
    plain = SleepConfig(prior=PriorConfig(workers=0, appearance=AppearanceRanges.none()))
    threshold = float(near[torch.isfinite(near)].median())  # some scenes crowded, some not
    crowded = replace(plain, crowded_presence_weight=4.0, crowded_px=threshold)
    with torch.no_grad():  # the same glimpse jitter in each
        torch.manual_seed(1)
        totals, _ = trace_log_q(model.guide, images, model.background(), truth, orders, plain)
        torch.manual_seed(1)
        loss_plain, _ = sleep_loss(model.guide, images, model.background(), truth, orders, plain)
        torch.manual_seed(1)
        loss_crowded, _ = sleep_loss(model.guide, images, model.background(), truth, orders, crowded)
    extra = -(3.0 * plain.presence_weight * totals["presence"] * (near < threshold)).mean()
    assert 0 < int((near < threshold).sum()) < 16
    assert torch.isclose(loss_crowded - loss_plain, extra, rtol=1e-4), (loss_crowded - loss_plain, extra)


def test_found_where_placed_tells_later_steps_the_guides_own_placement_not_the_truth(catalog, tabletop, monkeypatch):
    torch.manual_seed(0)
    model = AIR(AIRConfig(**SMALL), catalog, tabletop.camera, tabletop.config.table)
    truth = tabletop.sample("train", range(8))
    images = _render(tabletop, truth).rgb
    orders = torch.tensor([c.yaw_symmetry_order() for c in catalog.categories])
    plain = SleepConfig(prior=PriorConfig(workers=0, appearance=AppearanceRanges.none()))
    told, next_state = [], model.guide.next_state
    monkeypatch.setattr(model.guide, "next_state", lambda h, c, z, position, *a: told.append(position) or
                        next_state(h, c, z, position, *a))
    runs = {}
    for flag in (False, True):
        told.clear()
        torch.manual_seed(1)
        with torch.no_grad():
            totals, _ = trace_log_q(model.guide, images, model.background(), truth, orders,
                                    replace(plain, found_where_placed=flag))
        runs[flag] = (list(told), totals)
    first = truth.present[:, 0]  # the first step takes some object in these scenes
    to_truth = torch.cdist(runs[False][0][0][first][:, None], truth.position[first]).amin(-1)[:, 0]
    assert float(to_truth.max()) < 1e-6  # told a true position
    # the guide's placement: where the step's glimpse at the jittered truth put it, millimetres off
    to_truth = torch.cdist(runs[True][0][0][first][:, None], truth.position[first]).amin(-1)[:, 0]
    assert float(to_truth.min()) > 1e-5
    # later steps read what they were told: the trace's presence term changes
    assert not torch.equal(runs[False][1]["presence"], runs[True][1]["presence"])


class GlimpseRecorder:
    """A small untrained guide on 8 training scenes whose sleep traces record, per call, where each
    second glimpse was read (`centers`, pixels) and where each step's first glimpse placed its object
    (`placed`, metres)."""

    def __init__(self, catalog, tabletop, monkeypatch):
        torch.manual_seed(0)
        self.model = AIR(AIRConfig(**SMALL), catalog, tabletop.camera, tabletop.config.table)
        self.truth = tabletop.sample("train", range(8))
        self.images = _render(tabletop, self.truth).rgb
        self.orders = torch.tensor([c.yaw_symmetry_order() for c in catalog.categories])
        self.plain = SleepConfig(prior=PriorConfig(workers=0, appearance=AppearanceRanges.none()))
        self.centers, self.placed = [], []
        guide = self.model.guide
        read_at, attend = guide.read_at, guide.attend
        monkeypatch.setattr(guide, "read_at", lambda x, h, center: self.centers.append(center) or read_at(x, h, center))
        monkeypatch.setattr(guide, "attend", lambda *a, **k: (lambda att: self.placed.append(att.coarse_mean) or att)(
            attend(*a, **k)))

    def trace(self, **changes) -> dict[str, torch.Tensor]:
        """The trace's log q totals under the plain SleepConfig with these changes (seeded)."""
        self.centers.clear()
        self.placed.clear()
        torch.manual_seed(1)
        totals, _ = trace_log_q(self.model.guide, self.images, self.model.background(), self.truth, self.orders,
                                replace(self.plain, **changes))
        return totals


def test_own_glimpse_fraction_takes_the_identity_glimpse_where_the_first_glimpse_placed_it(catalog, tabletop,
                                                                                           monkeypatch):
    run = GlimpseRecorder(catalog, tabletop, monkeypatch)
    first = run.truth.present[:, 0]
    for fraction in (0.0, 1.0):
        with torch.no_grad():
            run.trace(own_glimpse_fraction=fraction)
        off = (run.centers[0] - run.model.guide.project(run.placed[0])).norm(dim=-1)[first]
        if fraction == 0.0:  # at the jittered truth, which an untrained guide's placement misses
            assert float(off.min()) > 1e-3
        else:
            assert float(off.max()) < 1e-4
    with pytest.raises(ValueError, match="own_glimpse_fraction"):
        SleepConfig(own_glimpse_fraction=1.5)


def test_own_glimpse_identity_fraction_also_scores_identity_where_the_first_glimpse_placed_it(catalog, tabletop,
                                                                                             monkeypatch):
    run = GlimpseRecorder(catalog, tabletop, monkeypatch)
    totals = {}
    for fraction in (0.0, 1.0):
        # no jitter draws: both traces the same but for the extra glimpse
        totals[fraction] = run.trace(own_glimpse_identity_fraction=fraction, truth_glimpse_jitter_px=0.0)
        assert len(run.centers) == (1 + (fraction > 0)) * len(run.placed)  # one more glimpse per step
    # the extra glimpse is where the first placed the object; the first stays at the truth
    assert torch.allclose(run.centers[1], run.model.guide.project(run.placed[0]))
    assert float((run.centers[0] - run.centers[1]).norm(dim=-1).min()) > 1e-3
    # it adds an identity term (a log probability, so the total falls) and changes no other
    some = run.truth.present.any(1)  # (an empty scene has no identity to score)
    assert bool((totals[1.0]["identity"][some] < totals[0.0]["identity"][some]).all()) and 0 < int(some.sum()) < 8
    for name in ("position", "yaw", "color", "presence"):
        assert torch.allclose(totals[1.0][name], totals[0.0][name]), name


def test_sleep_training_writes_a_checkpoint_that_infers_and_resumes(tmp_path, tabletop):
    tiny = TrainConfig(iterations=3, batch_size=4, val_size=4, val_every=3)
    result = train_air_sleep(tmp_path / "run", AIRConfig(**SMALL), tiny, tabletop, SleepConfig(prior=PriorConfig(workers=1)),
                             progress=False, log=lambda m: None)
    assert result["iteration"] == 3 and result["skipped"] == 0
    model, ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt", tabletop)
    assert model.config.second_glimpse and ckpt["sleep_config"]["identity_weight"] == 20.0
    objects = model.objects(model.infer(torch.rand(2, 64, 64, 3), greedy=True))
    assert objects.category.shape == (2, model.config.max_steps)
    resumed = train_air_sleep(tmp_path / "run", None, TrainConfig(iterations=5, batch_size=4, val_size=4, val_every=5),
                              tabletop, resume=True, progress=False, log=lambda m: None)
    assert resumed["iteration"] == 5


def test_the_sleep_guide_starts_deciding_presence_as_before_and_reads_the_glimpse_once_trained(catalog, tabletop):
    """glimpse_presence adds a term on the first glimpse that starts at zero (the untrained guide's
    decisions are unchanged) and, once non-zero, moves presence with what the glimpse sees."""
    torch.manual_seed(0)
    with_glimpse = AIR(AIRConfig(**SMALL), catalog, tabletop.camera, tabletop.config.table)
    torch.manual_seed(0)
    without = AIR(AIRConfig(**{**SMALL, "glimpse_presence": False}), catalog, tabletop.camera, tabletop.config.table)
    images = _render(tabletop, tabletop.sample("train", range(4))).rgb
    with torch.no_grad():
        a = [s.pres_prob for s in with_glimpse.infer(images, greedy=True)]
        b = [s.pres_prob for s in without.infer(images, greedy=True)]
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        with_glimpse.guide.glimpse_presence.weight.fill_(0.05)
        c = [s.pres_prob for s in with_glimpse.infer(images, greedy=True)]
    assert not torch.equal(a[0], c[0])


def test_found_marks_sit_on_the_found_objects_pixels_within_the_window():
    from inverse_graphics.air.networks import found_marks
    center = torch.tensor([[30.0, 20.0], [10.0, 50.0]])
    found = (torch.tensor([[35.0, 17.0], [100.0, 100.0]]),)  # the second image's lies outside its window
    marks = found_marks(center, found, window_px=24, size=24, std_px=2.0)
    assert marks.shape == (2, 1, 24, 24)
    # window pixel (row i, column j) covers image pixel centre + (j - 11.5, i - 11.5)
    v, u = divmod(int(marks[0, 0].argmax()), 24)
    assert (u, v) in {(16, 8), (17, 8), (16, 9), (17, 9)} and marks[0].max() > 0.9
    assert marks[1].max() < 1e-6
    assert found_marks(center, (), 24, 24, 2.0).abs().max() == 0  # nothing found yet: no marks


def test_presence_that_sees_found_objects_starts_as_before_and_then_reads_their_marks(catalog, tabletop):
    """presence_sees_found adds a term that starts at zero and, once trained, depends on where the
    objects already found are (the marks), not on the image alone."""
    torch.manual_seed(0)
    seeing = AIR(AIRConfig(**{**SMALL, "presence_sees_found": True}), catalog, tabletop.camera, tabletop.config.table)
    torch.manual_seed(0)
    blind = AIR(AIRConfig(**SMALL), catalog, tabletop.camera, tabletop.config.table)
    blind.guide.load_state_dict({k: v for k, v in seeing.guide.state_dict().items()
                                 if not k.startswith("presence_encoder")})
    images = _render(tabletop, tabletop.sample("train", range(4))).rgb
    with torch.no_grad():
        a = [s.pres_prob for s in seeing.infer(images, greedy=True)]
        b = [s.pres_prob for s in blind.infer(images, greedy=True)]
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        encoder = seeing.guide.presence_encoder
        torch.nn.init.normal_(encoder.out.weight, std=1.0)
        window = images[:, :24, :24].permute(0, 3, 1, 2)
        marks = torch.zeros(4, 1, 24, 24)
        marks[:, :, 10:14, 10:14] = 1.0
        unmarked, marked = encoder(window, torch.zeros_like(marks)), encoder(window, marks)
    assert not torch.allclose(unmarked, marked)


def test_the_sleep_architecture_round_trips_through_its_config_and_reads_every_pixel(catalog, tabletop):
    config = AIRConfig(**SMALL)
    guide = AIR(config, catalog, tabletop.camera, tabletop.config.table).guide
    assert type(guide.glimpse_encoder2).__name__ == "DeepGlimpseEncoder"
    strided = AIR(AIRConfig(**{**SMALL, "glimpse_encoder": "strided", "glimpse_encoder2": "deep"}), catalog,
                  tabletop.camera, tabletop.config.table).guide
    assert type(strided.glimpse_encoder).__name__ == "StridedGlimpseEncoder"
    assert type(strided.glimpse_encoder2).__name__ == "DeepGlimpseEncoder"
    assert guide.where_map.features == guide.where_query.out_features
    from inverse_graphics.air.config import air_config_from_dict
    assert air_config_from_dict(config.to_dict()) == config
    # The strided encoder's first layer (4x4 kernels at stride 2) sees every pixel: changing any one
    # pixel of the glimpse changes the code.
    window = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        base = strided.glimpse_encoder.net[:2](window)
        for v, u in ((0, 0), (23, 23), (11, 12)):
            changed = window.clone()
            changed[0, :, v, u] += 1.0
            assert not torch.allclose(strided.glimpse_encoder.net[:2](changed), base)


def test_cosine_decay_lowers_the_learning_rate_to_the_budget_and_resumes_on_schedule(tmp_path, tabletop):
    from inverse_graphics.training import lr_factor

    def train(iterations, resume=False):
        cfg = TrainConfig(iterations=iterations, batch_size=2, val_size=2, val_every=100, lr=2e-3,
                          lr_decay="cosine")
        train_air_sleep(tmp_path / "run", AIRConfig(max_steps=2, **SMALL), cfg, tabletop,
                        SleepConfig(prior=PriorConfig(workers=0)), resume=resume, progress=False, log=lambda m: None)
        history = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["history"]
        return cfg, {h["iteration"]: h["lr"] for h in history if "lr" in h}

    cfg, lrs = train(4)
    # the iteration budget ends first: iteration i (1-based) stepped at progress (i - 1) / 4
    assert [lrs[i] for i in range(1, 5)] == pytest.approx([2e-3 * lr_factor(cfg, (i - 1) / 4) for i in range(1, 5)],
                                                          rel=1e-3)
    assert lrs[1] > lrs[2] > lrs[3] > lrs[4] > 2e-3 * cfg.lr_final_fraction
    cfg, lrs = train(6, resume=True)  # the schedule goes on from the run's own learning rate, not the decayed one
    assert lrs[6] == pytest.approx(2e-3 * lr_factor(cfg, 5 / 6), rel=1e-3)


def test_air_identifies_category_and_resting_pose_for_objects_that_rest_several_ways(tmp_path):
    from inverse_graphics.air.classes import RestingClasses
    from inverse_graphics.air.train import as_classes, load_checkpoint, train_air
    from inverse_graphics.assets import ObjectCatalog
    from inverse_graphics.data.tabletop import Tabletop, TabletopConfig
    from inverse_graphics.paths import ASSETS_DIR

    catalog = ObjectCatalog.load(ASSETS_DIR / "models_resting")  # a box (3 ways) and a wedge (5)
    data = Tabletop(TabletopConfig(), catalog)
    classes = RestingClasses.of(catalog)
    assert len(classes) == sum(catalog.resting_counts()) == 8 and not classes.are_categories
    truth = data.sample("train", range(40))
    assert (truth.rest_index[truth.category >= 0] > 0).any()  # the sampler lays objects down other ways
    as_class = classes.of_objects(truth)
    back = classes.to_objects(replace(truth, category=as_class))
    assert torch.equal(back.category, truth.category) and torch.equal(back.rest_index, truth.rest_index)

    cfg = TrainConfig(iterations=2, batch_size=2, val_size=2, val_every=2)
    train_air_sleep(tmp_path / "sleep", AIRConfig(max_steps=2, **SMALL), cfg, data,
                    SleepConfig(prior=PriorConfig(workers=0)), progress=False, log=lambda m: None)
    model, _ = load_checkpoint(tmp_path / "sleep" / "checkpoint.pt")
    assert model.guide.what_head2[-1].out_features == 8 + 3 * 8 + 6 + 2  # class logits and a yaw head per class
    images, _ = render_pool(data, "test", 4, progress=False)
    objects = model.objects(model.infer(images.float() / 255, greedy=True))
    assert objects.rest is not None and (objects.category < len(catalog)).all()
    for c, r in zip(objects.category.flatten().tolist(), objects.rest.flatten().tolist()):
        assert c < 0 or 0 <= r < catalog.resting_counts()[c]
    assert torch.equal(as_classes(model, truth).category, as_class)
    with pytest.raises(ValueError, match="resting poses"):
        train_air(tmp_path / "elbo", AIRConfig(max_steps=2, hidden=32), cfg, data, progress=False, log=lambda m: None)


def test_glimpse_repeats_read_again_where_the_last_glimpse_placed_the_object_and_leave_training_alone(
        catalog, tabletop, tmp_path):
    torch.manual_seed(0)
    once = AIR(AIRConfig(**{**SMALL, "glimpse_repeats": 0}), catalog, tabletop.camera, tabletop.config.table)
    thrice = AIR(AIRConfig(**{**SMALL, "glimpse_repeats": 2}), catalog, tabletop.camera, tabletop.config.table)
    thrice.load_state_dict(once.state_dict())  # no new weights
    truth = tabletop.sample("train", range(8))
    images = _render(tabletop, truth).rgb
    orders = torch.tensor([c.yaw_symmetry_order() for c in catalog.categories])
    config = SleepConfig(prior=PriorConfig(workers=0, appearance=AppearanceRanges.none()))
    losses = []
    for model in (once, thrice):  # the sleep phase takes its glimpses at the true objects either way
        torch.manual_seed(1)
        with torch.no_grad():
            losses.append(float(sleep_loss(model.guide, images, model.background(), truth, orders, config)[0]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    with torch.no_grad():
        placed = [torch.stack([s.position for s in m.infer(images, greedy=True)], 1) for m in (once, thrice)]
    assert (placed[0] - placed[1]).abs().max() > 1e-4  # the repeated glimpses moved the estimates
    with pytest.raises(ValueError, match="glimpse_repeats"):
        AIRConfig(**{**SMALL, "glimpse_repeats": -1})
    with pytest.raises(ValueError, match="second_glimpse"):
        AIRConfig(glimpse_repeats=1)


def test_the_candidate_is_the_proposal_of_the_step_that_stopped(catalog, tabletop):
    torch.manual_seed(0)
    model = AIR(AIRConfig(**SMALL), catalog, tabletop.camera, tabletop.config.table)
    images = _render(tabletop, tabletop.sample("train", range(8))).rgb
    with torch.no_grad():
        steps = model.infer(images, greedy=True)
    found = model.objects(steps)
    assert torch.equal(model.objects_with_candidate(steps, 1.0).category, found.category)  # q never above 1
    with_candidate = model.objects_with_candidate(steps, 0.0)
    counts = found.present.sum(1)
    for b in range(len(images)):
        n = int(counts[b])
        assert torch.equal(with_candidate.category[b, :n], found.category[b, :n])
        if n < model.config.max_steps:  # the step that stopped proposes its object; the steps after it nothing
            assert with_candidate.present[b].tolist() == [True] * (n + 1) + [False] * (model.config.max_steps - n - 1)
            assert torch.equal(with_candidate.position[b, n], steps[n].position[b])


def test_duplicate_px_stops_greedy_inference_at_a_step_on_a_found_object(catalog, tabletop):
    torch.manual_seed(0)
    model = AIR(AIRConfig(**SMALL), catalog, tabletop.camera, tabletop.config.table)
    position = torch.tensor([[0.01, -0.02], [0.05, 0.04]])
    model.guide.config.duplicate_px = 2.0
    found = (model.guide.project(torch.tensor([[0.01, -0.02], [-0.05, 0.0]])),)
    assert model.guide.found_again(position, found).tolist() == [True, False]
    images = _render(tabletop, tabletop.sample("train", range(8))).rgb
    with torch.no_grad():
        model.guide.config.duplicate_px = 0.0
        free = model.objects(model.infer(images, greedy=True)).present.sum(1)
        model.guide.config.duplicate_px = 1e4  # every object after the first is 'found again'
        once = model.objects(model.infer(images, greedy=True)).present.sum(1)
    assert (free > 1).any() and (once <= 1).all() and (once == free.clamp(max=1)).all()


def test_duplicate_skip_drops_a_step_on_a_found_object_and_goes_on(catalog, tabletop, monkeypatch):
    torch.manual_seed(0)
    model = AIR(AIRConfig(**SMALL, duplicate_px=2.0, duplicate_skip=True, presence_threshold=0.0),
                catalog, tabletop.camera, tabletop.config.table)
    images = _render(tabletop, tabletop.sample("train", range(4))).rgb
    # presence says yes at every step; the second step is found again in every scene, the third not
    calls = iter([True, False])  # asked at the second and third steps
    monkeypatch.setattr(model.guide, "found_again", lambda position, found: torch.full(
        (len(position),), next(calls)))
    with torch.no_grad():
        steps = model.infer(images, greedy=True)
    assert model.objects(steps).present.tolist() == [[True, False, True]] * 4  # dropped, then went on
    # the dropped step said yes: it is not the step that stopped, and proposes no candidate
    assert torch.equal(model.objects_with_candidate(steps, 0.0).present, model.objects(steps).present)
    calls = iter([True, True])
    model.config.duplicate_skip = False
    with torch.no_grad():
        steps = model.infer(images, greedy=True)
    assert model.objects(steps).present.tolist() == [[True, False, False]] * 4  # stopped there


@pytest.mark.parametrize("balance", [False, True])
def test_balance_images_gives_the_trace_prior_images_balanced_to_the_table(tmp_path, tabletop, monkeypatch, balance):
    import inverse_graphics.air.train as train_module

    seen, sleep_loss_of = [], train_module.sleep_loss
    monkeypatch.setattr(train_module, "sleep_loss",
                        lambda guide, images, *a, **k: seen.append(images) or sleep_loss_of(guide, images, *a, **k))
    tiny = TrainConfig(iterations=1, batch_size=4, val_size=4, val_every=1)
    train_air_sleep(tmp_path / "run", AIRConfig(**SMALL), tiny, tabletop,
                    SleepConfig(prior=PriorConfig(workers=0), balance_images=balance), progress=False, log=lambda m: None)
    model, ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt", tabletop)
    assert ckpt["sleep_config"]["balance_images"] == balance
    table = model.table_rgb()
    medians = seen[0].flatten(1, 2).median(1).values  # the default prior draws a table colour per image
    assert torch.allclose(medians, table.expand_as(medians), atol=1e-4) == balance
