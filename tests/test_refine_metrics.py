import math

import torch

from inverse_graphics.metrics import yaw_error_deg
from inverse_graphics.refine import RefineSettings, refine
from inverse_graphics.rendering.likelihood import make_planar_renderer
from inverse_graphics.rendering.open3d_renderer import Open3DRenderer
from inverse_graphics.scene import PlanarObjects, SceneBatch


def test_yaw_error_respects_symmetry_order():
    true = torch.zeros(4)
    predicted = torch.tensor([math.radians(170.0)] * 4)
    order = torch.tensor([1, 2, 4, 0])  # none, 2-fold, 4-fold, continuous
    error = yaw_error_deg(predicted, true, order)
    assert torch.allclose(error, torch.tensor([170.0, 10.0, 10.0, 0.0]), atol=1e-4)
    assert torch.allclose(yaw_error_deg(torch.tensor([6.2]), torch.tensor([0.1]), torch.tensor([1])),
                          torch.tensor([math.degrees(2 * math.pi - 6.1)]), atol=1e-3)


def test_refine_recovers_a_displaced_object_from_an_open3d_image(catalog, tabletop):
    category = torch.tensor([[catalog.index_of("l_block")], [catalog.index_of("bar")]])
    position = torch.tensor([[[0.02, -0.01]], [[-0.03, 0.02]]])
    yaw = torch.tensor([[0.7], [2.0]])
    color = torch.tensor([[[0.9, 0.5, 0.2]], [[0.3, 0.6, 0.9]]])
    image = Open3DRenderer(catalog)(SceneBatch.from_planar(category, position, yaw, color, catalog, tabletop.camera,
                                                           tabletop.config.table)).rgb
    start_position = position + torch.tensor([0.012, -0.010])
    start_yaw = yaw + 0.3
    fit = refine(make_planar_renderer("pytorch3d", catalog), image,
                 PlanarObjects(category, start_position, start_yaw, color), tabletop.camera, tabletop.config.table,
                 RefineSettings(steps=60, fit_color=False)).objects
    order = torch.tensor([catalog[int(c)].yaw_symmetry_order() for c in category[:, 0]])[:, None]
    assert ((fit.position - position).norm(dim=-1) < 0.004).all(), fit.position - position
    assert (yaw_error_deg(fit.yaw, yaw, order) < 3.0).all()
