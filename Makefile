# Two commands: `make demo` (main job) and `make test` (whole suite). Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Where torch comes from: empty = pip's configured index (here the CPU wheel); on a plain PyPI machine without a
# GPU, TORCH_INDEX=https://download.pytorch.org/whl/cpu avoids the multi-GB CUDA build.
TORCH_INDEX ?=

.PHONY: demo test bench screenshots venv clean wheels

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ssl3d demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q --durations=20 Testing

# Slicer's own rendering (slicer-core's slice views, offscreen) of the demo's bundles -> Resources/Screenshots
screenshots: $(STAMP)
	test -f demo_out/demo.json || $(VENV)/bin/ssl3d demo --out demo_out
	$(PY) Testing/render/screenshots.py --demo demo_out --out Resources/Screenshots

bench: $(STAMP)
	for f in $(filter-out benchmarks/wheelhouse.py benchmarks/step_timing.py,$(wildcard benchmarks/*.py)); do $(PY) $$f || exit 1; done

# GPU figures: `make wheels` here (needs the package index), then on the GPU machine, with wheels/ brought
# along: `bash benchmarks/gpu_all.sh` (no package index needed there). Options: benchmarks/wheelhouse.py --help.
wheels: $(STAMP)
	$(PY) benchmarks/wheelhouse.py --out wheels

clean:
	rm -rf $(VENV) demo_out
