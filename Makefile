# Quick start: `make demo`, `make test` (each creates .venv on first use). See README.md.
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
# under ./datasets on first use), evaluates both and prints the comparison table: the README's
# three demo commands.
RESDET := $(VENV)/bin/resdet
demo: venv
	$(RESDET) train --config shapes/demo_R18_FPN.yaml
	$(RESDET) train --config shapes/demo_VGG16.yaml
	$(RESDET) compare --baseline output/shapes/demo_VGG16 output/shapes/demo_R18_FPN \
		--plot output/shapes/demo_comparison.png

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# Trains plain-20 and ResNet-20 (the paper's CIFAR-10 nets, section 4.2) on the embedded shapes_cls
# set (generated under ./datasets on first use) with the same schedule, for each of SEEDS, and
# plots their training and validation error (each seed faint, the mean bold): the paper's Fig. 6
# in a few minutes on a CPU. The two nets of a seed train side by side, each on half the cores
# (these small convolutions use one core well and two poorly); the plain net's output goes to
# output/classification/shapes_plain20_s<seed>.log.
SEEDS ?= 0 1 2
HALF_CORES := $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n > 1 ? n / 2 : 1 )))
CLS_RUN = OMP_NUM_THREADS=$(HALF_CORES) $(PY) tools/train_classifier.py -q
.PHONY: pretrain-demo
pretrain-demo: venv
	@mkdir -p output/classification
	@set -e; for s in $(SEEDS); do \
		echo "seed $$s: plain-20 and ResNet-20, side by side"; \
		$(CLS_RUN) --config configs/classification/shapes_plain20.yaml \
			--output-dir output/classification/shapes_plain20_s$$s seed=$$s \
			> output/classification/shapes_plain20_s$$s.log 2>&1 & p=$$!; \
		$(CLS_RUN) --config configs/classification/shapes_resnet20.yaml \
			--output-dir output/classification/shapes_resnet20_s$$s seed=$$s; \
		wait $$p || { tail -5 output/classification/shapes_plain20_s$$s.log; exit 1; }; \
	done
	$(PY) tools/train_classifier.py --curves \
		$(foreach s,$(SEEDS),output/classification/shapes_plain20_s$(s)) \
		$(foreach s,$(SEEDS),output/classification/shapes_resnet20_s$(s)) \
		--output output/classification/degradation.png

# The real-photo learning benchmark (docs/real-photos.md): torchvision's Faster R-CNN (the anchor
# script) against resdet's recipes in configs/real/, at equal time and at equal iterations, on a
# Pascal VOC folder (split by its ImageSets/Main trainval / test lists, else every 5th image to
# val). About 45-60 minutes per run on 2 CPU cores; rerunning continues (--reuse).
#   make real-benchmark DATA=../shared/datasets/bccd ANCHOR=../shared/anchors/torchvision_frcnn_baseline.py ARGS="--seeds 0 1 2"
.PHONY: real-benchmark
real-benchmark: venv
	@test -n "$(DATA)" || { echo "set DATA=<VOC folder> (and ANCHOR=<anchor script>)"; exit 2; }
	@test -n "$(ANCHOR)" || { echo "set ANCHOR=<torchvision_frcnn_baseline.py>"; exit 2; }
	$(PY) tools/benchmark_real.py --data $(DATA) --anchor $(ANCHOR) --reuse $(ARGS)

# GPU readiness: tests/gpu, then GPU training / inference benchmarks next to Detectron2's V100
# figures (exit 2 without a GPU). See docs/performance.md.
.PHONY: gpu-check
gpu-check: venv
	PYTHON=$(PY) tools/gpu_check.sh
