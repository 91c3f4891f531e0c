# make demo / make test work from a fresh clone: they create .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.raygrid-installed
OUT    ?= out

.PHONY: install test test-fast test-sklearn demo bench bench-quick wheel clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[all]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

# scikit-learn's own search and validation tests, run against raygrid on both backends: the
# default (auto: small searches in a local child process) and Ray (copied from the installed
# scikit-learn at run time; by-design exceptions in scripts/sklearn_suite_exceptions.txt)
test-sklearn: install
	$(BIN)/python scripts/sklearn_suite.py --backend=auto
	$(BIN)/python scripts/sklearn_suite.py --backend=ray

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not keras"

demo: install
	$(BIN)/raygrid demo --out $(OUT)/demo

bench: install
	$(BIN)/python -m benchmarks.run --full

bench-quick: install
	$(BIN)/python -m benchmarks.run --quick

# dist/raygrid-<version>-py3-none-any.whl: what cluster.yaml's nodes install when it is there.
wheel: install
	$(BIN)/python -m pip wheel -q --no-deps -w dist .

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
