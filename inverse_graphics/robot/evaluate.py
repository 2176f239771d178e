"""`inverse-graphics evaluate RESULTS GROUND_TRUTH`: pose results scored against ground truth,
frame by frame and overall, with the metrics module every benchmark uses.

RESULTS is `poses`' poses.json or a BOP results CSV (scene_id, im_id, obj_id, score, R, t in mm).
GROUND_TRUTH is a frames folder (as `frames` writes it) or a BOP scene folder, or the
scene_gt.json in one: scene_gt.json (keyed by frame name or im_id; objects by obj_id, with or
without their category name), scene_gt_info.json (visible fractions; all visible without it)
and the camera (camera.json or scene_camera.json; MSPD needs it). Frames are paired by im_id (a
frame's number: 000042 -> 42); a ground-truth frame without results counts as one where nothing
was found.

Per frame: objects true and estimated, whether the count is right, and after BOP's ADD-S
matching (in score order, same object id, error below 0.1 x diameter) the objects found, the
misses and the false positives. Overall: count and identity accuracy, translation error, the
ADD-S, MSSD and MSPD recalls, the totals, and a score guide: the median score of found objects
and of false positives, and for each threshold the precision and recall of the detections that
score at least that much.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..assets import ObjectCatalog
from ..camera import Camera
from ..data.bop import read_bop_results
from ..files import read_json
from ..metrics import evaluate_poses, evaluation_models
from ..metrics.evaluate import translation_matches
from ..metrics.bop_recall import ADDS_THRESHOLD, VISIB_TARGET_MIN
from ..metrics.pose_errors import add_s
from ..data.images import read_rgb
from .frames import default_camera_file, frame_files, read_camera

EVALUATION_FILE = "evaluation.json"
SCORE_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(10))


def _category(catalog: ObjectCatalog, obj_id: int, where: str) -> str:
    for c in catalog.categories:
        if c.obj_id == obj_id:
            return c.name
    raise ValueError(f"{where}: obj_id {obj_id} is not in the object catalog ({', '.join(catalog.names)})")


def _pose(R, t_m) -> torch.Tensor:
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = torch.as_tensor(np.asarray(R, float).reshape(3, 3))
    pose[:3, 3] = torch.as_tensor(np.asarray(t_m, float).reshape(3))
    return pose


def read_results(path: str | Path, catalog: ObjectCatalog) -> dict[int, list[dict]]:
    """poses.json or a BOP results CSV -> {im_id: [{"category", "pose" (4, 4) model-to-camera, m, "score"}]}."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        frames: dict[int, list[dict]] = {}
        for row in read_bop_results(path):
            frames.setdefault(row["im_id"], []).append({
                "category": _category(catalog, row["obj_id"], str(path)), "pose": _pose(row["R"], row["t"] / 1000),
                "score": row["score"]})
        return frames
    data = read_json(path, "results file")
    if not isinstance(data, dict) or not isinstance(data.get("frames"), dict):
        raise ValueError(f"{path} is not `poses`' poses.json (no 'frames') nor a BOP results CSV (.csv)")
    frames = {}
    for name, entry in data["frames"].items():
        try:
            im_id = int(entry.get("im_id", name))
            frames[im_id] = [{"category": o["category"], "pose": torch.tensor(o["pose_camera"], dtype=torch.float64),
                              "score": float(o.get("score", 1.0))} for o in entry["objects"]]
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{path}: frame {name} is not a `poses` entry ({exc!r})") from None
    return frames


def read_ground_truth(path: str | Path, catalog: ObjectCatalog) -> tuple[dict[int, list[dict]], dict[int, str],
                                                                          Camera | None]:
    """A frames or BOP scene folder (or its scene_gt.json) -> ({im_id: [{"category", "pose",
    "visib_fract"}]}, {im_id: frame name}, the camera or None)."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    gt_path = path if path.is_file() else folder / "scene_gt.json"
    gt = read_json(gt_path, "ground truth (scene_gt.json)")
    info_path = folder / "scene_gt_info.json"
    info = read_json(info_path, "ground truth visibility") if info_path.is_file() else {}
    if not isinstance(gt, dict):
        raise ValueError(f"{gt_path} must map frames to their objects")
    truth, names = {}, {}
    for key, objects in gt.items():
        if not str(key).isdigit():
            raise ValueError(f"{gt_path}: frame {key!r} is not named by its number (000042 or 42)")
        im_id = int(key)
        names[im_id] = str(key)
        truth[im_id] = []
        for k, o in enumerate(objects):
            try:
                category = o.get("category") or _category(catalog, int(o["obj_id"]), str(gt_path))
                visib = float(info[key][k]["visib_fract"]) if key in info else 1.0
                truth[im_id].append({"category": category,
                                     "pose": _pose(o["cam_R_m2c"], np.asarray(o["cam_t_m2c"], float) / 1000),
                                     "visib_fract": visib})
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise ValueError(f"{gt_path}: frame {key} object {k} is not a BOP ground-truth entry ({exc!r})") \
                    from None
            if category not in catalog.names:
                raise ValueError(f"{gt_path}: frame {key} has object {category!r}, not in the catalog "
                                 f"({', '.join(catalog.names)})")
    camera = None
    camera_path = default_camera_file(folder)
    if camera_path.is_file():
        setup = read_camera(camera_path, _image_size(folder))
        camera = Camera(setup.K, torch.eye(3), torch.zeros(3), setup.image_size)
    return truth, names, camera


def _image_size(folder: Path) -> tuple[int, int] | None:
    """The frames' size, for a BOP scene_camera.json (which gives none): the first frame's."""
    try:
        files, _ = frame_files(folder)
    except ValueError:  # no frames beside the ground truth: the camera file must give the size
        return None
    return read_rgb(files[0]).shape[:2]


def correct_estimates(estimates: list[dict], truth: list[dict], catalog: ObjectCatalog, models: dict) -> list[bool]:
    """Which of a frame's estimates BOP's ADD-S matching accepts: of each object id, only as many
    estimates as it has targets (true objects at least 10% visible), the highest scoring; in score
    order, each takes the unmatched target of its own id with the smallest ADD-S error below 0.1 x
    its diameter."""
    correct, taken = [False] * len(estimates), set()
    targets = {}
    for t in truth:
        if t.get("visib_fract", 1.0) >= VISIB_TARGET_MIN:
            targets[t["category"]] = targets.get(t["category"], 0) + 1
    for i in sorted(range(len(estimates)), key=lambda i: -estimates[i]["score"]):  # stable: ties keep order
        e = estimates[i]
        if targets.get(e["category"], 0) <= 0:
            continue  # beyond its object's target count (or no such target): not considered
        targets[e["category"]] -= 1
        model = models[catalog[catalog.index_of(e["category"])].obj_id]
        best, best_j = ADDS_THRESHOLD, None
        for j, t in enumerate(truth):
            if j in taken or t["category"] != e["category"] or t.get("visib_fract", 1.0) < VISIB_TARGET_MIN:
                continue
            error = add_s(model, e["pose"][:3, :3].numpy(), e["pose"][:3, 3].numpy(), t["pose"][:3, :3].numpy(),
                          t["pose"][:3, 3].numpy()) / model.diameter
            if error < best:
                best, best_j = error, j
        if best_j is not None:
            taken.add(best_j)
            correct[i] = True
    return correct


def score_guide(scored: list[tuple[float, bool]], targets: int) -> list[dict]:
    """What keeping only the detections scoring at least t gives, for t in SCORE_THRESHOLDS:
    how many are kept, the share of them that are right (precision) and the share of the targets
    they find (recall). scored: (score, correct) per detection."""
    guide = []
    for t in SCORE_THRESHOLDS:
        kept = [ok for score, ok in scored if score >= t]
        guide.append({"min_score": t, "kept": len(kept), "precision": sum(kept) / len(kept) if kept else float("nan"),
                      "recall": sum(kept) / targets if targets else float("nan")})
    return guide


def evaluate_files(results: str | Path, ground_truth: str | Path, catalog: ObjectCatalog | None = None) -> dict:
    """RESULTS scored against GROUND_TRUTH (see the module docstring): {"overall": ..., "frames": [...]}."""
    catalog = catalog or ObjectCatalog.load()
    estimated = read_results(results, catalog)
    truth, names, camera = read_ground_truth(ground_truth, catalog)
    unknown = sorted(set(estimated) - set(truth))
    if unknown and len(unknown) == len(estimated):
        raise ValueError(f"no frame of {results} is in {ground_truth} (im_ids {unknown[:5]}...): are they the "
                         "same frames?")
    ids = sorted(truth)
    overall = evaluate_poses([estimated.get(i, []) for i in ids], [truth[i] for i in ids], catalog, camera)
    frames, scored, models = [], [], evaluation_models(catalog)
    for i in ids:
        mine, true = estimated.get(i, []), truth[i]
        correct = correct_estimates(mine, true, catalog, models)
        scored += [(e["score"], ok) for e, ok in zip(mine, correct)]
        targets = sum(t.get("visib_fract", 1.0) >= VISIB_TARGET_MIN for t in true)
        pairs = translation_matches(mine, true)  # as evaluate_poses pairs them, without its recalls again
        identity = sum(mine[r]["category"] == true[c]["category"] for r, c, _ in pairs) / len(pairs) if pairs \
            else float("nan")
        frames.append({"frame": names[i], "im_id": i, "true": len(true), "estimated": len(mine),
                       "count_ok": len(true) == len(mine), "targets": targets, "found": sum(correct),
                       "misses": targets - sum(correct), "false_positives": len(mine) - sum(correct),
                       "identity_acc": identity})
    totals = {k: sum(f[k] for f in frames) for k in ("true", "estimated", "found", "misses", "false_positives")}
    right = sorted(score for score, ok in scored if ok)
    wrong = sorted(score for score, ok in scored if not ok)
    return {"results": str(results), "ground_truth": str(ground_truth), "frames_without_results":
            [names[i] for i in ids if i not in estimated], "results_without_ground_truth": unknown,
            "overall": {**overall, **totals}, "frames": frames,
            "score": {"median_of_found": float(np.median(right)) if right else float("nan"),
                      "median_of_false_positives": float(np.median(wrong)) if wrong else float("nan"),
                      "guide": score_guide(scored, overall["targets"])}}


def evaluation_lines(report: dict, shown: int = 20) -> list[str]:
    """The report as a table: the first `shown` frames, then the overall figures."""
    lines = [f"{'frame':>10} {'true':>4} {'est':>4} {'found':>5} {'miss':>4} {'false+':>6}  identity"]
    for f in report["frames"][:shown]:
        identity = "-" if f["identity_acc"] != f["identity_acc"] else f"{f['identity_acc']:.2f}"
        lines.append(f"{f['frame']:>10} {f['true']:>4} {f['estimated']:>4} {f['found']:>5} {f['misses']:>4} "
                     f"{f['false_positives']:>6}  {identity}")
    if len(report["frames"]) > shown:
        lines.append(f"{'...':>10} ({len(report['frames']) - shown} more frames in the JSON)")
    o = report["overall"]
    lines.append(f"{o['frames']} frames, {o['true']} objects, {o['estimated']} estimates: count {o['count_acc']:.3f}, "
                 f"identity {o['identity_acc']:.3f}, translation error {o['translation_err_mm_median']:.1f} mm "
                 f"(median); ADD-S {o['adds_recall']:.3f}, MSSD {o['mssd_recall']:.3f}, MSPD {o['mspd_recall']:.3f}; "
                 f"{o['found']} found, {o['misses']} missed, {o['false_positives']} false positives")
    score = report["score"]
    best = max(score["guide"], key=lambda g: (g["precision"] + g["recall"]) if g["kept"] else -1)
    lines.append(f"score: found objects' median {score['median_of_found']:.2f}, false positives' "
                 f"{score['median_of_false_positives']:.2f}; keeping scores >= {best['min_score']:.1f} gives precision "
                 f"{best['precision']:.3f} at recall {best['recall']:.3f} (the JSON's score.guide has every threshold)")
    if report["frames_without_results"]:
        lines.append(f"{len(report['frames_without_results'])} frames had no results (counted as nothing found)")
    return lines
