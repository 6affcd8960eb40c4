"""Faults, through the commands users run (``python -m pipeline.cli`` in a subprocess):

- killed with SIGKILL at random points (the driver, Ray and its actors, or the training
  process and its loader workers, all at once), then rerun, both stages end with exactly the
  store and checkpoint of a run that was never stopped;
- a full disk (a small tmpfs, mounted in a private mount namespace) stops them with one
  clear line, and what was complete stays complete;
- readers during a write see only completed rows;
- the same seed and config give an identical store and checkpoint.

These take minutes (every run starts Ray or a training process): ``make test-faults`` runs
them, and ``.ci/run`` calls it after ``make test``.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from pipeline.io.store import OK, PENDING, open_store

pytestmark = pytest.mark.faults

ENV = {**os.environ, "PIPELINE_NO_PROGRESS": "1"}
ROWS = 24  # manifest rows: 12 shards of 2, so kills land between and inside many shard writes
SHARD_ROWS = 2


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def kill_everything(proc: subprocess.Popen) -> None:
    """SIGKILL the process and every process it started (Ray's GCS, raylet and actors, or the
    DataLoader's workers) at the same instant, as a machine that loses power would."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=30)
    proc.wait(timeout=30)


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``cmd`` in the background, its output to ``log`` (a pipe nobody reads would fill and stall it)."""
    with open(log, "w") as f:
        return subprocess.Popen(cmd, env=env or ENV, stdout=f, stderr=subprocess.STDOUT, text=True)


def wait_until(check, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before the kill point")
        if time.time() > deadline:
            raise AssertionError("the kill point was never reached")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def inputs(tiny_world, tmp_path_factory):
    """A 24-row Kinetics-like manifest and three quickly trained demo teachers."""
    from pipeline.config import load_config
    from pipeline.stages.train_teachers import TrainTeachersConfig, run_train_teachers

    root = tmp_path_factory.mktemp("faults")
    kin, ce = tiny_world / "kinetics", tiny_world / "charades_ego"
    lines = (kin / "kinetics_demo.csv").read_text().splitlines()
    manifest = root / "clips.csv"
    manifest.write_text("\n".join(lines[: ROWS + 1]) + "\n")
    teachers = run_train_teachers(load_config(TrainTeachersConfig, None, [
        f"manifest={ce / 'CharadesEgo_v1_train.csv'}", f"test_manifest={ce / 'CharadesEgo_v1_test.csv'}",
        f"video_root={ce / 'videos'}", f"ground_truth={tiny_world / 'ground_truth'}", f"out={root / 'teachers'}",
        "ego.epochs=1", "object.epochs=1", "handobj.epochs=1", "handobj.frame_stride=4",
    ]))
    common = [f"manifest={manifest}", f"classes={kin / 'classes.txt'}", f"video_root={kin / 'videos'}"]
    return {"root": root, "common": common, "teachers": [f"teachers.{k}={v}" for k, v in teachers["weights"].items()]}


def extract_cmd(inputs, out: Path) -> list[str]:
    return cli("run", "extract-teachers", *inputs["common"], f"out={out}", "workers=2", f"shard_rows={SHARD_ROWS}",
               *inputs["teachers"])


def train_cmd(inputs, out: Path, signals: Path) -> list[str]:
    return cli("run", "train-student", *inputs["common"], f"out={out}", f"signals={signals}", "data.split=null",
               "loss.ego=1.0", "loss.object=1.0", "loss.hand_map=1.0", "loss.object_map=1.0", "model.dropout=0.5",
               "optim.epochs=2", "optim.batch_size=4", "optim.lr=0.05", "optim.num_workers=1",
               "optim.checkpoint_every_steps=1")


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    store = open_store(path)
    return {name: np.asarray(store.array(name)[:])
            for name in ["clip_id", "status", "error", "frame_time", *store.output_names]}


def assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray], rows=slice(None)) -> None:
    assert got.keys() == want.keys()
    for name in want:
        a, b = got[name][rows], want[name][rows]
        assert a.shape == b.shape, name
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), f"{name} differs"
        else:
            assert a.tolist() == b.tolist(), f"{name} differs"


def assert_same_tensors(a, b, where="") -> None:
    """Nested dicts/lists of tensors and plain values, equal exactly."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def checkpoint_parts(path: Path) -> tuple[dict, list]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in state["history"]]  # wall time differs
    return state["model"], history


@pytest.fixture(scope="module")
def reference(inputs):
    """The uninterrupted runs: one store, one student trained from it."""
    root = inputs["root"]
    done = run(extract_cmd(inputs, root / "reference.zarr"))
    assert done.returncode == 0, done.stderr
    trained = run(train_cmd(inputs, root / "reference-student", root / "reference.zarr"))
    assert trained.returncode == 0, trained.stderr
    return {"store": root / "reference.zarr", "arrays": store_arrays(root / "reference.zarr"),
            "checkpoint": root / "reference-student" / "checkpoint.pt"}


def test_the_same_seed_and_config_give_an_identical_store_and_checkpoint(inputs, reference, tmp_path):
    again = run(extract_cmd(inputs, tmp_path / "again.zarr"))
    assert again.returncode == 0, again.stderr
    assert_same_arrays(store_arrays(tmp_path / "again.zarr"), reference["arrays"])
    assert (reference["arrays"]["status"] == OK).all()
    skip = {"package_version"}
    assert {k: v for k, v in open_store(tmp_path / "again.zarr").attrs.items() if k not in skip} == \
        {k: v for k, v in open_store(reference["store"]).attrs.items() if k not in skip}
    trained = run(train_cmd(inputs, tmp_path / "student", reference["store"]))
    assert trained.returncode == 0, trained.stderr
    model, history = checkpoint_parts(tmp_path / "student" / "checkpoint.pt")
    ref_model, ref_history = checkpoint_parts(reference["checkpoint"])
    assert all(torch.equal(model[k], ref_model[k]) for k in ref_model) and model.keys() == ref_model.keys()
    assert history == ref_history and len(history) == 2
    # and the rest of last.pt: optimizer momentum, step counters, random state
    last = torch.load(tmp_path / "student" / "last.pt", weights_only=True)
    ref_last = torch.load(reference["checkpoint"].parent / "last.pt", weights_only=True)
    assert_same_tensors(last["optimizer"], ref_last["optimizer"])
    assert torch.equal(last["rng"], ref_last["rng"]) and (last["epoch"], last["step"]) == (ref_last["epoch"], 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extraction_killed_anywhere_then_rerun_gives_the_uninterrupted_store(inputs, reference, tmp_path, seed):
    rng = random.Random(seed)
    out = tmp_path / "killed.zarr"
    proc = start(extract_cmd(inputs, out), tmp_path / "log")
    if seed == 0:  # early: while Ray starts (the store's creation itself: the failpoint test below)
        time.sleep(rng.uniform(0.5, 4.0))
    else:  # while shards are being written: after a random number of rows, plus a random moment
        # More than half the rows left at the kill point: a later one (16 of 24 rows done, then
        # 0.47 s) once let the run finish before the kill, its last 8 rows in under 0.5 s.
        target = rng.randrange(2, ROWS // 2)

        def rows_done() -> bool:
            try:
                return int((open_store(out).status() != PENDING).sum()) >= target
            except Exception:  # not created yet
                return False

        wait_until(rows_done, proc)
        time.sleep(rng.uniform(0.0, 0.2))
    kill_everything(proc)
    if out.exists():  # what a reader sees now: rows marked done are the finished rows
        partial = store_arrays(out)
        done = partial["status"] != PENDING
        assert done.sum() < ROWS, "the run finished before it was killed; the test killed nothing"
        for name in partial:
            if name not in ("status", "error"):
                assert_same_arrays({name: partial[name]}, {name: reference["arrays"][name]}, rows=done)
    rerun = run(extract_cmd(inputs, out))
    assert rerun.returncode == 0, rerun.stderr
    assert_same_arrays(store_arrays(out), reference["arrays"])


@pytest.mark.parametrize("point", ["create_store:before_rename", "write_shard:before_status"])
def test_extraction_killed_at_the_worst_moments_then_rerun_gives_the_uninterrupted_store(inputs, reference,
                                                                                        tmp_path, point):
    """Killed exactly where a torn write would hurt (pipeline/io/failpoints.py): a whole store
    not yet renamed into place, or a shard whose data is written and whose status is not."""
    out, marker = tmp_path / "s.zarr", tmp_path / "stopped-here"
    proc = start(extract_cmd(inputs, out), tmp_path / "log", env={**ENV, "PIPELINE_FAILPOINT": point, "PIPELINE_FAILPOINT_MARKER": str(marker)})
    wait_until(marker.exists, proc)
    kill_everything(proc)
    if point == "create_store:before_rename":
        assert not out.exists() and len(list(tmp_path.glob(".s.zarr.creating-*"))) == 1  # whole, but hidden
    else:
        partial = store_arrays(out)
        pending = partial["status"] == PENDING
        written_not_marked = pending & np.isfinite(partial["frame_time"]).any(axis=1)
        assert written_not_marked.any()  # the frozen shard: its data is on disk, its rows still pending
        done = ~pending
        for name in ("frame_time", *[n for n in partial if "/" in n]):
            assert_same_arrays({name: partial[name]}, {name: reference["arrays"][name]}, rows=done)
    rerun = run(extract_cmd(inputs, out))
    assert rerun.returncode == 0, rerun.stderr
    assert_same_arrays(store_arrays(out), reference["arrays"])


def test_training_killed_between_a_checkpoints_write_and_rename_then_rerun(inputs, reference, tmp_path):
    """Frozen after last.pt.tmp is written and synced, before it is renamed: the rerun never
    reads the temporary file as a checkpoint and ends with the uninterrupted weights."""
    out, marker = tmp_path / "student", tmp_path / "stopped-here"
    proc = start(train_cmd(inputs, out, reference["store"]), tmp_path / "log",
                 env={**ENV, "PIPELINE_FAILPOINT": "save_checkpoint:before_replace",
                      "PIPELINE_FAILPOINT_MARKER": str(marker)})
    wait_until(marker.exists, proc)
    kill_everything(proc)
    assert (out / "last.pt.tmp").exists() and not (out / "last.pt").exists()  # the first save, half done
    rerun = run(train_cmd(inputs, out, reference["store"]))
    assert rerun.returncode == 0, rerun.stderr
    model, history = checkpoint_parts(out / "checkpoint.pt")
    ref_model, ref_history = checkpoint_parts(reference["checkpoint"])
    assert all(torch.equal(model[k], ref_model[k]) for k in ref_model) and history == ref_history
    assert not (out / "last.pt.tmp").exists()


@pytest.mark.parametrize("seed", [0, 1])
def test_training_killed_anywhere_then_rerun_gives_the_uninterrupted_checkpoint(inputs, reference, tmp_path, seed):
    rng = random.Random(seed)
    out = tmp_path / "student"
    proc = start(train_cmd(inputs, out, reference["store"]), tmp_path / "log")
    # of 2 epochs x 6 steps: kill after this many steps are saved, at a random moment, with at
    # least half the steps left (as the extraction test: the run must not finish first)
    steps = rng.randrange(1, 7)

    def saved_steps() -> bool:
        try:
            state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        except Exception:  # not written yet
            return False
        return state["epoch"] * 6 + state["step"] >= steps

    wait_until(saved_steps, proc)
    time.sleep(rng.uniform(0.0, 0.15))
    kill_everything(proc)
    assert not (out / "checkpoint.pt").exists(), "the run finished before it was killed"
    rerun = run(train_cmd(inputs, out, reference["store"]))
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from" in rerun.stdout
    model, history = checkpoint_parts(out / "checkpoint.pt")
    ref_model, ref_history = checkpoint_parts(reference["checkpoint"])
    assert model.keys() == ref_model.keys()
    assert all(torch.equal(model[k], ref_model[k]) for k in ref_model)
    assert history == ref_history


def test_an_actor_lost_mid_run_is_restarted_and_its_shard_retried(inputs, reference, tmp_path):
    """SIGKILL one Ray actor's process while shards are being computed: Ray restarts it, the
    shard it held is run again, and the run ends with the uninterrupted store."""
    out = tmp_path / "lost.zarr"
    proc = start(extract_cmd(inputs, out), tmp_path / "log")

    def rows_done() -> bool:
        try:
            return int((open_store(out).status() != PENDING).sum()) >= 4
        except Exception:
            return False

    wait_until(rows_done, proc)
    actors = [p for p in psutil.Process(proc.pid).children(recursive=True)
              if "RemoteShardWorker" in " ".join(p.cmdline())]
    assert actors, "no actor process found"
    actors[0].send_signal(signal.SIGKILL)
    assert proc.wait(timeout=600) == 0, (tmp_path / "log").read_text()
    assert_same_arrays(store_arrays(out), reference["arrays"])


def readers_see_only_completed_rows(store_path: Path, reference: dict, proc: subprocess.Popen) -> int:
    """Read the store over and over while ``proc`` writes it, as ``pipeline inspect`` (dask) and
    the training loader (``row_reader``) do; every row read as ok must hold its final values.
    Returns how many reads saw a partly written store."""
    from pipeline.inspect import open_signal

    partial_reads = 0
    while proc.poll() is None:
        try:
            store = open_store(store_path)
        except Exception:
            time.sleep(0.05)
            continue
        read = store.row_reader()
        status = np.asarray([read(i)["status"] for i in range(store.num_rows)])
        for i in np.flatnonzero(status == OK):
            row = read(i)
            for name in ["frame_time", *store.output_names]:
                assert np.array_equal(row[name], reference[name][i].astype(np.float32), equal_nan=True), (i, name)
        status = store.status()  # dask, as inspect reads: status first, then the rows it marks ok
        ok = np.flatnonzero(status == OK)
        for name in store.output_names:
            values = open_signal(store_path, name)[ok].compute()
            assert np.array_equal(values, reference[name][ok], equal_nan=True), name
        partial_reads += int(0 < len(ok) < store.num_rows)
    return partial_reads


def test_readers_during_a_write_see_only_completed_rows(inputs, reference, tmp_path):
    out = tmp_path / "written.zarr"
    proc = start(extract_cmd(inputs, out), tmp_path / "log")
    try:
        partial_reads = readers_see_only_completed_rows(out, reference["arrays"], proc)
    finally:
        if proc.poll() is None:
            kill_everything(proc)
    assert proc.returncode == 0, (tmp_path / "log").read_text()
    assert partial_reads >= 3  # the reads did overlap the writes


def can_mount_tmpfs() -> bool:
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


def run_on_small_disk(size_kib: int, script: str, workdir: Path) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with a ``size_kib`` tmpfs mounted at ``workdir/disk``, private to it."""
    (workdir / "disk").mkdir()
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         f"mount -t tmpfs -o size={size_kib}k tmpfs {workdir / 'disk'} && {script}"],
        env=ENV, capture_output=True, text=True, timeout=600)


TMPFS = bool(shutil.which("unshare")) and can_mount_tmpfs()
if not TMPFS and os.environ.get("PIPELINE_REQUIRE_TMPFS"):  # .ci/run sets it: CI must run these
    raise RuntimeError("the full-disk tests need `unshare --user --map-root-user --mount` to mount a private tmpfs, "
                       "and this machine refuses it (PIPELINE_REQUIRE_TMPFS is set)")
needs_tmpfs = pytest.mark.skipif(not TMPFS, reason="needs unshare and user namespaces to mount a private tmpfs")


@needs_tmpfs
def test_a_full_disk_stops_extraction_with_one_line_and_keeps_completed_rows(inputs, reference, tmp_path):
    # what the store takes on a disk (whole blocks per file; tmpfs counts whole pages)
    store_bytes = sum(f.stat().st_blocks * 512 for f in reference["store"].rglob("*") if f.is_file())
    disk = tmp_path / "disk"
    # Room for about half the store: the run fills it, and the disk's content is copied out for the checks.
    cmd = " ".join(f"'{a}'" for a in extract_cmd(inputs, disk / "s.zarr"))
    done = run_on_small_disk(store_bytes // 2 // 1024, f"{cmd}; echo rc=$? > {tmp_path / 'rc'}; "
                             f"cp -r {disk / 's.zarr'} {tmp_path / 'copy.zarr'}", tmp_path)
    assert (tmp_path / "rc").read_text().strip() == "rc=1", done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: no space left on the device") and "Traceback" not in done.stderr, done.stderr
    assert "rerun" in lines[-1]
    partial = store_arrays(tmp_path / "copy.zarr")
    ok = partial["status"] == OK
    assert 0 < ok.sum() < ROWS  # some shards were written before the disk filled
    for name in partial:
        if name not in ("status", "error"):
            assert_same_arrays({name: partial[name]}, {name: reference["arrays"][name]}, rows=ok)
    # with space again, the rerun completes the same store
    rerun = run(extract_cmd(inputs, tmp_path / "copy.zarr"))
    assert rerun.returncode == 0, rerun.stderr
    assert_same_arrays(store_arrays(tmp_path / "copy.zarr"), reference["arrays"])


@needs_tmpfs
def test_a_full_disk_stops_training_with_one_line_and_keeps_the_last_checkpoint(inputs, reference, tmp_path):
    ckpt_bytes = (reference["checkpoint"].parent / "last.pt").stat().st_size
    disk = tmp_path / "disk"
    cmd = " ".join(f"'{a}'" for a in train_cmd(inputs, disk / "student", reference["store"]))
    # Room for one checkpoint and most of a second: the first save fits, writing the next one fails.
    done = run_on_small_disk(int(ckpt_bytes * 1.7) // 1024, f"{cmd}; echo rc=$? > {tmp_path / 'rc'}; "
                             f"cp -r {disk / 'student'} {tmp_path / 'copy'}", tmp_path)
    assert (tmp_path / "rc").read_text().strip() == "rc=1", done.stderr
    last = [line for line in done.stderr.splitlines() if line.strip()][-1]
    assert "Traceback" not in done.stderr, done.stderr
    assert last.startswith("error: could not write checkpoint") and "no space left" in last
    assert "still holds the previous checkpoint" in last
    state = torch.load(tmp_path / "copy" / "last.pt", map_location="cpu", weights_only=True)  # whole and loadable
    assert (state["epoch"], state["step"]) == (0, 1)  # the first save (after step 1) is the one kept
    assert not list((tmp_path / "copy").glob("*.tmp"))
