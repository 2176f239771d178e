"""Objects' identities and 6-DoF poses in a robot camera frame: AIR proposes, render-and-compare decides.

Pipeline for one Frame (frames.py):
1. AIR on the frame downscaled to its model's resolution proposes where objects are: pixel
   centres. Its input is white-balanced so the table looks as the model's table does, and
   shows only the workspace; with depth, only what stands above the table in it (fit.air_input).
2. Per proposal, a window of the frame at 1 / `fine_scale` (1/4 by default, 160x120 for a
   640x480 frame) is fitted by render-and-compare with the window's own camera:
   every category at a grid of yaws (fewer for symmetric shapes: 2-fold, 4-fold,
   continuous) is scored with its best colour (closed form: the render is linear in
   the albedo); the best `keep` hypotheses are refined by Adam through the renderer
   (position, yaw, colour) and the lowest loss wins. The loss is a robust (Cauchy)
   sum over pixels of the colour residual and, with depth, the depth residual, so
   shadows, neighbours and clutter cost a bounded amount per pixel.
3. An object is kept if it explains its window better than the bare table by
   `min_gain` and lies in the workspace (fit.workspace). With depth, blobs of points
   standing above the table that no kept object covers are proposed and fitted in turn.
   Poses in the camera frame follow from the table frame.

Units: metres and radians; images (H, W, 3) in [0, 1]; depth (H, W) metres, 0 = none.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..assets import ObjectCatalog
from ..refine import RefineSettings, minimise_image_loss
from ..rendering.likelihood import gaussian_blur
from ..rendering.renderer import AMBIENT, DIFFUSE, LIGHT_DIRECTION, RenderSettings, SceneRenderer
from ..camera import Camera, pixel_to_table
from ..scene import OBJECT_HEIGHT, PlanarObjects, SceneBatch, Table
from .fit import air_input, workspace, workspace_mask
from .frames import Frame


@dataclass
class PoseSettings:
    fine_scale: int = 4  # render-and-compare at 1 / fine_scale of the frame's resolution
    window_px: int = 44  # side of each object's window at that resolution
    yaw_hypotheses: int = 8  # yaws tried per full turn (a k-fold shape needs 8 / k)
    keep: int = 2  # categories whose best-scoring hypothesis is refined, per object
    refine: RefineSettings = field(default_factory=lambda: RefineSettings(
        steps=10, position_lr=0.002, yaw_lr=0.05, color_lr=0.02, blur_start_px=1.5, blur_end_px=0.5))
    score_blur_px: float = 1.5
    rgb_std: float = 0.06  # per channel
    depth_std_m: float = 0.004
    outlier_scale: float = 3.0  # residuals (in stds) beyond this count little more (Cauchy)
    min_gain: float = 30.0  # how much better than the bare table (loss units) an object must explain its window
    presence_threshold: float = 0.5  # AIR's steps propose until one's presence falls below this
    border: float = 0.08  # objects centred this close (fraction of the frame) to its edge are clutter
    depth_proposals: bool = True  # look for objects AIR missed among points above the table
    min_height_m: float = 0.008  # a depth point this far above the table belongs to an object
    min_blob_px: int = 12  # at the fine resolution
    max_objects: int = 6
    categories: tuple[str, ...] | None = None  # the catalog names that may appear; None: all


@dataclass
class Detection:
    """category: name; pose_camera (4, 4) model-to-camera, metres; planar (x, y, yaw) on the table;
    color (3,); score in [0, 1]: the share of the window's difference from the bare table that the
    object explains x the category's share of the evidence among categories; source: which
    proposal found it, 'air' or 'depth' (a blob of points above the table)."""

    category: str
    obj_id: int
    pose_camera: torch.Tensor
    planar: tuple[float, float, float]
    color: tuple[float, float, float]
    score: float
    source: str = "air"

    def to_json(self) -> dict:
        x, y, yaw = self.planar
        return {"category": self.category, "obj_id": self.obj_id, "score": round(self.score, 4),
                "pose_camera": [[round(float(v), 6) for v in row] for row in self.pose_camera],
                "x_m": round(x, 5), "y_m": round(y, 5), "yaw_rad": round(yaw, 5),
                "color": [round(c, 4) for c in self.color], "source": self.source}


def area_downscale(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, C) -> (h, w, C) by area averaging."""
    return F.interpolate(image.permute(2, 0, 1)[None], size=size, mode="area")[0].permute(1, 2, 0)


def depth_downscale(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) metres, 0 = none -> (h, w): the mean of the valid readings per cell (0 if none)."""
    valid = (depth > 0).float()
    total = F.interpolate(torch.stack([depth * valid, valid])[None], size=size, mode="area")[0]
    return torch.where(total[1] > 0.2, total[0] / total[1].clamp(min=1e-6), 0.0)


def table_shading() -> float:
    """The renderer's shading of the table top (normal +z): rendered colour = albedo x this."""
    light = torch.tensor(LIGHT_DIRECTION)
    return AMBIENT + DIFFUSE * max(0.0, float(light[2] / light.norm()))


def white_balance(image: torch.Tensor, table_rgb: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) -> the same with per-channel gains that make its median colour (the table's,
    which fills most of a frame) equal table_rgb (3,)."""
    gain = table_rgb / image.flatten(0, 1).median(0).values.clamp(min=1e-3)
    return (image * gain).clamp(0, 1)


def table_points(depth: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(H, W) depth metres -> (H, W, 3) the points in the table frame (z: height above the
    table, m), NaN where there is no reading."""
    H, W = depth.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    world = camera.backproject(torch.stack([u, v], -1), depth)
    return torch.where((depth > 0)[..., None], world, float("nan"))


def heights_above_table(depth: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(H, W) depth metres -> (H, W) height of each point above the table (m), NaN where no reading."""
    return table_points(depth, camera)[..., 2]


def in_workspace(position: torch.Tensor, area: tuple[tuple[float, float], float]) -> bool:
    """Whether a table position (m) lies in the workspace area (centre, half extent; fit.workspace)
    with a 3 cm margin: elsewhere is clutter."""
    (cx, cy), e = area
    return abs(float(position[0]) - cx) < e + 0.03 and abs(float(position[1]) - cy) < e + 0.03


class FramePoseEstimator:
    """AIR proposals + render-and-compare on windows; see the module docstring.

    model: an AIR model (air.model.AIR) whose camera is the robot camera at AIR's
    resolution (robot.fit builds and trains one)."""

    def __init__(self, model, settings: PoseSettings | None = None):
        self.model = model.eval()
        self.catalog: ObjectCatalog = model.catalog
        self.settings = settings or PoseSettings()
        self.renderer = SceneRenderer(self.catalog, RenderSettings(mode="soft"))
        C = len(self.catalog)
        orders = [c.yaw_symmetry_order() for c in self.catalog.categories]
        # hypotheses: (category, yaw) pairs, yaws spread over each shape's symmetry period
        allowed = range(C)
        if self.settings.categories is not None:
            unknown = [n for n in self.settings.categories if n not in self.catalog.names]
            if unknown or not self.settings.categories:
                raise ValueError(f"unknown object names {unknown or '(none given)'}; the catalog has "
                                 f"{', '.join(self.catalog.names)}")
            allowed = [self.catalog.index_of(n) for n in self.settings.categories]
        hyp = []
        for c in allowed:
            k = orders[c]
            n = 1 if k == 0 else max(1, self.settings.yaw_hypotheses // k)
            period = 2 * math.pi / max(k, 1)
            hyp += [(c, i * period / n) for i in range(n)]
        self.hyp_category = torch.tensor([h[0] for h in hyp])
        self.hyp_yaw = torch.tensor([h[1] for h in hyp], dtype=torch.float32)
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports ~1 s of modules: now
        self._air_view = None  # the workspace and AIR's mask of it, for the first frame's camera

    # --- step 1: proposals ------------------------------------------------------------------
    @torch.no_grad()
    def propose(self, frame: Frame) -> list[torch.Tensor]:
        """Pixel centres (2,) (u, v), at the frame's resolution, where AIR attended to an object."""
        s = self.settings
        model = self.model
        h, w = model.camera.image_size
        H, W = frame.camera.image_size
        if self._air_view is None:
            area = workspace(frame.camera)
            self._air_view = (area, workspace_mask(model.camera, area))
        table_rgb = model.background()[0, :, h // 2, w // 2]
        small = air_input(frame, model.camera, table_rgb, *self._air_view, s.min_height_m)
        steps = model.infer(small[None], greedy=True)
        proposals = []
        for step in steps:
            if float(step.pres_prob[0]) < s.presence_threshold:
                break  # a greedy guide's later steps see 'no more objects'
            u, v = step.glimpse_center[0].tolist()
            centre = torch.tensor([(u + 0.5) * W / w - 0.5, (v + 0.5) * H / h - 0.5])
            if self.in_view(centre, (H, W)):
                proposals.append(centre)
        return proposals

    def unexplained_proposals(self, frame: Frame, fits: list[dict], fine: tuple, area: tuple) -> list[torch.Tensor]:
        """Blobs of depth points standing above the table, inside the workspace, that no fitted
        object covers: objects AIR missed (or merged with a neighbour)."""
        from scipy import ndimage

        s = self.settings
        fine_camera, _, fine_depth = fine
        h, w = fine_camera.image_size
        H, W = frame.camera.image_size
        above = heights_above_table(fine_depth, fine_camera) > s.min_height_m
        if fits:
            with torch.no_grad():
                out = self._render(torch.tensor([[f["category"] for f in fits]]),
                                   torch.stack([f["position"] for f in fits])[None],
                                   torch.tensor([[f["yaw"] for f in fits]]), torch.stack([f["color"] for f in fits])[None],
                                   fine_camera, self.model.table)
            above &= F.max_pool2d(out.mask[None], 5, 1, 2)[0, 0] < 0.5
        labels, count = ndimage.label(ndimage.binary_opening(above.numpy(), iterations=1))
        extra = []
        for k in range(1, count + 1):
            rows, cols = (labels == k).nonzero()
            if len(rows) < s.min_blob_px:
                continue
            centre = torch.tensor([(cols.mean() + 0.5) * W / w - 0.5, (rows.mean() + 0.5) * H / h - 0.5],
                                  dtype=torch.float32)
            if in_workspace(pixel_to_table(frame.camera, centre[None], OBJECT_HEIGHT)[0], area):
                extra.append(centre)
        return extra

    def in_view(self, uv: torch.Tensor, image_size: tuple[int, int]) -> bool:
        """Whether a pixel (u, v) lies away from the frame's border (where clutter is)."""
        H, W = image_size
        b = self.settings.border
        return b * W < float(uv[0]) < (1 - b) * W and b * H < float(uv[1]) < (1 - b) * H

    # --- step 2: render and compare ------------------------------------------------------------
    def _loss(self, out, target: torch.Tensor, target_depth: torch.Tensor | None, blur: float) -> torch.Tensor:
        """RenderOutput (B, h, w) vs the window -> (B,) robust loss."""
        s = self.settings
        c2 = s.outlier_scale ** 2
        r2 = ((gaussian_blur(out.rgb, blur) - gaussian_blur(target[None], blur)) / s.rgb_std) ** 2
        loss = (c2 * torch.log1p(r2 / c2)).sum((1, 2, 3))
        if target_depth is not None:
            valid = (target_depth > 0)[None] & (out.depth > 0)
            d2 = ((out.depth - target_depth[None]) / s.depth_std_m) ** 2
            loss = loss + torch.where(valid, c2 * torch.log1p(d2 / c2), 0.0).sum((1, 2))
        return loss

    def _window(self, frame: Frame, center: torch.Tensor, fine: tuple):
        """The window around a full-resolution pixel centre: its camera, rgb, depth, depth's points
        in the table frame (n, n, 3) (or None), table and the centre's table position."""
        s = self.settings
        fine_camera, fine_rgb, fine_depth = fine
        Hf, Wf = fine_camera.image_size
        n = s.window_px
        cu = (float(center[0]) + 0.5) / s.fine_scale - 0.5
        cv = (float(center[1]) + 0.5) / s.fine_scale - 0.5
        left = int(min(max(round(cu - n / 2), 0), Wf - n))
        top = int(min(max(round(cv - n / 2), 0), Hf - n))
        camera = fine_camera.cropped(top, left, (n, n))
        rgb = fine_rgb[top:top + n, left:left + n]
        depth = None if fine_depth is None else fine_depth[top:top + n, left:left + n]
        points = None if depth is None else table_points(depth, camera)
        if points is not None:
            table_pixels = rgb[points[..., 2].abs() < 0.004]
        else:
            table_pixels = torch.cat([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        if len(table_pixels) < 10:
            table_pixels = rgb.flatten(0, 1)
        albedo = (table_pixels.median(0).values / table_shading()).clamp(0, 1)
        position = pixel_to_table(camera, torch.tensor([[cu - left, cv - top]]), OBJECT_HEIGHT)[0]
        table = Table(size=(1.0, 1.0), color=tuple(albedo.tolist()), center=tuple(position.tolist()))
        return camera, rgb, depth, points, table, position

    def _render(self, category, position, yaw, color, camera, table):
        batch = SceneBatch.from_planar(category, position, yaw, color, self.catalog, camera, table)
        return self.renderer(batch)

    def fit_object(self, frame: Frame, center: torch.Tensor, fine: tuple) -> dict:
        """One proposal -> the best hypothesis (category, position, yaw, colour, loss, gain, probs)."""
        s = self.settings
        camera, rgb, depth, points, table, position = self._window(frame, center, fine)
        if points is not None:  # centre on the blob of points above the table nearest the proposal
            from scipy import ndimage

            labels, count = ndimage.label((points[..., 2] > s.min_height_m).numpy())
            if count:
                labels = torch.from_numpy(labels)
                distance = torch.where(labels > 0, (points[..., :2] - position).norm(dim=-1), float("inf"))
                blob = labels == labels.flatten()[distance.argmin()]
                if int(blob.sum()) > 10 and float(distance.min()) < 0.04:
                    position = points[blob][:, :2].mean(0)
        H = len(self.hyp_category)
        with torch.no_grad():
            bare = self._render(torch.full((1, 1), -1), position.expand(1, 1, 2), torch.zeros(1, 1),
                                torch.zeros(1, 1, 3), camera, table)
            bare_loss = float(self._loss(bare, rgb, depth, s.refine.blur_end_px)[0])
            white = self._render(self.hyp_category[:, None], position.expand(H, 1, 2), self.hyp_yaw[:, None],
                                 torch.ones(H, 1, 3), camera, table)
            # The render is linear in the albedo: rgb = (1 - m) bare + albedo * shaded, per channel.
            behind = (1 - white.mask[..., None]) * bare.rgb
            shaded = white.rgb - behind
            color = (((rgb[None] - behind) * shaded).sum((1, 2)) / (shaded ** 2).sum((1, 2)).clamp(min=1e-6)).clamp(0, 1)
            composed = replace(white, rgb=behind + color[:, None, None] * shaded)
            score = self._loss(composed, rgb, depth, s.score_blur_px)
        # the best yaw of each category, for the `keep` best categories
        per_category = torch.full((len(self.catalog),), float("inf")).scatter_reduce(
            0, self.hyp_category, score, "amin")
        best = torch.stack([torch.nonzero((self.hyp_category == c) & (score == per_category[c]))[0, 0]
                            for c in per_category.argsort()[: s.keep] if per_category[c].isfinite()])
        category = self.hyp_category[best][:, None]

        def objective(objects: PlanarObjects, blur: float) -> torch.Tensor:
            return self._loss(self.renderer(objects.to_batch(self.catalog, camera, table)), rgb, depth, blur)

        start = PlanarObjects(category, position.expand(len(best), 1, 2), self.hyp_yaw[best][:, None],
                              color[best][:, None])
        refined = minimise_image_loss(objective, start, s.refine)
        fitted = refined.objects
        k = int(refined.loss.argmin())
        loss = float(refined.loss[k])
        # the categories' evidence: each category's best score, as a softmax on a 5% scale of the loss
        per_category[int(category[k, 0])] = min(loss, float(per_category[int(category[k, 0])]))
        probs = torch.softmax(-(per_category - per_category.min()) / (0.05 * float(per_category.min()) + 1e-6), 0)
        return {"category": int(category[k, 0]), "position": fitted.position[k, 0], "yaw": float(fitted.yaw[k, 0]),
                "color": fitted.color[k, 0], "loss": loss, "gain": bare_loss - loss,
                "explained": max(0.0, bare_loss - loss) / max(bare_loss, 1e-6),
                "category_prob": float(probs[int(category[k, 0])])}

    def estimate(self, frame: Frame) -> tuple[list[Detection], dict]:
        """One frame -> detections, and timings (seconds) with the proposals: their count and
        AIR's pixel centres (u, v) in the frame."""
        s = self.settings
        t0 = time.perf_counter()
        proposals = self.propose(frame)
        t1 = time.perf_counter()
        H, W = frame.camera.image_size
        size = (H // s.fine_scale, W // s.fine_scale)
        fine = (frame.camera.resized(size), area_downscale(frame.rgb, size),
                None if frame.depth is None else depth_downscale(frame.depth, size))
        area = workspace(frame.camera)
        detections, fits = [], []

        def accept(proposals, source):
            for center in proposals:
                if len(fits) >= s.max_objects:
                    return
                fit = self.fit_object(frame, center, fine)
                if fit["gain"] < s.min_gain or not in_workspace(fit["position"], area):
                    continue
                if any(float((fit["position"] - f["position"]).norm()) < 0.02 for f in fits):
                    continue  # two proposals for one object
                fits.append(fit)
                detections.append(replace(self._detection(frame.camera, fit), source=source))

        accept(proposals, "air")
        count = len(proposals)
        if s.depth_proposals and fine[2] is not None and len(fits) < s.max_objects:
            extra = self.unexplained_proposals(frame, fits, fine, area)
            count += len(extra)
            accept(extra, "depth")
        t2 = time.perf_counter()
        return detections, {"proposal_s": t1 - t0, "refine_s": t2 - t1, "proposals": count,
                            "air_proposals_px": [[round(float(c), 1) for c in p] for p in proposals]}

    def _detection(self, camera: Camera, fit: dict) -> Detection:
        c = self.catalog[fit["category"]]
        batch = SceneBatch.from_planar(torch.tensor([[fit["category"]]]), fit["position"].view(1, 1, 2),
                                       torch.tensor([[fit["yaw"]]]), fit["color"].view(1, 1, 3), self.catalog, camera)
        R, t = batch.model_to_camera()
        pose = torch.eye(4)
        pose[:3, :3], pose[:3, 3] = R[0, 0], t[0, 0]
        x, y = fit["position"].tolist()
        return Detection(c.name, c.obj_id, pose, (x, y, fit["yaw"] % (2 * math.pi)),
                         tuple(fit["color"].tolist()), fit["explained"] * fit["category_prob"])


def overlay(frame: Frame, detections: list[Detection], catalog: ObjectCatalog, path) -> None:
    """The frame with each detection's model bounding box projected, and its category and score."""
    import numpy as np
    from PIL import Image, ImageDraw

    from ..files import atomic_write_png

    image = Image.fromarray((frame.rgb * 255).round().byte().numpy())
    draw = ImageDraw.Draw(image)
    edges = [(0, 1), (1, 3), (3, 2), (2, 0), (4, 5), (5, 7), (7, 6), (6, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
    palette = [(255, 80, 80), (80, 200, 255), (255, 220, 60), (120, 255, 120), (255, 120, 255), (255, 160, 40)]
    K = frame.camera.K
    for i, d in enumerate(detections):
        verts = catalog[catalog.index_of(d.category)].verts
        lo, hi = verts.min(0).values, verts.max(0).values
        corners = torch.stack([torch.where(torch.tensor([bool(k & 1), bool(k & 2), bool(k & 4)]), hi, lo)
                               for k in range(8)])
        cam = corners @ d.pose_camera[:3, :3].T + d.pose_camera[:3, 3]
        uv = (cam @ K.T)[:, :2] / cam[:, 2:3]
        color = palette[i % len(palette)]
        for a, b in edges:
            draw.line([tuple(uv[a].tolist()), tuple(uv[b].tolist())], fill=color, width=2)
        top = uv[:, 1].argmin()
        draw.text((float(uv[top, 0]), float(uv[top, 1]) - 12), f"{d.category} {d.score:.2f}", fill=color)
    atomic_write_png(path, np.asarray(image))


def run_poses(frames_dir, checkpoint, out, camera_path=None, settings: PoseSettings | None = None,
              write_overlays: bool = True, progress: bool = True, log=print) -> dict:
    """Every usable frame of a folder -> out/poses.json ({frame: {objects, seconds}}), out/poses_bop.csv
    (BOP results: scene_id 0, im_id = frame index) and out/overlay/<frame>.png. Frames already in
    poses.json are kept (a killed run resumes); unusable frames are listed under 'skipped'.
    Per frame, `seconds` is end to end: reading, proposing, fitting and writing."""
    import json
    from pathlib import Path

    from tqdm import tqdm

    from ..data.bop import BOP_RESULTS_HEADER, bop_result_line
    from ..files import atomic_write_bytes, atomic_write_json
    from .fit import frames_table_color, load_for_camera
    from .frames import frame_files, iter_frames

    out = Path(out)
    results_path = out / "poses.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"frames": {}, "skipped": {}}
    files, _ = frame_files(frames_dir)
    estimator = None
    skipped = results["skipped"]
    bar = tqdm(total=len(files), desc="poses", unit="frame", disable=not progress)
    start = time.perf_counter()
    frames = iter_frames(frames_dir, camera_path, on_problem=lambda p: skipped.__setitem__(p.name, p.reason))
    for frame in frames:
        if frame.name in results["frames"]:
            bar.update(1)
            start = time.perf_counter()
            continue
        if estimator is None:  # the model is built for the first frame's camera and table
            model, _ = load_for_camera(checkpoint, frame.camera, frames_table_color([frame]))
            estimator = FramePoseEstimator(model, settings)
            start = time.perf_counter()  # loading the model is not a frame's time
        detections, timing = estimator.estimate(frame)
        if write_overlays:
            overlay(frame, detections, estimator.catalog, out / "overlay" / f"{frame.name}.png")
        results["frames"][frame.name] = {"objects": [d.to_json() for d in detections], **timing}
        results["frames"][frame.name]["seconds"] = time.perf_counter() - start
        atomic_write_json(results_path, results)
        bar.update(1)
        start = time.perf_counter()  # the next frame's time starts with reading it
    bar.close()
    for name, reason in skipped.items():
        log(f"skipped frame {name}: {reason}")
    rows = [BOP_RESULTS_HEADER]
    for im_id, (name, entry) in enumerate(sorted(results["frames"].items())):
        for o in entry["objects"]:
            pose = o["pose_camera"]
            rows.append(bop_result_line(0, im_id, o["obj_id"], o["score"], [row[:3] for row in pose[:3]],
                                        [row[3] for row in pose[:3]], entry["seconds"]))
    atomic_write_bytes(out / "poses_bop.csv", ("\n".join(rows) + "\n").encode())
    atomic_write_json(results_path, results)
    return results


def detections_of(results: dict, names: list[str]) -> list[list[dict]]:
    """run_poses' results -> per named frame [{"category", "pose": (4, 4) float64}] (no entry: none),
    the form metrics.evaluate_poses takes."""
    return [[{"category": o["category"], "pose": torch.tensor(o["pose_camera"], dtype=torch.float64)}
             for o in results["frames"].get(n, {"objects": []})["objects"]] for n in names]
