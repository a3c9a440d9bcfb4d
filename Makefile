# Developer entry points. `make demo` and `make test` are the two commands the README opens with;
# .ci/run calls `make test` too, so CI and developers run the same thing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck crd chart-values monitoring setup clean gate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

setup: $(STAMP)

## The main job, runnable on a machine without a cluster (the venv has the `demo` extra, kmock).
demo: $(STAMP)
	$(BIN)/gocd-ha-operator demo

## Test processes (pytest-xdist) for `make test`: 0 (the default) runs the suite serially in one
## process; 2 spreads it over two (tests/README.md, "Parallel runs": two local stacks at once on a
## loaded 2-core machine still starve each other, so parallel is not yet the default).
PYTEST_WORKERS ?= 0

## The whole test suite plus the static checks; exits non-zero on any failure or when no test ran.
test: $(STAMP) lint typecheck
	bash .ci/pytest-strict $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check operator tests benchmarks tools
	$(BIN)/ruff format --check operator tests benchmarks tools

typecheck: $(STAMP)
	$(BIN)/mypy

## Regenerate crds/ and docs/api-reference.md from the pydantic model (a test fails when forgotten).
crd: $(STAMP)
	$(BIN)/gocd-ha-operator crd -o crds/gocdhaclusters.gocdha.io.yaml
	$(BIN)/gocd-ha-operator crd --reference -o docs/api-reference.md
	$(BIN)/python tools/sync_chart_crd.py

## Rewrite the chart's values.schema.json descriptions and README values table from the `# --`
## comments in values.yaml (a test fails when forgotten).
chart-values: $(STAMP)
	$(BIN)/python tools/chart_values.py

## Regenerate the alert rules and Grafana dashboard (manifests/prometheus, the chart's files/).
monitoring: $(STAMP)
	$(BIN)/python tools/sync_monitoring.py

## The static gate for what users install: helm lint/template, kustomize, kubernetes-validate, checkov.
gate: $(STAMP)
	bash .ci/static-gate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
