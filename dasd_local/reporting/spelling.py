"""Token ids spelled as text by the model that made a run (the candidates that records keep
as ids), for the terminal view and the HTML report alike. Knows manifests and the engine's
vocabulary surface."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DasdError
from ..store.records import sidecar


def run_model(path: Path) -> str | None:
    """The model a run used: its manifest's, or (verify output) its source's."""
    p = sidecar(Path(path), "manifest.json")
    if not p.is_file():
        return None
    m = json.loads(p.read_text(encoding="utf-8"))
    return m.get("model") or (m.get("source_manifest") or {}).get("model")



def spell_tokens(ids: set[int], path: Path, model: str | None) -> tuple[dict, str]:
    """{token id: text} from the run's (or the given) model, and a note when it could not load."""
    model = model or run_model(path)
    if not ids:
        return {}, ""
    if model is None:
        return {}, "candidates are token ids: no manifest names the model (pass --model)"
    from ..decoding.engine import Engine, EngineConfig
    from ..models import resolve

    try:
        engine = Engine(resolve(model)[0], EngineConfig(n_ctx=64, n_seq_max=1, n_threads=1))
    except DasdError as e:
        return {}, f"candidates are token ids: model {model} not loaded ({e})"
    try:
        return {t: engine.token_text(t).decode("utf-8", "replace") for t in sorted(ids)}, ""
    finally:
        engine.close()
