"""The installed stack is the pinned one, and the render benchmark runs end to end."""

import json
from importlib.metadata import version

import pytest

from inverse_graphics.cli import main


def test_pinned_stack_imports():
    import open3d  # noqa: F401  (needs the system's libusb-1.0; `make` installs it)
    import pytorch3d.renderer  # noqa: F401

    assert version("torch").startswith("2.11.0")
    assert version("easypytorch3d") == "0.7.9.post1"
    assert version("open3d-cpu") == "0.20.0"


def test_bench_render_writes_required_keys(tmp_path, capsys):
    out = tmp_path / "render_speed.json"
    assert main(["bench-render", "--json", "--batch-size", "2", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("stock_ms_per_image", "fast_ms_per_image", "speedup", "grad_rel_err"):
        assert key in result
    assert result["grad_rel_err"] <= 1e-4
    assert result["speedup"] == pytest.approx(result["stock_ms_per_image"] / result["fast_ms_per_image"])
    assert json.loads(capsys.readouterr().out)["speedup"] == result["speedup"]
