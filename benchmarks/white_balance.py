"""What balancing images to the table (AIRConfig.balance_to_table) does at inference: count,
identity and position with it and without, on validation scenes, clean and through the appearance
split's capture conditions (seeded apart from tabletop-v1-appearance, which is made of test scenes),
so the choice is made without the test split.

    python benchmarks/white_balance.py --models benchmarks/results/air_runs/fp28_air_train_seed{0,1,2}/checkpoint.pt
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inverse_graphics.air.train import load_checkpoint  # noqa: E402
from inverse_graphics.data.tabletop import Tabletop  # noqa: E402
from inverse_graphics.experiments.air_tabletop import appearance_images  # noqa: E402
from inverse_graphics.metrics.evaluate import evaluate_planar  # noqa: E402
from inverse_graphics.training import render_pool  # noqa: E402

VAL_APPEARANCE_SEED = 7  # tabletop-v1-appearance uses seed 0 on test scenes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, help="AIR checkpoints")
    p.add_argument("--num", type=int, default=300, help="validation scenes")
    args = p.parse_args()
    torch.set_num_threads(2)
    data = Tabletop()
    clean, truth = render_pool(data, "val", args.num, progress=False)
    splits = {"val": (clean.float() / 255, truth),
              "val through the appearance capture": appearance_images(data, "val", range(args.num),
                                                                      VAL_APPEARANCE_SEED)}
    print(f"# python benchmarks/white_balance.py --models {' '.join(args.models)} --num {args.num}")
    for path in args.models:
        model, _ = load_checkpoint(path, data)
        model.eval()
        for name, (images, t) in splits.items():
            line = f"{path} {name}:"
            for balance in (False, True):
                model.config = replace(model.config, balance_to_table=balance)
                with torch.no_grad():
                    found = model.objects(model.infer(images, greedy=True))
                r = evaluate_planar(found, t.planar(), data.catalog)
                line += (f" | balance_to_table={balance}: count {r['count_acc']:.3f}, identity "
                         f"{r['identity_acc']:.3f}, position {r['pos_err_mm_median']:.2f} mm")
            print(line, flush=True)


if __name__ == "__main__":
    main()
