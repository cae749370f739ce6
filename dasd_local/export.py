"""`dasd-local export`: verified records out to other tools' formats, with a dataset card.

Formats (each under -o DIR, with README.md, the dataset card):
- hf: a `datasets` dataset (`save_to_disk`; `datasets.load_from_disk(DIR)`);
- parquet: `data/train-00000-of-00001.parquet`, the hub's layout;
- prompt-completion: TRL's conversational prompt/completion JSONL (`train.jsonl`);
- messages: TRL's conversational `messages` JSONL (`train.jsonl`);
- sharegpt: `train.json` (`conversations` of `from`/`value` turns, `system`) and the
  `dataset_info.json` entry LLaMA-Factory reads; Axolotl reads the same file.

Only kept records are exported: those with `correct` true (verify's output); a record
with `correct` false is dropped and counted, and a record never verified is an error. The
rows of each format live in reporting/formats.py, the card in reporting/card.py; this
module reads the inputs, guards the output directory, swaps a finished export in and
pushes it to the hub.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .config import ExportConfig
from .errors import ConfigError, DasdError, InputError
from .store.lock import one_writer
from .store.records import read_jsonl, sidecar

MARKER = "<!-- written by dasd-local export -->"  # a directory holding it may be replaced


class HubError(DasdError):
    """The hub push failed; the export itself is on disk."""


@dataclass
class Source:
    """One input file: its kept records and what the pipeline left out before them."""

    path: Path
    records: int = 0
    kept: list[dict] = field(default_factory=list)
    dropped: int = 0  # correct false in this file
    dropped_by_verify: int = 0  # wrong rewrites `verify --on-fail drop` already left out
    malformed: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)  # the generation manifest, where found
    verify: dict = field(default_factory=dict)  # verify's manifest, where found

    @property
    def system(self) -> str | None:
        return (self.manifest.get("run") or {}).get("system")


def _manifests(path: Path) -> tuple[dict, dict]:
    """(generation manifest, verify manifest) beside a file; verify's carries its source's."""
    p = sidecar(path, "manifest.json")
    if not p.is_file():
        return {}, {}
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not valid JSON ({e.msg}, line {e.lineno}); move it away to export without it") from None
    if m.get("verb") == "verify":
        return m.get("source_manifest") or {}, m
    return m, {}


def read_source(path: Path) -> Source:
    """Kept records of one file; a record never verified is an error naming it."""
    records, malformed = read_jsonl(Path(path))
    src = Source(Path(path), records=len(records), malformed=malformed)
    src.manifest, src.verify = _manifests(Path(path))
    src.dropped_by_verify = (src.verify.get("counts") or {}).get("dropped", 0)
    for n, rec in enumerate(records):
        if "correct" not in rec:
            raise InputError(f"{path}: record {rec.get('id', n)!r} has no field 'correct' "
                             f"(not verified): run `dasd-local verify {path} -o KEPT.jsonl` first")
        for key in ("task", "question", "response"):
            if rec.get(key) is None:
                raise InputError(f"{path}: record {rec.get('id', n)!r} has no field {key!r}")
        if rec["correct"] is True:
            src.kept.append(rec)
        else:
            src.dropped += 1
    return src


def _check_target(out: Path, inputs: tuple[Path, ...]) -> None:
    """Never overwrite anything but an earlier export (its README.md carries the marker)."""
    if any(out.resolve() == Path(p).resolve().parent for p in inputs) and out.exists():
        raise ConfigError(f"-o {out} holds an input file: choose an empty or new directory")
    if out.is_file():
        raise ConfigError(f"-o {out} is a file: expected a directory")
    if out.is_dir() and any(out.iterdir()):
        card = out / "README.md"
        if not (card.is_file() and MARKER in card.read_text(encoding="utf-8", errors="replace")):
            raise ConfigError(f"-o {out} is not empty and is no earlier export: choose an empty or new directory")


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished `tmp` (the old export stays until the new one is whole)."""
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@one_writer(lambda cfg: cfg.out)
def export(cfg: ExportConfig) -> dict:
    """Write the kept records of every input in `cfg.format` with a card; push when asked.
    Returns a summary (counts, files, the card's numbers); a failed push raises HubError
    after everything is on disk."""
    from .reporting.card import card_facts, card_text
    from .reporting.formats import write_format

    out = Path(cfg.out)
    _check_target(out, cfg.paths)
    sources = [read_source(Path(p)) for p in cfg.paths]
    pairs = [(r, s.system) for s in sources for r in s.kept]
    if not pairs:
        raise InputError(f"nothing to export: no record of {', '.join(str(p) for p in cfg.paths)} has correct = true")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    written = write_format(cfg.format, pairs, tmp)
    facts = card_facts(cfg, sources, written)
    (tmp / "README.md").write_text(card_text(facts, MARKER), encoding="utf-8")
    _swap_in(tmp, out)
    summary = {"out": str(out), "format": cfg.format, "files": ["README.md", *written["files"]], **facts["counts"]}
    if cfg.push_to_hub:
        push(out, cfg.push_to_hub)
        summary["pushed"] = cfg.push_to_hub
    return summary


def push(folder: Path, repo: str) -> None:
    """Upload the export folder as a hub dataset repo (the `hub` extra and a token)."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise HubError(f"--push-to-hub needs `pip install 'dasd-local[hub]'`; the export is in {folder}") from None
    try:
        api = HfApi()
        api.create_repo(repo, repo_type="dataset", exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="dataset")
    except Exception as e:  # network, auth, hub errors: one line, the local copy stays
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HubError(f"push to {repo} failed ({type(e).__name__}: {why}); the card and files are in {folder}") from None
