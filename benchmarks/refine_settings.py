"""AIR + refinement's settings, chosen on validation scenes (the test split stays unseen): the
shipped guide's answers on tabletop-v1 val, refined

- `steps`: with each number of render-and-compare steps, and with q's second category tried for
  every object (not only where q doubts);
- `candidates`: with count revision, the proposal of the step that stopped added where q(another
  object) there was above each threshold, kept where it lowers the image loss by the optimiser's
  object penalty (none: AIR's count kept);
- `passes`: what one refinement pass (25 steps) costs over a few scenes against one over many (the
  second guesses and the candidate are each a pass over the few scenes they concern);
- `batching`: the second guesses and the candidate refined as scenes of their own in the proposals'
  pass (one_pass, the default) against a pass of their own after it, per slot; timed twice, in the
  order A B B A, and the mean taken, as the machine's speed drifts.

Times are ratios against the section's first variant, measured in this run.

    python benchmarks/refine_settings.py --part steps        # 100 val scenes
    python benchmarks/refine_settings.py --part candidates   # 300 val scenes
    python benchmarks/refine_settings.py --part passes       # 3 and 20 val scenes, 3 times each
    python benchmarks/refine_settings.py --part batching     # 300 val scenes
Each part writes its section of benchmarks/results/refine_settings.json.
"""

import argparse
import json
import statistics
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
from inverse_graphics.optimise import OptimiseSettings, refine_proposals, refine_with_second_guess  # noqa: E402
from inverse_graphics.paths import SHIPPED_AIR  # noqa: E402
from inverse_graphics.rendering.likelihood import make_planar_renderer  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "refine_settings.json"
KEYS = ("count_acc", "identity_acc", "pos_err_mm_median", "rot_err_deg_median", "adds_recall")
DEFAULT_NUM = {"steps": 100, "candidates": 300, "passes": 20, "batching": 300}


def variants(part: str, args, model, steps) -> dict[str, dict]:
    """Name -> keyword arguments of refine_with_second_guess, the first the reference."""
    base = OptimiseSettings().refine
    if part == "steps":
        runs = {f"{n} steps": dict(settings=replace(base, steps=n, blur_start_px=2.0)) for n in args.steps}
        runs[f"{args.steps[0]} steps, second category tried for every object"] = dict(
            settings=replace(base, steps=args.steps[0], blur_start_px=2.0), doubt=1.01)
        return runs
    if part == "batching":
        candidates = model.objects_with_candidate(steps, model.config.refine_candidate_prob)
        return {"one pass": dict(candidates=candidates, one_pass=True),
                "a pass per slot after the proposals' pass": dict(candidates=candidates, one_pass=False)}
    runs = {"AIR's count kept": {}}
    for threshold in args.thresholds:
        runs[f"candidate where q(another object) > {threshold}"] = dict(
            candidates=model.objects_with_candidate(steps, threshold))
    return runs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=tuple(DEFAULT_NUM), required=True)
    p.add_argument("--model", default=str(SHIPPED_AIR))
    p.add_argument("--num", type=int, default=None, help="val scenes (default: 100 for steps, 300 for candidates)")
    p.add_argument("--steps", type=int, nargs="+", default=[40, 25, 20, 15])
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.01, 0.001])
    args = p.parse_args()
    num = args.num or DEFAULT_NUM[args.part]
    model, ckpt = load_checkpoint(args.model)
    data = Tabletop(TabletopConfig.from_fields(ckpt["data_config"]))
    images, truth = render_pool(data, "val", num, progress=False)
    images = images.float() / 255
    renderer = make_planar_renderer("pytorch3d", data.catalog)
    with torch.no_grad():
        steps = model.infer(images, greedy=True)
    air = model.objects(steps)
    if args.part == "passes":
        return save(args, pass_costs(renderer, images, air, data))
    identity = torch.stack([s.identity_logits.softmax(-1) for s in steps], 1)
    section = {"air": {k: evaluate_planar(air, truth.planar(), data.catalog, data.camera)[k] for k in KEYS}}
    runs = variants(args.part, args, model, steps)
    seconds = {name: [] for name in runs}
    orders = [list(runs), list(runs)[::-1]] if args.part == "batching" else [list(runs)]
    for order in orders:
        for name in order:
            start = time.perf_counter()
            answer = refine_with_second_guess(renderer, images, air, identity, data.camera, data.config.table,
                                              **runs[name])
            seconds[name].append(time.perf_counter() - start)
            section[name] = {k: evaluate_planar(answer, truth.planar(), data.catalog, data.camera)[k] for k in KEYS}
    seconds = {name: statistics.mean(v) for name, v in seconds.items()}
    reference = next(iter(runs))
    for name in runs:
        section[name]["time_vs_first"] = seconds[name] / seconds[reference]
        section[name]["seconds_per_image"] = seconds[name] / num
        print(name, {k: round(v, 4) for k, v in section[name].items()})
    section.update(split="val", scenes=num, first=reference)
    save(args, section)


def pass_costs(renderer, images, air, data, repeats: int = 3) -> dict:
    """Seconds of one 25-step refinement pass over the first 3 scenes and over all, interleaved."""
    settings = replace(OptimiseSettings().refine, steps=25, blur_start_px=2.0)
    seconds = {3: [], len(images): []}
    for _ in range(repeats):
        for n in seconds:
            start = time.perf_counter()
            refine_proposals(renderer, images[:n], air.select(slice(0, n)), data.camera, data.config.table, settings)
            seconds[n].append(time.perf_counter() - start)
    few, many = (statistics.median(seconds[n]) for n in seconds)
    section = {f"seconds_{n}_scenes": statistics.median(v) for n, v in seconds.items()}
    section["few_over_many"] = few / many
    print(section)
    return {**section, "split": "val", "repeats": repeats}


def save(args, section: dict):
    section.update(model=Path(args.model).name, command=f"python benchmarks/refine_settings.py --part {args.part}"
                   + (f" --num {args.num}" if args.num else ""))
    result = json.loads(OUT.read_text()) if OUT.exists() else {}
    result[args.part] = section
    atomic_write_json(OUT, result)
    print(f"wrote the {args.part} section of {OUT}")


if __name__ == "__main__":
    main()
