"""Every method's answer scored the same way: identity-level figures after matching by position,
and BOP's pose recalls (bop_recall) from camera-frame poses.

Identity-level (ours, see the benchmark spec): objects are matched to the truth by position
(Hungarian); count accuracy over scenes, identity accuracy, position error (mm) and
symmetry-aware yaw error (degrees) over matched pairs, whatever their identity.
Pose recalls (BOP's): an estimate is only compared with ground truth of its own object, so a
wrong identity is a miss.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..assets import ObjectCatalog
from ..camera import Camera
from ..rendering.visibility import object_visibility
from ..scene import PlanarObjects
from .bop_recall import ImagePoses, bop_recalls
from .pose_errors import EvaluationModel

_MODELS: dict[tuple, EvaluationModel] = {}


def evaluation_models(catalog: ObjectCatalog) -> dict[int, EvaluationModel]:
    """obj_id -> EvaluationModel for every category (remeshed once per distinct mesh)."""
    models = {}
    for c in catalog.categories:
        key = (c.obj_id, c.name, c.diameter, c.verts.numpy().tobytes(), str(c.symmetries_discrete.tolist()),
               str([(a.tolist(), o.tolist()) for a, o in c.symmetries_continuous]))
        if key not in _MODELS:
            _MODELS[key] = EvaluationModel.of(c)
        models[c.obj_id] = _MODELS[key]
    return models


_VISIBILITY: dict[bytes, torch.Tensor] = {}


def truth_visibility(truth: PlanarObjects, catalog: ObjectCatalog, camera: Camera) -> torch.Tensor:
    """(B, N) visible fraction of each true object (rendering.visibility), remembered for the
    last few truths so that scoring several methods on one split renders it once."""
    key = b"".join(t.detach().numpy().tobytes() for t in (truth.category, truth.position, truth.yaw,
                                                            truth.rest_index, camera.K, camera.R, camera.t))
    key += str((camera.image_size, [(c.obj_id, c.name) for c in catalog.categories])).encode()
    if key not in _VISIBILITY:
        if len(_VISIBILITY) >= 8:
            _VISIBILITY.pop(next(iter(_VISIBILITY)))
        _VISIBILITY[key] = object_visibility(truth.to_batch(catalog, camera), catalog).visib_fract
    return _VISIBILITY[key]


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


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def planar_image_poses(objects: PlanarObjects, catalog: ObjectCatalog, camera: Camera,
                       visib_fract: torch.Tensor | None = None) -> list[ImagePoses]:
    """B scenes of planar objects -> their camera-frame poses, image by image (scores from
    objects.score, 1 where absent; visib_fract (B, N) for ground truth)."""
    R, t = objects.to_batch(catalog, camera).model_to_camera()
    images = []
    for b in range(len(objects)):
        slots = (objects.category[b] >= 0).nonzero()[:, 0].tolist()
        images.append(ImagePoses(
            [catalog[int(objects.category[b, n])].obj_id for n in slots], R[b, slots].double().numpy(),
            t[b, slots].double().numpy(),
            score=[float(objects.score[b, n]) for n in slots] if objects.score is not None else [],
            visib_fract=[float(visib_fract[b, n]) for n in slots] if visib_fract is not None else []))
    return images


def evaluate_planar(predicted: PlanarObjects, truth: PlanarObjects, catalog: ObjectCatalog,
                    camera: Camera | None = None, visib_fract: torch.Tensor | None = None) -> dict:
    """Benchmark metrics for B scenes of planar objects (they may have different slot counts).

    Identity-level figures always; with a camera, BOP's ADD-S, MSSD and MSPD recalls too (nan
    without), the estimates ranked by predicted.score. visib_fract: (B, N) the true objects'
    visible fractions (rendered here when not given). `matches` lists every matched pair's
    errors and `count_pairs` every scene's (true, predicted) count, for figures.
    """
    # yaw errors read each true object's symmetry in the resting pose it lies in (the BOP recalls
    # compare full 3D poses, resting rotation included)
    orders = [[c.yaw_symmetry_order(k) for k in range(len(c.resting_poses))] for c in catalog.categories]
    true_rest = truth.rest_index
    count_correct, identity_correct, pos_err, yaw_err, count_pairs, matches = 0, 0, [], [], [], []
    for b in range(len(truth)):
        p_idx = (predicted.category[b] >= 0).nonzero()[:, 0]
        t_idx = (truth.category[b] >= 0).nonzero()[:, 0]
        count_pairs.append((len(t_idx), len(p_idx)))
        count_correct += int(len(p_idx) == len(t_idx))
        if len(p_idx) == 0 or len(t_idx) == 0:
            continue
        cost = torch.cdist(predicted.position[b, p_idx].double(), truth.position[b, t_idx].double())
        for r, c in zip(*linear_sum_assignment(cost.numpy())):
            i, j = int(p_idx[r]), int(t_idx[c])
            pc, tc = int(predicted.category[b, i]), int(truth.category[b, j])
            identity_correct += int(pc == tc)
            pos_err.append(float(cost[r, c]) * 1000)
            order = torch.tensor([orders[tc][int(true_rest[b, j])]])
            yaw_err.append(float(yaw_error_deg(predicted.yaw[b, i:i + 1], truth.yaw[b, j:j + 1], order)))
            matches.append({"true_category": tc, "pred_category": pc, "pos_err_mm": pos_err[-1],
                            "yaw_err_deg": yaw_err[-1]})
    result = {"scenes": len(truth), "count_acc": count_correct / max(1, len(truth)),
              "identity_acc": identity_correct / len(matches) if matches else math.nan,
              "pos_err_mm_median": _median(pos_err), "rot_err_deg_median": _median(yaw_err),
              "matched": len(matches), "true_objects": int(truth.present.sum())}
    recalls = {"adds_recall": math.nan, "mssd_recall": math.nan, "mspd_recall": math.nan}
    if camera is not None:
        if visib_fract is None:
            visib_fract = truth_visibility(truth, catalog, camera)
        recalls = bop_recalls(planar_image_poses(predicted, catalog, camera),
                              planar_image_poses(truth, catalog, camera, visib_fract),
                              evaluation_models(catalog), camera.K.double().numpy(), camera.image_size[1])
    return {**result, **recalls, "count_pairs": count_pairs, "matches": matches}


def translation_matches(pred: list[dict], true: list[dict]) -> list[tuple[int, int, float]]:
    """One frame's estimates paired with its true objects by translation (Hungarian):
    (estimate index, true index, distance in metres) per pair."""
    if not pred or not true:
        return []
    t_pred = torch.stack([torch.as_tensor(p["pose"], dtype=torch.float64)[:3, 3] for p in pred])
    t_true = torch.stack([torch.as_tensor(t["pose"], dtype=torch.float64)[:3, 3] for t in true])
    cost = torch.cdist(t_pred, t_true)
    return [(int(r), int(c), float(cost[r, c])) for r, c in zip(*linear_sum_assignment(cost.numpy()))]


def evaluate_poses(predicted: list[list[dict]], truth: list[list[dict]], catalog: ObjectCatalog,
                   camera: Camera | None = None) -> dict:
    """Camera-frame 6-DoF poses, frame by frame: each object a dict with 'category' (name),
    'pose' (4, 4) model-to-camera, metres, and 'score' (estimates; 1 if absent) or
    'visib_fract' (truth; 1 if absent). Identity-level figures after matching by translation
    (Hungarian), and BOP's recalls (MSPD needs the frames' camera)."""
    count_ok, identity_ok, matched, errors = 0, 0, 0, []
    for pred, true in zip(predicted, truth, strict=True):
        count_ok += int(len(pred) == len(true))
        for r, c, distance in translation_matches(pred, true):
            matched += 1
            identity_ok += int(pred[r]["category"] == true[c]["category"])
            errors.append(distance * 1000)

    def image(objects: list[dict], key: str) -> ImagePoses:
        poses = np.array([np.asarray(o["pose"], float) for o in objects]).reshape(-1, 4, 4)
        return ImagePoses([catalog[catalog.index_of(o["category"])].obj_id for o in objects], poses[:, :3, :3],
                          poses[:, :3, 3], **{key: [float(o.get(key, 1.0)) for o in objects]})

    K, width = (None, None) if camera is None else (camera.K.double().numpy(), camera.image_size[1])
    recalls = bop_recalls([image(p, "score") for p in predicted], [image(t, "visib_fract") for t in truth],
                          evaluation_models(catalog), K, width)
    return {"frames": len(truth), "count_acc": count_ok / max(1, len(truth)),
            "identity_acc": identity_ok / matched if matched else math.nan,
            "translation_err_mm_median": _median(errors), **recalls,
            "true_objects": sum(len(t) for t in truth), "matched": matched}
