# Two commands on a fresh machine:  make repro  (set up + the real experiment)
#                                   make test   (set up + the test suite)
# Offline, on a CPU:                make quick  (set up + the whole DAG on real data in minutes)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro quick fmnist test ui clean-quick

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

repro: setup          ## the real experiment: CIFAR-10, hub weights, GPU-sized (params.yaml)
	dvc repro

quick: setup          ## the offline quick run (params.quick.yaml) in runs/quick, MLflow in ./mlflow.db
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db \
	  $(BIN)/python -m pipeline.workspace --params params.quick.yaml --dir runs/quick

fmnist: setup         ## Fashion-MNIST from scratch, small-data recipe, ~30 min on a CPU (runs/fmnist)
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db \
	  $(BIN)/python -m pipeline.workspace --params params.fmnist.yaml --dir runs/fmnist

test: setup           ## the test suite (what CI runs)
	$(BIN)/python -m pytest

ui:                   ## the MLflow UI over ./mlflow.db
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db

clean-quick:
	rm -rf runs/quick
