import pytest
import torch
from pytorch3d.renderer import MeshRasterizer

from inverse_graphics.rendering.fragments import rasterize
from inverse_graphics.rendering.meshes import CatalogMeshes
from inverse_graphics.rendering.renderer import RenderSettings, SceneRenderer
from inverse_graphics.scene import SceneBatch


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp(min=1e-12))


def _perturbed_scenes(tabletop, split, indices, seed):
    scenes = tabletop.sample(split, indices)
    g = torch.Generator().manual_seed(seed)
    position = scenes.position + 0.005 * torch.randn(scenes.position.shape, generator=g)
    yaw = scenes.yaw + 0.1 * torch.randn(scenes.yaw.shape, generator=g)
    return scenes, position, yaw


@pytest.mark.parametrize("split,indices,seed", [("test", range(0, 4), 0), ("extrap-test", range(10, 14), 1),
                                                ("interp-test", range(20, 23), 2)])
def test_soft_values_and_gradients_match_pytorch3d_autograd(tabletop, split, indices, seed):
    """The fast path against PyTorch3D's own rasterizer autograd: values and
    gradients with respect to poses and colours agree to 1e-4 relative."""
    scenes, position, yaw = _perturbed_scenes(tabletop, split, indices, seed)
    target = tabletop.render(split, indices)[0]
    results = {}
    for gradients in ("stock", "fast"):
        params = [position.clone().requires_grad_(), yaw.clone().requires_grad_(),
                  scenes.color.clone().requires_grad_()]
        batch = SceneBatch.from_planar(scenes.category, *params[:2], params[2], tabletop.catalog, tabletop.camera,
                                       tabletop.config.table)
        out = SceneRenderer(tabletop.catalog, mode="soft", gradients=gradients)(batch)
        loss = ((out.rgb - target.rgb) ** 2).sum() + ((out.mask - target.mask) ** 2).sum() + out.depth.sum()
        results[gradients] = (out, torch.autograd.grad(loss, params))
    (stock, stock_grads), (fast, fast_grads) = results["stock"], results["fast"]
    for name in ("rgb", "mask", "depth"):
        assert _rel(getattr(fast, name), getattr(stock, name)) <= 1e-4, name
    assert torch.equal(fast.instance, stock.instance)
    for name, g_fast, g_stock in zip(("position", "yaw", "color"), fast_grads, stock_grads):
        assert g_stock.abs().sum() > 0, name
        assert _rel(g_fast, g_stock) <= 1e-4, name


@pytest.mark.parametrize("perspective_correct", [False, True])
def test_recomputed_fragments_match_pytorch3d(tabletop, perspective_correct):
    """zbuf, barycentrics and distances, and their vertex gradients, on faces
    seen well away from edge-on (see renderer.SOFT_TABLE_CELLS for why)."""
    batch = tabletop.scene_batch(tabletop.sample("extrap-test", range(2)))
    meshes = CatalogMeshes(tabletop.catalog).build(batch, table_cells=4).meshes
    verts = meshes.verts_packed().detach()
    settings = RenderSettings(mode="soft")
    out = {}
    for gradients in ("stock", "fast"):
        v = verts.clone().requires_grad_()
        ndc = MeshRasterizer().transform(meshes.offset_verts(v - verts), cameras=tabletop.camera.to_pytorch3d(2))
        out[gradients] = (v, rasterize(ndc, tabletop.camera.image_size, settings.blur_radius, 6,
                                       perspective_correct=perspective_correct, gradients=gradients))
    stock, fast = out["stock"][1], out["fast"][1]
    assert torch.equal(stock.pix_to_face, fast.pix_to_face)
    for name in ("zbuf", "bary_coords", "dists"):
        assert _rel(getattr(fast, name), getattr(stock, name)) <= 1e-5, name
    w = torch.randn(stock.zbuf.shape, generator=torch.Generator().manual_seed(0))
    inside = (stock.dists <= 0).float()  # pixels inside their face: well conditioned in both modes
    for name in ("zbuf", "dists"):
        grads = [torch.autograd.grad((w * inside * getattr(f, name)).sum(), v, retain_graph=True)[0]
                 for v, f in out.values()]
        assert _rel(grads[1], grads[0]) <= 1e-4, name


def test_hard_render_outputs_are_consistent(tabletop):
    out, batch = tabletop.render("test", range(8))
    B, H, W = out.mask.shape
    assert out.rgb.shape == (B, H, W, 3) and out.depth.shape == (B, H, W)
    assert torch.equal(out.mask > 0, out.instance >= 0)
    assert (out.depth > 0.2).all() and (out.depth < 1.0).all()  # the table fills the view
    for b in range(B):
        seen = set(out.instance[b].unique().tolist()) - {-1}
        assert seen <= set(batch.present[b].nonzero()[:, 0].tolist())
    empty = batch.counts == 0
    assert out.mask[empty].sum() == 0


def test_occlusion_comes_from_depth(catalog, tabletop):
    """A near object hides a far one: the nearer slot owns the overlapping pixels."""
    # camera looks towards +y: the sphere at y = -0.03 is nearer than the cube at y = +0.04
    category = torch.tensor([[catalog.index_of("cube"), catalog.index_of("sphere")]])
    position = torch.tensor([[[0.0, 0.04], [0.0, -0.03]]])
    batch = SceneBatch.from_planar(category, position, torch.zeros(1, 2), torch.rand(1, 2, 3), catalog,
                                   tabletop.camera.resized((128, 128)), tabletop.config.table)
    out = SceneRenderer(catalog, mode="hard")(batch)
    far_alone = SceneRenderer(catalog, mode="hard")(SceneBatch(
        category[:, :1], batch.rotation[:, :1], batch.translation[:, :1], batch.color[:, :1], batch.camera, batch.table))
    overlap = (far_alone.instance[0] == 0) & (out.instance[0] == 1)
    assert overlap.sum() > 0
    assert (out.depth[0][overlap] < far_alone.depth[0][overlap]).all()


def test_render_settings_validate():
    with pytest.raises(ValueError, match="mode"):
        RenderSettings(mode="blurry")


def test_soft_render_has_no_seams_where_faces_meet(tabletop):
    """Away from silhouettes the soft render equals the hard one: edges shared by two faces
    (the table's grid, an object's own triangles) must not let the background through."""
    batch = tabletop.scene_batch(tabletop.sample("test", range(8)))
    hard = SceneRenderer(tabletop.catalog, mode="hard", gradients="none")(batch)
    soft = SceneRenderer(tabletop.catalog, mode="soft", gradients="none")(batch)
    # pixels whose 3x3 neighbourhood has one instance id lie away from any silhouette
    inst = hard.instance.float()[:, None]
    pooled_max = torch.nn.functional.max_pool2d(inst, 3, 1, 1)
    pooled_min = -torch.nn.functional.max_pool2d(-inst, 3, 1, 1)
    interior = (pooled_max == pooled_min)[:, 0]
    assert interior.float().mean() > 0.8
    difference = (soft.rgb - hard.rgb).abs().amax(-1)
    table = interior & (hard.instance == -1)
    assert difference[table].max() < 1e-3  # the table's grid is invisible
    # Inside objects a few pixels still differ where facets meet at an angle and their depths
    # part by more than SEAM_DEPTH (measured: mean 0.004, 2.6% of pixels above 0.05).
    objects = interior & (hard.instance >= 0)
    assert difference[objects].mean() < 0.01 and (difference[objects] > 0.05).float().mean() < 0.04


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_objects_over_a_rendered_table_are_the_whole_scene(tabletop, mode):
    """Objects rasterized alone and composited over the bare table's render (behind=) give the
    render of the whole scene; soft mode may differ only where more than faces_per_pixel object
    fragments pushed the table out of the whole scene's fragments."""
    batch = tabletop.scene_batch(tabletop.sample("test", range(4)))
    renderer = SceneRenderer(tabletop.catalog, mode=mode, gradients="none")
    empty = SceneBatch(torch.full((1, 1), -1), batch.rotation[:1, :1], batch.translation[:1, :1],
                       batch.color[:1, :1], batch.camera, batch.table)
    whole, over = renderer(batch), renderer(batch, renderer(empty))
    assert torch.equal(whole.instance, over.instance)
    for name in ("rgb", "mask", "depth"):
        close = (getattr(whole, name) - getattr(over, name)).abs() <= 1e-5
        assert close.float().mean() >= (1.0 if mode == "hard" else 0.995), name


def test_crops_of_one_camera_render_as_one_batch(tabletop):
    """Scenes seen through crops of one camera at several places (crop_offset) render as each
    seen by its own cropped camera."""
    batch = tabletop.scene_batch(tabletop.sample("test", range(3)))
    camera = batch.camera
    renderer = SceneRenderer(tabletop.catalog, mode="soft")
    corners = [(0, 0), (5, 9), (12, 3)]  # (top, left)
    size = (camera.image_size[0] - 12, camera.image_size[1] - 12)
    crops = [camera.cropped(top, left, size) for top, left in corners]
    alone = [renderer(SceneBatch(batch.category[b:b + 1], batch.rotation[b:b + 1], batch.translation[b:b + 1],
                                 batch.color[b:b + 1], crops[b], batch.table)) for b in range(3)]
    together = renderer(SceneBatch(batch.category, batch.rotation, batch.translation, batch.color, crops[0],
                                   batch.table), crop_offset=torch.tensor([[left, top] for top, left in corners]))
    for b in range(3):
        assert torch.equal(together.instance[b], alone[b].instance[0])
        for name in ("rgb", "mask", "depth"):
            assert _rel(getattr(together, name)[b], getattr(alone[b], name)[0]) <= 1e-4, name
