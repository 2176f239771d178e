"""Black-box renderer benchmark: Open3D + finite differences against PyTorch3D's analytic gradients.

Measures, in one process so machine noise hits every method alike:
- renders per second of each renderer at 64x64 and 640x480;
- agreement of the two renderers (mask IoU) and of the gradients (cosine of
  central differences through Open3D against the analytic soft gradient);
- the cost of one gradient (renders and ms per scene) for central differences,
  SPSA and the analytic path;
- single-object pose recovery by gradient descent from perturbed starts with
  each gradient type (success: within 10 mm and 5 degrees, yaw symmetry-aware).
"""

from __future__ import annotations

import math
import time

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.tabletop import Tabletop
from ..files import atomic_write_json
from ..metrics import yaw_error_deg
from ..refine import RefineSettings, image_loss, refine
from ..rendering.likelihood import make_planar_renderer
from ..rendering.open3d_renderer import Open3DRenderer
from ..rendering.renderer import SceneRenderer
from ..scene import PlanarObjects, SceneBatch

GRADIENT_METHODS = {  # name -> (renderer name, options)
    "analytic": ("pytorch3d", {}),
    "central": ("open3d-fd", {"method": "central"}),
    "spsa": ("open3d-fd", {"method": "spsa", "samples": 4}),
}
SUCCESS_MM, SUCCESS_DEG = 10.0, 5.0
START_MM, START_DEG = (10.0, 25.0), 30.0  # start offset: 10-25 mm in a random direction, yaw +-30 deg


def _renders_per_second(data: Tabletop, image_size: tuple[int, int], repeats: int) -> dict:
    batch = data.scene_batch(data.sample("extrap-test", range(4)))  # 3 objects each
    batch.camera = data.camera.resized(image_size)
    renderers = {"pytorch3d_soft": SceneRenderer(data.catalog, mode="soft", gradients="none"),
                 "pytorch3d_hard": SceneRenderer(data.catalog, mode="hard", gradients="none"),
                 "open3d": Open3DRenderer(data.catalog)}
    times = {name: [] for name in renderers}
    for round_ in range(repeats + 1):
        for name, render in renderers.items():
            start = time.perf_counter()
            with torch.no_grad():
                render(batch)
            if round_:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    return {name: len(batch) / float(np.median(t)) for name, t in times.items()}


def _mask_iou(data: Tabletop, scenes: int = 32) -> float:
    batch = data.scene_batch(data.sample("test", range(scenes)))
    p3d = SceneRenderer(data.catalog, mode="hard", gradients="none")(batch).mask > 0
    o3d = Open3DRenderer(data.catalog)(batch).mask > 0
    present = batch.counts > 0
    iou = (p3d & o3d).flatten(1).sum(1) / (p3d | o3d).flatten(1).sum(1).clamp(min=1)
    return float(iou[present].float().mean())


def _single_objects(data: Tabletop, per_category: int, seed: int):
    """One object per scene, every category, with perturbed starts: (truth, start) dicts of (B, 1, ...)."""
    g = torch.Generator().manual_seed(seed)
    C = len(data.catalog)
    category = torch.arange(C).repeat_interleave(per_category)[:, None]
    B = len(category)
    position = (torch.rand(B, 1, 2, generator=g) - 0.5) * 0.12
    yaw = torch.rand(B, 1, generator=g) * 2 * math.pi
    color = torch.rand(B, 1, 3, generator=g) * 0.6 + 0.3
    angle = torch.rand(B, 1, generator=g) * 2 * math.pi
    radius = START_MM[0] + (START_MM[1] - START_MM[0]) * torch.rand(B, 1, generator=g)
    start_position = position + radius[..., None] / 1000 * torch.stack([angle.cos(), angle.sin()], -1)
    start_yaw = yaw + torch.deg2rad(torch.empty(B, 1).uniform_(-START_DEG, START_DEG, generator=g))
    return ({"category": category, "position": position, "yaw": yaw, "color": color},
            {"position": start_position, "yaw": start_yaw})


def _gradient_cosine(data: Tabletop) -> list[float]:
    """Per category: cosine between the analytic and the central-difference gradient of one loss."""
    analytic = make_planar_renderer("pytorch3d", data.catalog)
    central = make_planar_renderer("open3d-fd", data.catalog, method="central")
    cosines = []
    for c in range(len(data.catalog)):
        category = torch.tensor([[c]])
        position, yaw, color = torch.tensor([[[0.01, 0.02]]]), torch.tensor([[0.4]]), torch.tensor([[[0.8, 0.3, 0.2]]])
        with torch.no_grad():
            target = analytic(PlanarObjects(category, position + torch.tensor([0.012, -0.008]), yaw + 0.25,
                                            color * 0.9), data.camera)
        grads = []
        for renderer in (analytic, central):
            params = [t.clone().requires_grad_() for t in (position, yaw, color)]
            image_loss(renderer(PlanarObjects(category, *params), data.camera), target, 1.5).sum().backward()
            grads.append(torch.cat([p.grad.flatten() for p in params]))
        cosines.append(float(torch.nn.functional.cosine_similarity(*grads, dim=0)))
    return cosines


def _gradient_cost(data: Tabletop, repeats: int) -> dict:
    """ms and renders per scene for one gradient of a 3-object scene (pose and colour, 18 parameters)."""
    scenes = data.sample("extrap-test", range(4))
    target = data.render("extrap-test", range(4))[0].rgb
    renderers = {name: make_planar_renderer(r, data.catalog, **opts) for name, (r, opts) in GRADIENT_METHODS.items()}
    times = {name: [] for name in renderers}
    renders = {}
    for round_ in range(repeats + 1):
        for name, renderer in renderers.items():
            params = [t.clone().requires_grad_() for t in (scenes.position, scenes.yaw, scenes.color)]
            before = getattr(renderer, "scenes_rendered", 0)
            start = time.perf_counter()
            image_loss(renderer(PlanarObjects(scenes.category, *params), data.camera), target, 1.0).sum().backward()
            if round_:
                times[name].append((time.perf_counter() - start) * 1000 / len(target))
            renders[name] = (getattr(renderer, "scenes_rendered", before + len(target)) - before) / len(target)
    return {name: {"ms_per_gradient": float(np.median(times[name])), "renders_per_gradient": renders[name]}
            for name in renderers}


def _pose_recovery(data: Tabletop, per_category: int, steps: int, progress=None) -> dict:
    truth, start = _single_objects(data, per_category, seed=0)
    with torch.no_grad():
        target = Open3DRenderer(data.catalog)(SceneBatch.from_planar(
            truth["category"], truth["position"], truth["yaw"], truth["color"], data.catalog, data.camera,
            data.config.table)).rgb
    order = torch.tensor([c.yaw_symmetry_order() for c in data.catalog.categories])[truth["category"]]
    settings = RefineSettings(steps=steps, fit_color=False)
    result = {}
    for name, (renderer_name, options) in GRADIENT_METHODS.items():
        renderer = make_planar_renderer(renderer_name, data.catalog, **options)
        begin = time.perf_counter()
        refined = refine(renderer, target, PlanarObjects(truth["category"], start["position"], start["yaw"],
                                                         truth["color"]), data.camera, data.config.table, settings)
        seconds = time.perf_counter() - begin
        pos_mm = (refined.objects.position - truth["position"]).norm(dim=-1)[:, 0] * 1000
        yaw_deg = yaw_error_deg(refined.objects.yaw, truth["yaw"], order)[:, 0]
        success = (pos_mm <= SUCCESS_MM) & (yaw_deg <= SUCCESS_DEG)
        result[name] = {"success_rate": float(success.float().mean()),
                        "pos_err_mm_median": float(pos_mm.median()), "yaw_err_deg_median": float(yaw_deg.median()),
                        "seconds_per_fit": seconds / len(target), "trials": len(target),
                        "success_by_category": {c.name: float(success[truth["category"][:, 0] == i].float().mean())
                                                for i, c in enumerate(data.catalog.categories)}}
        if progress is not None:
            progress(name)
    start_mm = (start["position"] - truth["position"]).norm(dim=-1) * 1000
    start_deg = yaw_error_deg(start["yaw"], truth["yaw"], order)
    result["start"] = {"pos_err_mm_median": float(start_mm.median()), "yaw_err_deg_median": float(start_deg.median()),
                       "success_rate": float(((start_mm <= SUCCESS_MM) & (start_deg <= SUCCESS_DEG)).float().mean())}
    return result


def run_blackbox_benchmark(repeats: int = 3, per_category: int = 4, steps: int = 80, progress=None) -> dict:
    data = Tabletop()
    say = progress or (lambda stage: None)
    result = {"threads": torch.get_num_threads(), "renders_per_second": {}}
    for size in [(64, 64), (480, 640)]:
        result["renders_per_second"][f"{size[1]}x{size[0]}"] = _renders_per_second(data, size, repeats)
        say(f"renders/s {size[1]}x{size[0]}")
    result["mask_iou"] = _mask_iou(data)
    cosines = _gradient_cosine(data)
    result["central_cosine"] = float(np.mean(cosines))
    result["central_cosine_by_category"] = dict(zip([c.name for c in data.catalog.categories], cosines))
    say("gradient agreement")
    result["gradient_cost"] = _gradient_cost(data, repeats)
    say("gradient cost")
    result["pose_recovery"] = _pose_recovery(data, per_category, steps, say)
    result["success"] = {m: result["pose_recovery"][m]["success_rate"] for m in GRADIENT_METHODS}
    result["ms_per_gradient"] = {m: result["gradient_cost"][m]["ms_per_gradient"] for m in GRADIENT_METHODS}
    result["settings"] = {"success_mm": SUCCESS_MM, "success_deg": SUCCESS_DEG, "refine_steps": steps,
                          "start_offset_mm": list(START_MM), "start_offset_deg": START_DEG,
                          "fd": "supersample 2, steps 4 mm / 0.05 rad",
                          "spsa_samples": GRADIENT_METHODS["spsa"][1]["samples"]}
    return result


def measure_blackbox_gradients(out: str | Path, repeats: int = 3, per_category: int = 4, steps: int = 80) -> dict:
    """run_blackbox_benchmark with a progress bar per stage; the result is written to `out` (JSON)."""
    stages = tqdm(desc="bench-blackbox", total=7, unit="stage")

    def progress(stage):
        stages.set_postfix_str(stage)
        stages.update()

    result = run_blackbox_benchmark(repeats=repeats, per_category=per_category, steps=steps, progress=progress)
    stages.close()
    result["command"] = "python benchmarks/blackbox_grad.py"
    atomic_write_json(out, result)
    return result


def blackbox_summary(result: dict) -> str:
    lines = [f"renders/s at {size}: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
             for size, rates in result["renders_per_second"].items()]
    lines.append(f"mask IoU PyTorch3D vs Open3D: {result['mask_iou']:.4f}; "
                 f"central-difference vs analytic gradient cosine: {result['central_cosine']:.3f}")
    for name, cost in result["gradient_cost"].items():
        recovery = result["pose_recovery"][name]
        lines.append(f"  {name:8s} {cost['ms_per_gradient']:7.1f} ms/gradient ({cost['renders_per_gradient']:.0f} "
                     f"renders); pose recovery {recovery['success_rate']:.0%} (median "
                     f"{recovery['pos_err_mm_median']:.1f} mm, {recovery['yaw_err_deg_median']:.2f} deg, "
                     f"{recovery['seconds_per_fit']:.2f} s/fit)")
    lines.append(f"  starts: {result['pose_recovery']['start']['success_rate']:.0%} already within the success bounds")
    return "\n".join(lines)
