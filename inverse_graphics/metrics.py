"""Pose metrics shared by every method (see the benchmark spec)."""

from __future__ import annotations

import math

import torch
from pytorch3d.ops import sample_points_from_meshes
from pytorch3d.structures import Meshes
from scipy.optimize import linear_sum_assignment

from .assets import Category, ObjectCatalog
from .camera import Camera
from .scene import PlanarObjects, yaw_to_matrix


def yaw_error_deg(predicted: torch.Tensor, true: torch.Tensor, symmetry_order: torch.Tensor) -> torch.Tensor:
    """Smallest yaw difference (degrees) over the object's symmetries about the vertical.

    predicted, true: (...) radians.  symmetry_order: (...) int, n for n-fold
    symmetry (1 = none), 0 for continuous symmetry (error 0).
    """
    order = symmetry_order.to(predicted.dtype)
    period = 2 * math.pi / order.clamp(min=1)
    diff = torch.remainder(predicted - true, period)
    error = torch.minimum(diff, period - diff)
    return torch.where(symmetry_order == 0, torch.zeros_like(error), torch.rad2deg(error))


def model_points(category: Category, count: int = 500) -> torch.Tensor:
    """(count, 3) points spread over the category's surface (metres), the same on every call."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return sample_points_from_meshes(Meshes([category.verts], [category.faces]), count)[0]


def _planar_pose(position: torch.Tensor, yaw: torch.Tensor, height: float) -> torch.Tensor:
    pose = torch.eye(4)
    pose[:3, :3] = yaw_to_matrix(yaw.detach().reshape(()).float())
    pose[:3, 3] = torch.tensor([float(position[0]), float(position[1]), height])
    return pose


MSSD_THRESHOLDS = torch.arange(0.05, 0.51, 0.05)  # x object diameter (BOP)
MSPD_THRESHOLDS_PX_AT_640 = torch.arange(5.0, 51.0, 5.0)  # pixels, scaled by image width / 640 (BOP)


def symmetric_distances(vertices: torch.Tensor, axis_origin: torch.Tensor, yaw_error_rad: float,
                        offset: torch.Tensor, camera=None) -> tuple[float, float]:
    """MSSD (m) and MSPD (px; nan without a camera) of a planar estimate.

    vertices (V, 3): the true model at its true pose, world metres. The estimate is the
    same model turned by yaw_error_rad (the error to the nearest symmetric equivalent of
    the truth) about the vertical through axis_origin (3,), and moved by offset (3,) m.
    """
    turn = yaw_to_matrix(torch.tensor(yaw_error_rad, dtype=vertices.dtype))
    moved = (vertices - axis_origin) @ turn.T + axis_origin + offset
    mssd = float((moved - vertices).norm(dim=-1).max())
    if camera is None:
        return mssd, float("nan")
    a, _ = camera.project(vertices.float())
    b, _ = camera.project(moved.float())
    return mssd, float((a - b).norm(dim=-1).max())


def _planar_mssd_mspd(category: Category, true_pose: torch.Tensor, offset_xy: torch.Tensor, yaw_diff: float,
                      order: int, camera: Camera | None) -> tuple[float, float]:
    """MSSD (m) and MSPD (px) of an estimate of the right identity, offset_xy (2,) m and yaw_diff
    rad from the truth at true_pose (4, 4); the yaw error is taken to the nearest of the
    category's `order` symmetric equivalents (0: continuous)."""
    origin = true_pose[:3, 3].double()
    verts = category.verts.double() @ true_pose[:3, :3].T.double() + origin
    offset = torch.zeros(3, dtype=torch.float64)
    offset[:2] = offset_xy.double()
    period = 2 * math.pi / max(order, 1)
    signed = float(torch.remainder(torch.tensor(yaw_diff), period))
    signed = 0.0 if order == 0 else (signed - period if signed > period / 2 else signed)
    return symmetric_distances(verts, origin, signed, offset, camera)


def evaluate_planar(predicted: PlanarObjects, truth: PlanarObjects, catalog: ObjectCatalog,
                    camera: Camera | None = None) -> dict:
    """Benchmark metrics for B scenes of planar objects (benchmark spec).

    predicted, truth: B scenes each (they may have different slot counts N). Objects are matched to the truth
    by position (Hungarian); identity accuracy, position error (mm), symmetry-aware
    yaw error (degrees) and ADD-S are over matched pairs; ADD-S recall (at 0.1 x the
    true object's diameter) counts unmatched true objects as misses. MSSD and MSPD
    recalls are BOP's averages over thresholds (0.05-0.5 x diameter; 5-50 px x width/640),
    over true objects, counting unmatched and wrongly identified ones as misses (MSPD
    needs the camera). `matches` lists every matched pair's errors, for figures.
    """
    pred_category, pred_position, pred_yaw = predicted.category, predicted.position, predicted.yaw
    true_category, true_position, true_yaw = truth.category, truth.position, truth.yaw
    orders = torch.tensor([c.yaw_symmetry_order() for c in catalog.categories])
    points = [model_points(c) for c in catalog.categories]
    count_correct, identity_correct, matched = 0, 0, 0
    pos_err, yaw_err, adds_ok, true_total = [], [], 0, 0
    per_scene_counts, matches, mssd_hits, mspd_hits = [], [], 0.0, 0.0
    mspd_thresholds = None if camera is None else MSPD_THRESHOLDS_PX_AT_640 * camera.image_size[1] / 640
    for b in range(len(true_category)):
        p_idx = (pred_category[b] >= 0).nonzero()[:, 0]
        t_idx = (true_category[b] >= 0).nonzero()[:, 0]
        per_scene_counts.append((len(t_idx), len(p_idx)))
        count_correct += int(len(p_idx) == len(t_idx))
        true_total += len(t_idx)
        if len(p_idx) == 0 or len(t_idx) == 0:
            continue
        cost = torch.cdist(pred_position[b, p_idx].double(), true_position[b, t_idx].double())
        rows, cols = linear_sum_assignment(cost.numpy())
        for r, c in zip(rows, cols):
            i, j = int(p_idx[r]), int(t_idx[c])
            pc, tc = int(pred_category[b, i]), int(true_category[b, j])
            matched += 1
            identity_correct += int(pc == tc)
            pos_err.append(float(cost[r, c]) * 1000)
            yaw_err.append(float(yaw_error_deg(pred_yaw[b, i:i + 1], true_yaw[b, j:j + 1], orders[tc:tc + 1])))
            true_cat = catalog[tc]
            pred_pose = _planar_pose(pred_position[b, i], pred_yaw[b, i], catalog[pc].rest_height)
            true_pose = _planar_pose(true_position[b, j], true_yaw[b, j], true_cat.rest_height)
            # The predicted object's own model points: a wrong identity is judged by its shape.
            distance = add_s_between(points[pc], pred_pose, points[tc], true_pose)
            adds_ok += int(distance < 0.1 * true_cat.diameter)
            mssd = mspd = float("nan")
            if pc == tc:  # BOP scores an estimate against the ground truth of its own object id
                mssd, mspd = _planar_mssd_mspd(true_cat, true_pose, pred_position[b, i] - true_position[b, j],
                                               float(pred_yaw[b, i] - true_yaw[b, j]), int(orders[tc]), camera)
                mssd_hits += float((mssd < MSSD_THRESHOLDS * true_cat.diameter).float().mean())
                if camera is not None:
                    mspd_hits += float((mspd < mspd_thresholds).float().mean())
            matches.append({"true_category": tc, "pred_category": pc, "pos_err_mm": pos_err[-1],
                            "yaw_err_deg": yaw_err[-1], "adds_m": float(distance), "mssd_m": mssd, "mspd_px": mspd})
    median = (lambda v: float(torch.tensor(v).median()) if v else float("nan"))
    return {"scenes": len(true_category), "count_acc": count_correct / max(1, len(true_category)),
            "identity_acc": identity_correct / matched if matched else float("nan"),
            "pos_err_mm_median": median(pos_err), "rot_err_deg_median": median(yaw_err),
            "adds_recall": adds_ok / max(1, true_total),
            "mssd_recall": mssd_hits / max(1, true_total),
            "mspd_recall": mspd_hits / max(1, true_total) if camera is not None else float("nan"),
            "matched": matched, "true_objects": true_total, "count_pairs": per_scene_counts, "matches": matches}


def add_s_between(points_a: torch.Tensor, pose_a: torch.Tensor, points_b: torch.Tensor,
                  pose_b: torch.Tensor) -> torch.Tensor:
    """ADD-S between two posed point sets (they are the same model when the identity is right):
    mean over the true model's points of the distance to the closest predicted point (metres)."""
    a = points_a @ pose_a[:3, :3].T + pose_a[:3, 3]
    b = points_b @ pose_b[:3, :3].T + pose_b[:3, 3]
    return torch.cdist(b, a).min(1).values.mean()


def evaluate_poses(predicted: list[list[dict]], truth: list[list[dict]], catalog: ObjectCatalog) -> dict:
    """Camera-frame 6-DoF poses, frame by frame: each object a dict with 'category' (name) and
    'pose' (4, 4) model-to-camera, metres. Objects are matched by translation (Hungarian);
    ADD-S (the predicted object's own points against the true object's) at 0.1 x the true
    object's diameter, unmatched true objects counting as misses."""
    points = {c.name: model_points(c) for c in catalog.categories}
    count_ok, identity_ok, matched, adds_ok, total, errors = 0, 0, 0, 0, 0, []
    for pred, true in zip(predicted, truth, strict=True):
        count_ok += int(len(pred) == len(true))
        total += len(true)
        if not pred or not true:
            continue
        t_pred = torch.stack([torch.as_tensor(p["pose"], dtype=torch.float64)[:3, 3] for p in pred])
        t_true = torch.stack([torch.as_tensor(t["pose"], dtype=torch.float64)[:3, 3] for t in true])
        cost = torch.cdist(t_pred, t_true)
        for r, c in zip(*linear_sum_assignment(cost.numpy())):
            p, t = pred[r], true[c]
            matched += 1
            identity_ok += int(p["category"] == t["category"])
            distance = add_s_between(points[p["category"]].double(), torch.as_tensor(p["pose"], dtype=torch.float64),
                                     points[t["category"]].double(), torch.as_tensor(t["pose"], dtype=torch.float64))
            adds_ok += int(distance < 0.1 * catalog[catalog.index_of(t["category"])].diameter)
            errors.append(float(cost[r, c]) * 1000)
    return {"frames": len(truth), "count_acc": count_ok / max(1, len(truth)),
            "identity_acc": identity_ok / matched if matched else float("nan"),
            "translation_err_mm_median": float(torch.tensor(errors).median()) if errors else float("nan"),
            "adds_recall": adds_ok / max(1, total), "true_objects": total, "matched": matched}
