"""Speed checks, each measuring ours against its reference in the same run (``make bench``).

Run them as modules from the repository root (``python -m benchmarks.bench_reader``), so this
checkout's code is the one measured.
"""
import os

# As the package does (pipeline/__init__.py), before any benchmark imports torch: OpenMP threads
# that spin-wait fight every other busy process on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
