"""AIR on tabletop-v1: train (or resume, or load) several seeds and DAIR, evaluate on the test split.

    python benchmarks/air_tabletop.py train --seed 0 --minutes 60      # one run (resumes if present)
    python benchmarks/air_tabletop.py train --seed 0 --dair --split extrap-train --max-steps 4
    python benchmarks/air_tabletop.py train --seed 0 --iterations 400 --tag cmp-reinforce-global \
        --identity-signal global                                        # a gradient-estimator comparison run
    python benchmarks/air_tabletop.py evaluate                          # every finished run -> JSON
    python benchmarks/air_tabletop.py train-sleep --seed 0 --minutes 25  # a sleep-phase run (air/sleep.py)
    python benchmarks/air_tabletop.py evaluate-sleep                    # sleep runs -> results/air_sleep.json

`evaluate` writes benchmarks/results/air_tabletop.json: per-seed test metrics
(benchmark spec), the headline figures of the seed with the best validation count
accuracy, the mean over seeds, inference speed, and DAIR's count accuracy on
extrap-test (exactly 3 objects) when a DAIR run trained on extrap-train exists.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from inverse_graphics.data.tabletop import Tabletop  # noqa: E402
from inverse_graphics.experiments.air_tabletop import (APPEARANCE_SPLIT, HEADLINE, appearance_split,  # noqa: E402
                                                       evaluate_refinement,
                                                       evaluate_run, evaluate_untrained,
                                                       train_run, train_sleep_run)
from inverse_graphics.files import atomic_write_json  # noqa: E402
from inverse_graphics.paths import SHIPPED_AIR  # noqa: E402

RUNS = ROOT / "results" / "air_runs"
OUT = ROOT / "results" / "air_tabletop.json"


def parse_overrides(pairs: list[str]) -> dict:
    """['key=value', ...] -> {key: value parsed as JSON where it parses, else the string}."""
    import json

    from inverse_graphics.air.config import AIRConfig

    fields = AIRConfig.__dataclass_fields__
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_train(args):
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = train_run(RUNS, args.seed, args.minutes, args.iterations, args.dair, args.split, args.max_steps,
                       args.count_estimator, args.identity_signal, args.tag, overrides=parse_overrides(args.set))
    print(result)


def cmd_train_sleep(args):
    import torch

    torch.set_num_threads(args.threads)  # the prior's renderer runs in a second process
    print(train_sleep_run(RUNS, args.seed, args.minutes, args.iterations, tag=args.tag))


def cmd_evaluate_sleep(args):
    runs = sorted(p for p in RUNS.glob("sleep*_air_train_seed*") if (p / "checkpoint.pt").exists())
    if not runs:
        raise SystemExit(f"no sleep-phase runs in {RUNS}; run train-sleep first")
    import torch

    torch.set_num_threads(2)
    print(f"making {APPEARANCE_SPLIT} ({args.num} scenes) ...", flush=True)
    shifted_scenes = appearance_split(Tabletop(), args.num)  # every sleep run and the shipped model use this data
    per_seed = {}
    for p in runs:
        print(f"evaluating {p.name} on {args.num} test scenes and {APPEARANCE_SPLIT} ...", flush=True)
        per_seed[p.name] = evaluate_run(p, "test", args.num)
        shifted = evaluate_run(p, APPEARANCE_SPLIT, args.num, shifted_scenes)
        per_seed[p.name]["appearance"] = {k: shifted[k] for k in (*HEADLINE, "count_confusion")}
        print(f"AIR + refinement vs per-image optimisation on {args.refine_num} test scenes ...", flush=True)
        per_seed[p.name]["air_refine"] = evaluate_refinement(p, args.refine_num)
    shipped = evaluate_run(SHIPPED_AIR, APPEARANCE_SPLIT, args.num, shifted_scenes) \
        if SHIPPED_AIR.is_file() else None
    result = {"method": "AIR (no labels), sleep phase: guide trained on the renderer's own prior samples",
              "test_scenes": args.num, "per_seed": per_seed,
              "shipped_elbo_air_on_appearance": {k: shipped[k] for k in HEADLINE} if shipped else None,
              "mean_over_seeds": {k: float(np.mean([r[k] for r in per_seed.values()])) for k in HEADLINE},
              "command": "python benchmarks/air_tabletop.py evaluate-sleep"}
    out = ROOT / "results" / "air_sleep.json"
    atomic_write_json(out, result)
    for name, m in per_seed.items():
        print(name, {k: round(m[k], 4) for k in (*HEADLINE, "images_per_second_batched", "train_minutes",
                                                  "iterations")})
    print(f"wrote {out}")


def cmd_evaluate(args):
    runs = sorted(p for p in RUNS.iterdir() if (p / "checkpoint.pt").exists()) if RUNS.exists() else []
    air = [p for p in runs if p.name.startswith("air_train_")]
    if not air:
        raise SystemExit(f"no AIR runs in {RUNS}; train some first (see --help)")
    per_seed = {}
    for p in air:
        print(f"evaluating {p.name} on {args.num} test scenes ...", flush=True)
        per_seed[p.name] = evaluate_run(p, "test", args.num)
    best = max(per_seed, key=lambda k: per_seed[k]["val_count_acc"] or 0)
    result = {"method": "AIR (no labels), ELBO through the PyTorch3D soft renderer",
              "test_scenes": args.num, "selected_run": best, "selected_by": "validation count accuracy",
              **{k: per_seed[best][k] for k in HEADLINE},
              "infer_ms_per_image": per_seed[best]["infer_ms_per_image"],
              "infer_ms_single_image": per_seed[best]["infer_ms_single_image"],
              "images_per_second_batched": per_seed[best]["images_per_second_batched"],
              "train_minutes": per_seed[best]["train_minutes"],
              "mean_over_seeds": {k: float(np.mean([r[k] for r in per_seed.values()])) for k in HEADLINE},
              "seeds_converged": sum(r["count_acc"] >= args.converged for r in per_seed.values()),
              "converged_means": f"test count accuracy at least {args.converged}",
              "per_seed": per_seed}
    for p in runs:
        if p.name.startswith("dair_extrap-train_") or p.name.startswith("air_extrap-train_"):
            print(f"evaluating {p.name} on extrap-test ...", flush=True)
            result.setdefault("extrapolation", {})[p.name] = evaluate_run(p, "extrap-test", args.num)
    for p in runs:
        if p.name.startswith("cmp-"):
            print(f"evaluating {p.name} (estimator comparison) on {args.num} test scenes ...", flush=True)
            m = evaluate_run(p, "test", args.num)
            result.setdefault("estimator_comparison", {})[p.name] = {
                k: m[k] for k in (*HEADLINE, "iterations", "train_minutes", "skipped_steps")} | {
                "count_estimator": m["config"]["count_estimator"], "identity_signal": m["config"]["identity_signal"]}
    print("evaluating the untrained guide ...", flush=True)
    result["untrained_guide"] = evaluate_untrained("test", args.num)
    dair = {k: v for k, v in result.get("extrapolation", {}).items() if k.startswith("dair")}
    if dair:
        result["dair_extrap_count_acc"] = max(v["count_acc"] for v in dair.values())
    result["command"] = "python benchmarks/air_tabletop.py evaluate"
    atomic_write_json(OUT, result)
    print({k: result[k] for k in ("selected_run", *HEADLINE, "infer_ms_per_image", "train_minutes",
                                  "seeds_converged")})
    print(f"wrote {OUT}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--iterations", type=int, default=20000)
    p.add_argument("--dair", action="store_true")
    p.add_argument("--split", default="train")
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument("--count-estimator", default="reinforce", choices=["reinforce", "concrete"])
    p.add_argument("--identity-signal", default="enumerate", choices=["enumerate", "global", "local"])
    p.add_argument("--tag", default="", help="run-name prefix; 'cmp-...' runs form the estimator comparison")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an AIRConfig field (repeatable), e.g. --set identity_hold_steps=750")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("train-sleep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=25.0)
    p.add_argument("--iterations", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=2, help="training threads (the renderer has its own process)")
    p.add_argument("--tag", default="sleep", help="run-name prefix (sleep*: evaluated by evaluate-sleep)")
    p.set_defaults(func=cmd_train_sleep)
    p = sub.add_parser("evaluate-sleep")
    p.add_argument("--num", type=int, default=1000, help="test scenes")
    p.add_argument("--refine-num", type=int, default=50,
                   help="test scenes for AIR + refinement against per-image optimisation (about 6 s per scene)")
    p.set_defaults(func=cmd_evaluate_sleep)
    p = sub.add_parser("evaluate")
    p.add_argument("--num", type=int, default=1000, help="test scenes")
    p.add_argument("--converged", type=float, default=0.9, help="count accuracy that counts as converged")
    p.set_defaults(func=cmd_evaluate)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
