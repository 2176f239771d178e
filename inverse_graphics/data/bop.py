"""tabletop-v1 on disk in the BOP layout, written and read back; the BOP toolkit reads it as it is
(as dataset BOP_NAME, once that name is registered in its dataset_params).

    OUT/                           name the folder BOP_NAME ('tabletop') under the toolkit's datasets path
      camera.json                  dataset camera (fx, fy, cx, cy, width, height, depth_scale), BOP's form
      models/                      the catalog: obj_<id:06d>.ply and models_info.json, millimetres
      models_eval/                 the dense evaluation meshes the metrics average over, and models_info.json
      models_info.json             the same as models/models_info.json
      dataset_info.json            generator configuration, splits written, BOP dataset name
      test_targets_bop19.json      [{scene_id, im_id, obj_id, inst_count}]: instances >= 10% visible
                                   (<split>_targets_bop19.json for the other splits)
      <split>/<scene:06d>/         up to 1000 images per BOP scene folder ('-' in a split's name is '_'
        rgb/<im:06d>.png           here, as BOP parses DATASET-SPLIT-TYPE); 8-bit RGB
        depth/<im:06d>.png         16-bit, depth_mm = value * depth_scale
        scene_camera.json          {im_id: {cam_K, depth_scale, cam_R_w2c, cam_t_w2c (mm)}}
        scene_gt.json              {im_id: [{obj_id, cam_R_m2c, cam_t_m2c (mm)}]}
        scene_gt_info.json         {im_id: [{bbox_obj, bbox_visib, px_count_all, px_count_valid,
                                   px_count_visib, visib_fract}]} (rendering.visibility)
        scene_tabletop.json        {im_id: {index, objects: [{obj_id, color}]}} (what BOP has no field for)

Estimates go out as a BOP results CSV (write_bop_results): one row per object,
scene_id,im_id,obj_id,score,R,t,time with R the 9 entries of cam_R_m2c (row major),
t cam_t_m2c in mm and time the seconds spent on that image.

This module is the millimetre boundary: BOP files hold millimetres, everything
returned is in metres. Every file is written atomically (temporary file, then
rename), so a killed run leaves only whole files and a rerun resumes by skipping
images already on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image
from tqdm import tqdm

from ..assets import ObjectCatalog
from ..files import atomic_write_bytes, atomic_write_json, atomic_write_png, prepare_output_folder, read_json
from ..metrics.bop_recall import target_counts
from ..metrics.pose_errors import evaluation_mesh
from ..rendering.renderer import SceneRenderer
from ..rendering.visibility import object_visibility
from ..camera import Camera
from ..scene import SceneBatch, Table
from ..visualize import contact_sheet
from .tabletop import Tabletop

IMAGES_PER_FOLDER = 1000
DEPTH_SCALE = 0.1  # depth_mm = png_value * DEPTH_SCALE: 0.1 mm steps up to 6.5 m
BOP_NAME = "tabletop"  # the dataset's name in BOP file names (METHOD_tabletop-test.csv)


def split_folder(split: str) -> str:
    """The split's folder name: BOP reads 'DATASET-SPLIT-TYPE' in a result's name as folder SPLIT_TYPE."""
    return split.replace("-", "_")


def targets_file(split: str) -> str:
    """The split's BOP19 targets file at the dataset root (the toolkit's default for 'test')."""
    return f"{split_folder(split)}_targets_bop19.json"


def bop_results_name(method: str, split: str) -> str:
    """A results CSV name the BOP toolkit parses: METHOD_DATASET-SPLIT.csv (no '_' in METHOD)."""
    return f"{method.replace('_', '-').replace('+', '-')}_{BOP_NAME}-{split}.csv"


def _folder(root: Path, split: str, index: int) -> tuple[Path, int]:
    return root / split_folder(split) / f"{index // IMAGES_PER_FOLDER:06d}", index % IMAGES_PER_FOLDER


def _image_path(root: Path, split: str, index: int, kind: str) -> Path:
    folder, im_id = _folder(root, split, index)
    return folder / kind / f"{im_id:06d}.png"


def _mm(x: torch.Tensor) -> list:
    return [float(v) for v in (x.double() * 1000.0).flatten()]


def write_models(root: Path, catalog: ObjectCatalog) -> None:
    """The catalog as BOP models folders: models/ (the meshes) and models_eval/ (the dense meshes the
    metrics average over), PLY and models_info.json, mm."""

    for c in catalog.categories:
        dense = evaluation_mesh(c)
        for folder, (verts, faces) in (("models", (c.verts.double().numpy(), c.faces.numpy())),
                                       ("models_eval", dense)):
            mesh = trimesh.Trimesh(verts * 1000.0, faces, process=False)
            atomic_write_bytes(root / folder / f"obj_{c.obj_id:06d}.ply", trimesh.exchange.ply.export_ply(mesh))
    for path in (root / "models" / "models_info.json", root / "models_eval" / "models_info.json",
                 root / "models_info.json"):
        atomic_write_json(path, catalog.models_info())


def generate_split(data: Tabletop, split: str, root: str | Path, num_scenes: int | None = None,
                   chunk: int = 64, progress: bool = True) -> Path:
    """Renders scenes 0..num_scenes-1 of a split into the BOP layout under root."""
    root = Path(root)
    size = data.split(split).size
    num_scenes = size if num_scenes is None else int(num_scenes)
    if not 0 < num_scenes <= size:
        raise ValueError(f"split {split} has {size} scenes; asked for {num_scenes}")
    prepare_output_folder(root, "dataset folder")
    cam = data.camera
    fx, fy, cx, cy = (float(v) for v in (cam.K[0, 0], cam.K[1, 1], cam.K[0, 2], cam.K[1, 2]))
    atomic_write_json(root / "camera.json", {"fx": fx, "fy": fy, "cx": cx, "cy": cy, "width": cam.image_size[1],
                                             "height": cam.image_size[0], "depth_scale": DEPTH_SCALE})
    write_models(root, data.catalog)
    info_path = root / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if info.get("config", data.config.to_dict()) != data.config.to_dict():
        raise ValueError(f"{root} holds tabletop data made with another configuration; use another --out")
    info["config"] = data.config.to_dict()
    info["bop_name"] = BOP_NAME
    splits = info.setdefault("splits", {})
    splits[split] = {"num_scenes": max(num_scenes, splits.get(split, {}).get("num_scenes", 0))}
    atomic_write_json(info_path, info)

    renderer = SceneRenderer(data.catalog, mode="hard", gradients="none")
    todo = [i for i in range(num_scenes) if not _image_path(root, split, i, "rgb").is_file()]
    bar = tqdm(total=num_scenes, initial=num_scenes - len(todo), desc=f"{split}", unit="scene", disable=not progress)
    for start in range(0, len(todo), chunk):
        indices = todo[start:start + chunk]
        out, _ = data.render(split, indices, renderer)
        rgb = (out.rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        depth = (out.depth.double() * 1000.0 / DEPTH_SCALE).round().clamp(0, 65535).numpy().astype(np.uint16)
        for b, index in enumerate(indices):
            atomic_write_png(_image_path(root, split, index, "depth"), depth[b])
            atomic_write_png(_image_path(root, split, index, "rgb"), rgb[b])  # rgb last: its presence marks done
        bar.update(len(indices))
    bar.close()

    # Annotations are deterministic: rewrite them whole for every folder touched.
    targets = []
    for first in range(0, num_scenes, IMAGES_PER_FOLDER):
        indices = list(range(first, min(first + IMAGES_PER_FOLDER, num_scenes)))
        folder = _folder(root, split, first)[0]
        targets += _write_annotations(data, split, indices, folder)
    atomic_write_json(root / targets_file(split), targets)
    return root / split_folder(split)


def bop_ids(index: int) -> tuple[int, int]:
    """(scene_id, im_id) of a split's image index in the BOP layout written here."""
    return index // IMAGES_PER_FOLDER, index % IMAGES_PER_FOLDER


BOP_RESULTS_HEADER = "scene_id,im_id,obj_id,score,R,t,time"


def bop_result_line(scene_id: int, im_id: int, obj_id: int, score: float, R_m2c, t_m2c_m, seconds: float) -> str:
    """One row of a BOP results CSV: R_m2c (3, 3), t_m2c_m (3,) metres (written in mm), seconds per image."""
    R = " ".join(f"{float(v):.6f}" for row in R_m2c for v in row)
    t = " ".join(f"{float(v) * 1000:.3f}" for v in t_m2c_m)
    return f"{scene_id},{im_id},{obj_id},{score:.6f},{R},{t},{float(seconds):.6f}"


def write_bop_results(path: str | Path, batch: SceneBatch, indices: list[int], catalog: ObjectCatalog,
                      seconds: list[float] | torch.Tensor, scores: torch.Tensor | None = None) -> Path:
    """Writes one method's estimates as a BOP results CSV (atomically).

    batch: the estimates (B, N) as a SceneBatch; indices: each row's image index in its split;
    seconds: (B,) time spent per image; scores: (B, N) confidence (1 where not given).
    """
    if len(indices) != len(batch) or len(seconds) != len(batch):
        raise ValueError(f"write_bop_results: {len(batch)} scenes but {len(indices)} indices and "
                         f"{len(seconds)} times")
    R_m2c, t_m2c = batch.model_to_camera()
    lines = [BOP_RESULTS_HEADER]
    for b, index in enumerate(indices):
        scene_id, im_id = bop_ids(int(index))
        for n in range(batch.category.shape[1]):
            c = int(batch.category[b, n])
            if c < 0:
                continue
            score = 1.0 if scores is None else float(scores[b, n])
            lines.append(bop_result_line(scene_id, im_id, catalog[c].obj_id, score, R_m2c[b, n].tolist(),
                                         t_m2c[b, n].tolist(), seconds[b]))
    path = Path(path)
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def read_bop_results(path: str | Path) -> list[dict]:
    """Rows of a BOP results CSV: scene_id, im_id, obj_id, score, R (3, 3), t (3,) mm, time."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing BOP results file: {path}")
    lines = path.read_text().splitlines()
    if not lines or lines[0].strip() != BOP_RESULTS_HEADER:
        raise ValueError(f"{path} is not a BOP results CSV (header must be {BOP_RESULTS_HEADER!r})")
    rows = []
    for k, line in enumerate(lines[1:], start=2):
        fields = line.split(",")
        try:
            rows.append({"scene_id": int(fields[0]), "im_id": int(fields[1]), "obj_id": int(fields[2]),
                         "score": float(fields[3]), "R": np.array(fields[4].split(), float).reshape(3, 3),
                         "t": np.array(fields[5].split(), float).reshape(3), "time": float(fields[6])})
        except (IndexError, ValueError) as exc:
            raise ValueError(f"{path} line {k} is not a BOP result row ({exc})") from exc
    return rows


def _write_annotations(data: Tabletop, split: str, indices: list[int], folder: Path) -> list[dict]:
    """The folder's scene_camera/gt/gt_info/tabletop.json; returns its BOP19 targets."""
    batch = data.scene_batch(data.sample(split, indices))
    cam = data.camera
    R_m2c_all, t_m2c_all = batch.model_to_camera()
    visibility = object_visibility(batch, data.catalog)
    scene_camera, scene_gt, scene_gt_info, scene_tabletop, targets = {}, {}, {}, {}, []
    for b, index in enumerate(indices):
        im_id = str(index % IMAGES_PER_FOLDER)
        slots = (batch.category[b] >= 0).nonzero()[:, 0].tolist()
        scene_gt_info[im_id] = visibility.scene_gt_info(b, slots)
        counts = target_counts([data.catalog[int(batch.category[b, n])].obj_id for n in slots],
                               [float(visibility.visib_fract[b, n]) for n in slots])
        targets += [{"scene_id": int(folder.name), "im_id": int(im_id), "obj_id": o, "inst_count": k}
                    for o, k in counts.items()]
        scene_camera[im_id] = {"cam_K": [float(v) for v in cam.K.flatten()], "depth_scale": DEPTH_SCALE,
                               "cam_R_w2c": [float(v) for v in cam.R.flatten()], "cam_t_w2c": _mm(cam.t)}
        gts, extras = [], []
        for n in range(batch.category.shape[1]):
            c = int(batch.category[b, n])
            if c < 0:
                continue
            R_m2c, t_m2c = R_m2c_all[b, n], t_m2c_all[b, n]
            obj_id = data.catalog[c].obj_id
            gts.append({"obj_id": obj_id, "cam_R_m2c": [float(v) for v in R_m2c.flatten()], "cam_t_m2c": _mm(t_m2c)})
            extras.append({"obj_id": obj_id, "color": [float(v) for v in batch.color[b, n]]})
        scene_gt[im_id] = gts
        scene_tabletop[im_id] = {"index": index, "objects": extras}
    atomic_write_json(folder / "scene_camera.json", scene_camera)
    atomic_write_json(folder / "scene_gt.json", scene_gt)
    atomic_write_json(folder / "scene_gt_info.json", scene_gt_info)
    atomic_write_json(folder / "scene_tabletop.json", scene_tabletop)
    return targets


def _load_json(path: Path):
    return read_json(path, "BOP file")


def _load_png(path: Path, shape: tuple | None, dtype) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"missing image: {path}")
    try:
        array = np.asarray(Image.open(path))
    except Exception as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    if (shape is not None and array.shape[:2] != shape) or array.dtype != dtype:
        raise ValueError(f"image {path} is {array.shape} {array.dtype}, expected {shape} {np.dtype(dtype)}")
    return array


def read_split(root: str | Path, split: str, catalog: ObjectCatalog | None = None, max_objects: int = 3,
               limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, SceneBatch]:
    """Reads a split written by generate_split (or any BOP split with scene_tabletop.json).

    Returns rgb (B, H, W, 3) float in [0, 1], depth (B, H, W) metres and the
    ground truth as a SceneBatch (poses rebuilt from cam_R_m2c / cam_t_m2c).
    """
    root = Path(root)
    catalog = catalog or ObjectCatalog.load()
    folders = sorted(p for p in (root / split_folder(split)).glob("[0-9]" * 6) if p.is_dir())
    if not folders:
        raise FileNotFoundError(f"no BOP scene folders in {root / split_folder(split)}")
    rgbs, depths, categories, rotations, translations, colors = [], [], [], [], [], []
    camera = None
    for folder in folders:
        cams, gts = _load_json(folder / "scene_camera.json"), _load_json(folder / "scene_gt.json")
        extras = _load_json(folder / "scene_tabletop.json")
        for im_id in sorted(gts, key=int):
            if limit is not None and len(rgbs) >= limit:
                break
            c = cams[im_id]
            R_w2c = torch.tensor(c["cam_R_w2c"], dtype=torch.float64).view(3, 3)
            t_w2c = torch.tensor(c["cam_t_w2c"], dtype=torch.float64) / 1000.0
            rgb_path = folder / "rgb" / f"{int(im_id):06d}.png"
            if camera is None:  # the first image sets the size every other one must have
                first = _load_png(rgb_path, None, np.uint8)
                camera = Camera(torch.tensor(c["cam_K"]).view(3, 3), R_w2c, t_w2c, first.shape[:2])
            rgbs.append(_load_png(rgb_path, camera.image_size, np.uint8) if rgbs else first)
            depth_png = _load_png(folder / "depth" / f"{int(im_id):06d}.png", camera.image_size, np.uint16)
            depths.append(depth_png.astype(np.float64) * float(c["depth_scale"]) / 1000.0)
            if len(gts[im_id]) > max_objects:
                raise ValueError(f"{folder} image {im_id} has {len(gts[im_id])} objects, more than {max_objects}")
            cat = torch.full((max_objects,), -1, dtype=torch.long)
            rot, trans, col = torch.eye(3).repeat(max_objects, 1, 1), torch.zeros(max_objects, 3), torch.zeros(max_objects, 3)
            for n, (gt, extra) in enumerate(zip(gts[im_id], extras[im_id]["objects"])):
                cat[n] = catalog.index_of(int(gt["obj_id"]))
                R_m2c = torch.tensor(gt["cam_R_m2c"], dtype=torch.float64).view(3, 3)
                t_m2c = torch.tensor(gt["cam_t_m2c"], dtype=torch.float64) / 1000.0
                rot[n] = (R_w2c.T @ R_m2c).float()
                trans[n] = (R_w2c.T @ (t_m2c - t_w2c)).float()
                col[n] = torch.tensor(extra["color"])
            categories.append(cat)
            rotations.append(rot)
            translations.append(trans)
            colors.append(col)
    rgb = torch.from_numpy(np.stack(rgbs)).float() / 255.0
    depth = torch.from_numpy(np.stack(depths)).float()
    table = Table()
    if (root / "dataset_info.json").is_file():
        t = _load_json(root / "dataset_info.json")["config"]["table"]
        table = Table(size=tuple(t["size"]), color=tuple(t["color"]), center=tuple(t["center"]))
    batch = SceneBatch(torch.stack(categories), torch.stack(rotations), torch.stack(translations), torch.stack(colors),
                       camera, table)
    return rgb, depth, batch


def write_contact_sheet(root: str | Path, split: str, catalog: ObjectCatalog, max_objects: int = 3,
                        count: int = 32) -> Path:
    """root/<split>_contact_sheet.png: the split's first `count` images as written, labelled with their objects."""
    root = Path(root)
    rgb, _, batch = read_split(root, split, catalog, max_objects, limit=count)
    labels = []
    for b in range(len(batch)):
        names = [catalog[int(c)].name for c in batch.category[b] if c >= 0]
        labels.append(f"{len(names)}: " + ", ".join(n.replace("_", " ") for n in names) if names else "0: empty")
    return contact_sheet(rgb, labels, root / f"{split}_contact_sheet.png",
                         title=f"tabletop-v1 {split}: first {len(batch)} scenes (count: objects)")
