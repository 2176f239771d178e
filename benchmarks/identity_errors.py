"""Where AIR's identity goes wrong: identity accuracy by how far the guide placed each object
(validation scenes, greedy inference, each glimpse-repeat setting asked for), and, on the guide's
own prior samples, the sleep trace's identity with its glimpse at the jittered truth (as trained)
against where the step's first glimpse placed the object (as at inference).

    python benchmarks/identity_errors.py --models benchmarks/results/air_runs/fp28_air_train_seed{0,2}/checkpoint.pt
    python benchmarks/identity_errors.py --models CKPT --repeats 0 2 4 --num 500 --trace-batches 16
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inverse_graphics.air.sleep import SleepConfig, trace_log_q  # noqa: E402
from inverse_graphics.air.train import as_classes, load_checkpoint  # noqa: E402
from inverse_graphics.data.prior import prior_batches  # noqa: E402
from inverse_graphics.data.tabletop import Tabletop  # noqa: E402
from inverse_graphics.metrics.evaluate import evaluate_planar  # noqa: E402
from inverse_graphics.training import render_pool  # noqa: E402

BINS_MM = (0, 2, 4, 6, 10, np.inf)


def by_position_error(matches: list[dict]) -> str:
    """'[lo, hi) mm: identity accuracy (objects)' for each bin of the matched objects' position errors."""
    error = np.array([m["pos_err_mm"] for m in matches])
    right = np.array([m["true_category"] == m["pred_category"] for m in matches])
    parts = []
    for lo, hi in zip(BINS_MM[:-1], BINS_MM[1:]):
        inside = (error >= lo) & (error < hi)
        parts.append(f"[{lo}, {hi}) mm: {right[inside].mean() if inside.any() else float('nan'):.3f} ({int(inside.sum())})")
    return "; ".join(parts)


def trace_identity(model, data: Tabletop, sleep: SleepConfig, batches: int, batch_size: int = 64) -> dict[str, float]:
    """The sleep trace's identity accuracy on `batches` of the guide's own prior samples (forward only),
    its identity glimpse at the jittered truth and where the step's first glimpse placed the object."""
    sleep = replace(sleep, prior=replace(sleep.prior, workers=0))
    orders = torch.tensor(model.classes.yaw_orders)
    samples = prior_batches(data, batch_size, sleep.prior, seed=123)
    accuracy = {"at the jittered truth": 0.0, "where the first glimpse placed it": 0.0}
    for _ in range(batches):
        images, truth = next(samples)
        truth = as_classes(model, truth)
        for name, fraction in zip(accuracy, (0.0, 1.0)):
            torch.manual_seed(0)
            with torch.no_grad():
                _, info = trace_log_q(model.guide, images, model.background(), truth, orders,
                                      replace(sleep, own_glimpse_fraction=fraction))
            accuracy[name] += info["identity_acc"] / batches
    return accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, help="AIR checkpoints trained by the sleep phase")
    p.add_argument("--split", default="val")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--repeats", type=int, nargs="+", default=[0, 2], help="AIRConfig.glimpse_repeats to infer with")
    p.add_argument("--trace-batches", type=int, default=16, help="prior batches of 64 for the trace (0: skip)")
    args = p.parse_args()
    torch.set_num_threads(2)
    data = Tabletop()
    images, truth = render_pool(data, args.split, args.num, progress=False)
    x = images.float() / 255
    for path in args.models:
        for repeats in args.repeats:
            model, _ = load_checkpoint(path, data, glimpse_repeats=repeats)
            with torch.no_grad():
                predicted = model.objects(model.infer(x, greedy=True))
            r = evaluate_planar(predicted, truth.planar(), data.catalog)
            print(f"{path} repeats {repeats}: count {r['count_acc']:.3f}, identity {r['identity_acc']:.4f}, "
                  f"position {r['pos_err_mm_median']:.2f} mm, yaw {r['rot_err_deg_median']:.2f} deg; identity by "
                  f"position error: {by_position_error(r['matches'])}", flush=True)
        if args.trace_batches:
            model, ckpt = load_checkpoint(path, data)
            accuracy = trace_identity(model, data, SleepConfig.from_dict(ckpt["sleep_config"]), args.trace_batches)
            print(f"{path} sleep trace identity on {args.trace_batches * 64} of its own prior samples: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()), flush=True)


if __name__ == "__main__":
    main()
