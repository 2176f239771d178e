# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench-render system-deps clean $(VENV)

$(VENV): $(STAMP)

# torch==2.11.0 from PyPI is the CUDA 13 build that easypytorch3d's extension links
# against; it runs on machines without a GPU. The pins live in pyproject.toml.
$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --no-cache-dir -q --disable-pip-version-check -e ".[test]"
	@touch $@

# Open3D's wheel needs libusb-1.0 from the system.
system-deps:
	@ldconfig -p 2>/dev/null | grep -q libusb-1.0 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null; \
	  else echo "warning: Open3D needs libusb-1.0 (Debian/Ubuntu: apt-get install libusb-1.0-0)"; fi; }

demo: $(STAMP)
	$(VENV)/bin/inverse-graphics demo --out demo_output

test: $(STAMP)
	$(PY) -m pytest -q

bench-render: $(STAMP)
	$(PY) benchmarks/render_speed.py

clean:
	rm -rf demo_output .pytest_cache
