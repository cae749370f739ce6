"""Generation output: JSONL records written as they finish, resume, and the manifest.

Knows files; knows nothing about decoding. A run's output `OUT.jsonl` gets one line
per finished problem, appended and flushed at once (a killed run keeps every finished
line); problems that could not be run go to `OUT.failed.jsonl`; `OUT.manifest.json`
is written last, so a half-written run is visible by its missing manifest. When the
run completes, the records are put back into input order (temp file + rename), so a
resumed run ends with the same file as an uninterrupted one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from .errors import InputError, OutputError

# Top-level fields of a generation record (decode.Decoder._record) and of what verify and
# score add; an input column of the same name passes through as `input_<name>`.
RECORD_KEYS = frozenset({
    "id", "task", "answer_format", "strategy", "config", "question", "reference_solution", "base_prompt",
    "reference_prompt", "base_prompt_tokens", "reference_prompt_tokens", "response", "response_tokens",
    "finish_reason", "steps", "stop_step", "correct", "extracted", "verify_detail", "response_source",
    "rejected_response", "rewrite_correct",
})


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


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
        self.done: set[str] = set()
        self.failed: set[str] = set()
        if self.out.exists():
            self._recover(self.out, self.done)
        if self.failed_path.exists():
            self._recover(self.failed_path, self.failed)
        sidecar(self.out, "manifest.json").unlink(missing_ok=True)  # the run is open again
        self._f = self.out.open("a", encoding="utf-8")
        self._ff = None

    @staticmethod
    def _recover(path: Path, ids: set[str]) -> None:
        """Keep the complete lines of `path` (a kill may cut the last one) and note their ids."""
        records, problems = read_jsonl(path)
        if problems:  # rewrite without the torn line, never in place
            atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        ids.update(str(r["id"]) for r in records if "id" in r)

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        self.done.add(str(record["id"]))

    def write_failed(self, pid: str, error: str) -> None:
        if self._ff is None:
            self._ff = self.failed_path.open("a", encoding="utf-8")
        self._ff.write(json.dumps({"id": pid, "error": error}, ensure_ascii=False) + "\n")
        self._ff.flush()
        self.failed.add(pid)

    def finish(self, order: Iterable[str], manifest: dict) -> None:
        """Sort records into input order, then write the manifest (last)."""
        self.close()
        records, _ = read_jsonl(self.out)
        rank = {pid: i for i, pid in enumerate(order)}
        records.sort(key=lambda r: rank.get(str(r["id"]), len(rank)))
        atomic_write_text(self.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        atomic_write_text(sidecar(self.out, "manifest.json"), json.dumps(manifest, indent=2) + "\n")

    def close(self) -> None:
        for f in (self._f, self._ff):
            if f is not None and not f.closed:
                f.close()


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
