"""Where AIR's count goes wrong on the tabletop-v1 test split: the count confusion, how visible the
objects of the undercounted scenes are, how close their nearest two objects stand, and what the
inhibition of return's width (AIRConfig.found_suppression_cells) does at inference.

    python benchmarks/count_errors.py                       # the shipped weights, 1000 scenes
    python benchmarks/count_errors.py --model CKPT --num 300 --widths 1.5 1.0
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(SHIPPED_AIR))
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--widths", type=float, nargs="+", default=[1.5, 1.0, 0.75, 0.5])
    args = p.parse_args()
    torch.set_num_threads(2)
    data = Tabletop()
    model, _ = load_checkpoint(args.model, data)
    images, truth = render_pool(data, "test", args.num, progress=False)
    x, true = images.float() / 255, truth.present.sum(1)
    trained = model.guide.config.found_suppression_cells
    for width in args.widths:
        model.guide.config.found_suppression_cells = width
        with torch.no_grad():
            pred = model.objects(model.infer(x, greedy=True)).present.sum(1)
        print(f"suppression std {width} cells{' (trained)' if width == trained else ''}: count "
              f"{float((pred == true).float().mean()):.3f}, undercounts {int((pred < true).sum())}, "
              f"overcounts {int((pred > true).sum())}", flush=True)
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
    model.guide.config.found_suppression_cells = trained


if __name__ == "__main__":
    main()
