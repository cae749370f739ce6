"""Generation output: JSONL records written as they finish, resume, and the manifest.

Knows files; knows nothing about decoding. A run's output `OUT.jsonl` gets one line
per finished problem, appended and flushed at once (a killed run keeps every finished
line); problems that could not be run go to `OUT.failed.jsonl`; `OUT.manifest.json`
is written last, so a half-written run is visible by its missing manifest. When the
run completes, the records are put back into input order (temp file + rename), so a
resumed run ends with the same file as an uninterrupted one.

Crash and full-disk safety, for every verb that writes through here: a line is written
whole or, when the write fails (ENOSPC), cut back, so a file never ends in half a
line; on open, a line cut by a kill (or one missing its newline) is dropped or mended;
a rewrite goes to a temporary file, is fsynced and renamed over the old one, so a kill
at any instant leaves the old file or the new one. A write that fails raises WriteError
(one line: which file, why, that the run resumes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import InputError, OutputError, WriteError



def sidecar(out: Path, kind: str) -> Path:
    return out.with_name(out.name.removesuffix(".jsonl") + f".{kind}")


def output_dir(path: Path, flag: str = "--out", is_dir: bool = False) -> Path:
    """Create the directory an output goes into (`path` itself when `is_dir`); a path
    that cannot be created or written is one OutputError naming the flag."""
    path = Path(path)
    folder = path if is_dir else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise OutputError(f"{flag} {path}: cannot create the directory {folder}: {blocker} is a file") from None
    except OSError as e:
        raise OutputError(f"{flag} {path}: cannot create the directory {folder} ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: the directory {folder} is not writable")
    if not is_dir and path.is_dir():
        raise OutputError(f"{flag} {path}: is a directory, expected a file path")
    return path


def write_error(path: Path, e: OSError) -> WriteError:
    why = e.strerror or str(e)
    return WriteError(f"{path}: {why} (errno {e.errno}) while writing; everything finished so far is kept: "
                      "free space (or make the directory writable) and run the same command again to resume")


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text`: temporary file, fsync, rename, fsync of the directory,
    so a kill or a power cut leaves the old file or the new one. WriteError on failure
    (the temporary file is removed, the old file is untouched)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from None


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself is atomic
    finally:
        os.close(fd)


def jsonl_text(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


class Appender:
    """An append-only JSONL file. Each line goes out in one os.write loop (no user-space
    buffer that a kill could cut mid-record or a later flush could replay) and, when a write
    fails (ENOSPC), the file is cut back to where the line began: it never ends in half a line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def write(self, record: dict) -> None:
        data = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            start = os.lseek(self._fd, 0, os.SEEK_END)
        except OSError as e:
            raise write_error(self.path, e) from None
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as e:
            try:
                os.ftruncate(self._fd, start)  # needs no space; the last good line stays last
            except OSError:
                pass
            raise write_error(self.path, e) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Appender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def recover_jsonl(path: Path) -> list[dict]:
    """The complete records of a JSONL file that a killed run was appending to. A cut line
    is dropped and a last line without its newline is mended (appending after it would glue
    two records), by a rewrite, never in place."""
    if not path.exists():
        return []
    records, problems = read_jsonl(path)
    size = path.stat().st_size
    if problems or (size and _last_byte(path) != b"\n"):
        atomic_write_text(path, jsonl_text(records))
    return records


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def iter_jsonl(path: Path) -> Iterator[tuple[str, dict | None, str | None]]:
    """('file:line', object, None) for every JSON-object line of a JSONL file and
    ('file:line', None, why) for every other non-blank line. The one JSONL reader."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield f"{path}:{n}", None, f"malformed JSON ({e.msg})"
                continue
            if isinstance(rec, dict):
                yield f"{path}:{n}", rec, None
            else:
                yield f"{path}:{n}", None, "not a JSON object"


def read_jsonl(path: Path, strict: bool = False) -> tuple[list[dict], list[str]]:
    """Records of a JSONL file and the problems found ('file:line: why'). A line that is not
    a JSON object is skipped (an error when strict)."""
    records, problems = [], []
    for where, rec, why in iter_jsonl(path):
        if why is None:
            records.append(rec)
        elif strict:
            raise InputError(f"{where}: {why}")
        else:
            problems.append(f"{where}: {why}")
    return records, problems


def no_records(path: Path, problems: list[str]) -> InputError:
    """The one error for a record file with nothing to read."""
    why = f"{len(problems)} malformed lines; first: {problems[0]}" if problems else "the file is empty"
    return InputError(f"{path}: no records ({why})")


def read_records(path: Path) -> tuple[list[dict], list[str]]:
    """read_jsonl of a file that must hold records (view, stats): none is one error."""
    records, problems = read_jsonl(Path(path))
    if not records:
        raise no_records(path, problems)
    return records, problems


class RunWriter:
    """Appends finished records; on open, keeps what a previous (killed) run finished."""

    def __init__(self, out: Path, flag: str = "--out"):
        self.out = Path(out)
        self.failed_path = sidecar(self.out, "failed.jsonl")
        output_dir(self.out, flag)
        for stale in self.out.parent.glob(self.out.name + ".*.tmp"):  # a rewrite cut by a kill
            stale.unlink(missing_ok=True)
        self.done = _ids(recover_jsonl(self.out))
        self.failed = _ids(recover_jsonl(self.failed_path))
        sidecar(self.out, "manifest.json").unlink(missing_ok=True)  # the run is open again
        self._f = Appender(self.out)
        self._ff = Appender(self.failed_path)

    def write(self, record: dict) -> None:
        self._f.write(record)
        self.done.add(str(record["id"]))

    def write_failed(self, pid: str, error: str) -> None:
        self._ff.write({"id": pid, "error": error})
        self.failed.add(pid)

    def finish(self, order: Iterable[str], manifest: dict) -> None:
        """Sort records into input order (each id once), then write the manifest (last)."""
        self.close()
        records, _ = read_jsonl(self.out) if self.out.exists() else ([], [])
        rank = {pid: i for i, pid in enumerate(order)}
        seen: set[str] = set()
        unique = [r for r in records if not (str(r["id"]) in seen or seen.add(str(r["id"])))]
        unique.sort(key=lambda r: rank.get(str(r["id"]), len(rank)))
        atomic_write_text(self.out, jsonl_text(unique))
        atomic_write_text(sidecar(self.out, "manifest.json"), json.dumps(manifest, indent=2) + "\n")

    def close(self) -> None:
        self._f.close()
        self._ff.close()


def _ids(records: list[dict]) -> set[str]:
    return {str(r["id"]) for r in records if "id" in r}


def sha256_file(path: Path) -> str:
    """Hashed once per process and file version: a run's fingerprint (at the start) and
    its manifest (at the end) both name the model's hash."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("dasd-local", "llama-cpp-python", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
