"""The signals store: per-clip teacher outputs in a zarr v3 group (DESIGN.md section 5).

Where it lives: a local path, or an fsspec URL (``s3://bucket/k400.zarr``, ``gs://...``)
that zarr opens through its own fsspec storage layer (credentials and endpoints as the
filesystem reads them, e.g. ``AWS_*`` variables for S3).

Layout: rows follow the manifest's row order. Per-row arrays are chunked one row per
chunk (so stage 2 reads a clip cheaply) inside shards of ``shard_rows`` rows (so the
store has few files). ``status`` and ``error`` are chunked by shard, without the
sharding codec. One shard of rows is the unit of work: a worker writes all of a
shard's data arrays and then its ``status`` chunk, so a row marked ok is complete
and two workers never touch the same chunk or shard.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zarr

from pipeline.errors import PipelineError
from pipeline.io.failpoints import failpoint

SCHEMA_VERSION = 1
PENDING, OK, FAILED = 0, 1, 2


class StoreError(PipelineError):
    """A store that does not exist, is not a signals store, or does not match what a stage expects."""


class StoreFullError(StoreError):
    """The device holding the store is full; what was complete stays complete."""


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("egoexo-pipeline")
    except Exception:  # running from a source tree that is not installed
        return "unknown"


def is_url(path: str | Path) -> bool:
    """An fsspec URL such as ``s3://bucket/store.zarr`` (``file://`` URLs count as URLs too)."""
    return "://" in str(path)


def store_location(path: str | Path) -> str | Path:
    """A URL kept as a string, a local path as a Path."""
    return str(path) if is_url(path) else Path(path)


def _fs(url: str):
    import fsspec

    return fsspec.core.url_to_fs(url)


def store_exists(path: str | Path) -> bool:
    if is_url(path):
        fs, root = _fs(str(path))
        return bool(fs.exists(root))
    return Path(path).exists()


def write_store_file(store_path: str | Path, name: str, text: str) -> None:
    """A small file in the store's folder (config, report), written whole: a temporary file
    renamed into place locally; one PUT, which readers see whole or not at all, on object stores."""
    if is_url(store_path):
        fs, root = _fs(str(store_path))
        fs.pipe_file(f"{root.rstrip('/')}/{name}", text.encode())
        return
    target = Path(store_path) / name
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, target)


def read_store_file(store_path: str | Path, name: str) -> str | None:
    try:
        if is_url(store_path):
            fs, root = _fs(str(store_path))
            return fs.cat_file(f"{root.rstrip('/')}/{name}").decode()
        return (Path(store_path) / name).read_text()
    except (FileNotFoundError, OSError):
        return None


@dataclass
class SignalsStore:
    """An opened signals store. ``outputs`` maps array names (``object/logits``) to arrays."""

    path: Path | str
    group: zarr.Group
    _arrays: dict[str, zarr.Array] = field(default_factory=dict, repr=False)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def num_rows(self) -> int:
        return int(self.group["clip_id"].shape[0])

    @property
    def shard_rows(self) -> int:
        return int(self.group.attrs["shard_rows"])

    @property
    def num_frames(self) -> int:
        return int(self.group["frame_time"].shape[1])

    @property
    def output_names(self) -> list[str]:
        return list(self.group.attrs["outputs"])

    def clip_ids(self) -> np.ndarray:
        return _strings(self.group["clip_id"][:])

    def status(self) -> np.ndarray:
        return np.asarray(self.group["status"][:])

    def errors(self) -> np.ndarray:
        return _strings(self.group["error"][:])

    def shards(self) -> list[tuple[int, int]]:
        n, s = self.num_rows, self.shard_rows
        return [(a, min(a + s, n)) for a in range(0, n, s)]

    def pending_shards(self) -> list[tuple[int, int]]:
        """Shards with any row still pending (a crashed or never-run unit of work)."""
        st = self.status()
        return [(a, b) for a, b in self.shards() if np.any(st[a:b] == PENDING)]

    def write_shard(self, start: int, stop: int, arrays: dict[str, np.ndarray], status: np.ndarray, errors: list[str]) -> None:
        """Write one whole shard: data arrays first, then ``error``, then ``status`` last.

        zarr writes each shard file whole to a temporary name and renames it into place, so
        killed at any point the shard's rows are either still pending (and a rerun redoes
        them) or complete. A full disk raises :class:`StoreFullError`; rows written before
        stay as they were.
        """
        if start % self.shard_rows or (stop != min(start + self.shard_rows, self.num_rows)):
            raise ValueError(f"rows {start}:{stop} are not one whole shard of {self.shard_rows}")
        try:
            for name in ["frame_time", *self.output_names]:
                self.array(name)[start:stop] = arrays[name]
            self.array("error")[start:stop] = np.asarray(errors, dtype=str)
            failpoint("write_shard:before_status")
            self.array("status")[start:stop] = np.asarray(status, dtype=np.uint8)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFullError(f"no space left on the device writing signals store {self.path} "
                                     f"(rows {start}:{stop} stay pending; completed rows are kept). "
                                     "Free space and rerun the same command to continue") from None
            raise

    def read_row(self, i: int) -> dict[str, np.ndarray]:
        """One clip's arrays (float32), plus its status. The status is read first: a writer
        writes it last, so a row read as ok during a write has its complete data."""
        status = int(self.array("status")[i])
        out = {name: np.asarray(self.array(name)[i], dtype=np.float32) for name in ["frame_time", *self.output_names]}
        out["status"] = status
        return out

    def array(self, name: str) -> zarr.Array:
        # Looking an array up in its group reads its metadata (about 1 ms each time): once per name.
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def row_reader(self, max_bytes: int = 256 * 2**20) -> Callable[[int], dict[str, np.ndarray]]:
        """``read_row`` for a reader of many rows (a training loader): when every per-row array
        fits in ``max_bytes`` together, each is read once, whole, and rows come from memory
        (zarr costs about 1.5 ms per read, so per-row reads set the pace of a small student);
        otherwise rows are read one by one. The arrays are read when this is called, so rows
        written after it are not seen."""
        names = ["status", "frame_time", *self.output_names]  # status first, as ``read_row``
        if sum(self.array(n).nbytes for n in names) > max_bytes:
            return self.read_row
        loaded = {n: np.asarray(self.array(n)[:]) for n in names}

        def read(i: int) -> dict[str, np.ndarray]:
            out = {n: loaded[n][i].astype(np.float32) for n in names[1:]}
            out["status"] = int(loaded["status"][i])
            return out

        return read


def create_store(
    path: str | Path,
    clip_ids: list[str],
    num_frames: int,
    outputs: dict[str, tuple[tuple[int, ...], str]],
    attrs: dict[str, Any],
    shard_rows: int = 64,
) -> SignalsStore:
    """Create an empty store (all rows pending). ``outputs``: name -> (per-row shape, dtype).

    A local store is built in a hidden folder beside ``path`` and renamed into place when
    whole, so a run killed while creating it leaves no half-made store for the rerun to trip
    on. Object stores have no rename: a URL store is written in place, its attributes (the
    schema version) last, and :func:`open_store` calls one without them half-made.
    """
    p = store_location(path)
    if store_exists(p):
        raise StoreError(f"{p} already exists; refusing to overwrite it")
    building = p if is_url(p) else p.with_name(f".{p.name}.creating-{uuid.uuid4().hex[:8]}")
    n = len(clip_ids)
    shard_rows = max(1, min(shard_rows, n))
    g = zarr.open_group(str(building), mode="w-")
    g.create_array("clip_id", shape=(n,), chunks=(max(n, 1),), dtype=str, fill_value="")
    g["clip_id"][:] = np.asarray(clip_ids, dtype=str)
    g.create_array("status", shape=(n,), chunks=(shard_rows,), dtype="uint8", fill_value=PENDING)
    g.create_array("error", shape=(n,), chunks=(shard_rows,), dtype=str, fill_value="")
    g.create_array(
        "frame_time", shape=(n, num_frames), chunks=(1, num_frames), shards=(shard_rows, num_frames),
        dtype="float32", fill_value=float("nan"),
    )
    for name, (tail, dtype) in outputs.items():
        tail = tuple(int(x) for x in tail)
        g.create_array(name, shape=(n, *tail), chunks=(1, *tail), shards=(shard_rows, *tail), dtype=dtype, fill_value=0)
    g.attrs.update(
        {
            "schema_version": SCHEMA_VERSION,
            "package_version": _package_version(),
            "shard_rows": shard_rows,
            "outputs": list(outputs),
            **attrs,
        }
    )
    if is_url(p):
        return SignalsStore(p, g)
    failpoint("create_store:before_rename")
    try:
        os.rename(building, p)  # an empty folder at p is replaced; anything else raises
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        raise StoreError(f"{p} appeared while the store was being created; refusing to overwrite it") from None
    return SignalsStore(p, zarr.open_group(str(p), mode="r+"))


def open_store(path: str | Path, mode: str = "r") -> SignalsStore:
    """Open an existing store, refusing anything that is not a signals store of this schema."""
    p = store_location(path)
    if not store_exists(p):
        raise StoreError(f"signals store not found: {p}")
    try:
        g = zarr.open_group(str(p), mode=mode)
    except Exception as e:  # zarr raises several types for a non-group path
        raise StoreError(f"{p} is not a zarr group ({e.__class__.__name__}: {e})") from None
    version = g.attrs.get("schema_version")
    if version is None and is_url(p) and "clip_id" in g:
        raise StoreError(f"{p} is a half-made signals store (its creation was interrupted); delete it and rerun")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{p} has signals-store schema version {version!r}; this version reads {SCHEMA_VERSION}")
    for name in ("clip_id", "status", "error", "frame_time"):
        if name not in g:
            raise StoreError(f"{p} is missing the '{name}' array; it is not a complete signals store")
    return SignalsStore(p, g)


def open_or_create_store(
    path: str | Path,
    clip_ids: list[str],
    num_frames: int,
    outputs: dict[str, tuple[tuple[int, ...], str]],
    attrs: dict[str, Any],
    expected: dict[str, Any],
    shard_rows: int = 64,
) -> SignalsStore:
    """The store at ``path`` for a run writing ``attrs``: opened (its provenance checked against
    ``expected``) when it exists, else created. Extractions started together on disjoint
    ``--shards`` race to create it: the one whose store lands first wins, and the others open that
    one instead of failing (a local store appears whole, by its rename)."""
    p = store_location(path)
    if not store_exists(p):
        try:
            return create_store(p, clip_ids, num_frames, outputs, attrs, shard_rows=shard_rows)
        except StoreError:
            if is_url(p) or not store_exists(p):
                raise
    store = open_store(p, mode="r+")
    check_provenance(store, expected)
    return store


def check_provenance(store: SignalsStore, expected: dict[str, Any]) -> None:
    """Refuse a store whose recorded provenance differs from what this run would write or needs."""
    attrs = store.attrs
    diffs = []
    for key, want in expected.items():
        have = attrs.get(key)
        if json.dumps(have, sort_keys=True) != json.dumps(want, sort_keys=True):
            diffs.append(f"{key}: store has {_short(have)}, this run has {_short(want)}")
    if diffs:
        raise StoreError(
            f"signals store {store.path} was written for a different input:\n  "
            + "\n  ".join(diffs)
            + "\nUse a new output path, or delete the old store if it is no longer needed."
        )


def _strings(values) -> np.ndarray:
    # zarr 3 returns numpy's variable-width StringDType; plain '<U' arrays are easier downstream.
    return np.array([str(v) for v in np.asarray(values).tolist()], dtype=str)


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 120 else s[:117] + "..."
