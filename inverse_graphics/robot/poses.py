"""Objects' identities and 6-DoF poses in a robot camera frame: AIR proposes, render-and-compare decides.

Pipeline for one Frame (frames.py), with what its steps share (view.FrameView) built once:
1. AIR on the frame downscaled to its model's resolution proposes where objects are: pixel
   centres. Its input is white-balanced so the table looks as the model's table does, and
   shows only the workspace; with depth, only what stands above the table in it (view.air_input).
2. Per proposal, a window of the frame (window.py) at 1 / `fine_scale` (1/4 by default, 160x120 for a
   640x480 frame) is fitted by render-and-compare with the window's own camera:
   every category in each of its resting poses (a shape) at a grid of yaws (fewer for
   symmetric shapes: 2-fold, 4-fold, continuous), placed with the middle of its top on the
   proposal's blob of points (top_centre), is scored with its best colour (closed
   form: the render is linear in the albedo; the objects are rendered over the window's bare
   table, rendered once); the best hypothesis of each of the `keep`
   best shapes is refined by Adam through the renderer (position, yaw, colour; the
   resting pose is discrete and stays) and the lowest loss wins. The loss is a robust (Cauchy)
   sum over pixels of the colour residual and, with depth, the depth residual, so
   shadows, neighbours and clutter cost a bounded amount per pixel.
3. An object is kept if it explains its window better than the bare table by
   `min_gain` and lies in the workspace (view.Workspace); of two within 2 cm (two proposals for
   one object) the one with the higher score stays. With depth, blobs of points standing above
   the table that no kept object covers are proposed and fitted in turn (window.standing_blobs:
   cut where neighbouring points jump in space, so an object touching clutter in the image
   keeps a blob, and a centre, of its own); without depth, blobs of pixels in the workspace whose
   chromaticity is not the table's (window.colour_blobs: objects are coloured, shadows are not).
   Poses in the camera frame follow from the table frame.
A folder of frames is run by pipeline.run_poses.

Units: metres and radians; images (H, W, 3) in [0, 1]; depth (H, W) metres, 0 = none.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..assets import ObjectCatalog
from ..camera import Camera, pixel_to_table
from ..refine import RefineSettings, minimise_image_loss
from ..rendering.likelihood import gaussian_blur
from ..rendering.renderer import RenderOutput, RenderSettings, SceneRenderer
from ..scene import OBJECT_HEIGHT, PlanarObjects, Table
from .detection import Detection, Hypothesis, one_scene, top_centre
from .frames import Frame
from .view import FrameView, table_points
from .window import FineFrame, blob_centre, colour_blobs, fine_frame, standing_blobs, window_around, window_on


@dataclass
class PoseSettings:
    fine_scale: int = 4  # render-and-compare at 1 / fine_scale of the frame's resolution
    window_px: int = 44  # side of each object's window at that resolution
    yaw_hypotheses: int = 16  # yaws tried per full turn (a k-fold shape needs 16 / k)
    keep: int = 2  # shapes (category, resting pose) whose best-scoring hypothesis is refined, per object
    refine: RefineSettings = field(default_factory=lambda: RefineSettings(
        steps=6, position_lr=0.003, yaw_lr=0.075, color_lr=0.02, blur_start_px=1.5, blur_end_px=0.5))
    score_blur_px: float = 1.5
    rgb_std: float = 0.06  # per channel
    depth_std_m: float = 0.004
    outlier_scale: float = 3.0  # residuals (in stds) beyond this count little more (Cauchy)
    min_gain: float = 30.0  # how much better than the bare table (loss units) an object must explain its window
    presence_threshold: float = 0.5  # AIR's steps propose until one's presence falls below this
    border: float = 0.08  # objects centred this close (fraction of the frame) to its edge are clutter
    depth_proposals: bool = True  # look for objects AIR missed among points above the table
    min_height_m: float = 0.008  # a depth point this far above the table belongs to an object
    colour_proposals: bool = True  # without depth: look for them among pixels not of the table's chromaticity
    min_chroma: float = 0.05  # chromaticity (rgb / (r + g + b)) this far from the table's is an object's
    min_blob_px: int = 12  # at the fine resolution
    max_objects: int = 6
    categories: tuple[str, ...] | None = None  # the catalog names that may appear; None: all


class FramePoseEstimator:
    """AIR proposals + render-and-compare on windows; see the module docstring.

    model: an AIR model (air.model.AIR) whose camera is the robot camera at AIR's
    resolution (view.load_for_camera builds one; adapt.adapt_to_frames trains one).
    catalog: the objects that may appear, whose hypotheses render-and-compare weighs (default
    the model's own). AIR only says where to look, so a catalog it was never trained on works."""

    def __init__(self, model, settings: PoseSettings | None = None, catalog: ObjectCatalog | None = None):
        self.model = model.eval()
        self.catalog: ObjectCatalog = catalog or model.catalog
        self.settings = settings or PoseSettings()
        # the table is rendered once per window and composited behind (SceneRenderer's behind=), so
        # it takes no fragment slot: 5 leave the objects as many as the default 6 did with it
        self.renderer = SceneRenderer(self.catalog, RenderSettings(mode="soft", faces_per_pixel=5))
        allowed = range(len(self.catalog))
        if self.settings.categories is not None:
            unknown = [n for n in self.settings.categories if n not in self.catalog.names]
            if unknown or not self.settings.categories:
                raise ValueError(f"unknown object names {unknown or '(none given)'}; the catalog has "
                                 f"{', '.join(self.catalog.names)}")
            allowed = [self.catalog.index_of(n) for n in self.settings.categories]
        # shapes: (category, resting pose); hypotheses: (shape, yaw), yaws spread over the shape's
        # symmetry period about the vertical
        shapes, hypotheses = [], []
        for c in allowed:
            for r in range(len(self.catalog[c].resting_poses)):
                k = self.catalog[c].yaw_symmetry_order(r)
                n = 1 if k == 0 else max(1, self.settings.yaw_hypotheses // k)
                period = 2 * math.pi / max(k, 1)
                hypotheses += [(len(shapes), i * period / n) for i in range(n)]
                shapes.append((c, r))
        # the frame and its windows are read on the CPU; AIR and the fits run on the model's device
        self.device = model.generative.device
        self.shape_category = torch.tensor([c for c, _ in shapes], device=self.device)
        self.hyp_shape = torch.tensor([h[0] for h in hypotheses], device=self.device)
        self.hyp_category = self.shape_category[self.hyp_shape]
        self.hyp_rest = torch.tensor([shapes[h[0]][1] for h in hypotheses], device=self.device)
        self.hyp_yaw = torch.tensor([h[1] for h in hypotheses], dtype=torch.float32, device=self.device)
        # where each hypothesis' origin lies from the middle of its top (what the proposal's blob
        # of points centres on): an L-shaped block's is 8 mm off its origin, a bar's is on it
        top = torch.stack([top_centre(self.catalog[c], r) for c, r in shapes]).to(self.device)[self.hyp_shape]
        cos, sin = self.hyp_yaw.cos(), self.hyp_yaw.sin()
        self.hyp_offset = torch.stack([cos * top[:, 0] - sin * top[:, 1], sin * top[:, 0] + cos * top[:, 1]], -1)
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports ~1 s of modules: now

    def view(self, frame: Frame) -> FrameView:
        """What the frame's steps share: its workspace, AIR's view of it, the model's table colour."""
        return FrameView.of(frame, self.model)

    # --- step 1: proposals ------------------------------------------------------------------
    @torch.no_grad()
    def propose(self, view: FrameView) -> list[torch.Tensor]:
        """Pixel centres (2,) (u, v), at the frame's resolution, where AIR attended to an object."""
        s = self.settings
        h, w = view.air_camera.image_size
        H, W = view.frame.camera.image_size
        steps = self.model.infer(view.air_input(s.min_height_m)[None].to(self.device), greedy=True)
        proposals = []
        for step in steps:
            if float(step.pres_prob[0]) < s.presence_threshold:
                break  # a greedy guide's later steps see 'no more objects'
            u, v = step.glimpse_center[0].tolist()
            centre = torch.tensor([(u + 0.5) * W / w - 0.5, (v + 0.5) * H / h - 0.5], device="cpu")
            if self.in_view(centre, (H, W)):
                proposals.append(centre)
        return proposals

    def unexplained_proposals(self, view: FrameView, fine: FineFrame,
                              accepted: list[Hypothesis]) -> list[torch.Tensor]:
        """Blobs of depth points standing above the table (without depth, of pixels not of the
        table's chromaticity) inside the workspace, that no accepted object covers: objects AIR
        missed (or merged with a neighbour). Pixel centres (2,) (u, v) at the frame's resolution."""
        s = self.settings
        h, w = fine.camera.image_size
        H, W = view.frame.camera.image_size
        covered = None
        if accepted:
            with torch.no_grad():
                out = self._render(one_scene(accepted).to(self.device), fine.camera, self.model.table)
            covered = F.max_pool2d(out.mask[None], 5, 1, 2)[0, 0].cpu() >= 0.5
        if fine.depth is not None:
            labels, count = standing_blobs(table_points(fine.depth, fine.camera), s.min_height_m, open_iterations=1,
                                           exclude=covered)
        else:
            labels, count = colour_blobs(fine.rgb, view.workspace.mask(fine.camera), s.min_chroma, exclude=covered)
        extra = []
        for k in range(1, count + 1):
            rows, cols = (labels == k).nonzero()
            if len(rows) < s.min_blob_px:
                continue
            centre = torch.tensor([(cols.mean() + 0.5) * W / w - 0.5, (rows.mean() + 0.5) * H / h - 0.5],
                                  dtype=torch.float32, device="cpu")
            if view.workspace.contains(pixel_to_table(view.frame.camera, centre[None], OBJECT_HEIGHT)[0]):
                extra.append(centre)
        return extra

    def in_view(self, uv: torch.Tensor, image_size: tuple[int, int]) -> bool:
        """Whether a pixel (u, v) lies away from the frame's border (where clutter is)."""
        H, W = image_size
        b = self.settings.border
        return b * W < float(uv[0]) < (1 - b) * W and b * H < float(uv[1]) < (1 - b) * H

    # --- step 2: render and compare ------------------------------------------------------------
    def _loss(self, out, target: torch.Tensor, target_depth: torch.Tensor | None, blur: float) -> torch.Tensor:
        """RenderOutput (B, h, w) vs windows (B or 1, h, w, 3) and their depth (B or 1, h, w) or
        None -> (B,) robust loss."""
        s = self.settings
        c2 = s.outlier_scale ** 2
        r2 = (gaussian_blur(out.rgb - target, blur) / s.rgb_std) ** 2  # blur is linear: blur the difference
        loss = (c2 * torch.log1p(r2 / c2)).sum((1, 2, 3))
        if target_depth is not None:
            valid = (target_depth > 0) & (out.depth > 0)
            d2 = ((out.depth - target_depth) / s.depth_std_m) ** 2
            loss = loss + torch.where(valid, c2 * torch.log1p(d2 / c2), 0.0).sum((1, 2))
        return loss

    def _render(self, objects: PlanarObjects, camera: Camera, table: Table, behind=None, crop_offset=None):
        """behind, crop_offset: as SceneRenderer.forward takes them."""
        return self.renderer(objects.to_batch(self.catalog, camera, table), behind, crop_offset)

    def best_hypothesis(self, fine: FineFrame, center: torch.Tensor) -> Hypothesis:
        """One proposal, a full-resolution pixel centre (2,) (u, v) -> its best hypothesis."""
        return self.best_hypotheses(fine, [center])[0]

    def best_hypotheses(self, fine: FineFrame, centers: list[torch.Tensor]) -> list[Hypothesis]:
        """Proposals, full-resolution pixel centres (2,) (u, v) -> each one's best hypothesis. Each
        is fitted in its own window; the windows render as one batch (the first window's camera,
        the others' crops offset from it), so that a frame's proposals cost one render per step."""
        s = self.settings
        if not centers:
            return []
        windows, positions = [], []
        for center in centers:
            window = window_around(fine, center, s.fine_scale, s.window_px)
            # centre on the blob of points above the table nearest the proposal
            positions.append(window.position if window.points is None else blob_centre(window, s.min_height_m))
            windows.append(window_on(window, self.device))
        P, K = len(windows), len(self.hyp_category)
        camera = windows[0].camera
        crop = torch.stack([camera.K[:2, 2] - w.camera.K[:2, 2] for w in windows]).float().to(self.device)  # (P, 2)
        rgb = torch.stack([w.rgb for w in windows])  # (P, n, n, 3)
        depth = None if windows[0].depth is None else torch.stack([w.depth for w in windows])
        with torch.no_grad():
            bares = [self._render(PlanarObjects.empty(1, device=self.device), w.camera, w.table) for w in windows]
        fields = ("rgb", "mask", "depth", "instance")
        bare = RenderOutput(*(torch.cat([getattr(b, f) for b in bares]) for f in fields))
        bare_loss = self._loss(bare, rgb, depth, s.refine.blur_end_px).tolist()

        def batch_of(owner: torch.Tensor):
            """The windows' stacks for scenes owned by proposals `owner` (M,)."""
            return (RenderOutput(*(getattr(bare, f)[owner] for f in fields)),
                    crop[owner], rgb[owner], None if depth is None else depth[owner])

        # every (category, resting pose, yaw) hypothesis, with the middle of its top on the blob,
        # scored with its best colour
        owner = torch.arange(P, device=self.device).repeat_interleave(K)
        position = (torch.stack(positions).to(self.device)[:, None] - self.hyp_offset).flatten(0, 1)  # (P K, 2)
        behind, offset, target, target_depth = batch_of(owner)
        with torch.no_grad():
            white = self._render(PlanarObjects(self.hyp_category.repeat(P)[:, None], position[:, None],
                                               self.hyp_yaw.repeat(P)[:, None], position.new_ones(P * K, 1, 3),
                                               rest=self.hyp_rest.repeat(P)[:, None]),
                                 camera, windows[0].table, behind, offset)
            # The render is linear in the albedo: rgb = (1 - m) bare + albedo * shaded, per channel.
            under = (1 - white.mask[..., None]) * behind.rgb
            shaded = white.rgb - under
            color = (((target - under) * shaded).sum((1, 2)) / (shaded ** 2).sum((1, 2)).clamp(min=1e-6)).clamp(0, 1)
            composed = replace(white, rgb=under + color[:, None, None] * shaded)
            scores = self._loss(composed, target, target_depth, s.score_blur_px).view(P, K)

        # per proposal, the best yaw of each shape (category, resting pose), for the `keep` best shapes
        starts, per_category = [], []
        for p in range(P):
            score = scores[p]
            per_shape = score.new_full((len(self.shape_category),), float("inf")).scatter_reduce(
                0, self.hyp_shape, score, "amin")
            starts += [(p, p * K + int(torch.nonzero((self.hyp_shape == k) & (score == per_shape[k]))[0, 0]))
                       for k in per_shape.argsort()[: s.keep] if per_shape[k].isfinite()]
            per_category.append(score.new_full((len(self.catalog),), float("inf")).scatter_reduce(
                0, self.shape_category, per_shape, "amin"))
        owner = torch.tensor([p for p, _ in starts], device=self.device)
        best = torch.tensor([h for _, h in starts], device=self.device)
        behind, offset, target, target_depth = batch_of(owner)

        def objective(objects: PlanarObjects, blur: float) -> torch.Tensor:
            return self._loss(self._render(objects, camera, windows[0].table, behind, offset), target, target_depth,
                              blur)

        category = self.hyp_category.repeat(P)[best][:, None]
        start = PlanarObjects(category, position[best][:, None], self.hyp_yaw.repeat(P)[best][:, None],
                              color[best][:, None], rest=self.hyp_rest.repeat(P)[best][:, None])
        refined = minimise_image_loss(objective, start, s.refine)  # the scenes are independent
        hypotheses = []
        for p in range(P):
            mine = torch.nonzero(owner == p)[:, 0]
            k = int(mine[refined.loss[mine].argmin()])
            loss = float(refined.loss[k])
            winner = int(category[k, 0])
            # the categories' evidence: each category's best score, as a softmax on a 5% scale of the loss
            evidence = per_category[p]
            evidence[winner] = min(loss, float(evidence[winner]))
            probs = torch.softmax(-(evidence - evidence.min()) / (0.05 * float(evidence.min()) + 1e-6), 0)
            hypotheses.append(Hypothesis(refined.objects.select(k).to("cpu"), loss, bare_loss[p] - loss,
                                         max(0.0, bare_loss[p] - loss) / max(bare_loss[p], 1e-6),
                                         float(probs[winner])))
        return hypotheses

    def estimate(self, frame: Frame) -> tuple[list[Detection], dict]:
        """One frame -> detections, and timings (seconds) with the proposals: their count, AIR's
        pixel centres (u, v) in the frame, and the rejected ones with why (u, v, reason)."""
        s = self.settings
        t0 = time.perf_counter()
        view = self.view(frame)
        proposals = self.propose(view)
        t1 = time.perf_counter()
        fine = fine_frame(frame, s.fine_scale)
        detections, accepted, centers, rejected = [], [], [], []

        def reject(center, reason):
            rejected.append([round(float(center[0]), 1), round(float(center[1]), 1), reason])

        def accept(proposals, source):
            for center, hypothesis in zip(proposals, self.best_hypotheses(fine, proposals)):
                if len(accepted) >= s.max_objects:
                    return
                reason = ("explains too little" if hypothesis.gain < s.min_gain
                          else "outside the workspace" if not view.workspace.contains(hypothesis.position)
                          else None)
                # two proposals for one object: the better explanation stays, whichever came first
                near = [i for i, a in enumerate(accepted) if float((hypothesis.position - a.position).norm()) < 0.02]
                if reason is None and any(accepted[i].score >= hypothesis.score for i in near):
                    reason = "duplicate"
                if reason is not None:
                    reject(center, reason)
                    continue
                for i in reversed(near):
                    reject(centers.pop(i), "duplicate")
                    del accepted[i], detections[i]
                accepted.append(hypothesis)
                centers.append(center)
                detections.append(replace(self._detection(frame.camera, hypothesis), source=source))

        accept(proposals, "air")
        count = len(proposals)
        if (s.depth_proposals if fine.depth is not None else s.colour_proposals) and len(accepted) < s.max_objects:
            extra = self.unexplained_proposals(view, fine, accepted)
            count += len(extra)
            accept(extra, "depth" if fine.depth is not None else "colour")
        t2 = time.perf_counter()
        return detections, {"proposal_s": t1 - t0, "refine_s": t2 - t1, "proposals": count,
                            "air_proposals_px": [[round(float(c), 1) for c in p] for p in proposals],
                            "rejected_px": rejected}

    def _detection(self, camera: Camera, hypothesis: Hypothesis) -> Detection:
        """A hypothesis -> its Detection, the pose in `camera`'s frame (the frame's, full resolution)."""
        objects = hypothesis.objects
        c = self.catalog[int(objects.category[0, 0])]
        R, t = objects.to_batch(self.catalog, camera).model_to_camera()
        pose = torch.eye(4)
        pose[:3, :3], pose[:3, 3] = R[0, 0], t[0, 0]
        x, y = hypothesis.position.tolist()
        yaw = float(objects.yaw[0, 0])
        return Detection(c.name, c.obj_id, pose, (x, y, yaw % (2 * math.pi)), tuple(objects.color[0, 0].tolist()),
                         hypothesis.score, rest=int(objects.rest_index[0, 0]))
