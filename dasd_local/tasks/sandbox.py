"""Run an untrusted Python program (generated code + its tests) and say whether it passed.

The program runs in a fresh process of the same interpreter, in a throwaway working
directory, confined by `_sandbox_child.py` (network off, resource limits, privileges
dropped to nobody when we are root, Landlock on Linux, an audit hook). This module is
the parent side: it prepares the directory, starts the child in its own session,
enforces the wall-clock limit by killing the whole process group, and turns whatever
happened into a `RunResult`. A program that hangs, crashes, forks or floods output
is a failed run; it never raises and never hangs the caller.

It knows nothing about MBPP: `tasks.code` builds the program text.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

CHILD = Path(__file__).with_name("_sandbox_child.py")
NOBODY = 65534
# System locations the interpreter's extension modules and shared libraries load from.
SYSTEM_READABLE = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc/ld.so.cache", "/etc/localtime",
                   "/dev/urandom", "/dev/zero"]


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock, start to finish, including interpreter start-up
    memory_mb: int = 1024  # address space of each process
    nproc: int = 64  # processes/threads (as nobody: shared by concurrent sandboxes)
    fsize_mb: int = 16  # largest file the program may write (stdout included)

    def __post_init__(self):
        if not 0 < self.timeout_s <= 3600:
            raise ConfigError(f"sandbox timeout must be in (0, 3600] seconds, got {self.timeout_s}")
        if self.memory_mb < 64 or self.nproc < 1 or self.fsize_mb < 1:
            raise ConfigError(f"sandbox limits too small: {self}")


@dataclass(frozen=True)
class RunResult:
    passed: bool
    status: str  # passed | failed | timeout | exited-early
    detail: str  # the last line of stderr, or the signal that ended the program
    seconds: float


def _world_reachable(path: str) -> bool:
    """Whether an unprivileged user can walk down to `path` (o+x on every ancestor)."""
    p = Path(path).resolve()
    try:
        return all(os.stat(d).st_mode & stat.S_IXOTH for d in [*reversed(p.parents), p] if d.exists())
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def _python_dirs() -> list[str]:
    """The interpreter's installation: prefixes, stdlib, site-packages, resolved (Landlock
    rules follow inodes). Not sys.path: it holds the script's or the project's directory."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sysconfig.get_paths().values()}
    return sorted({str(Path(d).resolve()) for d in dirs if os.path.exists(d)})


@functools.lru_cache(maxsize=1)
def _interpreter_hidden_from_nobody() -> bool:
    return not all(_world_reachable(d) for d in _python_dirs())


def _child_config(workdir: Path, program: Path, limits: Limits) -> dict:
    python = _python_dirs()
    return {
        "workdir": str(workdir),
        "program": str(program),
        "memory_mb": limits.memory_mb,
        "cpu_s": int(limits.timeout_s) + 1,
        "fsize_mb": limits.fsize_mb,
        "nproc": limits.nproc,
        "readable": python + SYSTEM_READABLE,
        # The child starts with -S (no site: ~20 ms less per run); it still sees the
        # installed packages, without running their .pth hooks.
        "site_paths": sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}),
        # Keep the right to read (never write) files only when dropping to nobody would
        # otherwise lose the interpreter itself; Landlock then bounds what can be read.
        "keep_dac_read": int(_interpreter_hidden_from_nobody()),
        "nonce": secrets.token_hex(16),
    }


def _config_text(cfg: dict) -> str:
    """`key=value` lines (lists joined by \\x1f): the child parses them without json."""
    return "".join(f"{k}={chr(31).join(v) if isinstance(v, list) else v}\n" for k, v in cfg.items())


def _prepare(source: str) -> tuple[Path, Path, Path]:
    """A private root (ours) holding the program's working directory (the child's)."""
    root = Path(tempfile.mkdtemp(prefix="dasd-sandbox-"))
    workdir = root / "work"
    workdir.mkdir()
    program = workdir / "main.py"
    program.write_text(source, encoding="utf-8")
    if os.geteuid() == 0:  # the child will be nobody: it owns its directory, nothing else
        os.chmod(root, 0o711)
        for p in (workdir, program):
            os.chown(p, NOBODY, NOBODY)
    return root, workdir.resolve(), program.resolve()


def _kill_group(proc: subprocess.Popen, grace_s: float = 2.0) -> None:
    """SIGKILL the program's whole group, reap the leader, then wait (bounded) until the
    rest are gone: a fork bomb's dying processes still count against nobody's
    RLIMIT_NPROC for the next run. (Linux never hands out a pid that is still some
    group's id, so signalling the group after reaping its leader is safe.)"""
    deadline = time.monotonic() + grace_s
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    try:
        while time.monotonic() < deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.005)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone


def _start(cfg: dict, root: Path) -> tuple[subprocess.Popen, Path, Path]:
    out, err = root / "stdout", root / "stderr"
    env = {"PATH": "/usr/bin:/bin", "HOME": cfg["workdir"], "TMPDIR": cfg["workdir"], "LANG": "C.UTF-8",
           # numeric libraries start one thread per core otherwise, each counting as a process
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with out.open("wb") as fout, err.open("wb") as ferr:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(CHILD)], stdin=subprocess.PIPE, stdout=fout, stderr=ferr,
            cwd=cfg["workdir"], env=env, start_new_session=True, close_fds=True,
        )
    try:
        proc.stdin.write(_config_text(cfg).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died at once; its exit status tells why
    return proc, out, err


def _tail(path: Path, n: int = 4096) -> str:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - n))
        return f.read().decode("utf-8", "replace")


def _verdict(rc: int | None, nonce: str, out: Path, err: Path, seconds: float, limits: Limits) -> RunResult:
    if rc is None:
        return RunResult(False, "timeout", f"killed after {limits.timeout_s:g} s", seconds)
    lines = [ln for ln in _tail(err).splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else ""
    if rc < 0:
        why = f"killed by {signal.Signals(-rc).name}" + (f" ({last})" if last else "")
        return RunResult(False, "failed", why, seconds)
    if rc != 0:
        return RunResult(False, "failed", last or f"exit status {rc}", seconds)
    if nonce not in _tail(out, 256):
        return RunResult(False, "exited-early", "the program exited before its tests finished", seconds)
    return RunResult(True, "passed", "", seconds)


def run_python(source: str, limits: Limits = Limits()) -> RunResult:
    """Run `source` confined; passed = exit status 0 after the whole program ran."""
    root, workdir, program = _prepare(source)
    cfg = _child_config(workdir, program, limits)
    start = time.monotonic()
    try:
        proc, out, err = _start(cfg, root)
        try:
            rc = proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
        # Always: children the program left behind (forks, a fork bomb) die with it.
        _kill_group(proc)
        return _verdict(rc, cfg["nonce"], out, err, time.monotonic() - start, limits)
    finally:
        shutil.rmtree(root, ignore_errors=True)
