"""The one command-line entry point: `inverse-graphics <command> ...`.

Each command parses its arguments and calls the library; options shared by several
commands (threads, progress, the tabletop data, the likelihood renderer, training
budgets) are declared once, as parent parsers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .air.config import AIRConfig
from .assets import ObjectCatalog
from .air.infer import infer_files
from .air.sleep import SLEEP_ARCHITECTURE, SleepConfig
from .air.train import train_air, train_air_sleep, train_air_wake
from .cli_options import nonnegative_int, option_groups, positive_float, positive_int
from .checkpoints import export_weights
from .cli_robot import add_robot_commands
from .distributed import current as current_process_group
from .data.bop import generate_split, write_contact_sheet
from .data.images import load_images
from .data.prior import PriorConfig
from .data.tabletop import SPLITS, Tabletop, TabletopConfig
from .demo import run_demo
from .experiments.blackbox_gradients import blackbox_summary, measure_blackbox_gradients
from .experiments.render_speed import measure_render_speed, render_speed_summary
from .experiments.side_by_side import BenchmarkConfig, generalization_checkpoints, run_benchmark
from .experiments.side_by_side_report import summary_lines
from .optimise import OptimiseSettings, optimise_files
from .paths import GENERALIZATION_MODELS, RESULTS_DIR, SHIPPED_AIR, SHIPPED_DAIR, SHIPPED_SUPERVISED
from .supervised import train_supervised
from .training import TrainConfig


def _tabletop(args) -> Tabletop:
    """The tabletop scenes the options describe, with the --models objects where the command has them."""
    return Tabletop(TabletopConfig(image_size=(args.image_size, args.image_size), seed=args.seed),
                    ObjectCatalog.load(getattr(args, "models", None)))


def _train_config(args, **extra) -> TrainConfig:
    return TrainConfig(split=args.split, iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
                       lr_decay=args.lr_decay,
                       train_pool=args.train_pool, val_size=args.val_size, val_every=args.val_every,
                       checkpoint_every=args.checkpoint_every, time_limit_minutes=args.minutes,
                       seed=args.train_seed, **extra)


def _report_training(result: dict, out: Path) -> None:
    if not current_process_group().is_main:  # under torchrun, rank 0 speaks for the run
        return
    print(f"trained {result['iteration']} iterations in {result['train_minutes']:.1f} min "
          f"({result['skipped']} skipped); validation count accuracy {result.get('val_count_acc', float('nan')):.3f}, "
          f"identity {result.get('val_identity_acc', float('nan')):.3f}")
    print(f"wrote {out / 'checkpoint.pt'}, {out / 'history.json'}, {out / 'curves.png'}")


def _existing(path) -> str | None:
    return str(path) if path and Path(path).is_file() else None


def cmd_generate(args) -> int:
    data = _tabletop(args)
    path = generate_split(data, args.split, args.out, args.num, progress=not args.quiet)
    sheet = write_contact_sheet(args.out, args.split, data.catalog, data.config.max_objects)
    print(f"wrote {path} (BOP layout) and {sheet}")
    return 0


def cmd_bench_render(args) -> int:
    result = measure_render_speed(args.out, args.batch_size, args.repeats, progress=not args.json)
    print(json.dumps(result, indent=1) if args.json else f"{render_speed_summary(result)}\nwrote {args.out}")
    return 0


def cmd_bench_blackbox(args) -> int:
    result = measure_blackbox_gradients(args.out, args.repeats, args.per_category, args.steps)
    print(f"{blackbox_summary(result)}\nwrote {args.out}")
    return 0


def cmd_train_air(args) -> int:
    data = _tabletop(args)
    if args.max_steps < data.config.max_objects and args.split in ("train", "val", "test"):
        print(f"note: {args.max_steps} steps cannot count the {data.config.max_objects} objects some scenes have")
    if args.wake:  # the wake phase on the user's unlabelled images, from a sleep-trained guide
        if not (args.init or args.resume):
            raise SystemExit("train-air --wake needs --init CHECKPOINT (a --sleep run's) to start from")
        images, _ = load_images(args.wake)
        result = train_air_wake(args.out, (images * 255).round().to(torch.uint8), train_config=_train_config(args),
                                data=data, init=args.init, resume=args.resume, progress=not args.quiet,
                                device=args.device, prior_workers=args.prior_workers)
    elif args.sleep:  # the sleep phase trains the guide SLEEP_ARCHITECTURE describes, on prior samples
        config = AIRConfig(**{**SLEEP_ARCHITECTURE, "max_steps": args.max_steps, "dair": args.dair})
        sleep = SleepConfig().drawing_counts(SPLITS[args.split].counts)  # extrap-train: 0-2; interp-train: 0, 1, 3
        result = train_air_sleep(args.out, config, _train_config(args), data, sleep, resume=args.resume,
                                 progress=not args.quiet, device=args.device, prior_workers=args.prior_workers)
    else:
        config = AIRConfig(max_steps=args.max_steps, dair=args.dair, renderer=args.renderer,
                           count_estimator=args.count_estimator)
        result = train_air(args.out, config, _train_config(args, baseline_lr=args.baseline_lr), data,
                           resume=args.resume, progress=not args.quiet, device=args.device)
    _report_training(result, Path(args.out))
    return 0


def cmd_train_supervised(args) -> int:
    result = train_supervised(args.out, None, _train_config(args), _tabletop(args), resume=args.resume,
                              progress=not args.quiet, fresh=PriorConfig() if args.fresh else None, device=args.device)
    _report_training(result, Path(args.out))
    return 0


def cmd_benchmark(args) -> int:
    checkpoints = {}
    for name in ("air", "dair", "supervised"):
        given = getattr(args, name)
        if given and not Path(given).is_file():
            raise FileNotFoundError(f"--{name}: no checkpoint at {given}")
        checkpoints[name] = str(given) if given else None
    generalization = {} if args.no_generalization else generalization_checkpoints(args.generalization_models)
    config = BenchmarkConfig(split=args.split, num=args.num, optimise_num=args.optimise_num, renderer=args.renderer,
                             seed=args.optimise_seed, generalization=generalization, device=args.device, **checkpoints)
    report = run_benchmark(config, args.out, _tabletop(args), progress=not args.quiet)
    print("\n".join(summary_lines(report, Path(args.out))))
    return 0


def cmd_optimise(args) -> int:
    settings = OptimiseSettings(max_objects=args.max_objects, starts=args.starts)
    optimise_files(args.images, args.out, _tabletop(args), args.renderer, settings, args.optimise_seed,
                   device=args.device)
    return 0


def cmd_export_weights(args) -> int:
    path = export_weights(args.checkpoint, args.out, args.glimpse_repeats)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, float16)")
    return 0


def cmd_infer(args) -> int:
    infer_files(args.images, args.model, args.out, args.samples, args.overlay_max, args.refine, device=args.device,
                models=args.models)
    return 0


def cmd_demo(args) -> int:
    for line in run_demo(args.out, _tabletop(args), args.num, args.scene):
        print(line)
    return 0


def _add_data_commands(sub, g) -> None:
    p = sub.add_parser("generate", parents=[g["quiet"], g["data"], g["models"]],
                       help="render a tabletop-v1 split to the BOP layout, with a contact sheet")
    p.add_argument("--split", required=True, choices=list(SPLITS))
    p.add_argument("--out", required=True, help="output folder (a BOP dataset root)")
    p.add_argument("--num", type=positive_int, default=None, help="number of scenes (default: the whole split)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("bench-render", parents=[g["threads"]], help="stock PyTorch3D autograd vs the fast gradient path")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--out", default=str(RESULTS_DIR / "render_speed.json"))
    p.set_defaults(func=cmd_bench_render)

    p = sub.add_parser("bench-blackbox", parents=[g["threads"]],
                       help="Open3D + finite differences vs analytic PyTorch3D gradients")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--per-category", type=positive_int, default=4, help="pose-recovery trials per object category")
    p.add_argument("--steps", type=positive_int, default=80, help="gradient steps per pose recovery")
    p.add_argument("--out", default=str(RESULTS_DIR / "blackbox_grad.json"))
    p.set_defaults(func=cmd_bench_blackbox)


def _add_training_commands(sub, g) -> None:
    p = sub.add_parser("train-air", parents=[g["training"], g["resume"], g["renderer"], g["threads"], g["device"],
                                          g["quiet"], g["data"], g["models"]],
                       help="train AIR without labels: the sleep phase (--sleep), the wake phase on your "
                            "images (--wake), or the ELBO through the renderer (default)")
    p.add_argument("--sleep", action="store_true",
                   help="train by the sleep phase (fresh prior samples, no renderer gradients) instead of the ELBO")
    p.add_argument("--wake", nargs="+", metavar="IMAGES", help="train by the wake phase on these unlabelled "
                   "images (files or folders, the camera's size), with a sleep batch every iteration; from --init")
    p.add_argument("--init", help="with --wake: the AIR checkpoint to start from (a --sleep run's)")
    p.add_argument("--prior-workers", type=nonnegative_int, metavar="N", help="with --sleep or --wake: CPU "
                   "processes that render the prior's samples (default 1; on a GPU, as many as keep it busy)")
    p.add_argument("--count-estimator", choices=["reinforce", "concrete"], default="reinforce",
                   help="z_pres gradients: NVIL score function or Concrete relaxation")
    p.add_argument("--dair", action="store_true", help="DAIR: each step sees what is left unexplained")
    p.add_argument("--max-steps", type=positive_int, default=3, help="most objects per image (default 3)")
    p.add_argument("--split", default="train", choices=list(SPLITS), help="training images (labels unused)")
    p.add_argument("--iterations", type=positive_int, default=8000)
    p.add_argument("--minutes", type=positive_float, default=60.0, help="stop after this much training time")
    p.add_argument("--baseline-lr", type=positive_float, default=1e-3)
    p.add_argument("--val-every", type=positive_int, default=250)
    p.set_defaults(func=cmd_train_air)

    p = sub.add_parser("train-supervised", parents=[g["training"], g["resume"], g["threads"], g["device"],
                                                 g["quiet"], g["data"], g["models"]],
                       help="train the supervised regression baseline on labelled renders")
    p.add_argument("--split", default="train", choices=list(SPLITS), help="training images and their labels")
    p.add_argument("--fresh", action="store_true",
                   help="new labelled scenes every batch, with AIR's appearance randomization (no fixed pool)")
    p.add_argument("--iterations", type=positive_int, default=1_000_000, help="(the time limit usually ends training)")
    p.add_argument("--minutes", type=positive_float, default=60.0, help="stop after this much training time (AIR's budget)")
    p.add_argument("--val-every", type=positive_int, default=1000)
    p.set_defaults(func=cmd_train_supervised)

    p = sub.add_parser("export-weights", help="a training checkpoint -> a small float16 file for shipping")
    p.add_argument("checkpoint", help="checkpoint.pt of a train-air or train-supervised run")
    p.add_argument("out", help="output file")
    p.add_argument("--glimpse-repeats", type=int, default=None, metavar="N",
                   help="AIR: record this inference setting (re-read the second glimpse N times where the last "
                        "placed the object; see docs/method.md) in place of the checkpoint's")
    p.set_defaults(func=cmd_export_weights)


def _add_inference_commands(sub, g) -> None:
    p = sub.add_parser("benchmark", parents=[g["renderer"], g["threads"], g["device"], g["quiet"], g["data"],
                                             g["models"]],
                       help="AIR, DAIR, supervised, optimise and AIR+refine side by side -> report")
    p.add_argument("--out", default=str(RESULTS_DIR), help="report folder (default benchmarks/results)")
    p.add_argument("--split", default="test", choices=list(SPLITS))
    p.add_argument("--num", type=positive_int, default=1000, help="scenes for the amortized methods and AIR+refine")
    p.add_argument("--optimise-num", type=positive_int, default=100, help="scenes for per-image optimisation")
    p.add_argument("--optimise-seed", type=nonnegative_int, default=0, help="seed of the optimiser's random starts")
    p.add_argument("--air", default=str(SHIPPED_AIR), help="AIR checkpoint")
    p.add_argument("--dair", default=_existing(SHIPPED_DAIR), help="DAIR checkpoint")
    p.add_argument("--supervised", default=_existing(SHIPPED_SUPERVISED), help="supervised-baseline checkpoint")
    p.add_argument("--generalization-models", default=str(GENERALIZATION_MODELS),
                   help="folder of <method>_<extrap|interp>-train.pt checkpoints for the generalization splits")
    p.add_argument("--no-generalization", action="store_true")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("optimise", parents=[g["renderer"], g["threads"], g["device"], g["data"],
                                            g["models"]],
                       help="fit count, identity and pose per image through the renderer (no model)")
    p.add_argument("images", nargs="+", help="PNG/JPEG files or folders, at the tabletop camera's image size")
    p.add_argument("--out", default="optimise_output")
    p.add_argument("--max-objects", type=positive_int, default=3)
    p.add_argument("--starts", type=positive_int, default=2, help="random starts per category for each new object")
    p.add_argument("--optimise-seed", type=nonnegative_int, default=0)
    p.set_defaults(func=cmd_optimise)

    p = sub.add_parser("infer", parents=[g["threads"], g["device"], g["models"]],
                       help="count, identity and pose of the objects in images, with a trained AIR model")
    p.add_argument("images", nargs="+", help="PNG/JPEG files or folders, at the model's image size")
    p.add_argument("--model", required=True, help="AIR checkpoint (checkpoint.pt)")
    p.add_argument("--out", default="infer_output")
    p.add_argument("--samples", type=nonnegative_int, default=0, help="posterior samples per image, written to the JSON")
    p.add_argument("--overlay-max", type=positive_int, default=16, help="images shown in overlay.png")
    p.add_argument("--refine", action="store_true",
                   help="refine AIR's answer by render-and-compare, trying q's two most likely categories")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("demo", parents=[g["data"]],
                       help="small tabletop set, AIR on it, and the poses in the example robot frames")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--num", type=positive_int, default=32)
    p.add_argument("--scene", type=nonnegative_int, default=3, help="test-scene index for the render panel")
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inverse-graphics", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    groups = option_groups()
    _add_data_commands(sub, groups)
    _add_training_commands(sub, groups)
    _add_inference_commands(sub, groups)
    add_robot_commands(sub, groups)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (OSError, ValueError, KeyError, IndexError) as exc:  # bad input or a full disk: named, no traceback
        ours = isinstance(exc, OSError) and exc.errno and exc.strerror and exc.filename is None
        print(f"inverse-graphics {args.command}: error: {exc.strerror if ours else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
