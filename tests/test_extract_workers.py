"""Stage 1's workers: the device is resolved where the worker runs, per-teacher batch sizes reach
the teachers, batching does not change what is stored, half precision hands float32 on."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.io.store import OK, create_store
from pipeline.io.video import write_video
from pipeline.stages.extract import ExtractConfig, ShardWorker, TeacherBatch, actor_gpus
from teachers import ego, handobj, objects
from teachers.base import float32_outputs, load_teacher, save_teacher

F = 8  # teacher frames per clip: 2 s at 4 fps, two ego windows


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    """Untrained tiny teachers of the three kinds (what is tested does not need trained ones)."""
    root = tmp_path_factory.mktemp("extract-teachers")
    torch.manual_seed(0)
    return {
        "ego": save_teacher(root / "ego.pt", ego.build(width=8), "ego", ego.DEFAULT_ARCH, {"width": 8}, ego.make_meta()),
        "object": save_teacher(root / "object.pt", objects.build(num_classes=3, width=8), "object",
                               objects.DEFAULT_ARCH, {"num_classes": 3, "width": 8}, objects.make_meta(["a", "b", "c"])),
        "handobj": save_teacher(root / "handobj.pt", handobj.build(), "handobj", handobj.DEFAULT_ARCH, {},
                                handobj.make_meta()),
    }


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three 2 s clips of moving coloured squares (64x80 px, 8 fps)."""
    root = tmp_path_factory.mktemp("extract-videos")
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        frames = rng.integers(0, 80, (16, 64, 80, 3), dtype=np.uint8)
        for t in range(16):
            frames[t, 10 + t : 40 + t, 5 + 2 * t : 35 + 2 * t] = (200, 40 + 60 * i, 30)
        out.append(str(write_video(root / f"v{i}.mp4", frames, fps=8)))
    return out


def _worker(teacher_files, store: str, **kwargs) -> ShardWorker:
    paths = {k: str(p) for k, p in teacher_files.items()}
    shapes = {}
    for p in paths.values():
        shapes.update(load_teacher(p).output_shapes(F))
    create_store(store, ["a", "b", "c"], F, shapes, {}, shard_rows=3)
    return ShardWorker(paths, store, **kwargs)


def test_auto_resolves_to_the_cpu_inside_a_worker_without_a_gpu(teacher_files, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    worker = _worker(teacher_files, str(tmp_path / "s.zarr"), device="auto")
    info = worker.describe()
    assert info["device"] == "cpu"
    assert {str(t.device) for t in worker.teachers.values()} == {"cpu"}
    assert {str(next(t.model.parameters()).device) for t in worker.teachers.values()} == {"cpu"}
    assert info["precision"] == {"ego": "fp32", "object": "fp32", "handobj": "fp32"}  # bf16 is for GPUs only


def test_device_cuda_without_a_gpu_is_one_error_from_the_worker(teacher_files, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PipelineError) as err:
        _worker(teacher_files, str(tmp_path / "s.zarr"), device="cuda")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("extract-teachers worker on host ")
    assert "device 'cuda' requested but no CUDA GPU is visible" in message and "device=cpu" in message


def test_the_driver_asks_ray_for_gpus_only_where_the_cluster_has_them():
    cfg = lambda **kw: ExtractConfig(manifest="m", video_root="v", out="o", **kw)
    assert actor_gpus(cfg(device="cpu"), cluster_gpus=8) == 0.0
    assert actor_gpus(cfg(device="auto"), cluster_gpus=0) == 0.0
    assert actor_gpus(cfg(device="cuda"), cluster_gpus=0) == 0.0  # started on CPUs, each actor refuses itself
    assert actor_gpus(cfg(device="auto"), cluster_gpus=2) == 1.0
    assert actor_gpus(cfg(device="cuda", gpus_per_worker=0.25), cluster_gpus=1) == 0.25


def test_config_checks_device_precision_and_batches():
    base = ["manifest=m", "video_root=v", "out=o", "teachers.ego=e.pt"]
    assert load_config(ExtractConfig, None, base).batch == TeacherBatch(ego=32, object=128, handobj=16)
    for bad, key in [("device=gpu", "'device'"), ("precision=fp8", "'precision'"), ("batch.handobj=0", "'batch.handobj'")]:
        with pytest.raises(Exception, match=key):
            load_config(ExtractConfig, None, base + [bad])


def test_batch_sizes_from_the_config_reach_the_teachers(teacher_files, videos, tmp_path):
    """Each teacher's model sees batches of exactly its configured size (the last one shorter),
    gathered across the clips of a predict call: 3 clips x 2 ego windows = 6 windows, 24 frames."""
    cfg = load_config(ExtractConfig, None, ["manifest=m", "video_root=v", "out=o", "teachers.ego=e.pt",
                                             "batch.ego=4", "batch.object=10", "batch.handobj=7"])
    batch = {k: getattr(cfg.batch, k) for k in ("ego", "object", "handobj")}
    worker = _worker(teacher_files, str(tmp_path / "s.zarr"), device="cpu", batch=batch)
    assert worker.batch == {"ego": 4, "object": 10, "handobj": 7}
    seen = {kind: [] for kind in worker.teachers}
    for kind, teacher in worker.teachers.items():
        teacher.model.register_forward_pre_hook(lambda m, args, kind=kind: seen[kind].append(len(args[0])))
    worker.run_shard(0, 3, [(v, 0.0, 2.0, None) for v in videos])
    assert seen == {"ego": [4, 2], "object": [10, 10, 4], "handobj": [7, 7, 7, 3]}
    assert worker.store.status().tolist() == [OK] * 3


def test_stored_signals_do_not_depend_on_the_batch_sizes(teacher_files, videos, tmp_path):
    clips = [(v, 0.0, 2.0, None) for v in videos]
    rows = []
    for name, batch, batch_clips in [("one", {"ego": 1, "object": 1, "handobj": 1}, 1),
                                     ("many", {"ego": 64, "object": 64, "handobj": 64}, 8)]:
        worker = _worker(teacher_files, str(tmp_path / f"{name}.zarr"), device="cpu", batch=batch,
                         batch_clips=batch_clips)
        worker.run_shard(0, 3, clips)
        rows.append([worker.store.read_row(i) for i in range(3)])
    for a, b in zip(*rows):
        assert set(a) == {"status", "frame_time", "ego/logits", "object/logits", "handobj/boxes"}
        for key in a:
            np.testing.assert_allclose(np.asarray(a[key], np.float32), np.asarray(b[key], np.float32), atol=2e-3,
                                       err_msg=key)
    for key in ("ego/logits", "object/logits", "handobj/boxes"):  # real outputs, not padding
        assert np.abs(np.asarray(rows[0][0][key], np.float32)).max() > 0, key


def test_half_precision_outputs_come_back_as_float32(teacher_files):
    """Under autocast a model computes in bfloat16; the teacher's output hook casts back, so the
    numpy arrays predict returns are float32 and close to the fp32 ones."""
    nested = float32_outputs([{"boxes": torch.ones(2, 4, dtype=torch.bfloat16), "labels": torch.ones(2, dtype=torch.long)}])
    assert nested[0]["boxes"].dtype == torch.float32 and nested[0]["labels"].dtype == torch.long
    teacher = load_teacher(teacher_files["object"])
    frames = np.random.default_rng(1).integers(0, 256, (1, 3, 64, 64, 3), dtype=np.uint8)
    times = np.arange(3, dtype=np.float32)[None] / 4
    full = teacher.predict(frames, times)["object/logits"]
    teacher.model.register_forward_hook(lambda m, args, out: float32_outputs(out))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what teacher.autocast() opens on a GPU, here on the CPU
        half = teacher.predict(frames, times)["object/logits"]
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, full, atol=0.05 * np.abs(full).max() + 1e-3)


def _held_during_the_run(teacher_files, root, rows: int, monkeypatch, shards: str | None = "0:1") -> dict:
    """Bytes that ``run_extract`` holds (tracemalloc) while its shards would run, for a
    Kinetics manifest of ``rows`` rows in nested folders, over ``shards`` (Ray replaced by a stub
    that takes every job, as the actors would, and checks it against the manifest)."""
    import gc
    import tracemalloc

    import pipeline.stages.extract as extract
    from data_manifests.table import ClipTable

    videos = root / "videos"
    for split in ("train", "val"):
        (videos / split).mkdir(parents=True)
    lines = ["label,youtube_id,time_start,time_end,split"]
    for i in range(rows):
        split = ("train", "val")[i % 2]
        lines.append(f"a,rep{i:08d},{i},{i + 2},{split}")
        if i != 5:  # one video not downloaded
            (videos / split / f"rep{i:08d}_{i:06d}_{i + 2:06d}.mp4").touch()
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("a\n")
    held = {}

    def run_on_ray(cfg, paths, store_path, jobs):
        gc.collect()
        held["tables"] = sum(type(o) is ClipTable for o in gc.get_objects())
        taken = 0
        for a, b, clips, todo in jobs:  # each job built as an actor takes it, then dropped
            assert len(clips) == b - a and todo == list(range(b - a))
            for i, (path, start, end, rate) in zip(range(a, b), clips):
                split = ("train", "val")[i % 2]
                expected = None if i == 5 else str(videos / split / f"rep{i:08d}_{i:06d}_{i + 2:06d}.mp4")
                assert (path, start, end, rate) == (expected, 0.0, 2.0, None)  # trimmed clips: 0 to 2 s in the file
            taken += len(todo)
        assert taken == jobs.rows
        gc.collect()
        held["bytes"] = tracemalloc.get_traced_memory()[0] - held["start"]
        held["jobs"] = len(jobs)
        return {}

    monkeypatch.setattr(extract, "_run_on_ray", run_on_ray)
    cfg = ExtractConfig(manifest=str(root / "manifest.csv"), manifest_format="kinetics", classes=str(root / "classes.txt"),
                        video_root=str(videos), out=str(root / "s.zarr"), shard_rows=16, shards=shards,
                        max_missing_fraction=1.0,
                        teachers=extract.TeacherWeights(**{k: str(p) for k, p in teacher_files.items()}))
    gc.collect()
    tracemalloc.start()
    try:
        held["start"] = tracemalloc.get_traced_memory()[0]
        extract.run_extract(cfg)
    finally:
        tracemalloc.stop()
    return held


def test_the_driver_holds_no_per_row_state_of_the_manifest_while_shards_run(teacher_files, tmp_path, monkeypatch):
    _held_during_the_run(teacher_files, tmp_path / "warm", 32, monkeypatch)  # first-use caches of zarr and torch
    small = _held_during_the_run(teacher_files, tmp_path / "small", 32, monkeypatch)
    large = _held_during_the_run(teacher_files, tmp_path / "large", 4000, monkeypatch)
    assert small["tables"] == large["tables"] == 0  # the manifest's rows went into the shard's job
    # What stays per row is its status, error and a few flags: 24 B here; with the table kept, 694.
    per_row = (large["bytes"] - small["bytes"]) / (4000 - 32)
    assert per_row < 100, f"{per_row:.0f} B per manifest row held while the shards run"


def test_a_whole_manifest_run_builds_each_shards_job_when_it_is_taken(teacher_files, tmp_path, monkeypatch):
    """Every shard pending: the driver keeps a compact row (path bytes, start, end, rate), not the
    table nor 250 B of built job per row."""
    _held_during_the_run(teacher_files, tmp_path / "warm", 32, monkeypatch, shards=None)
    small = _held_during_the_run(teacher_files, tmp_path / "small", 32, monkeypatch, shards=None)
    large = _held_during_the_run(teacher_files, tmp_path / "large", 4000, monkeypatch, shards=None)
    assert (small["jobs"], large["jobs"]) == (2, 250) and small["tables"] == large["tables"] == 0
    per_row = (large["bytes"] - small["bytes"]) / (4000 - 32)
    assert per_row < 100, f"{per_row:.0f} B per manifest row held while the shards run"


def test_gpu_hours_add_up_over_the_runs_that_resume_an_extraction(tmp_path):
    """Each computing run reports its own GPU-hours and the total of every run behind the store's report."""
    import json

    from pipeline.stages.extract import ExtractResult, _write_report

    store = tmp_path / "s.zarr"
    store.mkdir()
    result = ExtractResult(store, 100, 60, 0, 0, 0, {})
    # 4 actors of 1 GPU for 45 min: 3 GPU-hours; then 2 actors of 0.5 GPU for 1.5 h: 1.5 GPU-hours
    _write_report(store, result, (0, 10), 10, 40, 2700.0, 60, {"wall_s": 2700.0, "workers": 4, "gpus": 1.0})
    first = json.loads((store / "extract-report.json").read_text())
    assert (first["gpu_hours"], first["gpu_hours_total"], first["runs"]) == (3.0, 3.0, 1)
    _write_report(store, result, (0, 10), 10, 0, 5400.0, 40, {"wall_s": 5400.0, "workers": 2, "gpus": 0.5})
    second = json.loads((store / "extract-report.json").read_text())
    assert (second["gpu_hours"], second["gpu_hours_total"], second["runs"]) == (1.5, 4.5, 2)
    assert second["clips_per_s"] == round(40 / 5400.0, 3)
    # a --shards run keeps its own report and total
    _write_report(store, result, (2, 4), 10, 0, 3600.0, 20, {"wall_s": 3600.0, "workers": 1, "gpus": 1.0})
    assert json.loads((store / "extract-report.shards-2-4.json").read_text())["gpu_hours_total"] == 1.0
    # a rerun that submitted nothing keeps the figures of the last run that did
    _write_report(store, result, (0, 10), 10, 0, 1.0, 0, {})
    assert json.loads((store / "extract-report.json").read_text()) == second


def test_shard_jobs_give_back_every_path_exactly():
    """Paths come back as given (a file name that is not UTF-8 included), None where the video
    is missing; open ends and frames folders' rates survive; only pending shards are jobs."""
    from pipeline.stages.extract import ShardJobs

    paths = ["/data/k400/train/a.mp4", None, "/data/k400/val/caf\udce9.mp4", "/data/k400/train/frames_dir",
             "/data/k400/train/b.mp4", "/data/k400/train/c.mp4"]
    times = [(0.0, 2.0, None), (0.0, 2.0, None), (1.5, None, None), (0.0, 4.0, 60.0), (0.0, 2.0, None), (0.0, 2.0, None)]
    redo = np.array([False, False, True, True, True, True, False, False])  # rows 0-1 belong to another run
    jobs = ShardJobs([(2, 4), (4, 6), (6, 8)], redo, 2, paths, times)
    assert len(jobs) == 2 and jobs.rows == 4 and jobs.root == "/data/k400/"
    got = list(jobs)
    assert [(a, b, rows) for a, b, _, rows in got] == [(2, 4, [0, 1]), (4, 6, [0, 1])]
    clips = [c for _, _, cs, _ in got for c in cs]  # rows 2-5: the first four given
    assert clips == [(p, *t) for p, t in zip(paths[:4], times[:4])]
    assert all(type(v) is float for c in clips for v in c[1:] if v is not None)
