"""Pose metrics shared by every method (see the benchmark spec)."""

from __future__ import annotations

import math

import torch


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
