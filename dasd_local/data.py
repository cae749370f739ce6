"""Loading problem rows from local files (JSON, JSONL, parquet) or a hub dataset id.

Knows file formats and the `datasets` library; knows nothing about tasks beyond
asking one to turn a row into a Problem. Malformed rows are skipped and counted
(with the file and line that held them); a missing file or a field absent from the
data is one clear error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import InputError
from .tasks import FieldMap, Problem, Task


@dataclass
class Skipped:
    """Rows that could not be used, with a reason each (reported, never fatal)."""

    rows: list[str] = field(default_factory=list)

    def add(self, where: str, why: str) -> None:
        self.rows.append(f"{where}: {why}")


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


def iter_rows(source: str | Path, split: str = "train") -> tuple[Iterator[tuple[str, dict]], Skipped]:
    """Rows of a local file, or of a hub dataset when `source` is no existing path."""
    skipped = Skipped()
    path = Path(source)
    if path.exists():
        if path.is_dir():
            raise InputError(f"{path}: is a directory, expected a .jsonl/.json/.parquet file")
        return _file_rows(path, skipped), skipped
    looks_local = path.suffix.lower() in {".jsonl", ".json", ".parquet"} or str(source).startswith((".", "/", "~"))
    if looks_local:
        raise InputError(f"{path}: no such file")
    return _hub_rows(str(source), split), skipped


def load_problems(
    source: str | Path, task: Task, fields: FieldMap = FieldMap(), split: str = "train", limit: int | None = None
) -> tuple[list[Problem], Skipped]:
    """Problems from `source` in file order; rows missing a required field are skipped,
    and a field missing from the very first row is an error (a wrong column name)."""
    rows, skipped = iter_rows(source, split)
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, (where, row) in enumerate(rows):
        missing = [c for c in task.required(fields) if row.get(c) is None]
        if missing and not problems and not skipped.rows:
            raise InputError(
                f"{where}: no field {missing[0]!r} (fields: {', '.join(sorted(row))}); "
                f"choose the column with --{'question' if missing[0] == (fields.question or task.question_field) else 'reference'}-field"
            )
        if missing:
            skipped.add(where, f"missing field {missing[0]!r}")
            continue
        pid = str(row.get(fields.id or task.id_field, index))
        if pid in seen:
            skipped.add(where, f"duplicate id {pid!r}")
            continue
        seen.add(pid)
        problems.append(Problem(pid, task.question(row, fields), task.reference(row, fields), task.keep(row)))
        if limit is not None and len(problems) >= limit:
            break
    return problems, skipped


def load_source(cfg):
    """A config's problems (a config.ProblemSource: data, task, split, limit, columns):
    returns the task, the source read (the demo set when `data` is None), the problems
    and the rows skipped."""
    from .demo import demo_path
    from .tasks import get_task

    task = get_task(cfg.task)
    source = cfg.data if cfg.data is not None else demo_path()
    problems, skipped = load_problems(source, task, cfg.fields, cfg.split, cfg.limit)
    return task, source, problems, skipped
