"""AIR on tabletop-v1: train several seeds (or load them), evaluate on the test split, time inference.

Runs live in RUNS_DIR/<name> (checkpoint.pt, history.json, curves.png); a run
that exists is resumed, or only evaluated once it is complete, so the benchmark
can be interrupted and run again.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..air.config import AIRConfig
from ..air.infer import refine_answer
from ..air.model import AIR
from ..air.sleep import SLEEP_ARCHITECTURE, SleepConfig
from ..air.train import evaluate, load_checkpoint, train_air, train_air_sleep, train_air_wake
from ..air.wake import WakeConfig
from ..data.tabletop import SPLITS, Tabletop, TabletopConfig
from ..metrics import evaluate_planar
from ..optimise import optimise
from ..rendering.appearance import AppearanceRanges
from ..rendering.likelihood import make_planar_renderer
from ..robot.simulate import CaptureConditions, capture
from ..scene import SceneBatch
from ..supervised import evaluate as evaluate_supervised, load_supervised
from ..timing import time_inference
from ..training import TrainConfig, render_pool

HEADLINE = ("count_acc", "identity_acc", "pos_err_mm_median", "rot_err_deg_median", "adds_recall")


def run_name(seed: int, dair: bool = False, split: str = "train", tag: str = "") -> str:
    return f"{tag + '_' if tag else ''}{'dair' if dair else 'air'}_{split}_seed{seed}"


def train_run(runs_dir: Path, seed: int, minutes: float, iterations: int, dair: bool = False, split: str = "train",
              max_steps: int = 3, count_estimator: str = "reinforce", identity_signal: str = "enumerate",
              tag: str = "", progress: bool = True, overrides: dict | None = None, device=None) -> dict:
    data = Tabletop(TabletopConfig(max_objects=max(3, max_steps)))
    out = Path(runs_dir) / run_name(seed, dair, split, tag)
    config = AIRConfig(max_steps=max_steps, dair=dair, count_estimator=count_estimator,
                       identity_signal=identity_signal, **(overrides or {}))
    train_cfg = TrainConfig(split=split, iterations=iterations, time_limit_minutes=minutes, seed=seed)
    return train_air(out, config, train_cfg, data, resume=(out / "checkpoint.pt").exists(), progress=progress,
                     device=device)


# The paper's generalization splits: each training split and the test split that asks for counts it lacks.
GENERALIZATION_TEST = {"extrap-train": "extrap-test", "interp-train": "interp-test"}
# The targets for DAIR: count accuracy on each generalization test split.
DAIR_COUNT_TARGETS = {"extrap-test": 0.80, "interp-test": 0.95}


def split_max_steps(split: str) -> int:
    """Guide steps for a run trained on `split`: 3 for tabletop-v1's train split; for a generalization
    split, enough for its training counts and one more than its test split's largest count, so that
    the count on the test split is the guide's own decision to stop, never the last step's truncation
    (4 for extrap-train, as the ELBO's DAIR run had; 3 for interp-train)."""
    if split not in GENERALIZATION_TEST:
        return 3
    return max(max(SPLITS[split].counts), max(SPLITS[GENERALIZATION_TEST[split]].counts) + 1)


def train_sleep_run(runs_dir: Path, seed: int, minutes: float, iterations: int, tag: str = "sleep",
                    progress: bool = True, overrides: dict | None = None, device=None,
                    lr_decay: str = "constant", sleep_overrides: dict | None = None, dair: bool = False,
                    split: str = "train", max_steps: int | None = None, prior_overrides: dict | None = None) -> dict:
    """One sleep-phase AIR (or, with dair, DAIR) run on tabletop-v1's camera and table (resumed if it
    exists). The prior draws the counts of `split` (train: 0-3; extrap-train: 0-2; interp-train: 0, 1, 3);
    max_steps: the guide's steps (default split_max_steps(split)); validation reads the val split's
    scenes (0-3 objects), as the ELBO's runs on every split do (tabletop-v1 has no val scenes per
    split). overrides: AIRConfig fields over SLEEP_ARCHITECTURE; sleep_overrides: SleepConfig fields;
    prior_overrides: AppearanceRanges fields (JSON values: lists for ranges, None for the renderer's own)."""
    max_steps = max_steps or split_max_steps(split)
    data = Tabletop(TabletopConfig(max_objects=max(3, max_steps)))
    out = Path(runs_dir) / run_name(seed, dair, split, tag)
    config = AIRConfig(**{**SLEEP_ARCHITECTURE, "max_steps": max_steps, "dair": dair, **(overrides or {})})
    train_cfg = TrainConfig(split=split, iterations=iterations, time_limit_minutes=minutes, seed=seed, val_every=500,
                            lr_decay=lr_decay)
    sleep = SleepConfig(**(sleep_overrides or {})).drawing_counts(data.split(split).counts)
    if prior_overrides:
        appearance = AppearanceRanges.from_dict({**sleep.prior.appearance.to_dict(), **prior_overrides})
        sleep = replace(sleep, prior=replace(sleep.prior, appearance=appearance))
    return train_air_sleep(out, config, train_cfg, data, sleep, resume=(out / "checkpoint.pt").exists(),
                           progress=progress, device=device)


APPEARANCE_SPLIT = "tabletop-v1-appearance"


# The capture conditions of tabletop-v1-appearance (robot.simulate, not the sleep prior's process).
APPEARANCE_CONDITIONS = CaptureConditions(light_tilt_deg=35.0, table_texture=0.12, pixel_noise=0.02, vignetting=0.2,
                                          exposure=(0.8, 1.2), clutter=0)


def appearance_images(data: Tabletop, split: str, indices, seed: int = 0,
                      conditions: CaptureConditions = APPEARANCE_CONDITIONS,
                      table_colors: bool = True) -> tuple[torch.Tensor, SceneBatch]:
    """Scenes `indices` of a tabletop-v1 split as a camera might see them, made by another process
    than the sleep prior's (so the prior is not tuned on it): Open3D ray casting with the light
    tilted up to 35 degrees (faces re-lit), cast shadows, smooth-noise table texture (0.12), a table
    colour per scene, albedo jitter, vignetting, exposure and pixel noise (`conditions`; table_colors
    False keeps the dataset's table colour).
    Returns images (num, H, W, 3) in [0, 1] and the scenes' truth."""
    indices = list(indices)
    truth = data.scene_batch(data.sample(split, indices))
    images = []
    for b, index in enumerate(indices):
        rng = np.random.default_rng([seed, index])
        color = tuple(float(c) for c in rng.uniform([0.35, 0.25, 0.15], [0.85, 0.75, 0.65]))
        table = replace(data.config.table, color=color) if table_colors else data.config.table
        scene = replace(truth.select(slice(b, b + 1)), table=table)
        rgb, _ = capture(scene, data.catalog, conditions, rng)
        images.append(torch.from_numpy(rgb).float() / 255)
    return torch.stack(images), truth


def appearance_split(data: Tabletop, num: int = 1000, seed: int = 0) -> tuple[torch.Tensor, SceneBatch]:
    """tabletop-v1-appearance: the first `num` tabletop-v1 test scenes through appearance_images."""
    return appearance_images(data, "test", range(num), seed)


def wake_pool(data: Tabletop, num: int, seed: int = 1) -> torch.Tensor:
    """(num, H, W, 3) uint8 unlabelled images for the wake phase, none of them a test scene: half
    tabletop-v1 train renders, half other train scenes through appearance_images (seeded apart
    from the appearance split)."""
    clean, _ = render_pool(data, "train", num // 2, progress=False)
    shifted, _ = appearance_images(data, "train", range(num // 2, num), seed)
    return torch.cat([clean, (shifted * 255).round().to(torch.uint8)])


def train_wake_run(runs_dir: Path, seed: int, minutes: float, init: Path, pool: int = 2000, tag: str = "sleepwake",
                   batch_size: int = 8, progress: bool = True, device=None) -> dict:
    """The wake phase (with a sleep batch every iteration) from a sleep-trained checkpoint, on
    wake_pool's unlabelled images (resumed if the run exists)."""
    data = Tabletop()
    out = Path(runs_dir) / run_name(seed, False, "train", tag)
    train_cfg = TrainConfig(iterations=100_000, time_limit_minutes=minutes, seed=seed, val_every=250,
                            batch_size=batch_size)
    images = wake_pool(data, pool, seed + 1)
    return train_air_wake(out, images, train_config=train_cfg, data=data, wake=WakeConfig(), init=init,
                          resume=(out / "checkpoint.pt").exists(), progress=progress, device=device)


def per_category(matches: list[dict], names: list[str]) -> dict:
    """Per true category: matched objects, identity accuracy and median position and yaw errors
    (the overall medians mix in the sphere and cylinder, whose yaw error is 0 by symmetry)."""
    out = {}
    for c, name in enumerate(names):
        mine = [m for m in matches if m["true_category"] == c]
        if mine:
            out[name] = {"matched": len(mine),
                         "identity_acc": float(np.mean([m["pred_category"] == c for m in mine])),
                         "pos_err_mm_median": float(np.median([m["pos_err_mm"] for m in mine])),
                         "rot_err_deg_median": float(np.median([m["yaw_err_deg"] for m in mine]))}
    return out


def evaluate_run(path: Path, split: str, num: int, scenes: tuple | None = None, device="cpu",
                 glimpse_repeats: int | None = None) -> dict:
    """A run's checkpoint (its folder, or a weights file) on `num` scenes of a split (or of
    APPEARANCE_SPLIT): metrics and inference speed. scenes: (images, truth) already made for that
    split (APPEARANCE_SPLIT takes ~50 ms per scene to make; make it once for several runs). device:
    where the model runs (the timing includes moving images there and answers back)."""
    model, ckpt = load_checkpoint(Path(path) if Path(path).is_file() else Path(path) / "checkpoint.pt",
                                  device=device, glimpse_repeats=glimpse_repeats)
    data = Tabletop(TabletopConfig.from_fields(ckpt["data_config"]))
    if scenes is not None:
        images, truth = scenes
    elif split == APPEARANCE_SPLIT:
        images, truth = appearance_split(data, num)
    else:
        images, truth = render_pool(data, split, num, progress=False)
        images = images.float() / 255
    metrics = evaluate(model, images, truth, pose_recalls=True)
    pairs = metrics.pop("count_pairs")
    metrics["per_category"] = per_category(metrics.pop("matches"), data.catalog.names)
    confusion = np.zeros((model.config.max_steps + 1, model.config.max_steps + 1), dtype=int)
    for t, p in pairs:
        confusion[min(t, model.config.max_steps), p] += 1
    val = [h for h in ckpt["history"] if "val_count_acc" in h]
    timing = time_inference(lambda x: model.objects(model.infer(x.to(device), greedy=True)).to("cpu"), images)
    return {**metrics, **timing, "count_confusion": confusion.tolist(),
            "train_minutes": ckpt["train_seconds"] / 60, "iterations": ckpt["iteration"],
            "skipped_steps": ckpt.get("skipped", 0), "val_count_acc": val[-1]["val_count_acc"] if val else None,
            "validation": {k: val[-1][f"val_{k}"] for k in HEADLINE[:4]} if val else None,
            "config": model.config.to_dict(), "split": split}


def evaluate_dair_generalization(runs_dir: Path, tags: str | list[str], num: int, elbo: dict | None = None,
                                 device="cpu", log=print) -> dict:
    """The sleep-trained DAIR runs (runs_dir/<tag>_dair_<split>_seed*, finished, of any of `tags`) on the test split of
    their generalization split, against DAIR_COUNT_TARGETS; beside each test split, `elbo`'s entries
    measured on it (name -> evaluate_run's figures: the ELBO's DAIR runs). Per test split that has runs:
    the target, each run's headline figures, count confusion and whether it meets the target."""
    report = {}
    for split, test in GENERALIZATION_TEST.items():
        runs = sorted(p for tag in ([tags] if isinstance(tags, str) else tags)
                      for p in Path(runs_dir).glob(f"{tag}_dair_{split}_seed*") if (p / "checkpoint.pt").exists())
        if not runs:
            continue
        target, sleep = DAIR_COUNT_TARGETS[test], {}
        for path in runs:
            log(f"evaluating {path.name} (DAIR, sleep) on {num} {test} scenes ...")
            m = evaluate_run(path, test, num, device=device)
            sleep[path.name] = {**{k: m[k] for k in (*HEADLINE, "count_confusion", "iterations", "train_minutes",
                                                      "images_per_second_batched")},
                                "max_steps": m["config"]["max_steps"], "meets_count_target": m["count_acc"] >= target}
        report[test] = {"trained_on": split, "count_target": target, "sleep": sleep,
                        "runs_meeting_count_target": sum(r["meets_count_target"] for r in sleep.values()),
                        "elbo": {name: {k: v[k] for k in HEADLINE if k in v} | {"iterations": v.get("iterations")}
                                 for name, v in (elbo or {}).items() if v.get("split") == test}}
    return report


def evaluate_supervised_checkpoint(path: Path, scenes: dict[str, tuple[torch.Tensor, SceneBatch]],
                                   device="cpu") -> dict:
    """The supervised baseline's checkpoint on each named (images, truth): headline metrics, and
    how it was trained (a fixed pool of renders, or fresh labelled scenes every batch)."""
    model, ckpt = load_supervised(path, device)
    data = Tabletop(TabletopConfig.from_fields(ckpt["data_config"]))
    result = {"training_data": "fresh prior samples every batch" if ckpt.get("prior_config") else
              f"a fixed pool of {ckpt['train_config']['train_pool']} renders",
              "train_minutes": ckpt["train_seconds"] / 60, "iterations": ckpt["iteration"]}
    for name, (images, truth) in scenes.items():
        metrics = evaluate_supervised(model, images, truth, data.catalog, pose_recalls=True)
        result[name] = {k: metrics[k] for k in HEADLINE}
    return result


def evaluate_refinement(path: Path, num: int, seed: int = 0, device="cpu", glimpse_repeats: int | None = None,
                        accuracy_num: int = 0) -> dict:
    """AIR alone, AIR + refinement (q's two most likely categories where it doubts; the stopping
    step's proposal where q thought another object likely, kept if it pays for itself) and per-image
    optimisation from random starts, on the same first `num` test scenes, in this run: metrics
    and seconds per image of each, and how many times faster AIR + refinement is. AIR + refinement
    runs before the optimisation and again after it, and its time is the mean of the two, so that
    the machine's speed, which drifts, weighs on both sides of the ratio alike.
    accuracy_num: AIR and AIR + refinement are also scored on the first accuracy_num test scenes
    (`on_more_scenes`; 20 scenes are too few to tell a few points of accuracy apart, and the
    optimiser's 9 s a scene keep the timed comparison short). 0: not."""
    model, ckpt = load_checkpoint(Path(path) / "checkpoint.pt", device=device, glimpse_repeats=glimpse_repeats)
    data = Tabletop(TabletopConfig.from_fields(ckpt["data_config"]))
    images, truth = render_pool(data, "test", num, progress=False)
    images = (images.float() / 255).to(device)
    renderer = make_planar_renderer("pytorch3d", data.catalog)

    def air_and_refine(batch):
        start = time.perf_counter()
        with torch.no_grad():
            steps = model.infer(batch, greedy=True)
        air, air_seconds = model.objects(steps), time.perf_counter() - start
        refined = refine_answer(model, batch, steps, renderer)
        return air, air_seconds, refined, time.perf_counter() - start

    answers, seconds = {}, {}
    answers["air"], seconds["air"], answers["air_refine"], before = air_and_refine(images)
    start = time.perf_counter()
    answers["optimise"] = optimise(renderer, images, data.camera, data.config.table, len(data.catalog), seed=seed)
    seconds["optimise"] = time.perf_counter() - start
    after = air_and_refine(images)[3]
    seconds["air_refine"] = (before + after) / 2
    result = {}
    for name, answer in answers.items():
        metrics = evaluate_planar(answer.to("cpu"), truth.planar(), data.catalog, data.camera)
        result[name] = {**{k: metrics[k] for k in HEADLINE}, "seconds_per_image": seconds[name] / num}
    result["refine_speedup_over_optimise"] = seconds["optimise"] / seconds["air_refine"]
    result["scenes"] = num
    result["air_refine_seconds_before_and_after"] = [before / num, after / num]
    if accuracy_num > num:
        more, truth = render_pool(data, "test", accuracy_num, progress=False)
        air, _, refined, _ = air_and_refine((more.float() / 255).to(device))
        result["on_more_scenes"] = {"scenes": accuracy_num, **{
            name: {k: v for k, v in evaluate_planar(answer.to("cpu"), truth.planar(), data.catalog, data.camera).items()
                   if k in HEADLINE} for name, answer in (("air", air), ("air_refine", refined))}}
    return result


def evaluate_untrained(split: str, num: int, seed: int = 0, device="cpu") -> dict:
    """The guide before any training: what its architecture alone (attention seeded by the
    difference from the bare table, presence from the evidence left) gets right."""
    torch.manual_seed(seed)
    data = Tabletop()
    model = AIR(AIRConfig(), data.catalog, data.camera, data.config.table).to(device)
    images, truth = render_pool(data, split, num, progress=False)
    metrics = evaluate(model, images.float() / 255, truth, pose_recalls=True)
    metrics.pop("count_pairs")
    metrics.pop("matches")
    return metrics
