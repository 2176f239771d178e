"""Using a trained AIR model: images -> Scenes (with posterior samples), JSON and overlay figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import torch

from ..assets import ObjectCatalog
from ..data.images import load_images
from ..data.tabletop import Tabletop, TabletopConfig
from ..devices import resolve_device
from ..files import atomic_write_json, prepare_output_folder
from ..optimise import refine_with_second_guess
from ..rendering.likelihood import make_planar_renderer
from ..rendering.renderer import SceneRenderer
from ..scene import PlanarObjects, Scene, SceneBatch
from ..checkpoints import checkpoint_catalog, read_checkpoint
from ..visualize import save_figure
from .model import AIR
from .train import load_checkpoint

matplotlib.use("Agg")  # figures are written to files; no display is needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


@dataclass
class Inference:
    """One image's answer. scene: the guide's mode (presence > 0.5, most likely identity,
    mean pose and colour). scores: per object of the scene, q's presence probability times its
    identity's (what BOP ranks estimates by). samples: scenes drawn from the guide q(z | x).
    presence_prob, identity_prob: per guide step. glimpse_centers: (T, 2) pixels (u, v)."""

    scene: Scene
    scores: list[float] = field(default_factory=list)
    samples: list[Scene] = field(default_factory=list)
    presence_prob: list[float] = field(default_factory=list)
    identity_prob: list[list[float]] = field(default_factory=list)
    glimpse_centers: np.ndarray | None = None


def _scenes(model: AIR, objects: PlanarObjects) -> list[Scene]:
    return objects.to_batch(model.catalog, model.camera, model.table).to_scenes(model.catalog)


def refine_answer(model: AIR, images: torch.Tensor, steps: list, renderer) -> PlanarObjects:
    """AIR + refinement: the greedy answer of steps (model.infer(images, greedy=True)) for images
    (B, H, W, 3), refined by render-and-compare through renderer (a PlanarRenderer), trying q's two
    most likely categories where q doubts and the proposal of the step that stopped where q thought
    another object likely (optimise.refine_with_second_guess, AIRConfig.refine_candidate_prob)."""
    identity = torch.stack([s.identity_logits.softmax(-1) for s in steps], 1)
    candidates = model.objects_with_candidate(steps, model.config.refine_candidate_prob)
    return refine_with_second_guess(renderer, images, model.objects(steps), identity, model.camera, model.table,
                                    candidates=candidates)


def infer(model: AIR, images: torch.Tensor, samples: int = 0, batch_size: int = 256,
          refine: bool = False) -> list[Inference]:
    """images (B, H, W, 3) in [0, 1] -> one Inference per image. refine: the mode is refined by
    render-and-compare (refine_answer); the samples are not. The images move to the model's device
    a batch at a time; the answers come back to the CPU."""
    model.eval()
    device = model.generative.device
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or Inf")
    results = []
    renderer = make_planar_renderer("pytorch3d", model.catalog) if refine else None
    for chunk in torch.split(images, batch_size):
        chunk = chunk.to(device)
        with torch.no_grad():
            steps = model.infer(chunk, greedy=True)
            drawn = [_scenes(model, model.objects(model.infer(chunk)).to("cpu")) for _ in range(samples)]
        presence = torch.stack([s.pres_prob for s in steps], 1).cpu()
        identity = torch.stack([s.identity_logits.softmax(-1) for s in steps], 1)
        objects = refine_answer(model, chunk, steps, renderer) if refine else model.objects(steps)
        objects, identity = objects.to("cpu"), identity.cpu()
        modes = _scenes(model, objects)
        centers = torch.stack([s.glimpse_center for s in steps], 1).cpu()
        for b, scene in enumerate(modes):
            scores = objects.score[b][objects.present[b]].tolist()  # the scene keeps present slots in order
            results.append(Inference(scene, scores, [d[b] for d in drawn], presence[b].tolist(),
                                     identity[b].tolist(), centers[b].numpy()))
    return results


def to_json(inference: Inference, name: str) -> dict:
    camera = inference.scene.camera
    objects = []
    for obj, score in zip(inference.scene.objects, inference.scores, strict=True):
        x, y, yaw = obj.planar
        cam_pose = torch.eye(4)
        cam_pose[:3, :3] = camera.R @ obj.pose[:3, :3]
        cam_pose[:3, 3] = camera.R @ obj.pose[:3, 3] + camera.t
        objects.append({"category": obj.category, "score": round(float(score), 4), "x_m": x, "y_m": y, "yaw_rad": yaw,
                        "color": [round(float(c), 4) for c in obj.color],
                        "pose_world": obj.pose.tolist(), "pose_camera": cam_pose.tolist()})
    return {"image": name, "count": len(objects), "objects": objects,
            "presence_prob": inference.presence_prob, "identity_prob": inference.identity_prob}


def overlay_figure(model: AIR, images: torch.Tensor, inferences: list[Inference], names: list[str], path: Path,
                   columns: int = 4) -> Path:
    """Per image: the input with the attention windows, and the re-render of the inferred scene."""
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


def load_model(checkpoint: str | Path, models: str | Path | None = None,
               device: str | torch.device = "cpu") -> AIR:
    """The AIR model of a checkpoint, for the objects it was trained with. models: a BOP models
    folder that must hold those objects (same names, obj_ids and meshes: the catalog's fingerprint);
    others are an error saying what to train. None: the objects the checkpoint records."""
    if models is None:
        return load_checkpoint(checkpoint, device=device)[0]
    ckpt = read_checkpoint(checkpoint, "AIR")
    if ckpt.get("catalog") is None:  # recorded before catalogs were: trained with the shipped objects
        ckpt = {**ckpt, "catalog": ObjectCatalog.load().record()}
    catalog = checkpoint_catalog(ckpt, checkpoint, ObjectCatalog.load(models))
    data = Tabletop(TabletopConfig.from_fields(ckpt["data_config"]), catalog)
    return load_checkpoint(checkpoint, data, device=device)[0]


def infer_files(paths: list[str | Path], checkpoint: str | Path, out: str | Path, samples: int = 0,
                overlay_max: int = 16, refine: bool = False, log=print,
                device: str | torch.device | None = None, models: str | Path | None = None) -> list[dict]:
    """Images (PNG/JPEG files or folders, at the model's image size) -> out/poses.json (per image:
    objects with category, x_m, y_m, yaw_rad, colour, world and camera poses; presence and
    identity probabilities; `samples` posterior samples) and out/overlay.png (the first overlay_max).
    device: where the model runs (devices.resolve_device). models: the objects' BOP models folder,
    checked against the checkpoint's (load_model); None: the ones it records."""
    device = resolve_device(device)
    out = prepare_output_folder(out)
    model = load_model(checkpoint, models, device)
    images, files = load_images(paths)
    results = infer(model, images, samples=samples, refine=refine)
    payload = [to_json(r, str(f)) for r, f in zip(results, files)]
    for entry, r in zip(payload, results):
        entry["samples"] = [[{"category": o.category, "planar": list(o.planar)} for o in s.objects]
                            for s in r.samples]
    atomic_write_json(out / "poses.json", payload)
    shown = min(len(files), overlay_max)
    figure = overlay_figure(model, images[:shown], results[:shown], [str(f) for f in files[:shown]],
                            out / "overlay.png")
    for entry in payload[:8]:
        log(f"{Path(entry['image']).name}: {entry['count']} objects: " + ", ".join(
            f"{o['category']} at ({o['x_m'] * 1000:.0f}, {o['y_m'] * 1000:.0f}) mm" for o in entry["objects"]))
    log(f"wrote {out / 'poses.json'} ({len(files)} images) and {figure}")
    return payload
