# Quick start: `make test` (creates .venv on first use). See README.md.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv test lint format clean demo

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -e ".[dev]"  # no .pyc pass over torch: 20 s less
	@touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

# Trains the ResNet-18 FPN detector and the VGG-16 baseline on the synthetic shapes data (generated
# under ./datasets on first use), evaluates both and prints the comparison table.
demo: venv
	$(PY) tools/train.py --config configs/shapes/demo_R18_FPN.yaml
	$(PY) tools/train.py --config configs/shapes/demo_VGG16.yaml
	$(PY) tools/compare.py --baseline output/shapes/demo_VGG16 output/shapes/demo_R18_FPN \
		--plot output/shapes/demo_comparison.png

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
