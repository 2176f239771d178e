"""Files on disk: atomic writes and JSON reading, the same way everywhere.

Every write goes to a hidden temporary file beside its target (`.<name>.tmp<pid>`),
is flushed to disk (fsync) and then renamed over the target, so a killed run leaves
either the old file or the new one, never half of one. Readers name the file in
every error.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def atomic_write_png(path: str | Path, array: np.ndarray) -> Path:
    """(H, W, 3) uint8 RGB, (H, W) uint8 or (H, W) uint16 -> a PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_torch_save(obj, path: str | Path) -> Path:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_json(path: str | Path, what: str = "file"):
    """The JSON in path; a missing file or corrupt JSON is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing {what}: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
