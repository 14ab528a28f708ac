# Two commands on a fresh machine:  `make train`  and  `make test`.  Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The PyTorch build to install; override for another platform, e.g. make TORCH="torch torchvision" test
TORCH ?= torch==2.14.1 torchvision==0.29.1
# Test processes of `make test` (one thread each); e.g. make TEST_WORKERS=8 test on a larger machine
TEST_WORKERS ?= 2

.PHONY: setup train test lint notebooks demo mutants clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

train: setup  ## train on the embedded demo data (images/ + labels.txt) into models/
	$(BIN)/aimonk train

lint: setup  ## ruff, and the layers of the house (import-linter: no import runs back up, no circles)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Test workers of one thread each: the suite is many short tests, subprocesses and file work, so two processes
# keep both cores busy where one process of two BLAS threads leaves one idle. Each test file runs whole in one worker,
# and the notebooks, in order, in one (notebooks/conftest.py). docs/testing.md: the times measured.
test: lint  ## the tests, and the notebooks under nbval (they write to a temporary folder, not models/)
	AIMONK_NOTEBOOK_OUT_DIR=$$(mktemp -d) OMP_NUM_THREADS=1 \
	    $(BIN)/python -m pytest tests notebooks --nbval -n $(TEST_WORKERS) --dist loadfile

notebooks: setup  ## re-execute the notebooks in place with default parameters (their committed outputs)
	cd notebooks && for nb in 0*.ipynb; do ../$(BIN)/papermill --cwd . $$nb $$nb || exit 1; done

mutants: setup  ## mutation testing of the core modules (mutmut, configured in pyproject.toml); slow, not in test or CI
	OMP_NUM_THREADS=1 nice -n 10 $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results
	$(BIN)/python tests/mutation_scores.py

demo: setup  ## regenerate the embedded demo dataset
	$(BIN)/aimonk demo --overwrite

clean:
	rm -rf $(VENV) mutants models/*.pth models/*.png models/*.csv
