# Two commands: `make demo` (main job) and `make test` (whole suite). Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean wheels

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ssl3d demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q --durations=20 Testing

bench: $(STAMP)
	for f in $(filter-out benchmarks/wheelhouse.py benchmarks/step_timing.py,$(wildcard benchmarks/*.py)); do $(PY) $$f || exit 1; done

# GPU figures: `make wheels` here (needs the package index), then on the GPU machine, with wheels/ brought
# along: `bash benchmarks/gpu_all.sh` (no package index needed there). Options: benchmarks/wheelhouse.py --help.
wheels: $(STAMP)
	$(PY) benchmarks/wheelhouse.py --out wheels

clean:
	rm -rf $(VENV) demo_out
