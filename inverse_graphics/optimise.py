"""Per-image render-and-compare fitting: count, identity and pose by gradient descent through the renderer.

What a differentiable-renderer user writes today, without a learned proposal:
objects are added one at a time. For each new object every category, in each of its
resting poses, is tried from `starts` random positions (drawn where the image differs most from the current
render, a pixel's chance growing with its squared residual; random yaw; colour read
from the image there); each hypothesis, together with the objects already accepted, is fitted by
`refine.refine`, and the best is kept if it lowers the image loss by more than
`object_penalty`. Fitting stops when an object no longer pays for itself or at
`max_objects`. All hypotheses of a round are one batched render.

`refine_proposals` is the same optimiser started from another method's answer (count and
identities kept); `refine_with_second_guess` is AIR + refinement (air.infer.refine_answer): it also
tries q's second category where q doubts and the stopping step's proposal.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .data.bop import write_bop_results
from .data.images import load_images
from .data.tabletop import Tabletop
from .devices import resolve_device
from .files import atomic_write_json, prepare_output_folder
from .refine import RefineSettings, Refinement, fit_scores, image_loss, refine
from .rendering.likelihood import PlanarRenderer, gaussian_blur, make_planar_renderer
from .camera import Camera, pixel_to_table
from .scene import MEAN_SHADING, OBJECT_HEIGHT, PlanarObjects, Table


@dataclass
class OptimiseSettings:
    max_objects: int = 3
    starts: int = 2  # random positions per category for each new object
    object_penalty: float = 2.0  # image-loss decrease (blurred sum of squares) an object must bring
    refine: RefineSettings = field(default_factory=lambda: RefineSettings(
        steps=30, blur_start_px=6.0, blur_end_px=0.5, position_lr=0.004, yaw_lr=0.08))


@dataclass
class OptimisedScene:
    """One image's answer: the objects accepted (one scene, as many slots as objects) and the
    final image loss."""

    objects: PlanarObjects
    loss: float


def _color_at(image: torch.Tensor, camera: Camera, position: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) image, (K, 2) table positions m -> (K, 3) the image's colour there, unshaded."""
    points = torch.cat([position, torch.full_like(position[:, :1], OBJECT_HEIGHT)], -1)
    uv, _ = camera.project(points)
    H, W = image.shape[:2]
    u = uv[:, 0].round().long().clamp(0, W - 1)
    v = uv[:, 1].round().long().clamp(0, H - 1)
    return (image[v, u] / MEAN_SHADING).clamp(0.0, 1.0)


def _starts(image: torch.Tensor, rendered: torch.Tensor, camera: Camera, count: int,
            generator: torch.Generator | None) -> torch.Tensor:
    """(count, 2) table positions m under pixels drawn with probability proportional to the
    squared residual between image and rendered (both (H, W, 3)), blurred by 1 px."""
    residual = gaussian_blur((image - rendered)[None], 1.0)[0].pow(2).sum(-1)  # (H, W)
    # drawn on the CPU, where the generator is, whatever the image's device
    pixel = torch.multinomial(residual.flatten().cpu() + 1e-12, count, replacement=True,
                              generator=generator).to(image.device)
    W = image.shape[1]
    uv = torch.stack([pixel % W, pixel // W], -1).to(image.dtype)
    return pixel_to_table(camera, uv, OBJECT_HEIGHT)


def optimise_scene(renderer: PlanarRenderer, image: torch.Tensor, camera: Camera, table: Table, num_categories: int,
                   settings: OptimiseSettings | None = None, generator: torch.Generator | None = None) -> OptimisedScene:
    """Fits one image (H, W, 3) in [0, 1] from random starts; see the module's docstring."""
    s = settings or OptimiseSettings()
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ValueError("image has NaN or Inf values")
    C = num_categories
    device = image.device
    # the shapes a new object may take: every category in each of its resting poses (discrete, like identity)
    shapes = torch.tensor([(c, k) for c, count in enumerate(renderer.catalog.resting_counts()[:C])
                           for k in range(count)], device=device)
    accepted = PlanarObjects(torch.empty(1, 0, dtype=torch.long, device=device), image.new_empty(1, 0, 2),
                             image.new_empty(1, 0), image.new_empty(1, 0, 3),
                             rest=torch.empty(1, 0, dtype=torch.long, device=device))
    with torch.no_grad():
        current = renderer(PlanarObjects.empty(1, device=device), camera, table)
        best_loss = float(image_loss(current, image[None], s.refine.blur_end_px)[0])
    H = len(shapes) * s.starts  # hypotheses for the next object: every shape from each start
    for _ in range(s.max_objects):
        n = accepted.slots
        start = _starts(image, current[0], camera, s.starts, generator).repeat(len(shapes), 1)
        hypotheses = PlanarObjects(
            torch.cat([accepted.category.expand(H, n), shapes[:, 0].repeat_interleave(s.starts)[:, None]], 1),
            torch.cat([accepted.position.expand(H, n, 2), start[:, None]], 1),
            torch.cat([accepted.yaw.expand(H, n),
                       torch.rand(H, 1, generator=generator, device="cpu").to(device) * 2 * math.pi], 1),
            torch.cat([accepted.color.expand(H, n, 3), _color_at(image, camera, start)[:, None]], 1),
            rest=torch.cat([accepted.rest_index.expand(H, n), shapes[:, 1].repeat_interleave(s.starts)[:, None]], 1))
        refined = refine(renderer, image.expand(H, -1, -1, -1), hypotheses, camera, table, s.refine)
        h = int(refined.loss.argmin())
        if best_loss - float(refined.loss[h]) <= s.object_penalty:
            break
        best_loss = float(refined.loss[h])
        accepted = refined.objects.select(h)
        with torch.no_grad():
            current = renderer(accepted, camera, table)
    score = fit_scores(renderer, image[None], accepted, camera, table, s.refine.blur_end_px)
    return OptimisedScene(replace(accepted, score=score), best_loss)


def optimise(renderer: PlanarRenderer, images: torch.Tensor, camera: Camera, table: Table, num_categories: int,
             settings: OptimiseSettings | None = None, seed: int = 0, progress=None) -> PlanarObjects:
    """images (B, H, W, 3) -> the objects found in each, in N = settings.max_objects slots."""
    s = settings or OptimiseSettings()
    generator = torch.Generator().manual_seed(seed)
    answers = []
    for b in range(images.shape[0]):
        answers.append(optimise_scene(renderer, images[b], camera, table, num_categories, s, generator)
                       .objects.padded(s.max_objects))
        if progress is not None:
            progress(b + 1, images.shape[0])
    return PlanarObjects.cat(answers)


def _refine_in_chunks(renderer: PlanarRenderer, images: torch.Tensor, objects: PlanarObjects, camera: Camera,
                      table: Table, settings: RefineSettings, batch_size: int) -> Refinement:
    parts = [refine(renderer, images[chunk], objects.select(chunk), camera, table, settings)
             for chunk in torch.split(torch.arange(len(images), device=images.device), batch_size)]
    return Refinement(PlanarObjects.cat([p.objects for p in parts]), torch.cat([p.loss for p in parts]))


def refine_proposals(renderer: PlanarRenderer, images: torch.Tensor, proposals: PlanarObjects, camera: Camera,
                     table: Table, settings: RefineSettings | None = None, batch_size: int = 64) -> PlanarObjects:
    """Another method's answer for images (B, H, W, 3), refined through the renderer; identity
    and count kept."""
    s = settings or replace(OptimiseSettings().refine, steps=40, blur_start_px=2.0)
    refined = _refine_in_chunks(renderer, images, proposals, camera, table, s, batch_size).objects
    return replace(refined, score=fit_scores(renderer, images, refined, camera, table, s.blur_end_px, batch_size))


def refine_with_second_guess(renderer: PlanarRenderer, images: torch.Tensor, proposals: PlanarObjects,
                             identity_probs: torch.Tensor, camera: Camera, table: Table,
                             settings: RefineSettings | None = None, doubt: float = 0.9,
                             batch_size: int = 64, candidates: PlanarObjects | None = None,
                             object_penalty: float = OptimiseSettings.object_penalty,
                             one_pass: bool = True) -> PlanarObjects:
    """AIR + refinement: the answer refined through the renderer; each object whose most likely
    identity has probability below `doubt` (identity_probs (B, N, C), the guide's q) is also
    refined as q's second most likely category, and the fit with the lower image loss is kept.
    The second category is tried in its resting pose 0. (Trying the second category only where q
    doubts keeps the cost near one pass.)
    candidates: proposals (same slots) with further objects in slots proposals leaves empty (AIR's
    objects_with_candidate); a scene's are refined with its objects and kept where they lower the
    image loss by more than object_penalty, as the optimiser accepts an object. None: count is kept.
    one_pass: every alternative (a second category, a candidate) is a scene of its own, started from
    the proposals and refined in the same batch as the proposals themselves; each scene keeps its
    one best fit. False: the alternatives are refined after the proposals, from their fit, one pass
    per slot, each keeping what it improves (answers differ where a scene has two alternatives that
    both improve it, and by where the alternatives start). On 100 val scenes one pass took 0.96x the
    time, with the same count, identity and ADD-S (benchmarks/refine_settings.py --part batching)."""
    # 25 steps: on 100 validation scenes (benchmarks/refine_settings.py, shipped weights) 1.36 mm, 0.57 deg
    # and ADD-S 94.4% in 0.54x the time of 40 (1.34 mm, 0.51 deg, 95.0%: one object more); at 20 and
    # 15 steps yaw drifts to 0.80 and 0.95 deg.
    s = settings or replace(OptimiseSettings().refine, steps=25, blur_start_px=2.0)
    second = identity_probs.topk(2, dim=-1)
    if not one_pass:
        return _refine_in_passes(renderer, images, proposals, second, camera, table, s, doubt, batch_size,
                                 candidates, object_penalty)
    B = len(images)
    trials, scene, added = [proposals], [torch.arange(B, device=images.device)], [images.new_zeros(B)]
    doubtful = proposals.present & (second.values[..., 0] < doubt)
    for n in range(proposals.slots):
        rows = doubtful[:, n].nonzero()[:, 0]
        if len(rows):
            trials.append(_second_guess(proposals.select(rows), n, second.indices[rows, n, 1]))
            scene.append(rows)
            added.append(images.new_zeros(len(rows)))
    if candidates is not None:
        extra = candidates.present & ~proposals.present
        rows = extra.any(1).nonzero()[:, 0]
        if len(rows):
            trials.append(_with_candidates(proposals.select(rows), candidates.select(rows), extra[rows]))
            scene.append(rows)
            added.append(extra[rows].sum(1).to(images.dtype))
    scene = torch.cat(scene)
    fitted = _refine_in_chunks(renderer, images[scene], PlanarObjects.cat(trials), camera, table, s, batch_size)
    # An added object must pay for itself, as the optimiser accepts one; the proposals' own fit wins ties.
    cost = fitted.loss + object_penalty * torch.cat(added)
    best = torch.arange(B, device=images.device)
    for trial in range(B, len(scene)):
        if cost[trial] < cost[best[scene[trial]]]:
            best[scene[trial]] = trial
    objects = _put(proposals, torch.arange(B, device=images.device), fitted.objects.select(best))
    return replace(objects, score=fit_scores(renderer, images, objects, camera, table, s.blur_end_px, batch_size))


def _refine_in_passes(renderer: PlanarRenderer, images: torch.Tensor, proposals: PlanarObjects, second,
                      camera: Camera, table: Table, s: RefineSettings, doubt: float, batch_size: int,
                      candidates: PlanarObjects | None, object_penalty: float) -> PlanarObjects:
    """refine_with_second_guess(one_pass=False): the proposals first, then the candidates, then
    each slot's second category, each pass from the last one's fit."""
    best = _refine_in_chunks(renderer, images, proposals, camera, table, s, batch_size)
    objects, loss = best.objects, best.loss.clone()
    if candidates is not None:
        objects, loss = _add_candidates(renderer, images, objects, loss, candidates, camera, table, s,
                                        object_penalty, batch_size)
    doubtful = objects.present & (second.values[..., 0] < doubt)
    for n in range(proposals.slots):
        rows = doubtful[:, n].nonzero()[:, 0]
        if not len(rows):
            continue
        tried = _refine_in_chunks(renderer, images[rows], _second_guess(objects.select(rows), n,
                                                                          second.indices[rows, n, 1]),
                                  camera, table, s, batch_size)
        keep = tried.loss < loss[rows]
        better = rows[keep]
        if len(better):
            objects = _put(objects, better, tried.objects.select(keep.nonzero()[:, 0]))
            loss[better] = tried.loss[keep]
    return replace(objects, score=fit_scores(renderer, images, objects, camera, table, s.blur_end_px, batch_size))


_FIELDS = ("category", "position", "yaw", "color", "rest_index")  # what a refinement fits or keeps, per slot


def _second_guess(objects: PlanarObjects, n: int, category: torch.Tensor) -> PlanarObjects:
    """objects (R, N) with slot n's category replaced by category (R,), in its resting pose 0."""
    categories, rest = objects.category.clone(), objects.rest_index.clone()
    categories[:, n], rest[:, n] = category, 0
    return replace(objects, category=categories, rest=rest)


def _with_candidates(objects: PlanarObjects, candidates: PlanarObjects, fill: torch.Tensor) -> PlanarObjects:
    """objects (B, N) with candidates' objects in the slots fill (B, N) marks."""
    values = [torch.where(fill.view(*fill.shape, *[1] * (getattr(objects, f).dim() - 2)),
                          getattr(candidates, f), getattr(objects, f)) for f in _FIELDS]
    return PlanarObjects(*values[:4], rest=values[4])


def _add_candidates(renderer: PlanarRenderer, images: torch.Tensor, objects: PlanarObjects, loss: torch.Tensor,
                    candidates: PlanarObjects, camera: Camera, table: Table, settings: RefineSettings,
                    penalty: float, batch_size: int) -> tuple[PlanarObjects, torch.Tensor]:
    """Count revision: the scenes where candidates (B, N) holds objects that objects (B, N, refined)
    does not are refined with them added, and keep them where the image loss (B,) drops by more
    than penalty. Returns the objects and their losses."""
    extra = candidates.present & ~objects.present
    rows = extra.any(1).nonzero()[:, 0]
    if not len(rows):
        return objects, loss
    guess = _with_candidates(objects.select(rows), candidates.select(rows), extra[rows])
    tried = _refine_in_chunks(renderer, images[rows], guess, camera, table, settings, batch_size)
    keep = tried.loss < loss[rows] - penalty
    if keep.any():
        objects = _put(objects, rows[keep], tried.objects.select(keep.nonzero()[:, 0]))
        loss = loss.clone()
        loss[rows[keep]] = tried.loss[keep]
    return objects, loss


def _put(objects: PlanarObjects, rows: torch.Tensor, values: PlanarObjects) -> PlanarObjects:
    """objects with the scenes at rows replaced by values."""
    out = [getattr(objects, f).clone() for f in _FIELDS]
    for tensor, name in zip(out, _FIELDS):
        tensor[rows] = getattr(values, name)
    return PlanarObjects(*out[:4], rest=out[4])  # scores are recomputed for the final answer


def optimise_files(paths: list[str | Path], out: str | Path, data: Tabletop, renderer_name: str = "pytorch3d",
                   settings: OptimiseSettings | None = None, seed: int = 0, log=print,
                   device: str | torch.device | None = None) -> list[dict]:
    """Images (PNG/JPEG files or folders, at the tabletop camera's size) -> out/poses.json (one
    entry per image: objects with category, rest (resting-pose index), x_m, y_m, yaw_rad, colour;
    image loss; seconds) and
    out/optimise_images-test.csv (BOP results; im_id = the image's position in the list). device:
    where the fits run (devices.resolve_device)."""
    settings = settings or OptimiseSettings()
    device = resolve_device(device)
    out = prepare_output_folder(out)
    images, files = load_images(paths)
    if tuple(images.shape[1:3]) != tuple(data.camera.image_size):
        raise ValueError(f"images are {tuple(images.shape[1:3])} pixels; the tabletop camera expects "
                         f"{tuple(data.camera.image_size)} (see --image-size)")
    renderer = make_planar_renderer(renderer_name, data.catalog)
    generator = torch.Generator().manual_seed(seed)
    entries, answers, seconds = [], [], []
    for image, name in zip(images, files):
        start = time.perf_counter()
        answer = optimise_scene(renderer, image.to(device), data.camera, data.config.table, len(data.catalog),
                                settings, generator)
        answer = replace(answer, objects=answer.objects.to("cpu"))
        seconds.append(time.perf_counter() - start)
        answers.append(answer.objects.padded(max(1, settings.max_objects)))
        o = answer.objects
        objects = [{"category": data.catalog[int(c)].name, "rest": int(k), "x_m": float(p[0]), "y_m": float(p[1]),
                    "yaw_rad": float(y), "color": [float(v) for v in col], "score": round(float(score), 4)}
                   for c, k, p, y, col, score in zip(o.category[0], o.rest_index[0], o.position[0], o.yaw[0],
                                                     o.color[0], o.score[0])]
        entries.append({"image": str(name), "count": len(objects), "objects": objects, "image_loss": answer.loss,
                        "seconds": seconds[-1]})
        log(f"{Path(name).name}: {len(objects)} objects: " + ", ".join(e["category"] for e in objects)
            + f" ({seconds[-1]:.1f} s)")
    atomic_write_json(out / "poses.json", entries)
    batch = PlanarObjects.cat(answers).to_batch(data.catalog, data.camera, data.config.table)
    scores = PlanarObjects.cat(answers).score
    csv = write_bop_results(out / "optimise_images-test.csv", batch, list(range(len(answers))), data.catalog, seconds,
                            scores)
    log(f"wrote {out / 'poses.json'} and {csv} (BOP results; im_id = the image's position in the list)")
    return entries
