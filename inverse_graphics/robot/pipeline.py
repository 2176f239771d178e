"""A folder of robot frames -> object poses on disk: poses.json, BOP results (RESULTS_CSV) and
an overlay per frame. The per-frame work is poses.FramePoseEstimator's.

Units: metres and radians; poses (4, 4) model-to-camera, metres (the CSV in BOP's millimetres).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy.spatial import ConvexHull
from tqdm import tqdm

from ..assets import ObjectCatalog
from ..data.bop import BOP_RESULTS_HEADER, bop_result_line
from ..devices import resolve_device
from ..files import (atomic_write_bytes, atomic_write_json, atomic_write_png, lock_output_folder, read_json,
                     release_output_folder)
from ..provenance import code_version, differences, file_digest
from .frames import Frame, default_camera_file, frame_files, frame_ids, iter_frames
from .poses import Detection, FramePoseEstimator, PoseSettings
from .view import Workspace, frames_table_color, load_for_camera

BOX_EDGES = [(0, 1), (1, 3), (3, 2), (2, 0), (4, 5), (5, 7), (7, 6), (6, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
PALETTE = [(255, 80, 80), (80, 200, 255), (255, 220, 60), (120, 255, 120), (255, 120, 255), (255, 160, 40)]


def overlay(frame: Frame, detections: list[Detection], catalog: ObjectCatalog, path,
            workspace: Workspace | None = None, rejected: list | None = None) -> None:
    """The frame with each detection's outline (the convex hull of its projected mesh) and model
    bounding box, its category and score; the workspace's edge on the table (white); and the
    proposals rejected, as grey crosses with why."""
    image = Image.fromarray((frame.rgb * 255).round().byte().numpy())
    draw = ImageDraw.Draw(image)
    K = frame.camera.K
    if workspace is not None:
        (cx, cy), e = workspace.center, workspace.half_extent
        square = torch.tensor([[cx - e, cy - e, 0.0], [cx + e, cy - e, 0.0], [cx + e, cy + e, 0.0],
                               [cx - e, cy + e, 0.0]])
        uv, depth = frame.camera.project(square)
        if bool((depth > 0).all()):
            draw.polygon([tuple(p) for p in uv.tolist()], outline=(255, 255, 255))
    for u, v, reason in rejected or []:
        draw.line([(u - 5, v - 5), (u + 5, v + 5)], fill=(160, 160, 160), width=2)
        draw.line([(u - 5, v + 5), (u + 5, v - 5)], fill=(160, 160, 160), width=2)
        draw.text((u + 7, v - 6), reason, fill=(200, 200, 200))
    def project(points: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        cam = points @ pose[:3, :3].T + pose[:3, 3]
        return (cam @ K.T)[:, :2] / cam[:, 2:3]

    for i, d in enumerate(detections):
        color = PALETTE[i % len(PALETTE)]
        verts = catalog[catalog.index_of(d.category)].verts
        outline = project(verts, d.pose_camera)
        draw.polygon([tuple(outline[k].tolist()) for k in ConvexHull(outline.numpy()).vertices], outline=color,
                     width=2)
        lo, hi = verts.min(0).values, verts.max(0).values
        uv = project(torch.stack([torch.where(torch.tensor([bool(k & 1), bool(k & 2), bool(k & 4)]), hi, lo)
                                  for k in range(8)]), d.pose_camera)
        for a, b in BOX_EDGES:
            draw.line([tuple(uv[a].tolist()), tuple(uv[b].tolist())], fill=color, width=1)
        top = uv[:, 1].argmin()
        draw.text((float(uv[top, 0]), float(uv[top, 1]) - 12), f"{d.category} {d.score:.2f}", fill=color)
    atomic_write_png(path, np.asarray(image), compress_level=1)  # a per-frame cost: fast, not small


RESULTS_CSV = "air-poses_frames-test.csv"  # BOP parses METHOD_DATASET-SPLIT: rename to your dataset's


def write_bop_results(results: dict, path: Path) -> None:
    """run_poses' results -> a BOP results CSV: scene_id and im_id as each frame's entry says
    (frames.frame_ids: a frame's number, not its position among the frames processed)."""
    rows = [BOP_RESULTS_HEADER]
    for name, entry in sorted(results["frames"].items()):
        for o in entry["objects"]:
            pose = o["pose_camera"]
            rows.append(bop_result_line(entry["scene_id"], entry["im_id"], o["obj_id"], o["score"],
                                        [row[:3] for row in pose[:3]], [row[3] for row in pose[:3]],
                                        entry["seconds"]))
    atomic_write_bytes(path, ("\n".join(rows) + "\n").encode())


def scene_id_of(frames_dir) -> int:
    """A BOP scene folder's number (DATASET/SPLIT/000007 -> 7); 0 for any other folder."""
    name = Path(frames_dir).resolve().name
    return int(name) if name.isdigit() else 0


def run_poses(frames_dir, checkpoint, out, camera_path=None, settings: PoseSettings | None = None,
              write_overlays: bool = True, progress: bool = True, log=print,
              device: str | torch.device | None = None, overwrite: bool = False, models=None) -> dict:
    """Every usable frame of a folder -> out/poses.json ({frame: {scene_id, im_id, objects, seconds}}),
    out/RESULTS_CSV (BOP results; ids from frames.frame_ids and scene_id_of) and out/overlay/<frame>.png. Frames already in
    poses.json are kept (a killed run resumes); unusable frames are listed under 'skipped'.
    Per frame, `seconds` is end to end: reading, proposing, fitting and writing. device: where AIR
    and the fits run (devices.resolve_device); frames are read on the CPU. The output folder is
    checked before any work and held by this run (a second run into it is refused); a folder where
    no frame could be used is an error naming why.

    poses.json records what its poses were made with (provenance: the model's and the camera file's
    SHA-256, the catalog, the settings, the device type and the code version). A run into a folder
    whose poses were made otherwise is refused, saying what differs, unless `overwrite` (then every
    frame is recomputed). Every frame sees the model built for the first usable frame (its camera
    and table colour), whether the run was resumed or not. models: a BOP models folder, the objects
    that may appear (default the shipped ones); AIR, whatever it was trained on, proposes where."""
    out = Path(out)
    device = resolve_device(device)
    files, _ = frame_files(frames_dir)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"no AIR checkpoint at {checkpoint}")
    camera_file = Path(camera_path) if camera_path else default_camera_file(frames_dir)
    catalog = ObjectCatalog.load(models)
    unknown = [n for n in (settings.categories or ()) if n not in catalog.names] if settings else []
    if unknown:  # said before any work (the estimator says it too, for callers of its own)
        raise ValueError(f"unknown object names {unknown}; the catalog has {', '.join(catalog.names)}")
    made_with = provenance(checkpoint, camera_file, settings or PoseSettings(), device, catalog)
    lock_output_folder(out)
    try:
        results = _poses_of_frames(frames_dir, files, checkpoint, out, camera_path, settings, write_overlays,
                                   progress, log, device, made_with, overwrite, catalog)
    finally:
        release_output_folder(out)
    if not results["frames"]:
        first = next(iter(results["skipped"].items()), ("", "none found"))
        raise ValueError(f"no usable frame in {frames_dir}: all {len(results['skipped'])} were skipped "
                         f"({first[0]}: {first[1]})")
    return results


def provenance(checkpoint, camera_file: Path, settings: PoseSettings, device: torch.device,
               catalog: ObjectCatalog) -> dict:
    """What poses are made with, as recorded in poses.json (JSON values, so it compares with a loaded one)."""
    return json.loads(json.dumps({
        "model": {"path": str(checkpoint), "sha256": file_digest(checkpoint)},
        "camera": {"path": str(camera_file), "sha256": file_digest(camera_file) if camera_file.is_file() else None},
        "catalog": catalog.fingerprint(), "settings": asdict(settings), "device": device.type,
        "code": code_version()}))


def _same_file(old: dict, new: dict) -> bool:
    return old.get("sha256") == new.get("sha256")


def _differences(old: dict | None, new: dict) -> list[str]:
    """What differs between two provenance records (file paths may move; their contents may not)."""
    return differences(old, new, {"model": _same_file, "camera": _same_file})


def _poses_of_frames(frames_dir, files: list[Path], checkpoint, out: Path, camera_path, settings, write_overlays,
                     progress: bool, log, device: torch.device, made_with: dict, overwrite: bool,
                     catalog: ObjectCatalog) -> dict:
    """run_poses' work, in a folder this run holds."""
    results_path = out / "poses.json"
    results = read_json(results_path, "poses file") if results_path.is_file() else {"frames": {}}
    differs = _differences(results.get("provenance"), made_with) if results.get("frames") else []
    what = "poses that do not say what made them (written before poses recorded it)" if results.get("frames") \
        and "provenance" not in results else f"poses made with another {', '.join(differs)}"
    if differs and not overwrite:
        raise ValueError(f"{results_path} holds {what}; run with --overwrite to recompute every frame, or choose "
                         "another --out")
    if differs:
        log(f"--overwrite: recomputing every frame ({results_path} held {what})")
        results = {"frames": {}}
    results["provenance"] = made_with
    ids, scene_id = frame_ids(files), scene_id_of(frames_dir)
    estimator, first = None, None
    skipped = results["skipped"] = {}  # listed afresh: a frame fixed since the last run is not
    bar = tqdm(total=len(files), desc="poses", unit="frame", disable=not progress)
    start = time.perf_counter()
    frames = iter_frames(frames_dir, camera_path, on_problem=lambda p: skipped.__setitem__(p.name, p.reason))
    for frame in frames:
        if first is None:  # the first usable frame's camera and table, resumed or not
            first = (frame.camera, frames_table_color([frame]))
        if frame.name in results["frames"]:
            bar.update(1)
            start = time.perf_counter()
            continue
        if estimator is None:
            model, _ = load_for_camera(checkpoint, *first, device)
            estimator = FramePoseEstimator(model, settings, catalog)
            start = time.perf_counter()  # loading the model is not a frame's time
        detections, timing = estimator.estimate(frame)
        if write_overlays:
            overlay(frame, detections, estimator.catalog, out / "overlay" / f"{frame.name}.png",
                    Workspace.for_camera(frame.camera), timing["rejected_px"])
        results["frames"][frame.name] = {"scene_id": scene_id, "im_id": ids[frame.name],
                                         "objects": [d.to_json() for d in detections], **timing}
        results["frames"][frame.name]["seconds"] = time.perf_counter() - start
        atomic_write_json(results_path, results)
        bar.update(1)
        start = time.perf_counter()  # the next frame's time starts with reading it
    bar.close()
    for name, reason in skipped.items():
        log(f"skipped frame {name}: {reason}")
    for name, entry in results["frames"].items():  # entries kept from a run before frames had ids
        entry.setdefault("scene_id", scene_id)
        entry.setdefault("im_id", ids.get(name, -1))
    if results["frames"]:
        write_bop_results(results, out / RESULTS_CSV)
    atomic_write_json(results_path, results)
    return results


def detections_of(results: dict, names: list[str]) -> list[list[dict]]:
    """run_poses' results -> per named frame [{"category", "pose": (4, 4) float64, "score"}] (no
    entry: none), the form metrics.evaluate_poses takes."""
    return [[{"category": o["category"], "pose": torch.tensor(o["pose_camera"], dtype=torch.float64),
              "score": o["score"]} for o in results["frames"].get(n, {"objects": []})["objects"]] for n in names]


def poses_summary(results: dict, out: str | Path, shown: int = 8) -> list[str]:
    """What `inverse-graphics poses` prints: the first frames' detections (category and score),
    the mean time per frame, and where the outputs went."""
    done = results["frames"]
    lines = [f"{name}: " + (", ".join(f"{o['category']} ({o['score']:.2f})" for o in entry["objects"]) or "nothing")
             for name, entry in sorted(done.items())[:shown]]
    seconds = [e["seconds"] for e in done.values()]
    if seconds:
        lines.append(f"{len(done)} frames, {sum(seconds) / len(seconds):.2f} s per frame; "
                     f"skipped {len(results['skipped'])}")
    out = Path(out)
    return lines + [f"wrote {out / 'poses.json'}, {out / RESULTS_CSV} (BOP results) and {out / 'overlay'}/"]
