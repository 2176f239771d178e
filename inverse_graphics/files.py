"""Files on disk: atomic writes, output folders and JSON reading, the same way everywhere.

Every write goes to a hidden temporary file beside its target (`.<name>.tmp<pid>`),
is flushed to disk (fsync) and then renamed over the target, so a killed run leaves
either the old file or the new one, never half of one; a write that fails (a full disk)
removes its temporary file and says what could not be written. An output folder is
checked before any work starts (`prepare_output_folder`: a folder, writable; temporary
files that killed runs left are removed) and held by one run at a time
(`lock_output_folder`). Readers name the file in every error.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import re
from pathlib import Path

import numpy as np


TEMP_PATTERN = re.compile(r"^\..+\.tmp(\d+)$")  # .<name>.tmp<pid>
LOCK_NAME = ".inverse-graphics.lock"


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OSError(exc.errno, f"no space left on the device for {path} ({len(data) / 1e6:.1f} MB); "
                                     "free some space and run again (finished work is kept)") from exc
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def atomic_write_png(path: str | Path, array: np.ndarray, compress_level: int = 6) -> Path:
    """(H, W, 3) uint8 RGB, (H, W) uint8 or (H, W) uint16 -> a PNG. compress_level: zlib's, 0-9
    (1 writes a 640x480 frame about 5x faster than the default 6, a somewhat larger file)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Removes the temporary files (.<name>.tmp<pid>) under folder whose writer is no longer
    running (a killed run's); returns them."""
    removed = []
    for f in Path(folder).rglob(".*.tmp*"):
        match = TEMP_PATTERN.match(f.name)
        if match and f.is_file() and not _alive(int(match.group(1))):
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def prepare_output_folder(folder: str | Path, what: str = "output folder") -> Path:
    """The folder a command writes to, checked before any work starts: created if missing, not a
    file, writable; temporary files that killed runs left in it are removed. Errors say which."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is an existing file, not a folder; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.tmp{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"{what} {folder} is not writable ({exc.strerror or exc})") from exc
    remove_stale_temp_files(folder)
    return folder


_held_locks: dict[Path, int] = {}


def lock_output_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Holds folder for this process until release_output_folder (or the process ends, killed or
    not: the lock is the kernel's). Another live process holding it is a clear error naming it;
    this process may take it again."""
    folder = prepare_output_folder(folder, what)
    key = folder.resolve()
    if key in _held_locks:
        return folder
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ValueError(f"{what} {folder} is in use by another run (process {holder}); wait for it to finish "
                         "or choose another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held_locks[key] = fd
    return folder


def release_output_folder(folder: str | Path) -> None:
    """Lets other runs use folder again (a no-op when this process does not hold it)."""
    key = Path(folder).resolve()
    fd = _held_locks.pop(key, None)
    if fd is not None:
        (key / LOCK_NAME).unlink(missing_ok=True)  # a finished run leaves only its outputs
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
