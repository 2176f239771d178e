"""Checkpoint files: what each kind holds, reading them with errors that name the file, the objects
they go with, their weights into a model, and the small float16 copy that ships."""

from __future__ import annotations

from pathlib import Path

import torch

from .assets import ObjectCatalog
from .files import atomic_torch_save


# What each kind of checkpoint must hold (a training checkpoint to resume holds RESUME_KEYS too).
CHECKPOINT_KEYS = {"AIR": ("model", "air_config", "data_config"), "supervised": ("model", "supervised_config",
                                                                                 "data_config"),
                   "training": ("model",)}
RESUME_KEYS = ("optimizer", "iteration", "history", "train_config", "train_seconds")
_CONFIG_KIND = {"air_config": "an AIR", "supervised_config": "a supervised-baseline"}


def read_checkpoint(path: str | Path, kind: str, resume: bool = False) -> dict:
    """The checkpoint dict at path, checked to be a `kind` checkpoint (CHECKPOINT_KEYS; with
    resume, one a run can continue). Missing, unreadable or foreign files are errors naming the
    file and what it holds instead."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise ValueError(f"{path} is not a readable {kind} checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        held = type(ckpt).__name__ if not isinstance(ckpt, dict) else "dict without model weights"
        raise ValueError(f"{path} is not a {kind} checkpoint: it holds a {held}, expected what "
                         "train-air, train-supervised or export-weights write")
    missing = [k for k in CHECKPOINT_KEYS[kind] + (RESUME_KEYS if resume else ()) if k not in ckpt]
    if missing:
        other = [what for key, what in _CONFIG_KIND.items() if key in ckpt and key not in CHECKPOINT_KEYS[kind]]
        found = f"; it is {other[0]} checkpoint" if other else ""
        raise ValueError(f"{path} is not {'a resumable ' if resume else 'a '}{kind} checkpoint (it lacks "
                         f"{', '.join(missing)}){found}")
    return ckpt


def checkpoint_catalog(ckpt: dict, path: str | Path, catalog: ObjectCatalog | None = None) -> ObjectCatalog:
    """The object catalog a checkpoint goes with: `catalog` if given, else the models folder the
    checkpoint records (the shipped objects when it records none), checked against the catalog it
    was trained with. A mismatch is an error that says what to run."""
    record = ckpt.get("catalog")  # checkpoints from before catalogs were recorded: the shipped objects
    if catalog is None:
        models = (record or {}).get("models")
        if models is not None and not Path(models).is_dir():
            raise ValueError(f"{path} was trained with the objects in {models}, which is no longer there; pass "
                             "that models folder again (--models DIR)")
        catalog = ObjectCatalog.load(models)
    if record is not None and catalog.fingerprint()["sha256"] != record["sha256"]:
        raise ValueError(f"{path} was trained with the objects {record['names']} (catalog {record['sha256'][:12]}), "
                         f"not with these ({', '.join(catalog.names)}, catalog {catalog.fingerprint()['sha256'][:12]}):"
                         " train for them with `train-air --models DIR` or `fit --models DIR`, or give the models "
                         "folder it was trained with")
    return catalog


def load_weights(model: torch.nn.Module, ckpt: dict, path: str | Path) -> None:
    """The checkpoint's weights (float16 ones widened) into model; a clear error when they do not fit
    it (another architecture, or another object catalog's number of categories)."""
    weights = ckpt["model"]
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"{path}: the model weights are not all tensors")
    try:
        model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in weights.items()})
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        raise ValueError(f"{path}'s weights do not fit the model built from its configuration (trained with "
                         f"another architecture or object catalog?): {' '.join(detail[1:3]) or detail[0]}") from None


def _as_half_if_it_fits(value: torch.Tensor) -> torch.Tensor:
    """float16 where every entry is representable (|x| <= 65504), else unchanged: AIR's NVIL reward
    statistics (ELBOs of 1e4-1e6 nats, variances beyond) became inf in float16."""
    if not value.is_floating_point():
        return value
    return value.half() if bool(value.abs().max() <= torch.finfo(torch.float16).max) else value


def export_weights(checkpoint: str | Path, path: str | Path, glimpse_repeats: int | None = None) -> Path:
    """A small file for shipping: the model's weights in float16, its configurations and its
    validation history, without optimizer or RNG state. Loaders read it like a full checkpoint.
    glimpse_repeats: AIR's inference setting (AIRConfig.glimpse_repeats) to record in its place."""
    ckpt = read_checkpoint(checkpoint, "training")
    slim = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "torch_rng", "torch_rng_per_rank",
                                                        "history")}
    if glimpse_repeats is not None:
        if "air_config" not in slim:
            raise ValueError(f"{checkpoint} is not an AIR checkpoint: glimpse_repeats is an AIR setting")
        slim["air_config"] = {**slim["air_config"], "glimpse_repeats": glimpse_repeats}
    slim["model"] = {k: _as_half_if_it_fits(v) for k, v in ckpt["model"].items()}
    slim["history"] = [h for h in ckpt["history"] if "val_count_acc" in h]
    atomic_torch_save(slim, Path(path))
    return Path(path)
