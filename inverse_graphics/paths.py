"""Where the project's shipped files live: assets, weights, example frames and benchmark results."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = REPO_ROOT / "assets"  # the shipped catalog: BOP models folder (PLY, mm) + models_info.json
WEIGHTS_DIR = ASSETS_DIR / "weights"
# Trained by the sleep phase (reweighted wake-sleep); also what proposes objects in robot frames
SHIPPED_AIR = WEIGHTS_DIR / "air_tabletop_v1.pt"
# The ELBO-trained AIR, kept for the objective comparison (benchmarks/air_tabletop.py evaluate)
SHIPPED_ELBO_AIR = WEIGHTS_DIR / "air_elbo_tabletop_v1.pt"
SHIPPED_DAIR = WEIGHTS_DIR / "dair_tabletop_v1.pt"
SHIPPED_SUPERVISED = WEIGHTS_DIR / "supervised_tabletop_v1.pt"
EXAMPLE_FRAMES = ASSETS_DIR / "examples" / "robot_frames"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
GENERALIZATION_MODELS = RESULTS_DIR / "models"  # <method>_<train split>.pt for the generalization splits


def shown(path: Path) -> str:
    """A path relative to the repository when it lies inside it (for messages)."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
