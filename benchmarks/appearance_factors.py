"""Which of tabletop-v1-appearance's capture conditions costs AIR its count and identity: the same
scenes through robot.simulate.capture with nothing added (Open3D's own image), with one condition
of the appearance split at a time, with all of them and with all but one. The scenes are the
validation split's, drawn with another seed than the split's: what this finds may change the prior,
and the appearance split's test scenes stay unseen.

    python benchmarks/appearance_factors.py                  # the shipped weights, 300 val scenes
    python benchmarks/appearance_factors.py --model CKPT --num 100

Writes benchmarks/results/appearance_factors.json (count and identity accuracy per variant).
"""

import argparse
import sys
from dataclasses import fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inverse_graphics.air.train import evaluate, load_checkpoint  # noqa: E402
from inverse_graphics.data.tabletop import Tabletop  # noqa: E402
from inverse_graphics.experiments.air_tabletop import APPEARANCE_CONDITIONS, appearance_images  # noqa: E402
from inverse_graphics.files import atomic_write_json  # noqa: E402
from inverse_graphics.paths import SHIPPED_AIR  # noqa: E402
from inverse_graphics.robot.simulate import CaptureConditions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "appearance_factors.json"
SEED = 7  # apart from the appearance split's (0) and the wake pools' (run seed + 1)
TABLE_COLOR = "table_color"  # the split's table colour per scene (not a CaptureConditions field)


def factors() -> list[str]:
    """The fields where the appearance split's conditions differ from the ideal in the colour image
    (depth's are left out), and the table colour."""
    ideal = CaptureConditions.ideal()
    return [f.name for f in fields(CaptureConditions) if not f.name.startswith("depth")
            and getattr(ideal, f.name) != getattr(APPEARANCE_CONDITIONS, f.name)] + [TABLE_COLOR]


def variant(on: set[str]) -> tuple[CaptureConditions, bool]:
    """The ideal conditions with the factors in `on` taken from the appearance split."""
    changes = {name: getattr(APPEARANCE_CONDITIONS, name) for name in on if name != TABLE_COLOR}
    return replace(CaptureConditions.ideal(), **changes), TABLE_COLOR in on


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(SHIPPED_AIR))
    p.add_argument("--num", type=int, default=300)
    args = p.parse_args()
    data = Tabletop()
    model, _ = load_checkpoint(args.model, data)
    every = set(factors())
    variants = {"nothing added": set(), **{f"only {f}": {f} for f in sorted(every)}, "all (the split)": every,
                **{f"all but {f}": every - {f} for f in sorted(every)}}
    results = {}
    for name, on in tqdm(variants.items(), desc="appearance variants"):
        conditions, table_colors = variant(on)
        images, truth = appearance_images(data, "val", range(args.num), seed=SEED, conditions=conditions,
                                          table_colors=table_colors)
        with torch.no_grad():
            metrics = evaluate(model, images, truth)
        results[name] = {"count_acc": metrics["count_acc"], "identity_acc": metrics["identity_acc"]}
        tqdm.write(f"{name:32s} count {metrics['count_acc']:.3f}  identity {metrics['identity_acc']:.3f}")
    atomic_write_json(RESULTS, {"model": str(args.model), "split": "val", "seed": SEED, "scenes": args.num,
                                "factors": sorted(every), "variants": results})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
