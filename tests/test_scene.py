import pytest
import torch
import trimesh

from inverse_graphics.assets import ObjectCatalog
from inverse_graphics.rendering.renderer import SceneRenderer
from inverse_graphics.camera import Camera
from inverse_graphics.scene import ObjectInstance, Scene, SceneBatch, Table


@pytest.fixture(scope="module")
def marker_catalog(tmp_path_factory):
    """The shipped catalog plus a 4 mm cube used as a point marker."""
    path = tmp_path_factory.mktemp("marker") / "marker.ply"
    path.write_bytes(trimesh.exchange.ply.export_ply(trimesh.creation.box(extents=[4.0, 4.0, 4.0])))
    catalog = ObjectCatalog.load()
    catalog.add("marker", path, units="mm")
    return catalog


@pytest.mark.parametrize("image_size", [(64, 64), (60, 80), (90, 70)])
def test_point_projects_to_the_pixel_k_predicts_and_back(marker_catalog, image_size):
    """Camera convention, both ways: a marker centred at P shows up at K's pixel,
    and the rendered depth at that pixel back-projects onto P's marker."""
    camera = Camera.look_at((0.05, -0.35, 0.45), (0.0, 0.02, 0.0), 45.0, (64, 64)).resized(image_size)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        P = torch.cat([(torch.rand(2, generator=generator) - 0.5) * 0.2, torch.rand(1, generator=generator) * 0.05 + 0.01])
        pose = torch.eye(4)
        pose[:3, 3] = P
        scene = Scene([ObjectInstance("marker", pose)], camera, Table(size=(2.0, 2.0)))
        # Render at 8x the resolution so the marker covers many pixels; its centroid is then precise.
        fine = camera.resized((image_size[0] * 8, image_size[1] * 8))
        batch = SceneBatch.from_scenes([Scene(scene.objects, fine, scene.table)], marker_catalog)
        out = SceneRenderer(marker_catalog, mode="hard")(batch)
        rows, cols = torch.nonzero(out.mask[0] > 0, as_tuple=True)
        centroid_fine = torch.stack([cols.float().mean(), rows.float().mean()])
        # fine pixel centres map to coarse pixel coordinates as (x + 0.5) / 8 - 0.5
        centroid = (centroid_fine + 0.5) / 8 - 0.5
        uv, depth = camera.project(P)
        assert torch.allclose(centroid, uv, atol=0.05), (centroid, uv)

        i, j = int(rows.float().mean().round()), int(cols.float().mean().round())
        back = fine.backproject(torch.tensor([float(j), float(i)]), out.depth[0, i, j])
        assert (back - P).norm() < 0.004  # on the marker's surface: within its 2 mm half-size x sqrt(3)
        assert float(out.depth[0, i, j]) == pytest.approx(float(depth), abs=0.004)


def test_project_backproject_roundtrip():
    camera = Camera.look_at((0.1, -0.3, 0.4), (0, 0, 0), 50.0, (48, 64))
    points = torch.rand(20, 3) * 0.2
    uv, depth = camera.project(points)
    assert torch.allclose(camera.backproject(uv, depth), points, atol=1e-5)


def test_camera_rejects_bad_input():
    good = Camera.look_at((0, -0.3, 0.4), (0, 0, 0), 40.0, (64, 64))
    with pytest.raises(ValueError, match="shape"):
        Camera(K=torch.eye(4), R=good.R, t=good.t, image_size=(64, 64))
    with pytest.raises(ValueError, match="NaN"):
        Camera(K=good.K, R=good.R, t=torch.tensor([0.0, float("nan"), 0.0]), image_size=(64, 64))
    with pytest.raises(ValueError, match="rotation"):
        Camera(K=good.K, R=good.R * 2, t=good.t, image_size=(64, 64))
    back = Camera.from_dict(good.to_dict())
    assert back.K.allclose(good.K) and back.R.allclose(good.R) and back.t.allclose(good.t)
    assert tuple(back.image_size) == tuple(good.image_size)
    points = torch.rand(5, 3) * 0.1
    assert torch.allclose(back.project(points)[0], good.project(points)[0])


def test_scene_batch_roundtrip_and_validation(catalog, tabletop):
    scenes = [Scene([ObjectInstance.on_table("cube", 0.02, -0.03, 0.7, (1, 0, 0), catalog),
                     ObjectInstance.on_table("sphere", -0.05, 0.04, 0.0, (0, 1, 0), catalog)], tabletop.camera),
              Scene([], tabletop.camera)]
    batch = SceneBatch.from_scenes(scenes, catalog, max_objects=3)
    assert batch.counts.tolist() == [2, 0]
    planar = batch.planar()
    assert planar.position[0, 0].tolist() == pytest.approx([0.02, -0.03], abs=1e-6)
    assert float(planar.yaw[0, 0]) == pytest.approx(0.7, abs=1e-6)
    assert planar.category.tolist() == batch.category.tolist()
    back = batch.to_scenes(catalog)
    assert [o.category for o in back[0].objects] == ["cube", "sphere"]
    assert back[0].objects[0].planar == pytest.approx((0.02, -0.03, 0.7), abs=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        SceneBatch.from_planar(torch.tensor([[0]]), torch.tensor([[[float("nan"), 0.0]]]), torch.zeros(1, 1),
                               torch.zeros(1, 1, 3), catalog, tabletop.camera)
    with pytest.raises(ValueError, match="shape"):
        SceneBatch(torch.zeros(2, 3, dtype=torch.long), torch.eye(3).repeat(2, 3, 1, 1), torch.zeros(2, 3, 2),
                   torch.zeros(2, 3, 3), tabletop.camera)


def test_table_in_view_covers_the_image_and_stays_in_front(catalog):
    """A table much larger than the view has corners behind the camera and PyTorch3D drops it
    (the bare table rendered as background); Table.in_view covers every pixel."""
    from inverse_graphics.rendering.renderer import BACKGROUND
    from inverse_graphics.robot.simulate import example_camera

    renderer = SceneRenderer(catalog, mode="hard", gradients="none")
    steep = Camera.look_at((0.0, -0.05, 0.5), (0.0, 0.0, 0.0), 50.0, (48, 64))
    grazing = Camera.look_at((0.0, -0.3, 0.1), (0.0, 1.0, 0.0), 60.0, (48, 64))  # sees the horizon
    for camera in (example_camera().resized((60, 80)), steep, grazing):
        table = Table.in_view(camera, color=(0.6, 0.5, 0.4))
        empty = SceneBatch.from_planar(torch.full((1, 1), -1), torch.zeros(1, 1, 2), torch.zeros(1, 1),
                                       torch.zeros(1, 1, 3), catalog, camera, table)
        table_seen = (renderer(empty).rgb[0] - torch.tensor(BACKGROUND)).abs().sum(-1) > 0.05
        v, u = torch.meshgrid(torch.arange(camera.image_size[0]).float(), torch.arange(camera.image_size[1]).float(),
                              indexing="ij")
        rays = torch.stack([u, v, torch.ones_like(u)], -1) @ torch.linalg.inv(camera.K).T @ camera.R
        height = float((-camera.R.T @ camera.t)[2])
        reach = height / (-rays[..., 2]).clamp(min=1e-9) * rays[..., :2].norm(dim=-1)
        on_table = (rays[..., 2] < 0) & (reach < 1.9)  # in_view's table reaches 2 m
        assert on_table.any() and table_seen[on_table].all() and not table_seen[~on_table & (rays[..., 2] > 0)].any()
    with pytest.raises(ValueError, match="not above the table"):
        Table.in_view(Camera.look_at((0.0, -0.3, -0.1), (0.0, 0.0, -0.2), 60.0, (48, 64)))
