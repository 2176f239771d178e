"""Using a trained AIR model: images -> Scenes (with posterior samples), JSON and overlay figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..scene import Scene, SceneBatch
from .model import AIR


@dataclass
class Inference:
    """One image's answer. scene: the guide's mode (presence > 0.5, most likely identity,
    mean pose and colour). samples: scenes drawn from the guide q(z | x).
    presence_prob, identity_prob: per guide step. glimpse_centers: (T, 2) pixels (u, v)."""

    scene: Scene
    samples: list[Scene] = field(default_factory=list)
    presence_prob: list[float] = field(default_factory=list)
    identity_prob: list[list[float]] = field(default_factory=list)
    glimpse_centers: np.ndarray | None = None


def _scenes(model: AIR, steps) -> list[Scene]:
    return model.objects(steps).to_batch(model.catalog, model.camera, model.table).to_scenes(model.catalog)


@torch.no_grad()
def infer(model: AIR, images: torch.Tensor, samples: int = 0, batch_size: int = 256) -> list[Inference]:
    """images (B, H, W, 3) in [0, 1] -> one Inference per image."""
    model.eval()
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or Inf")
    results = []
    for chunk in torch.split(images, batch_size):
        steps = model.infer(chunk, greedy=True)
        modes = _scenes(model, steps)
        drawn = [_scenes(model, model.infer(chunk)) for _ in range(samples)]
        presence = torch.stack([s.pres_prob for s in steps], 1)
        identity = torch.stack([s.identity_logits.softmax(-1) for s in steps], 1)
        centers = torch.stack([s.glimpse_center for s in steps], 1)
        for b, scene in enumerate(modes):
            results.append(Inference(scene, [d[b] for d in drawn], presence[b].tolist(), identity[b].tolist(),
                                     centers[b].numpy()))
    return results


def to_json(inference: Inference, name: str) -> dict:
    camera = inference.scene.camera
    objects = []
    for obj in inference.scene.objects:
        x, y, yaw = obj.planar
        cam_pose = torch.eye(4)
        cam_pose[:3, :3] = camera.R @ obj.pose[:3, :3]
        cam_pose[:3, 3] = camera.R @ obj.pose[:3, 3] + camera.t
        objects.append({"category": obj.category, "x_m": x, "y_m": y, "yaw_rad": yaw,
                        "color": [round(float(c), 4) for c in obj.color],
                        "pose_world": obj.pose.tolist(), "pose_camera": cam_pose.tolist()})
    return {"image": name, "count": len(objects), "objects": objects,
            "presence_prob": inference.presence_prob, "identity_prob": inference.identity_prob}


def overlay_figure(model: AIR, images: torch.Tensor, inferences: list[Inference], names: list[str], path: Path,
                   columns: int = 4) -> Path:
    """Per image: the input with the attention windows, and the re-render of the inferred scene."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..rendering.renderer import SceneRenderer
    from ..visualize import save_figure

    renderer = SceneRenderer(model.catalog, mode="hard", gradients="none")
    with torch.no_grad():
        rerender = renderer(SceneBatch.from_scenes([i.scene for i in inferences], model.catalog,
                                                   model.config.max_steps)).rgb
    n = len(inferences)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.2 * 2 * columns, 2.5 * rows), squeeze=False)
    half = model.config.glimpse_px / 2
    colors = plt.cm.tab10.colors
    for ax in axes.flat:
        ax.axis("off")
    for k, (inference, name) in enumerate(zip(inferences, names)):
        a, b = axes[k // columns, 2 * (k % columns)], axes[k // columns, 2 * (k % columns) + 1]
        a.imshow(images[k].numpy())
        for t, obj in enumerate(inference.scene.objects):
            u, v = inference.glimpse_centers[t]
            a.add_patch(Rectangle((u - half, v - half), 2 * half, 2 * half, fill=False, lw=1.2, color=colors[t]))
            a.text(u - half, v - half - 1, f"{t + 1}", color=colors[t], fontsize=7)
        a.set_title(Path(name).name, fontsize=7)
        b.imshow(rerender[k].numpy())
        b.set_title(f"{len(inference.scene.objects)}: " + ", ".join(o.category for o in inference.scene.objects),
                    fontsize=7)
    fig.suptitle("AIR: input with attention windows (step number) | re-render of the inferred scene", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
