"""The field machinery every settings dataclass is made of.

A field is declared once with `setting(...)`; its metadata is the single source that the
CLI's options (cli.py builds them), the range checks (`check_fields`) and the resolved
config written beside every output all read. Errors name the setting as the user typed it
(`--top-k = 0 is not allowed: expected >= 1`), its value and the allowed range.
Standard library only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, field, fields
from pathlib import Path

from ..errors import ConfigError


def setting(default=MISSING, help: str = "", check=None, expect: str = "", *, flag: str | None = None, factory=MISSING,
            short: str | None = None, metavar: str | None = None, parse=None, argument: bool = False,
            required: bool = False):
    """A dataclass field whose metadata carries its help, its check (value -> bool, skipped
    for None) with the range it expects, and the CLI flag that sets it (None: none does;
    '--x/--no-x' for a switch with both forms), its one-letter alias (`short`), the
    placeholder shown in help (`metavar`) and, where the command line's text is not the
    value's type, the function that reads it (`parse`, e.g. `--batch N|auto`). `argument`: a
    positional command-line argument (named like the field) instead of an option;
    `required`: the command line must give it, whatever the Python default."""
    meta = {"help": help, "check": check, "expect": expect, "flag": flag, "short": short, "metavar": metavar,
            "parse": parse, "argument": argument, "required": required}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def reject(cfg, name: str, expect: str):
    """The one error style: the setting (as the CLI spells it), its value, the legal range.

    `--top-k / top_k = 0 is not allowed: expected >= 1` names the field both ways when
    the flag's spelling differs from the field's."""
    meta = next((f.metadata for f in fields(cfg) if f.name == name), {})
    who = meta.get("flag") or name
    if who.lstrip("-") != name:
        who = f"{who} / {name}"  # the CLI's spelling and the Python one, for scripts and tests
    raise ConfigError(f"{who} = {getattr(cfg, name)!r} is not allowed: expected {expect}")


def check_fields(cfg) -> None:
    """Run every field's own check (None values are 'not set' and pass)."""
    for f in fields(cfg):
        value, check = getattr(cfg, f.name), f.metadata.get("check")
        if value is not None and check is not None and not check(value):
            reject(cfg, f.name, f.metadata["expect"])


def field_of(cls, name: str) -> dataclasses.Field:
    found = {f.name: f for f in fields(cls)}
    if name not in found:
        raise KeyError(f"{cls.__name__} has no field {name!r}")
    return found[name]


def default_of(f: dataclasses.Field):
    """A field's default; None for a computed one (the CLI then means 'let the config decide')."""
    return None if f.default is MISSING else f.default


def resolved(cfg) -> dict:
    """The config as JSON-ready values (paths as strings, in-memory rows as a count), for the
    files beside an output."""
    def plain(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if in_memory(v):
            return rows_label(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return str(v) if isinstance(v, Path) else v
    return plain(cfg)


def in_memory(data) -> bool:
    """Problem rows given as data instead of a file or hub id: a list of dicts, a `datasets.Dataset`."""
    return (isinstance(data, (list, tuple)) and all(isinstance(r, dict) for r in data)) and len(data) > 0 \
        or hasattr(data, "features") and hasattr(data, "num_rows")


def rows_label(data) -> str:
    """How in-memory rows are named in manifests and messages."""
    return f"<{len(data)} rows in memory>"


def one_of(*names):
    return lambda v: v in names, " or ".join(names) if len(names) < 3 else "one of " + ", ".join(names)


AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
AT_LEAST_0 = (lambda v: v >= 0, ">= 0")
