# The README's two commands. Both create .venv on first use and install vidpipe into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test docs docs-serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install when the package definition or the pinned torch / torchvision pair changes.
# The DALI extra is part of the test install (its CPU path is tested on VP9); where the platform has
# no DALI wheel the install goes on without it and the DALI tests skip, saying why.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[test,docs,dali,remote]' || { echo "NVIDIA DALI unavailable here: installing without it"; $(BIN)/pip install -q -c constraints.txt -e '.[test,docs,remote]'; }
	$(BIN)/python -c "import torch, torchvision; print(f'torch {torch.__version__}, torchvision {torchvision.__version__}')"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vidpipe demo --out demo-output

test: $(STAMP)
	$(BIN)/ruff check vidpipe tests benchmarks
	$(BIN)/python -m pytest -q tests
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

# The documentation site: its benchmark tables regenerated from benchmarks/results/*.json, then built into site/.
docs: $(STAMP)
	$(BIN)/python benchmarks/tables.py --write
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

clean:
	rm -rf $(VENV) demo-output site
