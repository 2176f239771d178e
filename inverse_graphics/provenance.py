"""What a result was made with: file digests and the code's version, recorded beside outputs so
a rerun with other inputs is never mistaken for a continuation."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Callable

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    """The package version, and the git commit it runs from when it runs from a checkout ('+dirty'
    when files differ from it)."""
    try:
        version = metadata.version("inverse_graphics")
    except metadata.PackageNotFoundError:
        version = "0.1.0"
    try:
        commit = subprocess.run(["git", "-C", str(PACKAGE_ROOT), "describe", "--always", "--dirty=+dirty"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return version
    return f"{version} ({commit.stdout.strip()})" if commit.returncode == 0 and commit.stdout.strip() else version


def differences(old: dict | None, new: dict, same: dict[str, Callable[[dict, dict], bool]] | None = None) -> list[str]:
    """The keys of a provenance record `new` whose values differ in `old` (None: nothing recorded,
    so everything differs). same: a comparison per key where equality is too strict (a file's
    path may move while its contents stay)."""
    if old is None:
        return ["everything (unrecorded)"]
    same = same or {}
    return [key for key in new if not same.get(key, lambda a, b: a == b)(old.get(key) or {}, new[key])]
