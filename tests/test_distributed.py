"""Data-parallel training under torchrun (gloo on CPU): two processes give the weights one process
gives with their combined batch, and a killed two-process run resumes (with any process count)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from inverse_graphics.training import pool_batches
from inverse_graphics.distributed import ProcessGroup

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--train-pool", "32", "--val-size", "4", "--val-every", "1000", "--quiet"]


def _command(processes: int, out: Path, batch_size: int, iterations: int, *extra: str) -> list[str]:
    launcher = [sys.executable, "-m", "inverse_graphics"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        "-m", "inverse_graphics"]
    return launcher + ["train-supervised", "--out", str(out), "--batch-size", str(batch_size), "--iterations",
                       str(iterations), "--threads", "1", *SMALL, *extra]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _weights(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


def test_each_process_takes_its_share_of_the_pool():
    one = next(pool_batches(40, 8, ProcessGroup(0, 1), seed=3))
    shares = [next(pool_batches(40, 4, ProcessGroup(r, 2), seed=3)) for r in range(2)]
    assert sorted(torch.cat(shares).tolist()) == sorted(one.tolist())  # the same images in the step
    assert not set(shares[0].tolist()) & set(shares[1].tolist())
    later = pool_batches(40, 8, ProcessGroup(0, 1), seed=3, iteration=7)  # resumed: the same stream
    stream = pool_batches(40, 8, ProcessGroup(0, 1), seed=3)
    for _ in range(7):
        next(stream)
    assert torch.equal(next(later), next(stream))


def test_two_processes_match_one_with_the_combined_batch(tmp_path):
    _run(_command(1, tmp_path / "one", 8, 3))
    done = _run(_command(2, tmp_path / "two", 4, 3))
    assert done.stdout.count("trained 3 iterations") == 1  # rank 0 alone reports
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert one.keys() == two.keys()
    # Adam's first steps are about lr (1e-3) x the gradient's sign, so a gradient near zero summed in
    # another order can move an entry a little; unsynchronised processes would differ by ~1e-3
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-4, rtol=0), name
    ckpt = torch.load(tmp_path / "two" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["world_size"] == 2 and len(ckpt["torch_rng_per_rank"]) == 2


def test_a_killed_two_process_run_resumes_as_if_never_killed(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(_command(2, out, 4, 100_000, "--checkpoint-every", "5"), cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (out / "checkpoint.pt").is_file() or torch.load(
                out / "checkpoint.pt", map_location="cpu", weights_only=False)["iteration"] < 10:
            assert run.poll() is None and time.time() < deadline, "the run ended or made no checkpoint"
            time.sleep(1)
    finally:  # kill -9 the launcher and both training processes (torchrun gives each its own session)
        subprocess.run(["pkill", "-9", "-f", str(out)], check=False)
        run.wait()
        time.sleep(1)
    reached = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["iteration"]
    target = reached + 4
    done = _run(_command(2, out, 4, target, "--resume"))
    assert f"trained {target} iterations" in done.stdout and f"from iteration {reached}" in done.stdout
    # killed and resumed, the run ends with the weights of a run never interrupted, to the bit
    _run(_command(2, tmp_path / "whole", 4, target))
    resumed, whole = _weights(out), _weights(tmp_path / "whole")
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
    # and with another process count: one process carries on from the two-process checkpoint
    done = _run(_command(1, out, 8, target + 2, "--resume"))
    assert f"trained {target + 2} iterations" in done.stdout

