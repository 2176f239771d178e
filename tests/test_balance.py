"""Balancing images to the table (AIRConfig.balance_to_table): a camera's exposure and white
balance, undone in closed form before the guide reads an image."""

from dataclasses import replace

import pytest
import torch

from inverse_graphics.air.config import AIRConfig
from inverse_graphics.air.model import AIR
from inverse_graphics.rendering.appearance import BALANCE_GAIN_RANGE, balance_to_table

CAMERA_GAIN = torch.tensor([0.7, 1.1, 0.85])  # exposure times white balance, per channel


def _model(catalog, tabletop, **overrides) -> AIR:
    return AIR(AIRConfig(hidden=32, **overrides), catalog, tabletop.camera, tabletop.config.table).eval()


def test_balancing_undoes_a_cameras_gain_and_leaves_the_models_own_images(catalog, tabletop):
    model = _model(catalog, tabletop)
    images = tabletop.render("test", range(4))[0].rgb  # the model's own table: nothing to undo
    table = model.table_rgb()
    own = balance_to_table(images, table)
    assert torch.allclose(own, images, atol=1e-5)
    shifted = (images * CAMERA_GAIN).clamp(0, 1)
    assert (shifted - images).abs().max() > 0.05
    assert torch.allclose(balance_to_table(shifted, table), images, atol=1e-4)
    # the median colour of each balanced image is the table's, and balancing again changes nothing
    assert torch.allclose(own.flatten(1, 2).median(1).values, table.expand(4, 3), atol=1e-5)
    assert torch.allclose(balance_to_table(own, table), own, atol=1e-6)


def test_balancing_a_black_image_is_bounded_and_bad_shapes_are_named():
    black = torch.zeros(2, 8, 8, 3)
    balanced = balance_to_table(black, torch.tensor([0.5, 0.4, 0.3]))
    assert torch.equal(balanced, black)
    dim = torch.full((1, 8, 8, 3), 0.01)
    assert torch.allclose(balance_to_table(dim, torch.tensor([0.5, 0.5, 0.5])),
                          torch.full_like(dim, 0.01 * BALANCE_GAIN_RANGE[1]))
    with pytest.raises(ValueError, match=r"images must have shape \(B, H, W, 3\)"):
        balance_to_table(torch.zeros(8, 8, 3), torch.ones(3))
    with pytest.raises(ValueError, match=r"table_rgb must have shape \(3,\)"):
        balance_to_table(black, torch.ones(1, 3))


def test_inference_reads_images_balanced_unless_told_not_to(catalog, tabletop):
    model = _model(catalog, tabletop)
    images = tabletop.render("test", range(4))[0].rgb
    shifted = (images * CAMERA_GAIN).clamp(0, 1)

    def answer(x, **kwargs):
        with torch.no_grad():
            steps = model.infer(x, greedy=True, **kwargs)
        return torch.stack([s.pres_prob for s in steps], 1), torch.stack([s.color for s in steps], 1)

    for a, b in zip(answer(images), answer(shifted)):
        assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(answer(images, balance=False)[1], answer(shifted, balance=False)[1], atol=1e-4)
    model.config = replace(model.config, balance_to_table=False)  # the config's switch
    assert not torch.allclose(answer(images)[1], answer(shifted)[1], atol=1e-4)
