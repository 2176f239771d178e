"""Data-parallel training throughput: two processes under torchrun against one process with one
thread, both on this machine's two cores, in one run; and, where PyTorch sees a GPU, one process
training on it, in the same run.

    python benchmarks/distributed.py                     # every phase, 60 timed iterations each
    python benchmarks/distributed.py --phases sleep --iterations 40

Each phase trains AIR from scratch for warmup + iterations steps, the same global batch either way
(one process: batch 32; two processes: 16 each, gradients averaged by DistributedDataParallel), one
torch thread per process:
- `sleep`: the sleep phase (prior samples rendered in the training process: PriorConfig.workers 0,
  so that one process really uses one core);
- `elbo`: the ELBO objective on a pool of rendered images (train-air without --sleep);
- `wake`: the wake phase alone (importance-weighted, 4 samples per image, the table's colour fitted)
  on a pool of rendered images, with the sleep guide's architecture (train-air --wake).
Iterations per second are rank 0's, over the iterations after the warm-up (its training clock in
history.json); one and two processes alternate for --rounds rounds and the speed-up is the ratio of
their medians (this machine is shared and its speed drifts). On a GPU (--device cuda, or auto where
there is one) each phase also runs as one process on it, with the same global batch and torch's own
thread count, and its rate is compared with the two-core CPU's (two processes). Writes
benchmarks/results/distributed.json with `speedup_2proc` (the sleep phase's ratio; each phase's is
listed) and the GPU section, or why there is none.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

OUT = ROOT / "results" / "distributed.json"
GLOBAL_BATCH = 32


PHASES = ("sleep", "elbo", "wake")


def train(phase: str, out: Path, batch_size: int, iterations: int, device: str) -> None:
    """One training run of `phase` (in this process; under torchrun, in each) on device."""
    import torch

    from inverse_graphics.air.config import AIRConfig
    from inverse_graphics.air.sleep import SLEEP_ARCHITECTURE, SleepConfig
    from inverse_graphics.air.train import train_air, train_air_sleep, train_air_wake
    from inverse_graphics.air.wake import WakeConfig
    from inverse_graphics.data.prior import PriorConfig
    from inverse_graphics.data.tabletop import Tabletop
    from inverse_graphics.training import TrainConfig, render_pool

    if device == "cpu":
        torch.set_num_threads(1)
    cfg = TrainConfig(iterations=iterations, batch_size=batch_size, val_size=8, val_every=10**9,
                      checkpoint_every=10**9, train_pool=512, time_limit_minutes=60)
    quiet = dict(progress=False, log=lambda m: None, device=device)
    if phase == "sleep":
        train_air_sleep(out, AIRConfig(**SLEEP_ARCHITECTURE), cfg, sleep=SleepConfig(prior=PriorConfig(workers=0)),
                        **quiet)
    elif phase == "wake":
        images, _ = render_pool(Tabletop(), "train", cfg.train_pool, progress=False)
        train_air_wake(out, images, AIRConfig(**SLEEP_ARCHITECTURE), cfg, wake=WakeConfig(sleep_every=0), **quiet)
    else:
        train_air(out, AIRConfig(), cfg, **quiet)


def iterations_per_second(out: Path, warmup: int) -> float:
    """Rank 0's training iterations per second after the first `warmup` iterations."""
    history = [h for h in json.loads((out / "history.json").read_text()) if "loss" in h]
    first, last = history[warmup - 1], history[-1]
    return (last["iteration"] - first["iteration"]) / (last["seconds"] - first["seconds"])


def timed_run(phase: str, processes: int, iterations: int, warmup: int, folder: Path, device: str = "cpu",
              round_: int = 0) -> dict:
    out = folder / f"{phase}_{processes}proc_{device.replace(':', '')}_{round_}"
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = launcher + [str(Path(__file__).resolve()), "--worker", phase, "--out", str(out), "--batch-size",
                          str(GLOBAL_BATCH // processes), "--iterations", str(warmup + iterations),
                          "--worker-device", device]
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if device == "cpu" else dict(os.environ)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{phase} with {processes} process(es) on {device} failed:\n{done.stderr[-3000:]}")
    rate = iterations_per_second(out, warmup)
    print(f"{phase:6s} {processes} process(es) on {device}, batch {GLOBAL_BATCH // processes} each: "
          f"{rate:.2f} iterations/s", flush=True)
    return {"processes": processes, "device": device, "batch_per_process": GLOBAL_BATCH // processes,
            "iterations_per_s": rate,
            "images_per_s": rate * GLOBAL_BATCH, "timed_iterations": iterations, "warmup_iterations": warmup}


def independent_runs(phase: str, iterations: int, warmup: int, folder: Path, round_: int) -> dict:
    """Two one-process runs of batch 16 side by side, not communicating: what the two cores give two
    processes at all (their contention for the machine), the ceiling of the data-parallel rate."""
    outs = [folder / f"{phase}_independent{k}_{round_}" for k in range(2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", phase, "--out", str(out),
                              "--batch-size", str(GLOBAL_BATCH // 2), "--iterations", str(warmup + iterations)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for out in outs]
    for run in runs:
        if run.wait() != 0:
            raise SystemExit(f"{phase}: an independent run failed:\n{run.stderr.read()[-3000:]}")
    rates = [iterations_per_second(out, warmup) for out in outs]
    print(f"{phase:6s} 2 independent processes, batch {GLOBAL_BATCH // 2} each: "
          + ", ".join(f"{r:.2f}" for r in rates) + " iterations/s", flush=True)
    return {"iterations_per_s_each": rates, "iterations_per_s": float(np.mean(rates))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    parser.add_argument("--device", default="auto",
                        help="cuda (or auto where there is a GPU): also time each phase on the GPU; cpu: not")
    parser.add_argument("--iterations", type=int, default=60, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of one and two processes")
    parser.add_argument("--ceiling", action="store_true",
                        help="also run two independent processes (no communication) each round: the two cores' "
                             "ceiling for two processes")
    parser.add_argument("--worker", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--worker-device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        train(args.worker, Path(args.out), args.batch_size, args.iterations, args.worker_device)
        return
    import torch

    from inverse_graphics.devices import resolve_device
    from inverse_graphics.files import atomic_write_json

    gpu = resolve_device(args.device)  # an error here when cuda is asked for and there is none

    report = {"machine": f"{os.cpu_count()} CPU cores", "global_batch": GLOBAL_BATCH, "threads_per_process": 1,
              "rounds": args.rounds, "phases": {}}
    with tempfile.TemporaryDirectory() as folder:
        for phase in args.phases:
            # one and two processes alternate, round after round, so that the machine's drifts
            # (it is shared and noisy) fall on both; the ratio is of the medians
            rounds, ceiling = [], []
            for r in range(args.rounds):
                rounds.append((timed_run(phase, 1, args.iterations, args.warmup, Path(folder), round_=r),
                               timed_run(phase, 2, args.iterations, args.warmup, Path(folder), round_=r)))
                if args.ceiling:
                    ceiling.append(independent_runs(phase, args.iterations, args.warmup, Path(folder), r))
            one = float(np.median([a["iterations_per_s"] for a, _ in rounds]))
            two = float(np.median([b["iterations_per_s"] for _, b in rounds]))
            report["phases"][phase] = {"one_process_iterations_per_s": one, "two_processes_iterations_per_s": two,
                                       "speedup_2proc": two / one,
                                       "speedup_per_round": [b["iterations_per_s"] / a["iterations_per_s"]
                                                             for a, b in rounds],
                                       "runs": [run for pair in rounds for run in pair],
                                       "command": "python " + " ".join(
                                           [str(Path(__file__).relative_to(ROOT.parent))] + sys.argv[1:])}
            if ceiling:
                independent = float(np.median([c["iterations_per_s"] for c in ceiling]))
                report["phases"][phase]["two_independent_processes"] = {
                    "iterations_per_s_median": independent, "ceiling_over_one_process": independent / one,
                    "data_parallel_over_ceiling": two / independent, "runs": ceiling}
            if gpu.type == "cuda":
                on_gpu = timed_run(phase, 1, args.iterations, args.warmup, Path(folder), str(gpu))
                report.setdefault("gpu", {"device": torch.cuda.get_device_name(gpu)})[phase] = {
                    "one_process": on_gpu, "over_two_core_cpu": on_gpu["iterations_per_s"] / two}
    if OUT.is_file():  # phases not run this time keep their last measurement (each names its command)
        previous = json.loads(OUT.read_text())
        report["phases"] = {**{k: v for k, v in previous.get("phases", {}).items() if "command" in v},
                            **report["phases"]}
    headline = "sleep" if "sleep" in report["phases"] else args.phases[0]
    report["speedup_2proc"] = report["phases"][headline]["speedup_2proc"]
    report["headline_phase"] = headline
    report["target_speedup_2proc_at_least_1.6"] = report["speedup_2proc"] >= 1.6
    if gpu.type != "cuda":
        report["gpu"] = ("not measured (--device cpu)" if torch.cuda.is_available() else
                         "none: PyTorch sees no GPU on this machine, so GPU throughput was not measured")
    report["command"] = "python " + " ".join([str(Path(__file__).relative_to(ROOT.parent))] + sys.argv[1:])
    atomic_write_json(OUT, report)
    print(json.dumps({k: report[k] for k in ("speedup_2proc", "headline_phase")}), f"wrote {OUT}")


if __name__ == "__main__":
    main()
