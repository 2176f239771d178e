"""The light per scene: the renderer's Light, the prior's draw of it, old configs without it."""

import math

import numpy as np
import pytest
import torch

from inverse_graphics.air.sleep import SleepConfig
from inverse_graphics.data.prior import PriorConfig, PriorSamples
from inverse_graphics.rendering.appearance import AppearanceRanges, apply_appearance, draw_light
from inverse_graphics.rendering.meshes import TABLE_INSTANCE
from inverse_graphics.rendering.renderer import AMBIENT, DIFFUSE, LIGHT_DIRECTION, Light, SceneRenderer
from inverse_graphics.scene import PlanarObjects


def _old_light(B: int) -> Light:
    return Light(torch.tensor(LIGHT_DIRECTION).expand(B, 3), torch.full((B,), AMBIENT), torch.full((B,), DIFFUSE))


def _cube(tabletop, B: int = 1) -> PlanarObjects:
    cube = tabletop.catalog.index_of("cube")
    return PlanarObjects(torch.full((B, 1), cube), torch.zeros(B, 1, 2), torch.full((B, 1), 0.3),
                         torch.full((B, 1, 3), 0.6))


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_the_default_light_is_the_renderers_one_light_bit_for_bit(tabletop, mode):
    batch = tabletop.scene_batch(tabletop.sample("test", range(4)))
    batch.color.requires_grad_(True)
    renderer = SceneRenderer(tabletop.catalog, mode=mode)
    default, given = renderer(batch), renderer(batch, light=_old_light(4))
    for name in ("rgb", "mask", "depth", "instance"):
        assert torch.equal(getattr(default, name), getattr(given, name)), name
    if mode == "soft":  # and the fast path's gradients
        grads = [torch.autograd.grad(out.rgb.square().sum(), batch.color)[0] for out in (default, given)]
        assert torch.equal(*grads)
    # the default is the old model: the table's pixels are its albedo under AMBIENT + DIFFUSE * l_z
    if mode == "hard":
        table = (default.instance == TABLE_INSTANCE) & (default.depth > 0)
        l = torch.nn.functional.normalize(torch.tensor(LIGHT_DIRECTION), dim=0)
        expected = torch.tensor(tabletop.config.table.color) * (AMBIENT + DIFFUSE * l[2])
        assert torch.allclose(default.rgb[table], expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_a_light_from_the_other_side_relights_the_faces_not_the_silhouette(tabletop, mode):
    batch = tabletop.scene_batch(_cube(tabletop, 2))
    x, y, z = LIGHT_DIRECTION
    light = Light(torch.tensor([[x, y, z], [-x, -y, z]]))  # scene 1 lit from the opposite side
    out = SceneRenderer(tabletop.catalog, mode=mode)(batch, light=light)
    assert torch.equal(out.mask[0], out.mask[1]) and torch.equal(out.depth[0], out.depth[1])
    assert torch.equal(out.instance[0], out.instance[1])
    cube = (out.instance[0] == 0) & (out.mask[0] > 0.99)
    change = (out.rgb[1] - out.rgb[0]).mean(-1)[cube]
    # the sides the camera sees, lit before, fall into shade; the top and the table (same elevation) stay
    assert (change < -0.1).sum() >= 10 and change.max() > 0.03
    table = (out.instance[0] == TABLE_INSTANCE) & (out.mask[0] < 1e-3) & (out.depth[0] > 0)
    assert torch.allclose(out.rgb[0][table], out.rgb[1][table], atol=1e-6)


def test_the_light_is_differentiable_and_per_scene_in_the_fast_path(tabletop):
    batch = tabletop.scene_batch(_cube(tabletop, 2))
    direction = torch.tensor([[0.3, -0.4, 0.8], [-0.5, 0.2, 0.6]], requires_grad=True)
    ambient = torch.tensor([0.4, 0.5], requires_grad=True)
    out = SceneRenderer(tabletop.catalog, mode="soft")(batch, light=Light(direction, ambient, 1 - ambient))
    objects = out.rgb * out.mask[..., None]
    gd, ga = torch.autograd.grad(objects[0].sum(), [direction, ambient])
    assert gd[0].abs().sum() > 0 and ga[0] != 0  # scene 0's light moves scene 0's pixels
    assert torch.equal(gd[1], torch.zeros(3)) and ga[1] == 0  # and only those


def test_open3d_renders_the_same_light(tabletop):
    pytest.importorskip("open3d")
    from inverse_graphics.rendering.open3d_renderer import Open3DRenderer

    batch = tabletop.scene_batch(tabletop.sample("test", range(4)))
    light = draw_light(AppearanceRanges(), 4, torch.Generator().manual_seed(0))
    p3d = SceneRenderer(tabletop.catalog, mode="hard", gradients="none")(batch, light=light)
    o3d, o3d_default = Open3DRenderer(tabletop.catalog)(batch, light), Open3DRenderer(tabletop.catalog)(batch)
    assert (p3d.rgb - o3d.rgb).abs().mean() <= 0.01 < (o3d_default.rgb - o3d.rgb).abs().mean()


def test_the_prior_draws_lights_within_its_ranges_reproducibly(tabletop):
    r = AppearanceRanges()
    light = draw_light(r, 512, torch.Generator().manual_seed(0))
    d = light.direction
    assert torch.allclose(d.norm(dim=1), torch.ones(512), atol=1e-6)
    elevation = torch.rad2deg(torch.asin(d[:, 2]))
    assert elevation.min() >= r.light_elevation_deg[0] - 1e-3 and elevation.max() <= r.light_elevation_deg[1] + 1e-3
    assert elevation.max() - elevation.min() > 0.9 * (r.light_elevation_deg[1] - r.light_elevation_deg[0])
    azimuth = torch.rad2deg(torch.atan2(d[:, 1], d[:, 0])) % 360
    assert torch.histc(azimuth, bins=8, min=0, max=360).min() > 0.05 * 512  # from every side
    assert light.ambient.min() >= r.light_ambient[0] and light.ambient.max() <= r.light_ambient[1]
    assert torch.allclose(light.ambient + light.diffuse, torch.ones(512))
    again = draw_light(r, 512, torch.Generator().manual_seed(0))
    other = draw_light(r, 512, torch.Generator().manual_seed(1))
    assert torch.equal(again.direction, d) and not torch.allclose(other.direction, d)
    # in the prior's stream: batch k's lights come from batch k's seed
    config = PriorConfig(counts=(1, 2), workers=0)
    first, second = PriorSamples(tabletop, 8, config, seed=5), PriorSamples(tabletop, 8, config, seed=5)
    assert torch.equal(first.draw(3)[1].direction, second.draw(3)[1].direction)
    assert not torch.allclose(first.draw(3)[1].direction, first.draw(4)[1].direction)
    assert not torch.allclose(first.draw(3)[1].direction, PriorSamples(tabletop, 8, config, seed=6).draw(3)[1].direction)


def test_the_renderers_own_light_draws_nothing(tabletop):
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert draw_light(AppearanceRanges.none(), 4, g) is None
    assert torch.equal(g.get_state(), state)  # the other nuisances' draws are the ones of old
    fixed = AppearanceRanges(light_elevation_deg=None, light_ambient=None)
    assert draw_light(fixed, 4, g) is None
    config = PriorConfig(counts=(1, 2), workers=0, appearance=AppearanceRanges.none())
    images, truth = PriorSamples(tabletop, 4, config, seed=2).batch(0, SceneRenderer(tabletop.catalog, mode="hard"))
    plain = SceneRenderer(tabletop.catalog, mode="hard")(tabletop.scene_batch(truth))
    assert torch.equal(images, plain.rgb.clamp(0, 1))


@pytest.mark.parametrize("azimuth", [0.0, 90.0, 180.0, 270.0])
def test_the_shadow_falls_away_from_the_light(tabletop, azimuth):
    out = SceneRenderer(tabletop.catalog, mode="hard", gradients="none")(tabletop.scene_batch(_cube(tabletop)))
    ranges = AppearanceRanges.none()
    ranges.shadow, ranges.shadow_shift_px, ranges.shadow_blur_px = (0.4, 0.4), (4.0, 4.0), (0.5, 0.5)
    a = math.radians(azimuth)
    light = Light(torch.tensor([[math.cos(a), math.sin(a), 1.0]]))
    shaded = apply_appearance(out, tabletop.camera, tabletop.config.table, ranges, torch.Generator().manual_seed(0),
                              light)
    table = (out.instance[0] == TABLE_INSTANCE) & (out.depth[0] > 0)
    darker = (shaded[0].mean(-1) < out.rgb[0].mean(-1) - 0.02) & table
    v, u = torch.nonzero(darker, as_tuple=True)
    ov, ou = torch.nonzero(out.instance[0] >= 0, as_tuple=True)
    shadow_uv = torch.stack([u.float().mean() - ou.float().mean(), v.float().mean() - ov.float().mean()])
    # where a step on the table away from the light goes in the image
    centre = torch.tensor([[0.0, 0.0, 0.0]])
    away = torch.tensor([[-math.cos(a), -math.sin(a), 0.0]]) * 0.02
    expected = (tabletop.camera.project(away)[0] - tabletop.camera.project(centre)[0])[0]
    assert torch.nn.functional.cosine_similarity(shadow_uv, expected, dim=0) > 0.9


def test_configs_saved_before_the_light_load_with_the_renderers_light():
    new = SleepConfig()
    saved = new.to_dict()
    assert SleepConfig.from_dict(saved) == new  # round trip, ranges drawn
    assert SleepConfig.from_dict(SleepConfig(prior=PriorConfig(appearance=AppearanceRanges.none())).to_dict()).prior \
        == PriorConfig(appearance=AppearanceRanges.none())
    newer = ("light_", "shadow_height_px", "shadow_max_px")  # fields added since
    old = {**saved, "prior": {**saved["prior"], "appearance": {
        k: list(v) for k, v in saved["prior"]["appearance"].items() if not k.startswith(newer)}}}
    loaded = SleepConfig.from_dict(old)
    assert loaded.prior.appearance.light_elevation_deg is None and loaded.prior.appearance.light_ambient is None
    assert loaded.prior.appearance.shadow_height_px is None  # shadows as long as they were trained with
    assert draw_light(loaded.prior.appearance, 2, torch.Generator()) is None
    assert loaded.prior.appearance.shadow == new.prior.appearance.shadow and loaded.prior.counts == new.prior.counts
    assert np.isclose(loaded.identity_weight, new.identity_weight)


def test_a_low_light_casts_a_longer_shadow_that_starts_at_the_object(tabletop):
    out = SceneRenderer(tabletop.catalog, mode="hard", gradients="none")(tabletop.scene_batch(_cube(tabletop)))
    ranges = AppearanceRanges.none()
    ranges.shadow, ranges.shadow_blur_px, ranges.shadow_height_px = (0.5, 0.5), (0.5, 0.5), (6.0, 6.0)
    table = (out.instance[0] == TABLE_INSTANCE) & (out.depth[0] > 0)
    shaded_pixels = []
    for elevation in (60.0, 25.0):
        e = math.radians(elevation)
        light = Light(torch.tensor([[math.cos(e), 0.0, math.sin(e)]]))
        shaded = apply_appearance(out, tabletop.camera, tabletop.config.table, ranges,
                                  torch.Generator().manual_seed(0), light)
        darker = (shaded[0].mean(-1) < out.rgb[0].mean(-1) - 0.05) & table
        shaded_pixels.append(int(darker.sum()))
        # swept, not moved: the shadow touches the object's silhouette
        near = torch.nn.functional.max_pool2d((out.instance[0] >= 0).float()[None, None], 3, 1, 1)[0, 0] > 0
        assert (darker & near).any()
    assert shaded_pixels[1] > 1.5 * shaded_pixels[0] > 0
