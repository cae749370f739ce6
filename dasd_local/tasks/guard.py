"""Call a trusted but possibly slow pure function in long-lived worker processes, with a
hard per-call timeout.

Why: math-verify (sympy underneath) can take minutes or blow up memory on odd input
such as `10^{10^{10}}`. Its own timeouts use SIGALRM, which only works in the main
thread and cannot interrupt long C-level arithmetic. A worker process can always be
killed. Workers start once (a fresh interpreter: no inherited llama.cpp threads or
locks), serve many calls, and are replaced after a timeout or a crash. Calls from
several threads run in parallel, one worker each, up to `workers`.

Knows nothing about mathematics; `tasks.math` names the function to run.
"""

from __future__ import annotations

import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


class GuardTimeout(Exception):
    """The call overran its timeout; its worker was killed."""


class GuardCrash(Exception):
    """The worker died during the call (e.g. out of memory)."""


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _send(fd: int, obj) -> None:
    data = pickle.dumps(obj)
    os.write(fd, struct.pack("<I", len(data)) + data)


def _recv(fd: int):
    (n,) = struct.unpack("<I", _read_exact(fd, 4))
    return pickle.loads(_read_exact(fd, n))


def _resolve(spec: str):
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def serve(spec: str, memory_mb: int, warmup: str = "") -> None:
    """The worker's loop: args in on stdin, ("ok"|"error", value) out on a private fd.
    Says ("ready", None) first, once `warmup` (slow imports) has run, so that start-up
    never counts against a call's timeout."""
    import resource

    out = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray prints must not corrupt the channel
    try:  # a runaway expression fails with MemoryError here instead of swapping the machine
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass
    fn = _resolve(spec)
    if warmup:
        _resolve(warmup)()
    _send(out, ("ready", None))
    while True:
        try:
            args = _recv(0)
        except EOFError:  # the parent is gone
            return
        try:
            _send(out, ("ok", fn(*args)))
        except Exception as e:  # reported, not raised: the worker stays up
            _send(out, ("error", f"{type(e).__name__}: {e}"))


class _Worker:
    """One `python -m dasd_local.tasks.guard` process (no multiprocessing: nothing of the
    parent, e.g. an unguarded __main__ or llama.cpp threads, is re-run or inherited)."""

    def __init__(self, spec: str, memory_mb: int, warmup: str | None, start_timeout: float):
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # so a source checkout works too
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dasd_local.tasks.guard", spec, str(memory_mb), warmup or ""],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )
        try:
            self._answer(start_timeout)
        except (GuardTimeout, GuardCrash) as e:
            self.kill()
            raise GuardCrash(f"worker did not start: {e}") from None

    def call(self, args: tuple, timeout: float) -> tuple[str, Any]:
        try:
            _send(self.proc.stdin.fileno(), args)
        except BrokenPipeError:
            raise GuardCrash(f"worker died (exit code {self.proc.poll()})") from None
        return self._answer(timeout)

    def _answer(self, timeout: float) -> tuple[str, Any]:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise GuardTimeout(f"no answer within {timeout:g} s")
        try:
            return _recv(self.proc.stdout.fileno())
        except EOFError:
            raise GuardCrash(f"worker died (exit code {self.proc.poll()})") from None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


class Guard:
    """`guard(*args)` = `fn(*args)` run in a worker, where `spec` = "module:function";
    raises GuardTimeout/GuardCrash, and RuntimeError for an exception inside `fn`."""

    def __init__(self, spec: str, timeout: float, workers: int = 1, memory_mb: int = 4096,
                 warmup: str | None = None, start_timeout: float = 120.0):
        self.spec, self.timeout, self.memory_mb = spec, timeout, memory_mb
        self.warmup, self.start_timeout = warmup, start_timeout
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._slots = threading.Semaphore(workers)
        self._all: list[_Worker] = []
        self._lock = threading.Lock()

    def __call__(self, *args):
        with self._slots:
            worker = self._checkout()
            try:
                status, value = worker.call(args, self.timeout)
            except (GuardTimeout, GuardCrash):
                self._discard(worker)
                raise
            self._idle.put(worker)
        if status == "error":
            raise RuntimeError(value)
        return value

    def _checkout(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            worker = _Worker(self.spec, self.memory_mb, self.warmup, self.start_timeout)
            with self._lock:
                self._all.append(worker)
            return worker

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.remove(worker)

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        for w in workers:
            w.kill()
        self._idle = queue.Queue()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
