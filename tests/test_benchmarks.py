"""Benchmark results: rows, their ratio and target, the results file; and benchmarks/gpu.sh's CPU smoke run."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import Row, markdown_table, results_path, write_results

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"name", "value", "reference", "ratio", "target", "target_met"}


def test_a_row_takes_its_ratio_and_checks_its_target():
    assert Row("reader", 90.0, 100.0, "frames/s", ">= 0.9").ratio == pytest.approx(0.9)
    assert Row("reader", 90.0, 100.0, "frames/s", ">= 0.9").target_met is True
    assert Row("reader", 89.0, 100.0, "frames/s", ">= 0.9").target_met is False
    assert Row("overhead", 10.6, 10.0, "ms", "<= 1.05").target_met is False
    assert Row("overhead", 10.4, 10.0, "ms", "<= 1.05").target_met is True
    untargeted = Row("cache", 30.0, 5.0, "clips/s")
    assert untargeted.ratio == pytest.approx(6.0) and untargeted.target_met is None
    # A reference that could not run: no ratio and no verdict, the note says why.
    missing = Row("vs torchcodec", 100.0, None, "frames/s", ">= 1.0", "torchcodec not importable here")
    assert missing.ratio is None and missing.target_met is None
    with pytest.raises(ValueError, match="target"):
        Row("x", 1.0, 1.0, target="about 1")


def test_results_merge_by_name_into_the_days_file(tmp_path):
    path = write_results([Row("a", 2.0, 1.0, "x", ">= 1.5"), Row("b", 1.0, None)], "my box", tmp_path)
    assert path == results_path("my box", tmp_path) and path.name.startswith("my-box-")
    write_results([Row("a", 1.0, 1.0, "x", ">= 1.5")], "my box", tmp_path)
    doc = json.loads(path.read_text())
    assert doc["machine"] == "my-box"
    rows = {r["name"]: r for r in doc["rows"]}
    assert list(rows) == ["a", "b"]
    assert (rows["a"]["value"], rows["a"]["ratio"], rows["a"]["target_met"]) == (1.0, 1.0, False)
    assert FIELDS <= set(rows["b"]) and rows["b"]["reference"] is None
    table = path.with_suffix(".md").read_text()
    assert table == markdown_table(doc["rows"]) + "\n"
    assert "| a | 1 x | 1 x | 1 | >= 1.5 | **no** |" in table
    assert "| b | 1 | - | - | report | - |" in table


def test_a_child_process_reports_its_own_peak_memory_not_its_parents():
    import numpy as np

    from benchmarks.common import peak_rss_mb

    held = np.ones(300 * 2**20 // 8)  # 300 MB resident in this process
    assert peak_rss_mb() > 300
    code = "from benchmarks.common import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    # getrusage's ru_maxrss would say 300+ here: it keeps the peak of the process that started the child.
    assert float(out.stdout) < 100, out.stdout
    del held


@pytest.mark.slow
def test_gpu_script_runs_on_the_cpu_and_writes_finite_rows(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--device", "cpu", "--quick",
                          "--results", str(tmp_path), "--machine", "test"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    files = list(tmp_path.glob("test-*.json"))
    assert len(files) == 1
    rows = {r["name"]: r for r in json.loads(files[0].read_text())["rows"]}
    assert len(rows) == 9
    for r in rows.values():
        assert FIELDS <= set(r), r
        assert math.isfinite(r["value"]) and r["value"] > 0, r
        if r["reference"] is not None:
            assert math.isfinite(r["reference"]) and r["reference"] > 0, r
            assert r["ratio"] == pytest.approx(r["value"] / r["reference"], rel=1e-3), r
            assert (r["target_met"] is None) == (r["target"] is None), r
    # The projections follow from the measured rates: 240,000 clips x 10 s at 4 fps = 9.6 M
    # frames through the object and hand-object teachers, 5 ego windows of 8 frames per clip.
    obj = rows["ResNet-152 object teacher predict"]["value"]
    hoi = rows["100DOH hand-object detector predict"]["value"]
    ego = rows["ego teacher (slow_r50) predict"]["value"]
    stage1 = rows["projected GPU-hours, Kinetics-400 stage 1 (three teachers)"]
    assert stage1["value"] == pytest.approx((9.6e6 / obj + 9.6e6 / hoi + 1.2e6 / ego) / 3600, rel=1e-3)
    assert stage1["reference"] == 8.0
    train = rows["SlowFast 8x8 R50 training, synthetic input"]
    assert train["reference"] == 150.0
    stage2 = rows["projected GPU-hours, 200 epochs of stage 2 (synthetic input)"]
    assert stage2["value"] == pytest.approx(200 * 240_000 / train["value"] / 3600, rel=1e-3)
    assert stage2["reference"] == pytest.approx(200 * 240_000 / 150 / 3600, rel=1e-3)
    # No bf16 peak on a CPU: achieved TFLOPS without a fraction.
    peak = rows["SlowFast 8x8 R50 training, share of the bf16 peak"]
    assert peak["reference"] is None and peak["ratio"] is None
