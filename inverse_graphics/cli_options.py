"""The command line's shared option groups (threads, device, progress, the tabletop data, the
likelihood renderer, training budgets, resume), declared once as argparse parent parsers."""

from __future__ import annotations

import argparse

from .rendering.likelihood import RENDERER_NAMES


def option_groups() -> dict[str, argparse.ArgumentParser]:
    """Option groups that several commands share, as argparse parent parsers."""
    groups = {name: argparse.ArgumentParser(add_help=False) for name in ("threads", "device", "quiet", "data",
                                                                          "renderer", "training", "resume")}
    groups["threads"].add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    groups["device"].add_argument("--device", default="auto", metavar="{auto,cpu,cuda,cuda:N}",
                                  help="where to compute (default auto: cuda when PyTorch sees a GPU, else cpu)")
    groups["quiet"].add_argument("--quiet", action="store_true", help="no progress bar")
    groups["data"].add_argument("--image-size", type=int, default=64, help="square image side in pixels (default 64)")
    groups["data"].add_argument("--seed", type=int, default=2016, help="dataset seed (default 2016, tabletop-v1)")
    groups["renderer"].add_argument("--renderer", choices=RENDERER_NAMES, default="pytorch3d",
                                    help="the likelihood renderer (default pytorch3d)")
    groups["resume"].add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    t = groups["training"]
    t.add_argument("--out", required=True, help="run folder: checkpoint.pt, history.json, curves.png")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--train-pool", type=int, default=6000, help="distinct training images, rendered once")
    t.add_argument("--val-size", type=int, default=300)
    t.add_argument("--train-seed", type=int, default=0, help="initialization and batch-order seed")
    t.add_argument("--checkpoint-every", type=int, default=100, help="iterations between checkpoints (default 100)")
    return groups
