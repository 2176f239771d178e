"""The command line's shared option groups (threads, device, progress, the tabletop data, the
likelihood renderer, training budgets, resume), declared once as argparse parent parsers."""

from __future__ import annotations

import argparse

from .rendering.likelihood import RENDERER_NAMES
from .training import LR_DECAYS


def _number(kind, low: float, inclusive: bool, what: str):
    """An argparse type: a `kind` number at least (inclusive) or above `low`, else a message saying so."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (value >= low if inclusive else value > low) or value != value:  # NaN too
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, True, "a positive whole number")
nonnegative_int = _number(int, 0, True, "a whole number, 0 or more")
positive_float = _number(float, 0.0, False, "a positive number")


def option_groups() -> dict[str, argparse.ArgumentParser]:
    """Option groups that several commands share, as argparse parent parsers."""
    groups = {name: argparse.ArgumentParser(add_help=False) for name in ("threads", "device", "quiet", "data",
                                                                          "renderer", "training", "resume", "models")}
    groups["models"].add_argument("--models", metavar="DIR", help="the objects: a BOP models folder (obj_NNNNNN.ply "
                                  "in mm and models_info.json; default the shipped objects)")
    groups["threads"].add_argument("--threads", type=nonnegative_int, default=0, help="torch threads (default: torch's choice)")
    groups["device"].add_argument("--device", default="auto", metavar="{auto,cpu,cuda,cuda:N}",
                                  help="where to compute (default auto: cuda when PyTorch sees a GPU, else cpu)")
    groups["quiet"].add_argument("--quiet", action="store_true", help="no progress bar")
    groups["data"].add_argument("--image-size", type=positive_int, default=64, help="square image side in pixels (default 64)")
    groups["data"].add_argument("--seed", type=nonnegative_int, default=2016, help="dataset seed (default 2016, tabletop-v1)")
    groups["renderer"].add_argument("--renderer", choices=RENDERER_NAMES, default="pytorch3d",
                                    help="the likelihood renderer (default pytorch3d)")
    groups["resume"].add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    t = groups["training"]
    t.add_argument("--out", required=True, help="run folder: checkpoint.pt, history.json, curves.png")
    t.add_argument("--batch-size", type=positive_int, default=32)
    t.add_argument("--lr", type=positive_float, default=1e-3)
    t.add_argument("--lr-decay", choices=LR_DECAYS, default="constant",
                   help="learning rate over the run: constant, or cosine down to 2%% of --lr when the "
                        "--iterations or --minutes budget ends (default constant)")
    t.add_argument("--train-pool", type=positive_int, default=6000, help="distinct training images, rendered once")
    t.add_argument("--val-size", type=positive_int, default=300)
    t.add_argument("--train-seed", type=nonnegative_int, default=0, help="initialization and batch-order seed")
    t.add_argument("--checkpoint-every", type=positive_int, default=100, help="iterations between checkpoints (default 100)")
    return groups
