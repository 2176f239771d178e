"""Render benchmark: stock PyTorch3D autograd vs the fast CPU gradient path.

Same as `inverse-graphics bench-render`; writes benchmarks/results/render_speed.json.
"""

import sys

from inverse_graphics.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-render", *sys.argv[1:]]))
