"""Black-box renderer benchmark: Open3D with finite-difference gradients (central, SPSA)
against PyTorch3D's analytic gradients: render speed, gradient cost and agreement,
single-object pose recovery. Same as `inverse-graphics bench-blackbox`; writes
benchmarks/results/blackbox_grad.json.
"""

import sys

from inverse_graphics.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-blackbox", *sys.argv[1:]]))
