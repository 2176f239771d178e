"""Frames as a robot camera would see them: the black-box (Open3D) renderer plus what the
likelihood's renderer does not model.

The gap between renderer and camera, drawn per frame (CaptureConditions):
- lighting: the light's direction tilted up to `light_tilt_deg` from the renderer's, other
  ambient and diffuse strengths, and an exposure gain;
- cast shadows (a ray from each surface point towards the light);
- colours: each object's albedo jittered; the table's albedo textured by smooth noise;
- sensor: Gaussian pixel noise, vignetting, and depth with noise growing with distance
  squared, quantized to millimetres, with missing readings;
- clutter: boxes of no known category near the frame's border.
The ground truth is the scene's SceneBatch; frames go to disk as a frames folder
(frames.py) that is also a BOP scene folder: scene_gt.json (model-to-camera, mm),
scene_gt_info.json and scene_camera.json.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..assets import ObjectCatalog
from ..camera import Camera, pixel_to_table
from ..data.bop import targets_file, write_models
from ..files import atomic_write_bytes, atomic_write_json, atomic_write_png, prepare_output_folder, read_json
from ..metrics.bop_recall import target_counts
from ..provenance import differences
from ..rendering.meshes import CatalogMeshes
from ..rendering.open3d_renderer import camera_rays
from ..rendering.renderer import BACKGROUND, LIGHT_DIRECTION
from ..rendering.visibility import object_visibility
from ..scene import SceneBatch
from .frames import write_camera
from .view import robot_data


@dataclass
class CaptureConditions:
    light_tilt_deg: float = 25.0
    ambient: tuple[float, float] = (0.35, 0.55)
    diffuse: tuple[float, float] = (0.45, 0.7)
    exposure: tuple[float, float] = (0.85, 1.15)
    shadows: bool = True
    color_jitter: float = 0.05  # per object and channel, albedo
    table_texture: float = 0.06  # relative amplitude of the table's albedo noise
    pixel_noise: float = 0.01  # std, in [0, 1] units
    vignetting: float = 0.15  # brightness lost at the corners
    depth_noise_m: float = 0.0012  # std at 0.6 m, growing with distance squared
    depth_missing: float = 0.02  # fraction of pixels without a depth reading
    clutter: int = 2  # unknown boxes near the frame's border

    @classmethod
    def ideal(cls) -> "CaptureConditions":
        """The renderer's own model: nothing added."""
        return cls(light_tilt_deg=0.0, ambient=(0.45, 0.45), diffuse=(0.55, 0.55), exposure=(1.0, 1.0),
                   shadows=False, color_jitter=0.0, table_texture=0.0, pixel_noise=0.0, vignetting=0.0,
                   depth_noise_m=0.0, depth_missing=0.0, clutter=0)


def _box(center: np.ndarray, size: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """A box resting on z = 0: verts (8, 3) and outward faces (12, 3)."""
    corners = np.array([[x, y, z] for z in (0, 1) for y in (-0.5, 0.5) for x in (-0.5, 0.5)]) * size
    c, s = np.cos(yaw), np.sin(yaw)
    verts = corners @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + [center[0], center[1], 0]
    faces = np.array([[0, 2, 1], [1, 2, 3], [4, 5, 6], [5, 7, 6], [0, 1, 4], [1, 5, 4],
                      [2, 6, 3], [3, 6, 7], [0, 4, 2], [2, 4, 6], [1, 3, 5], [3, 7, 5]])
    return verts, faces


def _smooth_noise(rng: np.random.Generator, xy: np.ndarray, cells: float = 0.05) -> np.ndarray:
    """Value noise in [-1, 1] at world points xy (..., 2) m: a random lattice every `cells` m,
    bilinearly interpolated (a cheap wood-grain stand-in)."""
    lattice = rng.uniform(-1, 1, size=(64, 64))
    g = (xy / cells) % 63
    i, f = np.floor(g).astype(int), g - np.floor(g)
    a = lattice[i[..., 0], i[..., 1]] * (1 - f[..., 0]) + lattice[i[..., 0] + 1, i[..., 1]] * f[..., 0]
    b = lattice[i[..., 0], i[..., 1] + 1] * (1 - f[..., 0]) + lattice[i[..., 0] + 1, i[..., 1] + 1] * f[..., 0]
    return a * (1 - f[..., 1]) + b * f[..., 1]


def _clutter_boxes(rng: np.random.Generator, camera: Camera, count: int) -> list[tuple]:
    """Boxes whose base centre projects within 12% of the frame's border (not in the workspace)."""
    H, W = camera.image_size
    boxes = []
    for _ in range(count):
        side = rng.integers(4)
        u = rng.uniform(0, W) if side < 2 else (rng.uniform(0, 0.1 * W) if side == 2 else rng.uniform(0.9 * W, W))
        v = rng.uniform(0, 0.1 * H) if side == 0 else (rng.uniform(0.9 * H, H) if side == 1 else rng.uniform(0, H))
        xy = pixel_to_table(camera, torch.tensor([[u, v]], dtype=torch.float32), 0.0)[0].numpy()
        size = rng.uniform([0.04, 0.04, 0.03], [0.12, 0.12, 0.10])
        color = rng.uniform(0.1, 0.9, size=3)
        boxes.append((*_box(xy, size, rng.uniform(0, np.pi)), color))
    return boxes


def _triangles(batch: SceneBatch, catalog: ObjectCatalog, c: CaptureConditions,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The scene's triangles and the clutter boxes': verts (V, 3) float32 m, faces (F, 3) uint32,
    albedo (F, 3) (each object's jittered) and is_table (F,) bool."""
    scene = CatalogMeshes(catalog).build(batch)
    verts = [scene.meshes.verts_packed().numpy()]
    faces = [scene.meshes.faces_packed().numpy()]
    albedo = scene.face_color.numpy().copy()
    is_object = scene.face_instance.numpy() >= 0
    for n in range(batch.category.shape[1]):
        albedo[scene.face_instance.numpy() == n] *= 1 + rng.uniform(-c.color_jitter, c.color_jitter, size=3)
    is_table = ~is_object
    offset = len(verts[0])
    for box_verts, box_faces, box_color in _clutter_boxes(rng, batch.camera, c.clutter):
        verts.append(box_verts)
        faces.append(box_faces + offset)
        offset += len(box_verts)
        albedo = np.concatenate([albedo, np.tile(box_color, (len(box_faces), 1))])
        is_table = np.concatenate([is_table, np.zeros(len(box_faces), bool)])
    return np.concatenate(verts).astype(np.float32), np.concatenate(faces).astype(np.uint32), albedo, is_table


def _tilted_light(rng: np.random.Generator, tilt_deg: float) -> np.ndarray:
    """(3,) unit vector towards the light: the renderer's direction tilted by a random angle up to
    tilt_deg about a random axis."""
    light = np.array(LIGHT_DIRECTION) / np.linalg.norm(LIGHT_DIRECTION)
    axis = np.cross(light, rng.normal(size=3))
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(0, tilt_deg))
    return light * np.cos(angle) + np.cross(axis, light) * np.sin(angle) + axis * (axis @ light) * (1 - np.cos(angle))


def _sensor(rgb: np.ndarray, depth: np.ndarray, c: CaptureConditions,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """What the camera adds: rgb (H, W, 3) linear -> uint8 with vignetting, exposure and noise;
    depth (H, W) m (0 = none) -> uint16 mm with noise growing with distance squared and missing readings."""
    H, W = depth.shape
    v, u = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    rgb = rgb * (1 - c.vignetting * (u ** 2 + v ** 2) / 2)[..., None] * rng.uniform(*c.exposure)
    rgb = rgb + rng.normal(0, c.pixel_noise, size=rgb.shape)
    rgb8 = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    depth = depth + rng.normal(size=depth.shape) * c.depth_noise_m * (depth / 0.6) ** 2
    depth = np.where(rng.uniform(size=depth.shape) < c.depth_missing, 0.0, depth)
    depth_mm = np.clip(np.round(depth * 1000), 0, 65535).astype(np.uint16)
    return rgb8, depth_mm


def capture(batch: SceneBatch, catalog: ObjectCatalog, conditions: CaptureConditions,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One scene (batch of 1) -> rgb (H, W, 3) uint8 and depth (H, W) uint16 millimetres (0 = none)."""
    import open3d as o3d  # lazy on purpose: ~1 s to import, needed only to capture new frames

    if len(batch) != 1:
        raise ValueError(f"capture renders one scene at a time, got {len(batch)}")
    c = conditions
    verts, faces, albedo, is_table = _triangles(batch, catalog, c, rng)
    raycaster = o3d.t.geometry.RaycastingScene()
    raycaster.add_triangles(o3d.core.Tensor(verts), o3d.core.Tensor(faces))
    rays = camera_rays(batch.camera)
    hits = raycaster.cast_rays(o3d.core.Tensor(rays))
    t = hits["t_hit"].numpy()
    hit = np.isfinite(t)
    face = np.where(hit, hits["primitive_ids"].numpy().astype(np.int64), 0)
    normal = hits["primitive_normals"].numpy()
    point = rays[..., :3] + rays[..., 3:] * np.where(hit, t, 0)[..., None]

    light = _tilted_light(rng, c.light_tilt_deg)
    lit = np.clip(normal @ light, 0, None)
    if c.shadows:
        origins = point + normal * 1e-4
        shadow_rays = np.concatenate([origins, np.broadcast_to(light, origins.shape)], -1).astype(np.float32)
        blocked = np.isfinite(raycaster.cast_rays(o3d.core.Tensor(shadow_rays))["t_hit"].numpy())
        lit = np.where(blocked, 0.0, lit)
    base = albedo[face]
    if c.table_texture > 0:
        grain = _smooth_noise(rng, point[..., :2] * np.array([1.0, 6.0]))  # streaks along x
        base = np.where(is_table[face][..., None], base * (1 + c.table_texture * grain[..., None]), base)
    ambient, diffuse = rng.uniform(*c.ambient), rng.uniform(*c.diffuse)
    rgb = base * (ambient + diffuse * lit)[..., None]
    rgb = np.where(hit[..., None], rgb, np.array(BACKGROUND))
    # the rays' camera z is 1: t is depth along the optical axis
    return _sensor(rgb, np.where(hit, t, 0.0), c, rng)


def example_camera(image_size: tuple[int, int] = (480, 640)) -> Camera:
    """The project's robot camera: 640x480, fx = fy = 570 px (a 46 deg vertical field of view),
    0.4 m from the table's centre, looking down at 48 deg (downscaled 8x, objects look as large as
    in tabletop-v1's 64x64 images, so AIR's tabletop weights are a starting point)."""
    camera = Camera.look_at((0.02, -0.25, 0.30), (0.0, 0.02, 0.0), 45.6, (480, 640))
    K = torch.tensor([[570.0, 0, 319.5], [0, 570.0, 239.5], [0, 0, 1]])
    return Camera(K, camera.R, camera.t, (480, 640)).resized(image_size)


def write_frames(out: str | Path, count: int, conditions: CaptureConditions | None = None, seed: int = 0,
                 camera: Camera | None = None, catalog: ObjectCatalog | None = None, split: str = "frames-test",
                 with_extrinsic: bool = True, rgb_format: str = "png", progress: bool = True,
                 overwrite: bool = False) -> Path:
    """`count` frames of 1-3 objects to a frames folder: rgb/, depth/, camera.json and scene_gt.json
    ({frame name: [{obj_id, category, cam_R_m2c, cam_t_m2c (mm)}]}), and capture.json (what they
    were made with). Frames already written with the same settings are kept (a killed run resumes);
    a folder holding frames made otherwise is refused, or with `overwrite` emptied of them, so its
    images and its ground truth always agree. Frames beyond `count` are removed."""
    out = prepare_output_folder(out, "frames folder")
    catalog = catalog or ObjectCatalog.load()
    camera = camera or example_camera()
    conditions = conditions or CaptureConditions()
    _claim_frames_folder(out, _made_with(camera, catalog, conditions, seed, split, with_extrinsic, rgb_format),
                         count, overwrite)
    # objects lie in the workspace view.Workspace derives from the camera, as in adapt_to_frames' synthetic frames
    data = robot_data(camera, table_color=(0.55, 0.50, 0.44), air_size=camera.image_size, catalog=catalog,
                      seed=seed)
    write_camera(out / "camera.json", camera, with_extrinsic)
    truth = {}
    for index in tqdm(range(count), desc="capturing frames", disable=not progress):
        name = f"{index:06d}"
        batch = data.scene_batch(data.sample(split, [index]))
        R, t = batch.model_to_camera()  # (1, N, 3, 3), (1, N, 3) metres
        truth[name] = [{"obj_id": catalog[int(k)].obj_id, "category": catalog[int(k)].name,
                        "cam_R_m2c": R[0, n].flatten().tolist(), "cam_t_m2c": (t[0, n] * 1000).tolist()}
                       for n, k in enumerate(batch.category[0]) if k >= 0]
        if (out / "rgb" / f"{name}.{rgb_format}").is_file() and (out / "depth" / f"{name}.png").is_file():
            continue
        rgb, depth = capture(batch, catalog, conditions, np.random.default_rng([seed, index]))
        atomic_write_png(out / "depth" / f"{name}.png", depth)
        if rgb_format == "png":
            atomic_write_png(out / "rgb" / f"{name}.png", rgb)
        else:  # JPEG, as many cameras deliver (quality 92)
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, format="JPEG", quality=92)
            atomic_write_bytes(out / "rgb" / f"{name}.{rgb_format}", buffer.getvalue())
    atomic_write_json(out / "scene_gt.json", truth)
    write_bop_scene_files(out, camera, catalog)
    return out


def _made_with(camera: Camera, catalog: ObjectCatalog, conditions: CaptureConditions, seed: int, split: str,
               with_extrinsic: bool, rgb_format: str) -> dict:
    """What a folder's frames are made with, as capture.json records it (JSON values)."""
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3] = camera.R.double(), camera.t.double()
    return json.loads(json.dumps({
        "camera": {"K": camera.K.tolist(), "image_size": list(camera.image_size), "table_to_camera": T.tolist()},
        "catalog": catalog.fingerprint(), "conditions": asdict(conditions), "seed": seed, "split": split,
        "with_extrinsic": with_extrinsic, "rgb_format": rgb_format}))


def _claim_frames_folder(out: Path, made_with: dict, count: int, overwrite: bool) -> None:
    """Check the frames already in `out` were made as these will be (else refuse, or with overwrite
    remove them), drop those beyond `count`, and record made_with before any frame is written."""
    record = out / "capture.json"
    frames = sorted(f for d in ("rgb", "depth") if (out / d).is_dir() for f in (out / d).iterdir() if f.is_file())
    if frames:
        old = read_json(record, "capture record") if record.is_file() else None
        differs = differences(old, made_with)
        if differs and not overwrite:
            raise ValueError(f"{out} holds frames made with another {', '.join(differs)}; run with --overwrite to "
                             "remake every frame, or choose another folder")
        for f in frames:
            if differs or not f.stem.isdigit() or int(f.stem) >= count:
                f.unlink()
    atomic_write_json(record, made_with)


def write_bop_scene_files(folder: str | Path, camera: Camera, catalog: ObjectCatalog) -> None:
    """What makes a frames folder with ground truth a BOP scene folder too: scene_camera.json
    ({im_id: cam_K, depth_scale, cam_R_w2c, cam_t_w2c (mm)}, world = the table) and
    scene_gt_info.json (rendering.visibility against each frame's measured depth), both keyed
    like scene_gt.json (frame names, which BOP reads as im_ids); and what a BOP dataset holds
    beside its scene folders: models/, models_eval/ and test_targets_bop19.json (scene 0)."""
    folder = Path(folder)
    gt = read_json(folder / "scene_gt.json", "ground truth")
    cam = {"cam_K": camera.K.flatten().tolist(), "depth_scale": 1.0, "cam_R_w2c": camera.R.flatten().tolist(),
           "cam_t_w2c": (camera.t.double() * 1000).tolist()}
    R_w2c, t_w2c = camera.R.double(), camera.t.double()
    info = {}
    for name, objects in gt.items():
        R = torch.tensor([o["cam_R_m2c"] for o in objects], dtype=torch.float64).reshape(1, -1, 3, 3)
        t = torch.tensor([o["cam_t_m2c"] for o in objects], dtype=torch.float64).reshape(1, -1, 3) / 1000
        category = torch.tensor([[catalog.index_of(int(o["obj_id"])) for o in objects]], dtype=torch.long)
        batch = SceneBatch(category.reshape(1, -1), (R_w2c.T @ R).float(), ((t - t_w2c) @ R_w2c).float(),
                           torch.zeros(1, len(objects), 3), camera)
        with Image.open(folder / "depth" / f"{name}.png") as im:
            depth = torch.from_numpy(np.array(im).astype(np.float32) / 1000.0)[None]
        visibility = object_visibility(batch, catalog, scene_depth=depth)
        info[name] = visibility.scene_gt_info(0, list(range(len(objects))))
    atomic_write_json(folder / "scene_camera.json", {name: cam for name in gt})
    atomic_write_json(folder / "scene_gt_info.json", info)
    write_models(folder, catalog)  # models/, models_eval/ and models_info.json, as generate writes them
    targets = []
    for name, objects in sorted(gt.items()):
        counts = target_counts([o["obj_id"] for o in objects], [i["visib_fract"] for i in info[name]])
        targets += [{"scene_id": 0, "im_id": int(name), "obj_id": k, "inst_count": n} for k, n in counts.items()]
    atomic_write_json(folder / targets_file("test"), targets)


def read_truth(folder: str | Path) -> dict[str, list[dict]]:
    """A frames folder's scene_gt.json (as write_frames writes it) -> {frame name: [{"category",
    "pose": (4, 4) float64 model-to-camera, metres, "visib_fract" (from scene_gt_info.json;
    1 without it)}]}, the form metrics.evaluate_poses takes."""
    folder = Path(folder)
    info = read_json(folder / "scene_gt_info.json", "ground truth") if (folder / "scene_gt_info.json").is_file() \
        else {}
    truth = {}
    for name, objects in read_json(folder / "scene_gt.json", "ground truth").items():
        truth[name] = []
        for k, o in enumerate(objects):
            pose = torch.eye(4, dtype=torch.float64)
            pose[:3, :3] = torch.tensor(o["cam_R_m2c"], dtype=torch.float64).view(3, 3)
            pose[:3, 3] = torch.tensor(o["cam_t_m2c"], dtype=torch.float64) / 1000
            visib = info[name][k]["visib_fract"] if name in info else 1.0
            truth[name].append({"category": o["category"], "pose": pose, "visib_fract": float(visib)})
    return truth
