"""Where the toolkit computes: `--device cpu|cuda` (default: CUDA when PyTorch sees a GPU).

Models (the guide, the baseline's network) are moved to the device with `.to(device)`; the
renderer, the likelihood and every tensor made along the way follow the tensors they are given
(PyTorch3D rasterizes on the device of the meshes). What is read from or written to disk, the
datasets' pools and the metrics stay on the CPU; batches move to the device per step and results
come back. Under torchrun with CUDA each process takes the GPU of its LOCAL_RANK.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """'auto' or None (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N' -> a torch.device.

    A clear error when CUDA is asked for and PyTorch sees no GPU (nothing falls back silently).
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda" and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: PyTorch sees no CUDA GPU on this machine "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu")
    if name == "cuda":  # under torchrun, one GPU per process of this node
        index = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
    else:
        try:
            index = int(name.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"unknown device {name!r}; write cuda:N with N a GPU index") from None
    if not 0 <= index < torch.cuda.device_count():
        raise ValueError(f"device cuda:{index}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def rng_state(device: torch.device) -> dict:
    """The random-number states a resumed run needs to draw what it would have drawn: torch's CPU
    generator's, the GPU's when computing on one, and numpy's and Python's global ones."""
    state = {"cpu": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict | torch.Tensor, device: torch.device) -> None:
    """Restores rng_state()'s states (a bare tensor: a checkpoint written before the GPU's was kept)."""
    if isinstance(state, torch.Tensor):
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "python" in state:
        random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
