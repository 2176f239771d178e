import pytest
import torch

from inverse_graphics.rendering.likelihood import gaussian_blur, make_planar_renderer
from inverse_graphics.scene import PlanarObjects


def _blurred_loss_gradient(renderer, category, position, yaw, color, target, camera):
    P, Y, C = (t.clone().requires_grad_() for t in (position, yaw, color))
    loss = ((gaussian_blur(renderer(PlanarObjects(category, P, Y, C), camera), 1.5) - target) ** 2).sum()
    loss.backward()
    return torch.cat([P.grad.flatten(), Y.grad.flatten(), C.grad.flatten()])


@pytest.mark.parametrize("name", ["l_block", "bar", "cube", "cylinder", "sphere"])
def test_open3d_central_differences_agree_with_the_analytic_soft_gradient(catalog, tabletop, name):
    """Same smooth loss (blurred image MSE to a displaced target), two renderers, two gradient kinds."""
    camera = tabletop.camera
    category = torch.tensor([[catalog.index_of(name)]])
    position, yaw, color = torch.tensor([[[0.01, 0.02]]]), torch.tensor([[0.4]]), torch.tensor([[[0.8, 0.3, 0.2]]])
    analytic = make_planar_renderer("pytorch3d", catalog)
    blackbox = make_planar_renderer("open3d-fd", catalog, method="central")
    with torch.no_grad():
        target = gaussian_blur(analytic(PlanarObjects(category, position + torch.tensor([0.012, -0.008]), yaw + 0.25,
                                                      color * 0.9), camera), 1.5)
    g_analytic = _blurred_loss_gradient(analytic, category, position, yaw, color, target, camera)
    g_central = _blurred_loss_gradient(blackbox, category, position, yaw, color, target, camera)
    cosine = torch.nn.functional.cosine_similarity(g_analytic, g_central, 0)
    assert cosine >= 0.9, (name, float(cosine), g_analytic, g_central)


def test_spsa_through_the_named_interface_gives_gradients_for_every_parameter(catalog, tabletop):
    renderer = make_planar_renderer("open3d-fd", catalog, method="spsa", samples=2,
                                    generator=torch.Generator().manual_seed(0))
    category = torch.tensor([[0, 3], [2, -1]])
    position = torch.tensor([[[0.0, 0.0], [0.05, 0.03]], [[-0.04, 0.0], [0.0, 0.0]]], requires_grad=True)
    yaw = torch.zeros(2, 2, requires_grad=True)
    color = torch.full((2, 2, 3), 0.5, requires_grad=True)
    rgb = renderer(PlanarObjects(category, position, yaw, color), tabletop.camera)
    assert rgb.shape == (2, 64, 64, 3)
    rgb.sum().backward()
    assert position.grad.shape == (2, 2, 2) and torch.isfinite(position.grad).all()
    assert color.grad[0].abs().sum() > 0
    for name, param in (("position", position), ("yaw", yaw), ("color", color)):  # every parameter, every scene
        assert param.grad.shape == param.shape and torch.isfinite(param.grad).all(), name
        assert (param.grad.flatten(1).abs().sum(1) > 0).all(), name


def test_unknown_renderer_is_named(catalog):
    with pytest.raises(ValueError, match="unknown renderer 'blender'.*pytorch3d, open3d-fd"):
        make_planar_renderer("blender", catalog)


@pytest.mark.parametrize("size", [(9, 13), (44, 44), (60, 80)])
def test_small_images_are_blurred_as_the_convolution_blurs_them(size):
    """The matrix blur of small images against the depthwise convolution with replicated edges."""
    images = torch.rand(2, *size, 3, generator=torch.Generator().manual_seed(0))
    for sigma in (0.5, 1.5, 2.0):
        radius = max(1, int(3 * sigma))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (t / sigma) ** 2)
        kernel = kernel / kernel.sum()
        x = images.permute(0, 3, 1, 2)
        x = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="replicate")
        x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        x = torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
        assert torch.allclose(gaussian_blur(images, sigma), x.permute(0, 2, 3, 1), atol=1e-6)
