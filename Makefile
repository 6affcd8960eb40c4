# make setup: create .venv once and install the project with its test extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-faults bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/pipeline demo --workdir demo-run

test: setup
	PIPELINE_NO_PROGRESS=1 $(BIN)/python -m pytest

# SIGKILL, full-disk, concurrent-reader and reproducibility runs through the CLI (minutes).
test-faults: setup
	PIPELINE_NO_PROGRESS=1 $(BIN)/python -m pytest -m faults

bench: setup
	$(BIN)/python benchmarks/bench_reader.py
	$(BIN)/python benchmarks/bench_frame_cache.py
	$(BIN)/python benchmarks/bench_teachers.py --quick

clean:
	rm -rf demo-run .pytest_cache
