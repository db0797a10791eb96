# Two commands on a fresh machine:  make repro  (set up + the real experiment)
#                                   make test   (set up + the test suite)
# Offline, on a CPU:                make quick  (set up + the whole DAG on real data in minutes)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup lock repro quick study knobs fmnist test docs docs-gen ui clean-quick

LOCK := requirements.lock
# Fashion-MNIST on a bare machine: found, else the Debian package (root or sudo), else downloaded
# with checksums, else one line saying what to run (tools/ensure_data.py).
FASHION_MNIST := $(BIN)/python tools/ensure_data.py fashion_mnist

# Exactly the lock, in a venv made anew whenever the lock changes (nothing left from an old one).
$(BIN)/.installed: $(LOCK) pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

setup: $(BIN)/.installed

lock: setup           ## requirements.lock from pyproject.toml; keeps existing pins (UV_ARGS=--upgrade moves them)
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	  --generate-hashes --quiet -o $(LOCK) $(UV_ARGS)

repro: setup          ## the real experiment: CIFAR-10, hub weights, GPU-sized (params.yaml)
	$(BIN)/python -m pipeline.provenance -- dvc repro

quick: setup          ## the offline quick run (params.quick.yaml) in runs/quick, MLflow in ./mlflow.db
	$(FASHION_MNIST) --raw runs/quick/data/raw
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db \
	  $(BIN)/python -m pipeline.workspace --params params.quick.yaml --dir runs/quick

study: setup          ## the offline data-efficiency study (params.study.yaml): 3 budgets x 3 seeds, both arms re-tuned at each budget, ~30 min (runs/study)
	$(FASHION_MNIST) --raw runs/study/data/raw
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db \
	  $(BIN)/python -m pipeline.workspace --params params.study.yaml --dir runs/study

knobs: setup          ## the practitioner's knobs on the quick data, 5 seeds, paired (params.knobs.yaml; runs/knobs): ~12 min
	$(FASHION_MNIST) --raw runs/knobs/data/raw
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db \
	  $(BIN)/python -m pipeline.workspace --params params.knobs.yaml --dir runs/knobs
	$(BIN)/python benchmarks/paired.py runs/knobs/results/cells.json scratch:scratch_ra3 \
	  finetune:finetune_lld finetune:finetune_lld_bls1

fmnist: setup         ## Fashion-MNIST from scratch, small-data recipe, ~30 min on a CPU (runs/fmnist)
	$(FASHION_MNIST) --raw runs/fmnist/data/raw
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db \
	  $(BIN)/python -m pipeline.workspace --params params.fmnist.yaml --dir runs/fmnist

test: setup           ## the test suite (what CI runs), on every core; the real-data test needs Fashion-MNIST
	$(FASHION_MNIST) --no-download --optional
	$(BIN)/python -m pytest -n auto --dist loadfile

docs: setup          ## the documentation site from docs/ into docs/_build/html (warnings are errors)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"

docs-gen: setup      ## docs/params.md from the schema, docs/results/<run>.md from each run in runs/ that has a record
	$(BIN)/python -m pipeline.config.reference docs/params.md
	@for run in runs/*/; do name=$$(basename $$run); \
	  if [ -f $$run/provenance.json ]; then \
	    $(BIN)/python -m pipeline.report.measured $$run docs/results/$$name || exit 1; fi; done

ui:                   ## the MLflow UI over ./mlflow.db; prints the newest comparison's links first
	$(BIN)/python -m pipeline.tracking.ui --uri sqlite:///mlflow.db --ui http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db

.PHONY: gpu-fetch gpu-check gpu-rehearsal
GPU_OUT ?= gpu-out
gpu-fetch: setup      ## the GPU check's offline mode: pinned wheels and Fashion-MNIST into .gpu/; says the size
	PYTHON=$(BIN)/python bash benchmarks/gpu_fetch.sh

gpu-check:            ## on a CUDA machine: every GPU figure into $(GPU_OUT)/ in <= 8 min (docs: "Benchmarks and the GPU check")
	bash benchmarks/gpu_check.sh $(GPU_OUT)

gpu-rehearsal: setup  ## the GPU check's offline mode, tiny, on the CPU, in a Python 3.12 venv
	bash benchmarks/gpu_rehearsal.sh

clean-quick:
	rm -rf runs/quick
