# mess_ros developer entry points. `make demo` and `make test` set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Every ROS process started from here stays on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_large_data.xml
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)
export PYTHONHASHSEED := 0

.PHONY: setup test lint typecheck pytest demo model ablation bench gpu-check clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py package.xml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	$(VENV)/bin/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The main job: the node on the bundled model, a synthetic camera, a load change midway.
demo: setup
	$(VENV)/bin/mess_demo $(DEMO_ARGS)

# The smaller-scale runs behind the ablation in bench/exit_accuracy.py (minutes each).
ablation: setup
	for mode in two_stage single_exit naive_joint; do \
		$(VENV)/bin/mess_train --preset ablation --mode $$mode --out runs/ablation_$$mode $(TRAIN_ARGS) || exit 1; \
	done

# Trains the bundled default model (models/) on synthetic data; see README for timings.
model: setup
	$(VENV)/bin/mess_train --preset default --out runs/default $(TRAIN_ARGS)
	$(PY) -m mess_ros.train.bundle runs/default models --calibration-images 720

# Every figure the README quotes; exit_accuracy's ablation needs `make ablation` first.
# The node soak alone takes 12 minutes, the end-to-end deadline runs 12 more.
bench: setup
	$(PY) -m bench.exit_accuracy --skip-ablation
	$(PY) -m bench.exit_accuracy --model runs/ablation_two_stage --out reports/bench/ablation.json --plot reports/bench/ablation.png
	$(PY) -m bench.engine_overhead
	$(PY) -m bench.policy_speedup
	$(PY) -m bench.deadline_e2e
	$(PY) -m bench.search_speed
	$(PY) -m bench.offline_eval_overhead
	$(PY) -m bench.convert --threads 1
	$(PY) -m bench.node_latency
	$(PY) -m bench.backends
	$(PY) -m bench.multicamera
	$(PY) -m bench.batching

# On a machine with an NVIDIA GPU: CUDA tests, per-exit latency of torch and TensorRT, the deadline
# benchmark under a GPU hog, CUDA graphs per stage, batching three frames; one JSON file
# (reports/bench/gpu_check.json).
GPU_VENV := .venv-gpu
GPU_PY := $(GPU_VENV)/bin/python
gpu-check:
	test -d $(GPU_VENV) || $(PYTHON) -m venv --system-site-packages $(GPU_VENV)
	$(GPU_PY) -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null \
		|| $(GPU_PY) -m pip install --disable-pip-version-check -q torch==2.14.1 \
		|| echo "gpu-check: could not install torch==2.14.1; using the system's torch"
	grep -v '^#' requirements-gpu.txt | while read -r requirement; do \
		$(GPU_PY) -m pip install --disable-pip-version-check -q "$$requirement" \
			|| echo "gpu-check: could not install $$requirement; the check reports what it skips"; \
	done
	$(GPU_PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e . \
		|| echo "gpu-check: mess_ros not installed in $(GPU_VENV); running from the checkout"
	PYTHONPATH=$(CURDIR) $(GPU_PY) -m bench.gpu_check $(GPU_CHECK_ARGS)

clean:
	rm -rf build install log .pytest_cache .mypy_cache .ruff_cache
