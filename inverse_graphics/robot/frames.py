"""A robot camera's frames on disk: RGB (and depth) images, the camera, and where the table is.

A frames folder holds
    camera.json      K, resolution, optional extrinsic (our format below), or a BOP scene_camera.json
                     (read from the folder when it has no camera.json: a BOP scene folder is a frames folder)
    rgb/*.png|jpg    (or the images directly in the folder)
    depth/<stem>.png optional 16-bit depth, millimetres x depth_scale, 0 = no reading

camera.json (our format), lengths in metres:
    {"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], "width": 640, "height": 480,
     "camera_to_table": 4x4 (optional; maps camera coordinates to table coordinates,
                             the table top being z = 0 with +z up),
     "depth_scale": 1.0 (optional; depth_mm = png value * depth_scale)}
A BOP scene_camera.json ({im_id: {cam_K, cam_R_w2c, cam_t_w2c (mm), depth_scale}})
is accepted too, its world frame taken to be the table's.

Without an extrinsic, the table plane is estimated per frame from depth (Open3D
RANSAC plane segmentation of the back-projected points); with neither, loading
fails with a clear error. Frames that cannot be used (unreadable, wrong size,
empty depth, no plane found) are reported by name and skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..camera import Camera
from ..data.images import read_depth, read_rgb
from ..files import atomic_write_json, read_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PLAUSIBLE_DEPTH_M = (0.05, 10.0)  # the median depth reading of a tabletop camera lies in here


@dataclass
class CameraSetup:
    """What camera.json says. K (3, 3) pixels; image_size (H, W); table_to_camera (4, 4) metres
    or None (then the table is found from depth); depth_scale: depth_mm = png value * depth_scale."""

    K: torch.Tensor
    image_size: tuple[int, int]
    table_to_camera: torch.Tensor | None = None
    depth_scale: float = 1.0

    def camera(self, table_to_camera: torch.Tensor | None = None) -> Camera:
        """The Camera whose world frame is the table's (extrinsic given or estimated)."""
        T = table_to_camera if table_to_camera is not None else self.table_to_camera
        if T is None:
            raise ValueError("no camera-to-table extrinsic: give one in camera.json or provide depth frames")
        return Camera(self.K, T[:3, :3], T[:3, 3], self.image_size)


def _matrix(value, shape, name: str, path: Path) -> torch.Tensor:
    try:
        m = torch.tensor(value, dtype=torch.float64).reshape(shape)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: {name} must be {shape[0]}x{shape[1]} numbers ({exc})") from exc
    if not torch.isfinite(m).all():
        raise ValueError(f"{path}: {name} has NaN or Inf entries")
    return m


def read_camera(path: str | Path, image_size: tuple[int, int] | None = None) -> CameraSetup:
    """camera.json (our format) or a BOP scene_camera.json -> CameraSetup.

    image_size (H, W): used when the file gives no resolution (BOP files do not)."""
    path = Path(path)
    d = read_json(path, "camera file")
    if not isinstance(d, dict) or not d:
        raise ValueError(f"{path} must hold a JSON object")
    if "K" not in d and all(isinstance(v, dict) and "cam_K" in v for v in d.values()):
        entry = d[sorted(d, key=lambda k: int(k) if str(k).isdigit() else 0)[0]]  # BOP: one fixed camera assumed
        T = None
        if "cam_R_w2c" in entry and "cam_t_w2c" in entry:
            T = torch.eye(4, dtype=torch.float64)
            T[:3, :3] = _matrix(entry["cam_R_w2c"], (3, 3), "cam_R_w2c", path)
            T[:3, 3] = _matrix(entry["cam_t_w2c"], (3,), "cam_t_w2c", path) / 1000.0
        if image_size is None:
            raise ValueError(f"{path} is a BOP scene_camera.json, which has no resolution; pass the frames' size")
        return CameraSetup(_matrix(entry["cam_K"], (3, 3), "cam_K", path).float(), tuple(image_size),
                           None if T is None else T.float(), _depth_scale(entry, path))
    if "K" not in d and all(k in d for k in ("fx", "fy", "cx", "cy")):  # BOP's dataset camera.json
        d = {**d, "K": [[d["fx"], 0.0, d["cx"]], [0.0, d["fy"], d["cy"]], [0.0, 0.0, 1.0]]}
    if "K" not in d:
        raise ValueError(f"{path} has no 'K' or fx, fy, cx, cy (and is not a BOP scene_camera.json)")
    K = _matrix(d["K"], (3, 3), "K", path).float()
    if "width" in d and "height" in d:
        size = (int(d["height"]), int(d["width"]))
    elif "image_size" in d:
        size = tuple(int(v) for v in d["image_size"])
    elif image_size is not None:
        size = tuple(image_size)
    else:
        raise ValueError(f"{path} gives no resolution ('width' and 'height')")
    T = None
    if "camera_to_table" in d:
        T = torch.linalg.inv(_matrix(d["camera_to_table"], (4, 4), "camera_to_table", path)).float()
    elif "table_to_camera" in d:
        T = _matrix(d["table_to_camera"], (4, 4), "table_to_camera", path).float()
    if T is not None:
        R = T[:3, :3].double()
        if not torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-4) or torch.det(R) < 0:
            raise ValueError(f"{path}: the extrinsic's rotation part is not a rotation")
    return CameraSetup(K, size, T, _depth_scale(d, path))


def _depth_scale(d: dict, path: Path) -> float:
    """depth_scale (default 1): a positive number, depth_mm = png value x depth_scale."""
    try:
        scale = float(d.get("depth_scale", 1.0))
    except (TypeError, ValueError):
        raise ValueError(f"{path}: depth_scale must be a number, got {d['depth_scale']!r}") from None
    if not (scale > 0 and np.isfinite(scale)):
        raise ValueError(f"{path}: depth_scale must be positive (depth_mm = png value x depth_scale), got {scale}")
    return scale


def write_camera(path: str | Path, camera: Camera, with_extrinsic: bool = True, depth_scale: float = 1.0) -> Path:
    """Our camera.json for a Camera (world = table frame); it carries BOP's camera.json fields
    (fx, fy, cx, cy, width, height, depth_scale) too, so BOP reads it as its own."""
    H, W = camera.image_size
    K = camera.K.double()
    d = {"K": camera.K.tolist(), "width": W, "height": H, "depth_scale": depth_scale,
         "fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2])}
    if with_extrinsic:
        T = torch.eye(4)
        T[:3, :3], T[:3, 3] = camera.R, camera.t
        d["camera_to_table"] = torch.linalg.inv(T.double()).tolist()
    atomic_write_json(Path(path), d)
    return Path(path)


def table_from_depth(depth: torch.Tensor, K: torch.Tensor, stride: int = 4, distance_threshold: float = 0.004,
                     iterations: int = 300, seed: int = 0) -> torch.Tensor:
    """depth (H, W) metres (0 = no reading), K (3, 3) -> table_to_camera (4, 4).

    The largest plane among the back-projected points (Open3D RANSAC) is the table.
    Table frame: +z the plane's normal towards the camera; origin where the optical
    axis meets the plane; +x the camera's x axis projected onto the plane.
    Raises ValueError when too few points or no plane is found.
    """
    import open3d as o3d  # lazy on purpose: ~1 s to import, and only frames without an extrinsic need it

    H, W = depth.shape
    v, u = torch.meshgrid(torch.arange(0, H, stride), torch.arange(0, W, stride), indexing="ij")
    z = depth[v, u]
    valid = (z > 0) & torch.isfinite(z)
    if int(valid.sum()) < 100:
        raise ValueError(f"depth has only {int(valid.sum())} valid readings on a {stride}-pixel grid")
    uv1 = torch.stack([u[valid], v[valid], torch.ones_like(z[valid])], -1).double()
    points = (uv1 @ torch.linalg.inv(K.double()).T) * z[valid, None].double()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.numpy()))
    o3d.utility.random.seed(seed)
    plane, inliers = cloud.segment_plane(distance_threshold, 3, iterations)
    if len(inliers) < 0.2 * len(points):
        raise ValueError(f"no table plane: the largest plane holds {len(inliers)} of {len(points)} depth points")
    normal, d = torch.tensor(plane[:3], dtype=torch.float64), float(plane[3])
    scale = normal.norm()
    normal, d = normal / scale, d / scale
    if d < 0:  # the camera (origin) must lie on the +z side: n . 0 + d > 0
        normal, d = -normal, -d
    if abs(float(normal[2])) < 1e-3:
        raise ValueError("the table plane is parallel to the optical axis")
    origin = torch.tensor([0.0, 0.0, -d / float(normal[2])], dtype=torch.float64)
    if origin[2] <= 0:
        raise ValueError("the table plane's centre lies behind the camera")
    x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    x = x - (x @ normal) * normal
    x = x / x.norm()
    y = torch.linalg.cross(normal, x)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.stack([x, y, normal], 1)  # columns: table axes in camera coordinates
    T[:3, 3] = origin
    return T.float()


@dataclass
class Frame:
    """One usable frame. rgb (H, W, 3) float in [0, 1]; depth (H, W) metres or None;
    camera: world = the table frame (given or estimated from this frame's depth)."""

    name: str
    rgb: torch.Tensor
    depth: torch.Tensor | None
    camera: Camera


@dataclass
class FrameProblem:
    name: str
    reason: str


def frame_files(folder: str | Path) -> tuple[list[Path], Path | None]:
    """RGB files of a frames folder (folder/rgb/ or the folder itself) and its depth folder or None."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no frames folder at {folder}")
    rgb_dir = folder / "rgb" if (folder / "rgb").is_dir() else folder
    files = sorted(f for f in rgb_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no PNG or JPEG frames in {rgb_dir}")
    depth_dir = folder / "depth" if (folder / "depth").is_dir() else None
    return files, depth_dir


def default_camera_file(folder: str | Path) -> Path:
    """folder/camera.json, or the BOP scene form's scene_camera.json when there is no camera.json."""
    folder = Path(folder)
    bop = folder / "scene_camera.json"
    return bop if not (folder / "camera.json").is_file() and bop.is_file() else folder / "camera.json"


def frame_ids(files: list[Path]) -> dict[str, int]:
    """{frame name: BOP im_id}: the number a frame is named by (000042.png -> 42) when every frame
    is named by one, else its position among all the folder's frames in name order (so a frame
    that cannot be used shifts no other frame's id)."""
    stems = list(dict.fromkeys(f.stem for f in files))  # two files of one name are one (skipped) frame
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return {s: int(s) for s in stems}
    return {s: k for k, s in enumerate(stems)}


def load_frame(rgb_path: Path, depth_dir: Path | None, setup: CameraSetup) -> Frame:
    """One frame; raises ValueError saying why it cannot be used."""
    rgb = read_rgb(rgb_path)
    if rgb.shape[:2] != tuple(setup.image_size):
        raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]}, the camera is "
                         f"{setup.image_size[1]}x{setup.image_size[0]}")
    depth = None
    if depth_dir is not None:
        depth_path = depth_dir / f"{rgb_path.stem}.png"
        if depth_path.is_file():
            raw = read_depth(depth_path)
            if raw.shape != tuple(setup.image_size):
                raise ValueError(f"depth is {raw.shape[1]}x{raw.shape[0]}, the camera is "
                                 f"{setup.image_size[1]}x{setup.image_size[0]}")
            if not raw.any():
                raise ValueError("depth is empty (no readings)")
            depth = torch.from_numpy(raw.astype(np.float32) * setup.depth_scale / 1000.0)
            median = float(depth[depth > 0].median())
            low, high = PLAUSIBLE_DEPTH_M
            if not low <= median <= high:
                raise ValueError(f"depth readings have a median of {median:.4g} m, not what a tabletop camera sees "
                                 f"({low}-{high} m): check depth_scale in the camera file (depth_mm = png value x "
                                 f"depth_scale, now {setup.depth_scale:g}); a sensor with no return everywhere "
                                 "gives its maximum value")
    if setup.table_to_camera is None:
        if depth is None:
            raise ValueError("no camera-to-table extrinsic in camera.json and no depth to find the table from")
        camera = setup.camera(table_from_depth(depth, setup.K))
    else:
        camera = setup.camera()
    return Frame(rgb_path.stem, torch.from_numpy(rgb).float() / 255.0, depth, camera)


def iter_frames(folder: str | Path, camera_path: str | Path | None = None, on_problem=None):
    """Yields the usable Frames of a folder, in name order. Unusable ones are passed to
    on_problem(FrameProblem) (default: printed) and skipped."""
    files, depth_dir = frame_files(folder)
    camera_path = Path(camera_path) if camera_path else default_camera_file(folder)
    size = None
    try:  # a BOP scene_camera.json has no resolution: the first frame gives it
        if "K" not in json.loads(camera_path.read_text()):
            size = read_rgb(files[0]).shape[:2]
    except Exception:
        pass  # read_camera says what is wrong with the file
    setup = read_camera(camera_path, size)
    if setup.table_to_camera is None and depth_dir is None:
        raise ValueError(f"{camera_path} has no camera-to-table extrinsic and {folder} has no depth/ folder: "
                         "the table cannot be located")
    report = on_problem or (lambda p: print(f"skipping frame {p.name}: {p.reason}"))
    stems = [f.stem for f in files]
    for f in files:
        if stems.count(f.stem) > 1:  # which of the two is the frame? neither is guessed
            others = ", ".join(g.name for g in files if g.stem == f.stem and g != f)
            report(FrameProblem(f.name, f"{others} has the same frame name; keep one of them"))
            continue
        try:
            yield load_frame(f, depth_dir, setup)
        except ValueError as exc:
            report(FrameProblem(f.name, str(exc)))
