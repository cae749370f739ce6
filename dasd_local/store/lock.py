"""One writer per output: an exclusive OS advisory lock held for a whole run.

Every verb that writes an output (generate, score, verify, eval, train, export) wraps
its run in `output_lock(out)`. The lock is `flock(2)` on a small file beside the output
(`OUT.lock` for `OUT.jsonl`; `RUN_DIR/.lock` for a directory output) that holds the
owner's pid, so a second run on the same output stops at once with one line naming the
path and that pid. The kernel drops the lock when its process dies, however it dies
(SIGKILL, OOM killer), so a killed run never leaves a stale lock behind; the next run
simply takes it. A Ray driver holds it like any other process (Ray's workers are
started by Ray, not forked from the driver, so they never own it).

Why not a library (filelock, portalocker): both lock and report, but neither says who
holds the lock, and the file they leave behind would need the same inode check as here.
flock is Linux/macOS; this tool runs llama.cpp there.

Knows lock files and pids; knows nothing about what is written under the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import DasdError, WriteError

_HELD: set[int] = set()  # fds of the locks this process holds


class LockedError(DasdError):
    """Another live process is writing the same output."""


def _forget_in_child() -> None:
    # A forked child inherits the lock's open file description; if it outlived a killed
    # parent it would keep the output locked. Closing its copy leaves the parent's lock as
    # it is (flock belongs to the description, released when its last fd closes).
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def lock_path(out: Path, directory: bool = False) -> Path:
    """The lock file of an output: RUN_DIR/.lock for a directory, else OUT.lock beside OUT.jsonl."""
    out = Path(out)
    if directory:
        return out / ".lock"
    return out.with_name(out.name.removesuffix(".jsonl") + ".lock")


def _holder(fd: int) -> str:
    """The pid written in a lock file (it is written just after the lock is taken)."""
    for _ in range(20):
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if pid:
            return pid
        time.sleep(0.01)
    return "unknown"


def acquire(out: Path, directory: bool = False) -> int:
    """Take the lock of `out` (non-blocking) and return its fd; LockedError when it is held."""
    from .records import output_dir  # one line naming --out when the folder cannot be made

    path = lock_path(out, directory)
    if directory or not Path(out).is_dir():  # an export's folder is locked from beside it
        output_dir(Path(out), "--out", is_dir=directory)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # O_CLOEXEC: Python's default
        except OSError as e:
            raise WriteError(f"{path}: {e.strerror or e}: cannot create the output's lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd) if e.errno in (errno.EAGAIN, errno.EACCES) else None
            os.close(fd)
            if holder is None:
                raise
            raise LockedError(f"{out} is being written by another run (pid {holder}, lock {path}): "
                              "wait for it to finish or choose another output") from None
        try:  # the previous owner may have removed the file between our open and our lock
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    with contextlib.suppress(OSError):  # a full disk: the lock holds, its pid stays unknown
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD.add(fd)
    return fd


def release(out: Path, fd: int, directory: bool = False) -> None:
    """Remove the lock file while still holding it, then drop the lock (a waiting run then
    sees a removed file and takes a fresh one: never two owners)."""
    with contextlib.suppress(OSError):
        os.unlink(lock_path(out, directory))
    _HELD.discard(fd)
    os.close(fd)


@contextlib.contextmanager
def output_lock(out: Path, directory: bool = False) -> Iterator[Path]:
    """Hold the exclusive lock of output `out` for the block: the one writer of `out`."""
    fd = acquire(out, directory)
    try:
        yield Path(out)
    finally:
        release(out, fd, directory)


def one_writer(out_of: Callable[..., Path], directory: bool = False):
    """Decorate a verb so it runs under `output_lock(out_of(*its args))`, e.g.
    `@one_writer(lambda run, cfg, console=None: run.out)`."""
    def wrap(fn):
        @functools.wraps(fn)
        def locked(*args, **kwargs):
            with output_lock(out_of(*args, **kwargs), directory):
                return fn(*args, **kwargs)
        return locked
    return wrap
