"""Loading problem rows from local files (JSON, JSONL, parquet) or a hub dataset id.

Knows file formats and the `datasets` library; knows nothing about tasks beyond
asking one to turn a row into a Problem. Malformed rows are skipped and counted
(with the file and line that held them), all before any decoding starts; a missing
or empty file or a field absent from the data is one clear error. Columns the task
does not read pass through to the records (renamed `input_<name>` where they would
collide with a record field).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..config.fields import in_memory, rows_label
from ..errors import InputError
from ..schema import RECORD_KEYS
from ..tasks import FieldMap, Problem, Task


@dataclass
class Skipped:
    """Rows that could not be used, with a reason each (reported, never fatal), and notes
    about the data as a whole (ids taken from row numbers)."""

    rows: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, where: str, why: str) -> None:
        self.rows.append(f"{where}: {why}")
        kind = why.split(" (")[0]  # "malformed JSON (Expecting value)" counts as "malformed JSON"
        self.reasons[kind] = self.reasons.get(kind, 0) + 1

    def summary(self) -> str | None:
        """One line for the user, shown before decoding: how many rows, why, the first."""
        if not self.rows:
            return None
        why = ", ".join(f"{n} {kind}" for kind, n in self.reasons.items())
        return f"{len(self.rows)} input row{'s' * (len(self.rows) > 1)} skipped ({why}); first: {self.rows[0]}"


def _jsonl_rows(path: Path, skipped: Skipped) -> Iterator[tuple[str, dict]]:
    from .records import iter_jsonl

    for where, row, why in iter_jsonl(path):
        if why is None:
            yield where, row
        else:
            skipped.add(where, why)


def _file_rows(path: Path, skipped: Skipped) -> Iterator[tuple[str, dict]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_rows(path, skipped)
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if isinstance(data, dict):  # {"data": [...]} or {"rows": [...]}
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of objects")
        for n, row in enumerate(data):
            yield f"{path}[{n}]", row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq  # heavy, and only for parquet

        for n, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}[{n}]", row
    else:
        raise InputError(f"{path}: unknown file type {suffix!r} (expected .jsonl, .json or .parquet)")


def _hub_rows(source: str, split: str) -> Iterator[tuple[str, dict]]:
    """`owner/name` or `owner/name:config`, through `datasets` (needs the network)."""
    try:
        import datasets
    except ImportError:
        raise InputError(f"{source}: not a local file, and loading hub datasets needs `pip install datasets`") from None
    name, _, config = source.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # datasets raises many types; one line for the user
        raise InputError(f"{source}: could not load hub dataset (split {split!r}): {e}") from None
    for n, row in enumerate(ds):
        yield f"{source}[{split}][{n}]", dict(row)


def source_name(source) -> str:
    """A source as manifests and messages name it: its path or hub id, or a count of rows in memory."""
    return rows_label(source) if in_memory(source) else str(source)


def iter_rows(source, split: str = "train") -> tuple[Iterator[tuple[str, dict]], Skipped]:
    """Rows of a local file, of rows in memory (a list of dicts, a `datasets.Dataset`), or of
    a hub dataset when `source` is no existing path."""
    skipped = Skipped()
    if in_memory(source):
        return ((f"row {n}", dict(row)) for n, row in enumerate(source)), skipped
    path = Path(source)
    if path.exists():
        if path.is_dir():
            raise InputError(f"{path}: is a directory, expected a .jsonl/.json/.parquet file")
        return _file_rows(path, skipped), skipped
    looks_local = path.suffix.lower() in {".jsonl", ".json", ".parquet"} or str(source).startswith((".", "/", "~"))
    if looks_local:
        raise InputError(f"{path}: no such file")
    return _hub_rows(str(source), split), skipped


def passthrough(row: dict, task: Task, fields: FieldMap) -> dict:
    """The row's columns for the record: all but those the task reads (the record holds them
    as `id`, `question`, `reference_solution` and its gold fields under the task's names)."""
    used = {fields.id or task.id_field, fields.question or task.question_field, fields.reference or task.reference_field,
            *task.slots(fields),
            *(task.column(k, fields) for k in (*task.gold_fields, *task.meta_fields))}
    out = {(f"input_{k}" if k in RECORD_KEYS else k): v for k, v in row.items() if k not in used}
    return {**out, **task.keep(row, fields)}


def _missing_column(where: str, row: dict, column: str, task: Task, fields: FieldMap) -> InputError:
    return InputError(f"{where}: no field {column!r} (fields: {', '.join(sorted(row))}); choose the column with "
                      f"{fields.option(task.slots(fields)[column])} (task {task.name} reads: {task.schema()})")


def sample_ids(ids: list[str], n: int | None, seed: int = 0) -> set[str]:
    """A uniform random sample of n ids, fixed by the seed and independent of file order
    and of rows other commands skip: the n ids with the smallest hash of (seed, id), so
    generate, score and eval on the same file with the same --sample --seed agree."""
    import hashlib

    if n is None:
        return set(ids)
    key = lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest()  # noqa: E731
    return set(sorted(ids, key=key)[:n])


def select(items: list, id_of, sample: int | None, seed: int, limit: int | None) -> list:
    """--sample (in file order) then --limit."""
    if sample is not None:
        keep = sample_ids([id_of(x) for x in items], sample, seed)
        items = [x for x in items if id_of(x) in keep]
    return items[:limit] if limit else items


def load_problems(
    source: str | Path, task: Task, fields: FieldMap = FieldMap(), split: str = "train", limit: int | None = None,
    sample: int | None = None, seed: int = 0,
) -> tuple[list[Problem], Skipped]:
    """Problems from `source` in file order (`sample`: a seeded random subset of them, see
    sample_ids); rows missing a required field are skipped, and a field missing from the
    very first row is an error (a wrong column name), as is a source with no usable row."""
    rows, skipped = iter_rows(source, split)
    problems: list[Problem] = []
    seen: set[str] = set()
    slots = task.slots(fields)
    id_column = fields.id or task.id_field
    for index, (where, row) in enumerate(rows):
        missing = [c for c in slots if row.get(c) is None]
        if missing and not problems and not skipped.rows:
            raise _missing_column(where, row, missing[0], task, fields)
        if missing:
            skipped.add(where, f"missing field {missing[0]!r}")
            continue
        if id_column not in row and not skipped.notes:
            skipped.notes.append(f"{where}: no id column {id_column!r}, so ids are row numbers (0, 1, ...); "
                                 f"name your id column with --id-field")
        pid = str(row.get(id_column, index))
        if pid in seen:
            skipped.add(where, f"duplicate id {pid!r}")
            continue
        seen.add(pid)
        problems.append(Problem(pid, task.question(row, fields), task.reference(row, fields),
                                passthrough(row, task, fields)))
        if sample is None and limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise InputError(f"{source_name(source)}: no usable rows" + (f": {skipped.summary()}" if skipped.rows else " (empty)"))
    return select(problems, lambda p: p.id, sample, seed, limit), skipped


def load_source(cfg):
    """A config's problems (a config.ProblemSource: data, task, split, limit, columns):
    returns the task, the source read (the demo set when `data` is None), the problems
    and the rows skipped."""
    from .demo import ANSWER_FORMAT, demo_path
    from ..tasks import get_task

    demo = cfg.data is None
    task = get_task(cfg.task, getattr(cfg, "answer_format", None) or (ANSWER_FORMAT if demo else None))
    source = demo_path() if demo else cfg.data
    problems, skipped = load_problems(source, task, cfg.fields, cfg.split, cfg.limit, cfg.sample, cfg.seed)
    return task, source, problems, skipped
