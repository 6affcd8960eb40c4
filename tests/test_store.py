import dask.array as da
import numpy as np
import pytest

from pipeline.inspect import signal_stats, verify_store
from pipeline.io.store import FAILED, OK, PENDING, StoreError, check_provenance, create_store, open_store

OUTPUTS = {"object/logits": ((4, 3), "float16"), "ego/logits": ((2, 2), "float16")}


def make(tmp_path, n=10, shard_rows=4):
    return create_store(tmp_path / "s.zarr", [f"clip{i}" for i in range(n)], 4, OUTPUTS, {"teachers": {"a": 1}}, shard_rows)


def shard_arrays(n, value):
    return {
        "frame_time": np.tile(np.arange(4, dtype=np.float32) / 4, (n, 1)),
        "object/logits": np.full((n, 4, 3), value, np.float16),
        "ego/logits": np.full((n, 2, 2), value, np.float16),
    }


def test_create_layout(tmp_path):
    s = make(tmp_path)
    assert s.num_rows == 10 and s.num_frames == 4
    assert s.shards() == [(0, 4), (4, 8), (8, 10)]
    assert s.array("object/logits").shape == (10, 4, 3)
    assert str(s.array("object/logits").dtype) == "float16"
    assert s.array("object/logits").shards == (4, 4, 3)
    assert (s.status() == PENDING).all()
    assert np.isnan(np.asarray(s.array("frame_time")[:])).all()
    with pytest.raises(StoreError, match="exists"):
        make(tmp_path)


def test_write_shard_then_resume_set(tmp_path):
    s = make(tmp_path)
    s.write_shard(4, 8, shard_arrays(4, 1.5), np.array([OK, OK, FAILED, OK]), ["", "", "bad video", ""])
    assert s.pending_shards() == [(0, 4), (8, 10)]
    again = open_store(tmp_path / "s.zarr")
    row = again.read_row(5)
    assert row["status"] == OK
    np.testing.assert_allclose(row["object/logits"], 1.5)
    assert again.errors()[6] == "bad video"
    with pytest.raises(ValueError, match="whole shard"):
        s.write_shard(1, 5, shard_arrays(4, 0), np.ones(4), [""] * 4)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the overflow is the point
def test_dask_opens_store_and_float32_reduction(tmp_path):
    s = make(tmp_path, n=8)
    for a, b in s.shards():
        s.write_shard(a, b, shard_arrays(b - a, 60000.0), np.full(b - a, OK), [""] * (b - a))
    x = da.from_zarr(str(tmp_path / "s.zarr"), component="object/logits")
    assert x.shape == (8, 4, 3) and x.dtype == np.float16
    assert np.isinf(x.sum(dtype="float16").compute())  # why inspection casts first
    assert x.astype("float32").sum().compute() == pytest.approx(8 * 4 * 3 * 60000.0, rel=1e-3)
    stats = signal_stats(tmp_path / "s.zarr")
    assert stats["ok"] == 8 and stats["object_logit_mean"] == pytest.approx(60000.0, rel=1e-3)
    assert stats["frames_per_clip"] == 4
    assert verify_store(tmp_path / "s.zarr") == []


def test_provenance_mismatch_refused(tmp_path):
    s = make(tmp_path)
    check_provenance(s, {"teachers": {"a": 1}})
    with pytest.raises(StoreError, match="teachers"):
        check_provenance(s, {"teachers": {"a": 2}})


def test_open_refuses_non_store(tmp_path):
    with pytest.raises(StoreError, match="not found"):
        open_store(tmp_path / "nope.zarr")
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(StoreError, match="schema"):
        open_store(tmp_path / "other.zarr")


@pytest.mark.parametrize("max_bytes", [2**20, 0])  # whole arrays in memory / row by row
def test_row_reader_gives_read_row(tmp_path, max_bytes):
    s = make(tmp_path)
    rng = np.random.default_rng(0)
    arrays = {k: rng.normal(size=v.shape).astype(v.dtype) for k, v in shard_arrays(4, 0.0).items()}
    s.write_shard(0, 4, arrays, np.array([OK, FAILED, OK, OK]), ["", "bad", "", ""])
    reader = open_store(tmp_path / "s.zarr").row_reader(max_bytes)
    for i in range(10):
        want, got = s.read_row(i), reader(i)
        assert sorted(got) == sorted(want) == ["ego/logits", "frame_time", "object/logits", "status"]
        assert got["status"] == want["status"] == (OK if i in (0, 2, 3) else FAILED if i == 1 else PENDING)
        for k in ("ego/logits", "frame_time", "object/logits"):
            assert got[k].dtype == np.float32
            np.testing.assert_array_equal(got[k], want[k])
    np.testing.assert_array_equal(reader(2)["object/logits"], arrays["object/logits"][2].astype(np.float32))


def test_a_store_of_another_schema_version_is_one_line_through_the_cli(tmp_path, capsys):
    """A real store marked schema version 2, given to inspect and to train-student: one line
    naming both versions, exit 1, nothing written."""
    from pipeline.cli import main

    s = make(tmp_path)
    s.group.attrs["schema_version"] = 2
    assert main(["inspect", str(s.path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "schema version 2; this version reads 1" in err[0]
    (tmp_path / "m.csv").write_text("path,label\nv.mp4,a\n")
    (tmp_path / "classes.txt").write_text("a\n")
    (tmp_path / "videos").mkdir()
    assert main(["run", "train-student", f"manifest={tmp_path / 'm.csv'}", f"classes={tmp_path / 'classes.txt'}",
                 f"video_root={tmp_path / 'videos'}", f"signals={s.path}", f"out={tmp_path / 'student'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "schema version 2" in err[0] and not (tmp_path / "student").exists()


def test_a_claims_heartbeat_survives_a_failed_write(tmp_path):
    """One failed heartbeat (a network hiccup) must not stop the beats: a claim that stopped
    beating would be taken as stale, and an overlapping run let in, after stale_s."""
    import json
    import time

    from pipeline.io.store_lock import StoreLock

    lock = StoreLock(tmp_path, (0, 2), 2, heartbeat_s=0.05)
    lock.acquire()
    try:
        write, failures = lock._write, []

        def flaky():
            if not failures:
                failures.append(1)
                raise RuntimeError("connection reset")
            write()

        lock._write = flaky
        first = json.loads(lock.path.read_text())["beat"]
        time.sleep(0.5)
        assert failures and json.loads(lock.path.read_text())["beat"] > first
    finally:
        lock.release()
    assert not lock.path.exists()


def test_extractions_started_together_share_one_store(tmp_path):
    """Drivers launched at once on disjoint ``--shards`` race to create the store: every one gets
    the store that landed first (written rows stay), none fails, and a run for another input is
    still refused."""
    import threading

    from pipeline.io.store import open_or_create_store

    attrs = {"teachers": {"a": 1}}
    for attempt in range(3):
        path = tmp_path / f"s{attempt}.zarr"
        start, got, errors = threading.Barrier(4), [], []

        def driver():
            start.wait()
            try:
                got.append(open_or_create_store(path, [f"clip{i}" for i in range(10)], 4, OUTPUTS, attrs, attrs, 4))
            except Exception as e:  # noqa: BLE001 - the test reports whatever a driver raised
                errors.append(e)

        threads = [threading.Thread(target=driver) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(got) == 4
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".s{attempt}.zarr.creating")]
        got[0].write_shard(4, 8, shard_arrays(4, 2.0), np.full(4, OK), [""] * 4)
        for store in got[1:]:  # each handle sees the same store
            assert store.status().tolist() == [PENDING] * 4 + [OK] * 4 + [PENDING] * 2
    again = open_or_create_store(path, [f"clip{i}" for i in range(10)], 4, OUTPUTS, attrs, attrs, 4)
    np.testing.assert_allclose(again.read_row(5)["object/logits"], 2.0)  # opened, not made anew
    with pytest.raises(StoreError, match="different input"):
        open_or_create_store(path, [f"clip{i}" for i in range(10)], 4, OUTPUTS, {"teachers": {"a": 2}},
                             {"teachers": {"a": 2}}, 4)
