import pytest
import torch

from inverse_graphics.rendering.open3d_renderer import Open3DRenderer
from inverse_graphics.rendering.renderer import SceneRenderer
from inverse_graphics.scene import ObjectInstance, Scene, SceneBatch


@pytest.mark.parametrize("image_size", [(64, 64), (240, 320)])
def test_open3d_agrees_with_pytorch3d_hard_render(tabletop, image_size):
    batch = tabletop.scene_batch(tabletop.sample("test", range(12)))
    batch.camera = tabletop.camera.resized(image_size)
    p3d = SceneRenderer(tabletop.catalog, mode="hard", gradients="none")(batch)
    o3d = Open3DRenderer(tabletop.catalog)(batch)
    assert o3d.rgb.shape == p3d.rgb.shape == (12, *image_size, 3)
    present = batch.counts > 0
    inter = ((p3d.mask > 0) & (o3d.mask > 0)).flatten(1).sum(1).float()
    union = ((p3d.mask > 0) | (o3d.mask > 0)).flatten(1).sum(1).float()
    iou = inter[present] / union[present]
    assert iou.min() >= 0.98, iou
    hit = (p3d.depth > 0) & (o3d.depth > 0)
    assert (p3d.depth - o3d.depth)[hit].abs().median() <= 1e-3  # metres
    assert (p3d.rgb - o3d.rgb).abs().mean() <= 0.01
    assert (p3d.instance == o3d.instance).float().mean() >= 0.99


def test_open3d_renders_full_se3_poses(catalog, tabletop):
    """A tilted object (not resting on the table) renders the same in both."""
    pose = torch.eye(4)
    pose[:3, :3] = torch.tensor([[1.0, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]])
    pose[:3, 3] = torch.tensor([0.01, 0.0, 0.06])
    scene = Scene([ObjectInstance("l_block", pose, torch.tensor([0.9, 0.2, 0.1]))], tabletop.camera.resized((96, 96)),
                  tabletop.config.table)
    batch = SceneBatch.from_scenes([scene], catalog)
    p3d = SceneRenderer(catalog, mode="hard")(batch)
    o3d = Open3DRenderer(catalog)(batch)
    inter = ((p3d.mask > 0) & (o3d.mask > 0)).sum()
    union = ((p3d.mask > 0) | (o3d.mask > 0)).sum()
    assert union > 50 and inter / union >= 0.98
