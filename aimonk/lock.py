"""One writer per output folder: a lock on `OUT_DIR/.aimonk.lock`, held for the whole run.

The lock is the kernel's (flock): it goes when its process ends, however it ends, so a run killed with SIGKILL never
blocks the next. The file says who holds it (process, host, command, start time) for the message another run gets,
and is removed when the lock is released.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aimonk.errors import AimonkError

LOCK_FILE = ".aimonk.lock"
SHOWN_COMMAND = 100  # characters of the holder's command line in a message

_held: set[int] = set()  # this process's lock descriptors


def _close_held_in_child() -> None:
    # A forked child (a DataLoader worker) shares the lock; closing its copy leaves the parent the only holder, so
    # the lock goes with the parent even if a worker outlives it for a moment.
    for handle in _held:
        os.close(handle)
    _held.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


@contextmanager
def output_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold `out_dir` (created if needed) for this process; an AimonkError at once, naming the holder, if another
    process or run holds it. Under torchrun, rank 0 alone, the one that writes, takes it."""
    out_dir = Path(out_dir)
    path = out_dir / LOCK_FILE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AimonkError(f"{out_dir}: cannot write: {error.strerror or error}") from None
    handle = _acquire(path)
    _held.add(handle)
    try:
        _describe(handle)
        yield
    finally:
        _held.discard(handle)
        path.unlink(missing_ok=True)  # while still held: a run that opened this file meanwhile retries on a new one
        os.close(handle)


def _acquire(path: Path) -> int:
    while True:
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise AimonkError(f"{path.parent}: cannot write: {error.strerror or error}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            os.close(handle)
            raise AimonkError(f"{path.parent}: in use by {holder}; wait for it or use another --out-dir") from None
        try:
            if os.stat(path).st_ino == os.fstat(handle).st_ino:
                return handle
        except FileNotFoundError:
            pass
        os.close(handle)  # the file was released and removed between open and flock: take the new one


def _describe(handle: int) -> None:
    """Who holds the lock, in the lock file; best effort (the lock holds without it, e.g. on a full disk)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if name == "__main__.py":  # python -m aimonk
        name = Path(sys.argv[0]).parent.name
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join([name, *sys.argv[1:]]),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(holder).encode(), 0)
    except OSError:
        pass


def _holder(handle: int) -> str:
    """`process 12345 (aimonk train ..., started 2026-11-29 06:01:02)`, from the lock file, or `another process`."""
    try:
        holder = json.loads(os.pread(handle, 65536, 0))
        command = holder["command"]
        if len(command) > SHOWN_COMMAND:
            command = command[: SHOWN_COMMAND - 3] + "..."
        where = "" if holder["host"] == socket.gethostname() else f" on {holder['host']}"
        return f"process {holder['pid']}{where} ({command}, started {holder['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
