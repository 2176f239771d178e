"""Pose metrics shared by every method, following the BOP toolkit's definitions.

- evaluate: each method's answer scored (identity-level figures and BOP's recalls);
- bop_recall: BOP19's targets, top-n selection by score, matching and recalls;
- pose_errors: ADD-S, MSSD and MSPD of one estimate over the dense evaluation mesh.
"""

from .evaluate import evaluate_planar, evaluate_poses, evaluation_models, yaw_error_deg

__all__ = ["evaluate_planar", "evaluate_poses", "evaluation_models", "yaw_error_deg"]
