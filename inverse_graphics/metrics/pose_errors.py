"""BOP's pose errors of one estimate against one ground-truth pose of the same object.

ADD-S (BOP's `adi`), MSSD and MSPD as the BOP toolkit defines them (Hodan et al., "BOP
Challenge 2020"), over the vertices of the object's evaluation mesh (BOP's `models_eval`):
the model's own mesh subdivided until no edge is longer than EVAL_MESH_EDGE_M, so the points
lie about 1-2 mm apart over the whole surface. Symmetries are the models_info.json ones, with
every continuous symmetry cut into ceil(pi / 0.01) steps and combined with each discrete one, as
the toolkit's misc.get_symmetry_transformations does.

Poses are model-to-camera: R (3, 3), t (3,) metres; K (3, 3) pixels. Errors come back in
metres (ADD-S, MSSD) and pixels (MSPD), not normalised; see bop_recall for thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial import ConvexHull, cKDTree

from ..assets import Category

EVAL_MESH_EDGE_M = 0.002  # longest edge of the evaluation mesh: points ~1-2 mm apart
MAX_SYMMETRY_STEP = 0.01  # BOP19's max_sym_disc_step (fraction of pi per continuous-symmetry step)


def evaluation_mesh(category: Category, max_edge_m: float = EVAL_MESH_EDGE_M) -> tuple[np.ndarray, np.ndarray]:
    """The dense mesh whose vertices the errors average over: vertices (V, 3) metres, faces (F, 3)."""
    verts, faces = trimesh.remesh.subdivide_to_size(category.verts.double().numpy(), category.faces.numpy(),
                                                    max_edge=max_edge_m, max_iter=30)
    return verts, faces


def symmetry_transformations(category: Category, max_step: float = MAX_SYMMETRY_STEP
                             ) -> tuple[np.ndarray, np.ndarray]:
    """The object's symmetries as BOP enumerates them: R (S, 3, 3) and t (S, 3) metres,
    the identity first. Continuous ones are rotations about their axis (through its offset)
    in ceil(pi / max_step) equal steps, each composed with every discrete one."""
    discrete = [(np.eye(3), np.zeros(3))] + [(s[:3, :3], s[:3, 3]) for s in category.symmetries_discrete]
    steps = int(math.ceil(math.pi / max_step))
    continuous = []
    for axis, offset in category.symmetries_continuous:
        axis = np.asarray(axis, float) / np.linalg.norm(axis)
        for i in range(steps):
            R = _axis_angle(axis, i * 2.0 * math.pi / steps)
            continuous.append((R, offset - R @ offset))
    if not continuous:
        pairs = discrete
    else:
        pairs = [(Rc @ Rd, Rc @ td + tc) for Rd, td in discrete for Rc, tc in continuous]
    return np.stack([R for R, _ in pairs]), np.stack([t for _, t in pairs])


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis
    cross = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


@dataclass
class EvaluationModel:
    """One object as the errors see it. points: (V, 3) evaluation-mesh vertices, metres;
    extreme: indices of the points on their convex hull; diameter: metres (models_info);
    sym_R (S, 3, 3), sym_t (S, 3) metres: symmetry_transformations."""

    obj_id: int
    points: np.ndarray
    extreme: np.ndarray
    diameter: float
    sym_R: np.ndarray
    sym_t: np.ndarray

    def __post_init__(self):
        self.tree = cKDTree(self.points)  # nearest neighbours in the model's own frame

    @classmethod
    def of(cls, category: Category) -> "EvaluationModel":
        points, _ = evaluation_mesh(category)
        R, t = symmetry_transformations(category)
        return cls(category.obj_id, points, ConvexHull(points).vertices, category.diameter, R, t)


def _transform(points: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    return points @ R.T + t


def _project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    p = points @ K.T
    return p[..., :2] / p[..., 2:]


def add_s(model: EvaluationModel, R_e, t_e, R_g, t_g) -> float:
    """BOP's adi (metres): mean over the true pose's points of the distance to the nearest point of
    the estimate; inf when the two bounding spheres do not overlap (as the toolkit skips them)."""
    R_e, t_e, R_g, t_g = (np.asarray(x, float) for x in (R_e, t_e, R_g, t_g))
    if np.linalg.norm(t_e - t_g) >= model.diameter:
        return math.inf
    # the true pose's points seen from the estimate's model frame: distances are unchanged
    truth_in_estimate = (_transform(model.points, R_g, t_g) - t_e) @ R_e
    distances, _ = model.tree.query(truth_in_estimate, k=1)
    return float(distances.mean())


def _min_over_symmetries(model: EvaluationModel, distance) -> float:
    """min over symmetries s of max over points of distance(s, points). Exact, but only the most
    promising symmetries see every point: the max over the hull points is a lower bound, so
    symmetries are visited by increasing bound until the best full maximum is below the next bound."""
    bound = distance(np.arange(len(model.sym_R)), model.extreme)
    best = math.inf
    for s in np.argsort(bound, kind="stable"):
        if bound[s] >= best:
            break
        best = min(best, float(distance(np.array([s]), slice(None))[0]))
    return best


def mssd_mspd(model: EvaluationModel, R_e, t_e, R_g, t_g, K=None) -> tuple[float, float]:
    """BOP's MSSD (metres; inf when the bounding spheres do not overlap) and MSPD (pixels; nan
    without K): the largest distance between corresponding points of the estimate and the
    truth, 3D or projected, minimised over the truth's symmetric equivalents."""
    R_e, t_e, R_g, t_g = (np.asarray(x, float) for x in (R_e, t_e, R_g, t_g))
    Rs = R_g @ model.sym_R  # (S, 3, 3): the truth turned by each symmetry
    ts = model.sym_t @ R_g.T + t_g  # (S, 3)
    estimate = _transform(model.points, R_e, t_e)

    def truth(symmetries, points):
        return np.einsum("sij,vj->svi", Rs[symmetries], model.points[points]) + ts[symmetries, None]

    def spatial(symmetries, points):
        return np.linalg.norm(truth(symmetries, points) - estimate[points], axis=-1).max(-1)

    mssd = math.inf
    if np.linalg.norm(t_e - t_g) < model.diameter:
        mssd = _min_over_symmetries(model, spatial)
    if K is None:
        return mssd, math.nan
    K = np.asarray(K, float)
    projected = _project(estimate, K)

    def image(symmetries, points):
        return np.linalg.norm(_project(truth(symmetries, points), K) - projected[points], axis=-1).max(-1)

    return mssd, _min_over_symmetries(model, image)
