# Two commands on a fresh machine with Python 3.11, pip and make: `make demo` and `make test`.
# Both create .venv when missing and install the pinned project into it; pip skips what is already satisfied.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint clean-demo

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'." >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the pins change; the torch wheel alone takes minutes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --progress-bar off -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The demo DAG on 2 CPU cores, then its HTML report; a second `make demo` finds nothing to do and says so.
# profiles/default applies by itself. gpu=2: on CPU the GPU-declaring jobs may then share the 2 cores (on a GPU box
# they wait for a free device). The target goes first: snakemake would read it after --resources as a resource.
DEMO_SNAKEMAKE := $(BIN)/snakemake all --cores 2 --resources gpu=2 --configfile config/demo.yaml

demo: $(STAMP)
	$(DEMO_SNAKEMAKE)
	@$(MAKE) --no-print-directory results/demo/report.html

# Prerequisites are globbed by the sub-make above, after the DAG ran: the report is redone only when a result changed.
# --report-metadata: the report opens on the summary and the tables, not the workflow graph (see that file).
results/demo/report.html: $(wildcard results/demo/tables/*.md results/demo/figures/*.png) config/demo.yaml
	$(DEMO_SNAKEMAKE) --report $@ --report-metadata workflow/report/metadata.yaml

# The linter and the formatter check first (rules in pyproject.toml [tool.ruff]), then the fast suite.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

# The demo DAG end to end (minutes); CI runs it after `make test`.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

clean-demo:
	rm -rf results/demo resources/demo
