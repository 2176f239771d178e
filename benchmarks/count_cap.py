"""A lead for the appearance split, measured, not a feature: AIR's found objects capped at the count
a whole-image network predicts (the supervised baseline trained on fresh prior samples, the same
samples the sleep phase draws, so no dataset labels), optionally only where that network is at
least this confident. Prints count and identity on the test split and tabletop-v1-appearance.

    python benchmarks/count_cap.py --air benchmarks/results/air_runs/fp28_air_train_seed{0,1,2}/checkpoint.pt
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inverse_graphics.air.train import load_checkpoint  # noqa: E402
from inverse_graphics.data.tabletop import Tabletop  # noqa: E402
from inverse_graphics.experiments.air_tabletop import APPEARANCE_SPLIT, appearance_split  # noqa: E402
from inverse_graphics.metrics.evaluate import evaluate_planar  # noqa: E402
from inverse_graphics.supervised import load_supervised  # noqa: E402
from inverse_graphics.training import render_pool  # noqa: E402

COUNTER = Path(__file__).resolve().parent / "results" / "supervised_runs" / "supervised_fresh28_train_seed0" / "checkpoint.pt"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--air", nargs="+", required=True, help="AIR checkpoints")
    p.add_argument("--counter", default=str(COUNTER), help="a supervised checkpoint trained with --fresh")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--confidence", type=float, nargs="+", default=[0.0, 0.9],
                   help="cap only where the counter's probability of its count is at least this")
    args = p.parse_args()
    torch.set_num_threads(2)
    data = Tabletop()
    images, truth = render_pool(data, "test", args.num, progress=False)
    splits = {"test": (images.float() / 255, truth), APPEARANCE_SPLIT: appearance_split(data, args.num)}
    counter, _ = load_supervised(args.counter)
    for path in args.air:
        model, _ = load_checkpoint(path, data)
        for name, (x, t) in splits.items():
            with torch.no_grad():
                found = model.objects(model.infer(x, greedy=True))
                count_prob = counter(x)["count_logits"].softmax(-1).max(-1)
            plain = evaluate_planar(found, t.planar(), data.catalog)
            line = f"{path} {name}: AIR count {plain['count_acc']:.3f}, identity {plain['identity_acc']:.3f}"
            for confidence in args.confidence:
                cap = torch.where(count_prob.values >= confidence, count_prob.indices, found.category.shape[1])
                present = found.category >= 0
                kept = present & (present.cumsum(1) <= cap[:, None])  # the first steps' objects
                capped = evaluate_planar(replace(found, category=torch.where(kept, found.category, -1)),
                                         t.planar(), data.catalog)
                line += (f" | capped where counter >= {confidence}: count {capped['count_acc']:.3f}, "
                         f"identity {capped['identity_acc']:.3f}")
            print(line, flush=True)
    x, t = splits["test"]
    with torch.no_grad():
        right = counter(x)["count_logits"].argmax(-1) == (t.planar().category >= 0).sum(1)
    print(f"counter alone on test: count {right.float().mean():.3f}")


if __name__ == "__main__":
    main()
