"""BOP19 localisation recalls (ADD-S, MSSD, MSPD), computed as the BOP toolkit computes them.

Per image and object id (eval_calc_errors / eval_calc_scores / pose_matching, BOP19 settings):
- targets: the object's instances at least VISIB_TARGET_MIN visible (test_targets_bop19.json's
  inst_count); the inst_count most visible ground-truth instances are the valid ones;
- the estimates of that object are sorted by score (highest first; ties keep their order) and
  the top inst_count kept; estimates of objects that are not targets of the image are ignored;
- an estimate is only ever compared with ground truth of the same object id;
- per threshold, estimates in score order take the valid, unmatched instance with the smallest
  error below the threshold;
- recall = matched valid instances / all valid instances, over the whole split; MSSD and MSPD
  recalls are averaged over their thresholds.
Thresholds: ADD-S 0.1 x diameter; MSSD 0.05-0.5 x diameter; MSPD 5-50 px x (image width / 640).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .pose_errors import EvaluationModel, add_s, mssd_mspd

VISIB_TARGET_MIN = 0.1  # BOP19: an instance is a target when at least 10% of it is visible
ADDS_THRESHOLD = 0.1  # x diameter
MSSD_THRESHOLDS = np.arange(0.05, 0.51, 0.05)  # x diameter
MSPD_THRESHOLDS_AT_640 = np.arange(5.0, 51.0, 5.0)  # pixels at an image 640 wide


@dataclass
class ImagePoses:
    """One image's objects, model-to-camera. obj_id: (K,) ints; R: (K, 3, 3); t: (K, 3) metres;
    score: (K,) confidence (estimates); visib_fract: (K,) visible fraction (ground truth)."""

    obj_id: list[int]
    R: np.ndarray
    t: np.ndarray
    score: list[float] = field(default_factory=list)
    visib_fract: list[float] = field(default_factory=list)

    def __post_init__(self):
        k = len(self.obj_id)
        self.R = np.asarray(self.R, float).reshape(k, 3, 3)
        self.t = np.asarray(self.t, float).reshape(k, 3)
        self.score = list(self.score) if len(self.score) else [1.0] * k
        self.visib_fract = list(self.visib_fract) if len(self.visib_fract) else [1.0] * k
        if len(self.score) != k or len(self.visib_fract) != k:
            raise ValueError(f"ImagePoses: {k} objects but {len(self.score)} scores and "
                             f"{len(self.visib_fract)} visible fractions")


def target_counts(obj_ids, visib_fracts) -> dict[int, int]:
    """{obj_id: inst_count}, sorted by obj_id: one image's instances at least VISIB_TARGET_MIN
    visible (what test_targets_bop19.json lists)."""
    counts: dict[int, int] = {}
    for obj_id, visib in zip(obj_ids, visib_fracts):
        if visib >= VISIB_TARGET_MIN:
            counts[int(obj_id)] = counts.get(int(obj_id), 0) + 1
    return dict(sorted(counts.items()))


def image_targets(truth: ImagePoses) -> dict[int, int]:
    """{obj_id: inst_count} of a ground-truth image (target_counts)."""
    return target_counts(truth.obj_id, truth.visib_fract)


def valid_instances(truth: ImagePoses, targets: dict[int, int]) -> list[bool]:
    """Which ground-truth instances count: per object, its inst_count most visible ones."""
    left = dict(targets)
    valid = [False] * len(truth.obj_id)
    for k in sorted(range(len(truth.obj_id)), key=lambda k: truth.visib_fract[k], reverse=True):
        if left.get(truth.obj_id[k], 0) > 0:
            valid[k] = True
            left[truth.obj_id[k]] -= 1
    return valid


def top_estimates(estimate: ImagePoses, obj_id: int, count: int) -> list[int]:
    """Indices of the object's `count` highest-scoring estimates, highest first (ties keep order)."""
    mine = [k for k, o in enumerate(estimate.obj_id) if o == obj_id]
    return sorted(mine, key=lambda k: estimate.score[k], reverse=True)[:count]


def match_greedy(errors: np.ndarray, valid: list[bool], threshold: float) -> int:
    """errors (E, G): estimates in score order against the object's ground truth. Each estimate
    takes the valid, unmatched instance with the smallest error below threshold; returns matches."""
    taken: set[int] = set()
    for row in errors:
        best, best_error = -1, threshold
        for g, e in enumerate(row):
            if valid[g] and g not in taken and e < best_error:
                best, best_error = g, e
        if best >= 0:
            taken.add(best)
    return len(taken)


def bop_recalls(estimates: list[ImagePoses], truth: list[ImagePoses], models: dict[int, EvaluationModel],
                K=None, image_width: int | None = None) -> dict:
    """ADD-S, MSSD and MSPD recalls of one method over images (see the module docstring).
    models: obj_id -> EvaluationModel. K (3, 3) and image_width are needed for MSPD (else nan).
    Returns recalls, the number of targets, and the estimates kept and ignored by the top-n rule."""
    if len(estimates) != len(truth):
        raise ValueError(f"{len(estimates)} images of estimates but {len(truth)} of ground truth")
    mspd_thresholds = None if K is None else MSPD_THRESHOLDS_AT_640 * image_width / 640.0
    targets_total, kept = 0, 0
    hits = {"adds": 0, "mssd": np.zeros(len(MSSD_THRESHOLDS)), "mspd": np.zeros(len(MSPD_THRESHOLDS_AT_640))}
    for est, gt in zip(estimates, truth):
        targets = image_targets(gt)
        valid = valid_instances(gt, targets)
        targets_total += sum(targets.values())
        for obj_id, count in targets.items():
            model = models[obj_id]
            rows = top_estimates(est, obj_id, count)
            kept += len(rows)
            cols = [g for g, o in enumerate(gt.obj_id) if o == obj_id]
            if not rows:
                continue
            errors = np.full((3, len(rows), len(cols)), math.inf)
            for i, e in enumerate(rows):
                for j, g in enumerate(cols):
                    errors[0, i, j] = add_s(model, est.R[e], est.t[e], gt.R[g], gt.t[g]) / model.diameter
                    mssd, mspd = mssd_mspd(model, est.R[e], est.t[e], gt.R[g], gt.t[g], K)
                    errors[1, i, j], errors[2, i, j] = mssd / model.diameter, mspd
            obj_valid = [valid[g] for g in cols]
            hits["adds"] += match_greedy(errors[0], obj_valid, ADDS_THRESHOLD)
            hits["mssd"] += [match_greedy(errors[1], obj_valid, th) for th in MSSD_THRESHOLDS]
            if K is not None:
                hits["mspd"] += [match_greedy(errors[2], obj_valid, th) for th in mspd_thresholds]
    total = max(1, targets_total)
    return {"adds_recall": hits["adds"] / total, "mssd_recall": float((hits["mssd"] / total).mean()),
            "mspd_recall": float((hits["mspd"] / total).mean()) if K is not None else math.nan,
            "targets": targets_total, "estimates_kept": kept,
            "estimates_ignored": sum(len(e.obj_id) for e in estimates) - kept}
