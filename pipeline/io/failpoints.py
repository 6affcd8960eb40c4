"""Named points where a test freezes a process so that it can kill it exactly there.

``PIPELINE_FAILPOINT=NAME`` and ``PIPELINE_FAILPOINT_MARKER=FILE`` in the environment: the
first process to reach point ``NAME`` creates ``FILE`` (so only one process, once) and sleeps; the test sees
the file and SIGKILLs the whole process tree, as a power cut at that instant would. Unset
(always, outside ``tests/test_faults.py``), a point costs one dictionary lookup.
"""
from __future__ import annotations

import os
import time

POINTS = (
    "create_store:before_rename",  # a new store complete in its hidden folder, not yet renamed into place
    "write_shard:before_status",  # a shard's data and errors written, its status not yet
    "save_checkpoint:before_replace",  # a checkpoint's temporary file written and synced, not yet renamed
)


def failpoint(name: str) -> None:
    if os.environ.get("PIPELINE_FAILPOINT") != name:
        return
    marker = os.environ.get("PIPELINE_FAILPOINT_MARKER")
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # another process, or an earlier pass, stopped here already
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    time.sleep(3600)
