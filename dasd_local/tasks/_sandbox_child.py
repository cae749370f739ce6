"""The sandbox's child side: confine this fresh interpreter, then run one program.

Run as `python -I -S -B _sandbox_child.py` by `sandbox.run_python`, with its config on
stdin (`key=value` lines; lists joined by \\x1f). It imports as little as it can (no
json, signal or runpy: importing them costs more than a typical MBPP program runs),
never imports dasd_local (the confinement must not depend on the package), and knows
nothing about tasks: it lays the layers below, outermost first, runs the program file
and, if the program returned normally, writes the run's nonce on stdout so the parent
can tell "finished" from "exited early".

Layers (each best effort where the platform lacks it; the parent's wall-clock kill of
the whole process group is the backstop that never fails):
1. root only: a private network namespace (no interfaces but a downed loopback);
2. resource limits: address space, CPU seconds, file size, processes, open files, core;
3. root only: drop to uid/gid 65534 (nobody), so RLIMIT_NPROC applies and the user's
   files are protected by ordinary permissions. CAP_DAC_READ_SEARCH is kept only when
   the interpreter itself is not reachable by nobody (e.g. a Python under /root);
4. no_new_privs + parent-death signal;
5. Linux Landlock: read-only access to the interpreter and system libraries, full
   access to the working directory only, no TCP bind/connect, no signals or abstract
   sockets outside the sandbox;
6. a Python audit hook: no sockets, no subprocesses/exec, no ctypes, no writes
   outside the working directory. It cannot be removed by the program.
"""

import builtins
import ctypes
import os
import resource
import sys

NOBODY = 65534
CAP_DAC_READ_SEARCH = 2
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS = 1, 8, 38
SIGKILL = 9
LISTS, INTS = ("readable", "site_paths"), ("memory_mb", "cpu_s", "fsize_mb", "nproc", "keep_dac_read")
CLONE_NEWNET = 0x40000000
SYS_LANDLOCK = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
BLOCKED_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile")
PATH_EVENTS = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
               "os.symlink", "os.truncate", "os.utime", "os.mkfifo", "os.mknod", "os.chflags")

_libc = ctypes.CDLL(None, use_errno=True)


def _unshare_network() -> bool:
    return _libc.unshare(CLONE_NEWNET) == 0


def _own_process_count() -> int:
    uid = os.getuid()
    try:
        return sum(1 for p in os.listdir("/proc") if p.isdigit() and _owner(p) == uid)
    except OSError:  # no /proc (macOS): the limit then counts from zero
        return 0


def _owner(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


def _set_limits(cfg: dict, dropping: bool) -> None:
    mb = 1024 * 1024
    # RLIMIT_NPROC counts every process of the real uid: as nobody that is ours plus
    # other sandboxes; as an ordinary user it must leave room for the user's own.
    nproc = cfg["nproc"] + (0 if dropping else _own_process_count())
    limits = {
        "RLIMIT_AS": cfg["memory_mb"] * mb,
        "RLIMIT_CPU": cfg["cpu_s"],
        "RLIMIT_FSIZE": cfg["fsize_mb"] * mb,
        "RLIMIT_NPROC": nproc,
        "RLIMIT_NOFILE": 64,
        "RLIMIT_CORE": 0,
    }
    for name, value in limits.items():
        if hasattr(resource, name):
            _lower(getattr(resource, name), value)


def _lower(which: int, value: int) -> None:
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):  # e.g. RLIMIT_AS on macOS
        pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_privileges(keep_dac_read: bool) -> None:
    if keep_dac_read:
        _libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    if keep_dac_read:  # permitted = effective = {DAC_READ_SEARCH}; everything else is gone
        header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
        data = (_CapData * 2)()
        data[0].effective = data[0].permitted = 1 << CAP_DAC_READ_SEARCH
        if _libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")


def _landlock(workdir: str, readable: list[str]) -> bool:
    """Restrict this process and its children to `readable` (read/execute) and `workdir`
    (everything). Returns False where Landlock is unavailable."""
    calls = SYS_LANDLOCK.get(os.uname().machine)
    if calls is None:
        return False
    create, add_rule, restrict = calls
    _libc.syscall.restype = ctypes.c_long
    abi = _libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return False
    fs_all = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    attr = (ctypes.c_uint64 * 3)(fs_all, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    file_rights = fs_all & ((1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15))
    read_rights = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
    rules = [(p, read_rights) for p in readable] + [(workdir, fs_all), ("/dev/null", file_rights)]
    for path, rights in rules:
        _add_path_rule(add_rule, ruleset, path, rights, file_rights)
    return _libc.syscall(restrict, ctypes.c_int(ruleset), ctypes.c_uint32(0)) == 0


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _add_path_rule(add_rule: int, ruleset: int, path: str, rights: int, file_rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a listed directory that does not exist here
    if not os.path.isdir(path):
        rights &= file_rights  # a rule on a file may only grant file rights
    rule = _PathBeneath(rights, fd)
    _libc.syscall(add_rule, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0))
    os.close(fd)


def _audit_hook(workdir: str):
    allowed = (workdir + os.sep, )

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an already-open descriptor
        real = os.path.realpath(os.fsdecode(path))
        return real == workdir or real.startswith(allowed) or real == os.devnull

    def hook(event: str, args: tuple) -> None:
        if event.startswith("socket."):
            raise PermissionError("network access is disabled in the sandbox")
        if event.startswith(BLOCKED_EVENTS):
            raise PermissionError(f"{event} is disabled in the sandbox")
        if event == "ctypes.dlopen":
            raise ImportError("ctypes is disabled in the sandbox")
        if event == "open" and args[2] & WRITE_FLAGS and not inside(args[0]):
            raise PermissionError(f"writing outside the working directory is disabled: {args[0]!r}")
        if event in PATH_EVENTS:
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
            if not all(inside(p) for p in paths):
                raise PermissionError(f"{event} outside the working directory is disabled")

    return hook


def _confine(cfg: dict) -> None:
    root = os.geteuid() == 0
    if root and sys.platform == "linux":
        _unshare_network()
    _set_limits(cfg, dropping=root)
    if root:
        _drop_privileges(cfg["keep_dac_read"])
    if sys.platform == "linux":
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        _libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
        _landlock(cfg["workdir"], cfg["readable"])
    sys.addaudithook(_audit_hook(cfg["workdir"]))


def read_config(text: str) -> dict:
    cfg = dict(line.split("=", 1) for line in text.splitlines() if line)
    for k in LISTS:
        cfg[k] = [p for p in cfg[k].split("\x1f") if p]
    for k in INTS:
        cfg[k] = int(cfg[k])
    return cfg


def run_program(path: str) -> None:
    """What runpy.run_path does for a plain file, without importing runpy."""
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec")
    exec(code, {"__name__": "__sandbox__", "__file__": path, "__builtins__": builtins})


def main() -> None:
    cfg = read_config(sys.stdin.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the program gets an empty stdin
    marker = os.dup(1)  # our own copy of stdout for the nonce
    nonce = cfg.pop("nonce").encode()
    _confine(cfg)
    sys.argv = [cfg["program"]]
    sys.path = [p for p in sys.path if p and os.path.isabs(p)] + cfg["site_paths"]
    os.chdir(cfg["workdir"])
    run_program(cfg["program"])
    sys.stdout.flush()
    os.write(marker, b"\n" + nonce + b"\n")


if __name__ == "__main__":
    main()
