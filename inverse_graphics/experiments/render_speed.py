"""Render-speed benchmark: stock PyTorch3D autograd against the fast gradient path.

Both paths render the same batch of 3-object tabletop scenes in soft mode with
the same loss, alternately in the same process, so machine noise hits both.
"""

from __future__ import annotations

import time

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.tabletop import Tabletop, TabletopConfig
from ..files import atomic_write_json
from ..scene import SceneBatch
from ..rendering.renderer import SceneRenderer


def _soft_loss(renderer: SceneRenderer, batch: SceneBatch, target: torch.Tensor) -> torch.Tensor:
    out = renderer(batch)
    return ((out.rgb - target) ** 2).mean() + out.mask.mean()


def run_render_benchmark(batch_size: int = 16, repeats: int = 5, image_size: int = 64, progress=None) -> dict:
    """Returns ms per image (forward, forward+backward) for both paths, the
    speedup (stock / fast, forward+backward) and the gradient relative error."""
    data = Tabletop(TabletopConfig(image_size=(image_size, image_size)))
    scenes = data.sample("extrap-test", range(batch_size))  # every extrap-test scene has 3 objects
    target = data.render("extrap-test", range(batch_size))[0].rgb
    # Start from a perturbed pose so the loss has real gradients.
    generator = torch.Generator().manual_seed(0)
    position = (scenes.position + 0.01 * torch.randn(scenes.position.shape, generator=generator)).requires_grad_()
    yaw = (scenes.yaw + 0.2 * torch.randn(scenes.yaw.shape, generator=generator)).requires_grad_()
    color = scenes.color.clone().requires_grad_()
    params = [position, yaw, color]

    def batch() -> SceneBatch:
        return SceneBatch.from_planar(scenes.category, position, yaw, color, data.catalog, data.camera,
                                      data.config.table)

    renderers = {name: SceneRenderer(data.catalog, mode="soft", gradients=name) for name in ("stock", "fast")}
    times = {(name, kind): [] for name in renderers for kind in ("forward", "forward_backward", "backward")}
    grads = {}
    steps = [(name, kind) for _ in range(repeats + 1) for name in renderers for kind in ("forward", "forward_backward")]
    for step, (name, kind) in enumerate(steps):
        start = time.perf_counter()
        loss = _soft_loss(renderers[name], batch(), target)
        forward_done = time.perf_counter()
        if kind == "forward_backward":
            grads[name] = torch.autograd.grad(loss, params)
        elapsed = time.perf_counter() - start
        if step >= 2 * len(renderers):  # the first round warms caches and threads
            times[(name, kind)].append(elapsed * 1000 / batch_size)
            if kind == "forward_backward":  # the backward of this very run, not a difference of medians
                times[(name, "backward")].append((time.perf_counter() - forward_done) * 1000 / batch_size)
        if progress is not None:
            progress(step + 1, len(steps))

    def median(name, kind):
        return float(np.median(times[(name, kind)]))

    stock_g = torch.cat([g.flatten() for g in grads["stock"]])
    fast_g = torch.cat([g.flatten() for g in grads["fast"]])
    result = {
        "batch_size": batch_size,
        "image_size": image_size,
        "objects_per_scene": 3,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "stock_forward_ms_per_image": median("stock", "forward"),
        "fast_forward_ms_per_image": median("fast", "forward"),
        "stock_ms_per_image": median("stock", "forward_backward"),
        "fast_ms_per_image": median("fast", "forward_backward"),
        "grad_rel_err": float((stock_g - fast_g).norm() / stock_g.norm()),
        "grad_cosine": float(torch.nn.functional.cosine_similarity(stock_g, fast_g, dim=0)),
    }
    result["speedup"] = result["stock_ms_per_image"] / result["fast_ms_per_image"]
    result["stock_backward_ms_per_image"] = median("stock", "backward")
    result["fast_backward_ms_per_image"] = median("fast", "backward")
    result["backward_speedup"] = result["stock_backward_ms_per_image"] / result["fast_backward_ms_per_image"]
    return result


def measure_render_speed(out: str | Path, batch_size: int = 16, repeats: int = 5, progress: bool = True) -> dict:
    """run_render_benchmark with a progress bar; the result is written to `out` (JSON)."""
    bar = tqdm(desc="bench-render", unit="render", disable=not progress)

    def tick(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    result = run_render_benchmark(batch_size=batch_size, repeats=repeats, progress=tick)
    bar.close()
    result["command"] = "inverse-graphics bench-render"
    atomic_write_json(out, result)
    return result


def render_speed_summary(result: dict) -> str:
    return "\n".join([
        f"3-object {result['image_size']}x{result['image_size']} soft renders, batch {result['batch_size']}:",
        f"  stock PyTorch3D autograd: {result['stock_forward_ms_per_image']:.2f} ms forward, "
        f"{result['stock_ms_per_image']:.2f} ms forward+backward per image",
        f"  fast gradient path:       {result['fast_forward_ms_per_image']:.2f} ms forward, "
        f"{result['fast_ms_per_image']:.2f} ms forward+backward per image",
        f"  speedup {result['speedup']:.1f}x (backward alone {result['backward_speedup']:.1f}x), "
        f"gradient relative error {result['grad_rel_err']:.2e}"])
