"""One writer per shard: an extraction's claim on a range of a store's shards.

A claim is a small JSON file under ``STORE/.locks/`` (host, pid, start time, shard range),
its modification time refreshed by a heartbeat thread while the run lives. A second
extraction whose range overlaps a live claim is refused with one message naming the
other run; disjoint ranges (``--shards A:B``) write side by side. A claim left by a run
that died is ignored and removed: at once when it was made on this host by a process
that no longer exists, otherwise once its heartbeat is older than ``stale_s``.

Taking a claim is itself guarded by a mutex file created with ``O_EXCL``, so two runs
starting together cannot both see the range free. A store at a URL (``s3://...``) keeps
its claims there too, written with one PUT each; object stores have no exclusive create,
so two runs that start within the same moment over overlapping ranges are not told apart
there (the heartbeat is a timestamp inside the claim).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from pipeline.errors import PipelineError


class StoreLockedError(PipelineError):
    """Another live extraction writes some of the same shards."""


def _alive_here(info: dict) -> bool:
    if info.get("host") != socket.gethostname():
        return True  # cannot tell from here: the heartbeat decides
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


class StoreLock:
    """``with StoreLock(store, (a, b), total):`` claims shards ``a``..``b-1`` of ``total``."""

    def __init__(self, store_path: str | Path, shards: tuple[int, int], total: int,
                 heartbeat_s: float = 20.0, stale_s: float = 120.0):
        from pipeline.io.store import is_url

        self.store = str(store_path)
        self.remote = is_url(store_path)
        if self.remote:
            import fsspec

            self.fs, root = fsspec.core.url_to_fs(self.store)
            self.dir = f"{root.rstrip('/')}/.locks"
        else:
            self.fs, self.dir = None, Path(store_path) / ".locks"
        self.shards, self.total = (int(shards[0]), int(shards[1])), int(total)
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        name = f"{uuid.uuid4().hex}.json"
        self.path = f"{self.dir}/{name}" if self.remote else self.dir / name
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "shards": list(self.shards)}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # the claim files, on a local disk or through fsspec
    def _claims(self) -> list:
        if self.remote:
            return sorted(self.fs.glob(f"{self.dir}/*.json"))
        return sorted(self.dir.glob("*.json"))

    def _read(self, claim) -> dict:
        return json.loads(self.fs.cat_file(claim) if self.remote else Path(claim).read_text())

    def _write(self) -> None:
        text = json.dumps({**self.info, "beat": time.time()})
        if self.remote:
            self.fs.pipe_file(self.path, text.encode())
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def _remove(self, claim) -> None:
        try:
            self.fs.rm_file(claim) if self.remote else Path(claim).unlink(missing_ok=True)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "StoreLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        import contextlib

        if not self.remote:
            self.dir.mkdir(parents=True, exist_ok=True)
        with contextlib.nullcontext() if self.remote else _Mutex(self.dir / "mutex"):
            a, b = self.shards
            for other in self._claims():
                try:
                    info = self._read(other)
                    age = time.time() - float(info.get("beat", 0))
                except (OSError, ValueError):
                    continue  # removed meanwhile, or half-written by a run killed while claiming
                if age > self.stale_s or not _alive_here(info):
                    self._remove(other)
                    continue
                oa, ob = info["shards"]
                if oa < b and a < ob:
                    raise StoreLockedError(
                        f"signals store {self.store} is being written by another extraction (host "
                        f"{info['host']}, pid {info['pid']}, started {info['started']}, shards {oa}:{ob} of "
                        f"{self.total}); this run wants shards {a}:{b}. Wait for it to finish, or give each "
                        "run a disjoint --shards A:B range"
                    )
            self._write()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._write()
            except Exception:  # a network hiccup (OSError, botocore's own errors): try again next beat
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._remove(self.path)


class _Mutex:
    """A file created with ``O_EXCL``; one left behind by a killed run expires after ``stale_s``."""

    def __init__(self, path: Path, timeout_s: float = 30.0, stale_s: float = 10.0):
        self.path, self.timeout_s, self.stale_s = path, timeout_s, stale_s

    def __enter__(self) -> None:
        deadline = time.time() + self.timeout_s
        while True:
            try:
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return
            except FileExistsError:
                try:
                    if time.time() - self.path.stat().st_mtime > self.stale_s:
                        self.path.unlink(missing_ok=True)
                        continue
                except FileNotFoundError:
                    continue
                if time.time() > deadline:
                    raise StoreLockedError(f"could not take {self.path} within {self.timeout_s:.0f} s; "
                                           "if no other extraction is starting, delete it") from None
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
