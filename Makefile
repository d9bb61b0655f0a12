# Every target creates .venv and installs the project if needed, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RECIPE ?= recipes/demo.yaml
SAMPLE_DIR ?= data/sample
SAMPLE_MB ?= 20
SIZE_MB ?= 20
DOCS ?= 10000000
DOCS_LARGE ?= 2000000
HOST ?= 127.0.0.1
PORT ?= 3000
# The CLI and the UI share one Dagster instance, so CLI runs show in the UI.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export MIX_PIPELINE_RECIPE ?= $(CURDIR)/$(RECIPE)

.PHONY: install demo sample test ui bench bench-selection bench-incremental bench-quality bench-ray bench-scale validate clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,lab,ray,s3]"
	touch $@

install: $(VENV)/.installed

$(SAMPLE_DIR)/ground_truth.json: | $(VENV)/.installed
	$(BIN)/mix-pipeline sample-data --out $(SAMPLE_DIR) --size-mb $(SAMPLE_MB)

sample: $(SAMPLE_DIR)/ground_truth.json

validate: sample
	$(BIN)/mix-pipeline validate --recipe $(RECIPE)

demo: validate
	$(BIN)/mix-pipeline run --recipe $(RECIPE)
	$(BIN)/mix-pipeline report --recipe $(RECIPE)

test: install
	$(BIN)/python -m pytest

ui: sample
# The instance the CLI creates (mix_pipeline/defs/orphans.py DAGSTER_YAML: no telemetry, run monitoring).
	$(BIN)/python -c "from mix_pipeline.defs.runner import dagster_instance; dagster_instance()"
	$(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

bench: install
	$(BIN)/python benchmarks/bench_pipeline.py --size-mb $(SIZE_MB)

bench-selection: install
	$(BIN)/python benchmarks/bench_selection.py --documents $(DOCS)

bench-incremental: install
	$(BIN)/python benchmarks/bench_incremental.py --size-mb $(SIZE_MB)

bench-ray: install
	$(BIN)/python benchmarks/bench_ray.py --size-mb $(SIZE_MB)

bench-scale: install
	$(BIN)/python benchmarks/bench_scale.py --docs-large $(DOCS_LARGE)

bench-quality: install
	$(BIN)/python benchmarks/bench_quality.py --size-mb $(SIZE_MB)

clean:
	rm -rf data .dagster_home benchmarks/out
