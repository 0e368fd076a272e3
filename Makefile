# The README's two commands: `make reproduce` (main job) and `make test` (tests). Both set up .venv first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYDEVD_DISABLE_FILE_VALIDATION ?= 1

.PHONY: setup test test-unit test-notebooks test-browser browser-deps reproduce notebooks sync clean-cache lab site

setup: $(STAMP)

# torch is installed first, pinned, so that nothing pulls a multi-GB CUDA build on a CPU machine.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[all]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## make test: unit tests, nbval over the committed notebooks (lax mode, shared sanitizer), then the browser tests
## (JupyterLab run-all, the HTML edition) in Debian's headless Chromium.
test: test-unit test-notebooks test-browser

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests --ignore=tests/browser $(PYTEST_ARGS)

# Debian's Chromium: installed here when we are root (CI, containers); otherwise the tests say how to get it.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "browser tests need Chromium: sudo apt-get install chromium (they are skipped without it)"; fi; }

test-browser: $(STAMP) browser-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/browser $(PYTEST_ARGS)

test-notebooks: $(STAMP)
	@if [ -n "$(NOTEBOOKS)" ]; then \
	  $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	    --nbval-cell-timeout=900 $(NOTEBOOKS); \
	else echo "no notebooks yet"; fi

## make reproduce: every study notebook on its default (organism) parameters with papermill, each after the studies
## whose results it reads (`l2s run --order`); executed copies go to data/results/<study>/default/, figures to figures/.
reproduce: $(STAMP)
	@for study in $$($(BIN)/l2s run --order); do \
	  echo "== $$study"; \
	  $(BIN)/l2s run $$study || exit 1; \
	done
	@echo "figures:"; ls figures

## make notebooks (developers): sync the jupytext twins and re-execute the committed notebooks in place (in input order).
notebooks: $(STAMP)
	@for study in $$($(BIN)/l2s run --order); do nb=notebooks/$$study.ipynb; \
	  $(BIN)/jupytext --sync $$nb && \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=1800 $$nb || exit 1; \
	  $(BIN)/python -m l2s_lib.studies.outputs $$nb || exit 1; \
	  $(BIN)/jupytext --sync $$nb; \
	done

## make lab: JupyterLab on the repository with the project's kernel (python3 in .venv), on 127.0.0.1.
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=$(CURDIR) notebooks/

## make site: the HTML edition of the executed notebooks and an index of claims and verdicts, into site/.
site: $(STAMP)
	$(BIN)/python -m l2s_lib.site site

sync: $(STAMP)
	$(BIN)/jupytext --sync notebooks/*.py

clean-cache:
	rm -rf .cache/l2s
