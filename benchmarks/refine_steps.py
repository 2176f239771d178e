"""How many render-and-compare steps AIR + refinement needs, chosen on validation scenes (the test
split stays unseen): the shipped guide's answers on tabletop-v1 val, refined with each number of
steps, and with q's second category tried for every object (not only where q doubts). Times are
ratios against 40 steps, measured in this run.

    python benchmarks/refine_steps.py            # 100 val scenes -> benchmarks/results/refine_steps.json
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inverse_graphics.air.train import load_checkpoint  # noqa: E402
from inverse_graphics.data.tabletop import Tabletop, TabletopConfig  # noqa: E402
from inverse_graphics.experiments.air_tabletop import render_pool  # noqa: E402
from inverse_graphics.files import atomic_write_json  # noqa: E402
from inverse_graphics.metrics import evaluate_planar  # noqa: E402
from inverse_graphics.optimise import OptimiseSettings, refine_with_second_guess  # noqa: E402
from inverse_graphics.paths import SHIPPED_AIR  # noqa: E402
from inverse_graphics.rendering.likelihood import make_planar_renderer  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "refine_steps.json"
KEYS = ("count_acc", "identity_acc", "pos_err_mm_median", "rot_err_deg_median", "adds_recall")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(SHIPPED_AIR))
    p.add_argument("--num", type=int, default=100)
    p.add_argument("--steps", type=int, nargs="+", default=[40, 25, 20, 15])
    args = p.parse_args()
    model, ckpt = load_checkpoint(args.model)
    data = Tabletop(TabletopConfig.from_fields(ckpt["data_config"]))
    images, truth = render_pool(data, "val", args.num, progress=False)
    images = images.float() / 255
    renderer = make_planar_renderer("pytorch3d", data.catalog)
    with torch.no_grad():
        steps = model.infer(images, greedy=True)
    air = model.objects(steps)
    identity = torch.stack([s.identity_logits.softmax(-1) for s in steps], 1)
    base = OptimiseSettings().refine
    runs = {f"{n} steps": dict(settings=replace(base, steps=n, blur_start_px=2.0)) for n in args.steps}
    runs[f"{args.steps[0]} steps, second category tried for every object"] = dict(
        settings=replace(base, steps=args.steps[0], blur_start_px=2.0), doubt=1.01)
    result = {"air": {k: evaluate_planar(air, truth.planar(), data.catalog, data.camera)[k] for k in KEYS}}
    seconds = {}
    for name, kwargs in runs.items():
        start = time.perf_counter()
        answer = refine_with_second_guess(renderer, images, air, identity, data.camera, data.config.table, **kwargs)
        seconds[name] = time.perf_counter() - start
        result[name] = {k: evaluate_planar(answer, truth.planar(), data.catalog, data.camera)[k] for k in KEYS}
    reference = f"{args.steps[0]} steps"
    for name in runs:
        result[name]["time_vs_" + reference.replace(" ", "_")] = seconds[name] / seconds[reference]
        print(name, {k: round(v, 4) for k, v in result[name].items()})
    result.update(split="val", scenes=args.num, model=Path(args.model).name,
                  command="python benchmarks/refine_steps.py" + (f" --num {args.num}" if args.num != 100 else ""))
    atomic_write_json(OUT, result)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
