# make demo: set up .venv and run the demo scaling sweep + analysis (writes demo_out/).
# make test: set up .venv and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test data clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,ray,slurm]'   # the sweep backends' tests need Ray and submitit
	touch $@

# Debian packages, best effort: Fashion-MNIST (offline image data) and tcmalloc (XLA:CPU's step
# buffers reused instead of page-faulted each step; experiments/host_allocator.py).
data: $(VENV)/.installed
	@test -d $(FASHION_MNIST) || { (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	  || echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will skip"; }
	@test -n "$$($(PY) -m experiments.host_allocator)" || { (apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4) >/dev/null 2>&1 \
	  || echo "note: could not install libtcmalloc-minimal4; CPU steps run with the system malloc (slower)"; }

demo: $(VENV)/.installed data
	$(PY) -m experiments.sweep --sweep configs/sweeps/mlp_synthetic.py --sweep_arg quick --root demo_out/runs --workers 2
	$(PY) -m analysis demo_out/runs --out demo_out
	@echo "wrote demo_out/scaling.png and demo_out/summary.md"

test: $(VENV)/.installed data
	$(PY) -m experiments.host_allocator $(PY) -m pytest -n 2 --durations=20 tests

clean:
	rm -rf demo_out .pytest_cache
