"""Where AIR's count goes wrong on the tabletop-v1 test split: the count confusion, how visible the
objects of the undercounted scenes are, how close their nearest two objects stand, what the
inhibition of return's width (AIRConfig.found_suppression_cells) and the presence threshold do at
inference, and, per undercounted scene, the step that stopped: its q(another object), where it
looked, where the found objects are; per overcounted scene, the step no object needs.

    python benchmarks/count_errors.py                       # the shipped weights, 1000 scenes
    python benchmarks/count_errors.py --model CKPT --num 300 --widths 1.5 1.0
    python benchmarks/count_errors.py --split val --num 500 --widths 1.5 --thresholds 0.5 0.25
    python benchmarks/count_errors.py --split val --num 500 --widths 1.5 --duplicate-px 0 2 3 4 5
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inverse_graphics.air.train import load_checkpoint  # noqa: E402
from inverse_graphics.data.tabletop import Tabletop  # noqa: E402
from inverse_graphics.experiments.air_tabletop import render_pool  # noqa: E402
from inverse_graphics.paths import SHIPPED_AIR  # noqa: E402
from inverse_graphics.rendering.visibility import object_visibility  # noqa: E402


def nearest_pair_px(truth, b: int) -> float:
    """Scene b's two nearest objects' centres apart in the image (px); inf with fewer than two."""
    uv, _ = truth.camera.project(truth.translation[b][truth.present[b]])
    return float((torch.cdist(uv, uv) + torch.eye(len(uv)) * 1e9).min()) if len(uv) > 1 else float("inf")


def stopping_step(steps, b: int, truth) -> dict:
    """Scene b, undercounted: the first step that said 'no more objects', its q(z_pres = 1), how far
    (px) it looked from the true object that no found object is nearest to, and how far the found
    object nearest that missed one stands from it and from the true object it was matched to."""
    found = [s for s in steps if s.z_pres[b] > 0.5]
    stop = steps[len(found)] if len(found) < len(steps) else steps[-1]
    uv, _ = truth.camera.project(truth.translation[b][truth.present[b]])
    centres = torch.stack([s.glimpse_center[b] for s in found]) if found else torch.empty(0, 2)
    d = torch.cdist(uv, centres) if found else torch.full((len(uv), 1), float("inf"))
    own = d.argmin(0)  # the true object each found one is nearest to
    missed = [n for n in range(len(uv)) if n not in own.tolist()] or [int(d.min(1).values.argmax())]
    m = missed[0]
    nearest = int(d[m].argmin())
    return {"pres_prob": float(stop.pres_prob[b]),
            "looked_from_missed_px": float((stop.glimpse_center[b] - uv[m]).norm()),
            "found_from_missed_px": float(d[m, nearest]), "found_from_own_px": float(d[own[nearest], nearest])}


def extra_step(steps, b: int, truth) -> dict:
    """Scene b, overcounted: the found step that no true object needs (the first whose nearest true
    object an earlier step already took, else the one farthest from any), its q(z_pres = 1), how
    far (px) it looked from the nearest true object, and whether an earlier step took that object."""
    found = [s for s in steps if s.z_pres[b] > 0.5]
    uv, _ = truth.camera.project(truth.translation[b][truth.present[b]])
    centres = torch.stack([s.glimpse_center[b] for s in found])
    if not len(uv):
        return {"pres_prob": float(found[0].pres_prob[b]), "from_object_px": float("inf"), "duplicate": False}
    d = torch.cdist(centres, uv)
    taken, extra, duplicate = set(), int(d.min(1).values.argmax()), False
    for f in range(len(found)):
        nearest = int(d[f].argmin())
        if nearest in taken:
            extra, duplicate = f, True
            break
        taken.add(nearest)
    return {"pres_prob": float(found[extra].pres_prob[b]), "from_object_px": float(d[extra].min()),
            "duplicate": duplicate}


def counted(model, x: torch.Tensor, true: torch.Tensor, label: str):
    """Greedy inference on images x (B, 3, ...) against the true counts (B,): prints count accuracy,
    undercounts and overcounts under `label`; returns the steps and the counts (B,)."""
    with torch.no_grad():
        steps = model.infer(x, greedy=True)
        pred = model.objects(steps).present.sum(1)
    print(f"{label}: count {float((pred == true).float().mean()):.3f}, undercounts {int((pred < true).sum())}, "
          f"overcounts {int((pred > true).sum())}", flush=True)
    return steps, pred


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(SHIPPED_AIR))
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--widths", type=float, nargs="+", default=[1.5, 1.0, 0.75, 0.5])
    p.add_argument("--split", default="test")
    p.add_argument("--thresholds", type=float, nargs="*", default=[],
                   help="also count with greedy presence thresholds (AIRConfig.presence_threshold) other than "
                        "the checkpoint's, at its trained suppression width")
    p.add_argument("--duplicate-px", type=float, nargs="*", default=[],
                   help="also count with these AIRConfig.duplicate_px (a step placing its object this near a "
                        "found one stops inference, or is dropped and the next goes on: duplicate_skip), at the "
                        "trained suppression width")
    args = p.parse_args()
    torch.set_num_threads(2)
    data = Tabletop()
    model, _ = load_checkpoint(args.model, data)
    images, truth = render_pool(data, args.split, args.num, progress=False)
    x, true = images.float() / 255, truth.present.sum(1)
    trained = model.guide.config.found_suppression_cells
    for width in args.widths:
        model.guide.config.found_suppression_cells = width
        label = f"suppression std {width} cells{' (trained)' if width == trained else ''}"
        steps, pred = counted(model, x, true, label)
        if width != trained:
            continue
        under = (pred < true).nonzero().flatten().tolist()
        visible = object_visibility(truth, data.catalog).visib_fract
        least = [float(visible[b][truth.present[b]].min()) for b in under]
        near = [nearest_pair_px(truth, b) for b in under]
        every = [nearest_pair_px(truth, b) for b in range(len(true)) if true[b] > 1]
        print("  undercounted scenes: least visible object's visible fraction", [round(v, 2) for v in least])
        print("  undercounted scenes: nearest two objects apart (px)", [round(d, 1) for d in near])
        print("  every scene of 2-3 objects: nearest two apart, 10/25/50% quantiles (px)",
              np.percentile(every, [10, 25, 50]).round(1).tolist())
        stops = [stopping_step(steps, b, truth) for b in under]
        print("  undercounted scenes: the step that stopped, its q(another object)",
              [round(s["pres_prob"], 3) for s in stops])
        print("  ... where it looked: px from the object no step found",
              [round(s["looked_from_missed_px"], 1) for s in stops])
        print("  ... the found object nearest the missed one: px from it, and from its own object",
              [(round(s["found_from_missed_px"], 1), round(s["found_from_own_px"], 1)) for s in stops])
        over = (pred > true).nonzero().flatten().tolist()
        extras = [extra_step(steps, b, truth) for b in over]
        print("  overcounted scenes: true count, nearest two objects apart (px)",
              [(int(true[b]), round(nearest_pair_px(truth, b), 1)) for b in over])
        print("  ... the step no object needs: its q(another object), px from the nearest object, "
              "whether an earlier step took that object",
              [(round(e["pres_prob"], 3), round(e["from_object_px"], 1), e["duplicate"]) for e in extras])
    model.guide.config.found_suppression_cells = trained
    threshold = model.guide.config.presence_threshold
    for value in args.thresholds:
        model.guide.config.presence_threshold = value
        counted(model, x, true, f"presence threshold {value}")
    model.guide.config.presence_threshold = threshold
    duplicate, skip = model.guide.config.duplicate_px, model.guide.config.duplicate_skip
    for value in args.duplicate_px:
        model.guide.config.duplicate_px = value
        for model.guide.config.duplicate_skip in (False, True):
            counted(model, x, true, f"duplicate_px {value}, {'skip' if model.guide.config.duplicate_skip else 'stop'}")
    model.guide.config.duplicate_px, model.guide.config.duplicate_skip = duplicate, skip


if __name__ == "__main__":
    main()
