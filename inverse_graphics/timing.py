"""Inference time per image, batched and single, measured the same way for every method."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch


def time_inference(predict: Callable[[torch.Tensor], object], images: torch.Tensor, repeats: int = 3,
                   batch_size: int = 250, singles: int = 50) -> dict:
    """predict(images (b, H, W, 3)) is run over all images in batches of batch_size (median of
    repeats) and on singles images one at a time: ms per image for each, and images per second."""
    with torch.no_grad():
        predict(images[:8])  # warm-up
        batched = []
        for _ in range(repeats):
            start = time.perf_counter()
            for chunk in torch.split(images, batch_size):
                predict(chunk)
            batched.append((time.perf_counter() - start) * 1000 / len(images))
        single = []
        for k in range(min(singles, len(images))):
            start = time.perf_counter()
            predict(images[k:k + 1])
            single.append((time.perf_counter() - start) * 1000)
    return {"infer_ms_per_image": float(np.median(batched)), "infer_ms_single_image": float(np.median(single)),
            "images_per_second_batched": 1000 / float(np.median(batched))}
