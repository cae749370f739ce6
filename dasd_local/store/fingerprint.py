"""What a generation output was made with, so that a rerun resumes only the same run.

An output `OUT.jsonl` gets `OUT.fingerprint.json` before its first record: the model's
(and adapter's) sha256, which also pins the chat template inside the GGUF, the input
data's content hash and column mapping, the task and its answer format, the strategy
and rule config, and the views' wording (instruction, reference wording, system
prompt). A rerun into the same output compares fingerprints first, before the model is
loaded: the same one resumes; a different one stops with one line naming what changed
and the flag that changed it, and nothing is touched. `--restart` removes the old output
and starts over. Knows files and hashes; knows nothing about decoding.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config.fields import in_memory
from ..errors import ConfigError
from .records import atomic_write_text, sha256_file, sidecar

# fingerprint key -> the flag a user changes it with (how the mismatch line names it)
FLAGS = {
    "model_sha256": "--model", "adapter_sha256": "--adapter", "data_sha256": "--data (its content)",
    "data": "--data / --split", "fields": "--id-field / --question-field / --reference-field",
    "task": "--task", "answer_format": "--answer-format", "strategy": "--strategy", "top_k": "--top-k",
    "tau": "--tau", "hard_mode": "--hard-mode", "hint_beta": "--hint-beta",
    "max_new_tokens": "--max-new-tokens", "instruction": "the task's instruction",
    "reference_ask": "the task's reference wording", "system": "--system",
}
# Recorded, never compared: how llama.cpp placed the weights changes probabilities only by
# kernel noise (like the batch shape), and a run that crashed on one placement must resume
# on another (`--cpu-weights plain` after a native crash in the repacked kernels).
RECORDED_ONLY = {"cpu_weights"}


def data_identity(source, split: str) -> dict:
    """A local file by its bytes (an added column or edited row changes it); rows in memory
    by their content; a hub dataset by its id and split."""
    if in_memory(source):
        import hashlib

        text = json.dumps([dict(r) for r in source], sort_keys=True, default=str)
        return {"data_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    path = Path(source)
    if path.is_file():
        return {"data_sha256": sha256_file(path)}
    return {"data": f"{source}[{split}]"}


def make(model_sha256: str, adapter: Path | None, source, split: str, fields, task, rule: dict,
         system: str | None, cpu_weights: str = "auto") -> dict:
    """The fingerprint of one generation run (flat: every key is one thing a user sets)."""
    return {
        "model_sha256": model_sha256,
        "adapter_sha256": sha256_file(adapter) if adapter else None,
        **data_identity(source, split),
        "fields": [fields.id, fields.question, fields.reference],
        "task": task.name, "answer_format": task.answer_format,
        **rule,
        "instruction": task.instruction, "reference_ask": task.reference_ask, "system": system,
        "cpu_weights": cpu_weights,  # the setting (the manifest's engine.cpu_weights: what ran)
    }


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:12] + "..."


def differences(old: dict, new: dict) -> list[str]:
    """'--tau 0.2 -> 0.5' for every key whose value differs."""
    out = []
    for key in dict.fromkeys([*new, *old]):
        if key in RECORDED_ONLY:
            continue
        if old.get(key) != new.get(key):
            out.append(f"{FLAGS.get(key, key)} {_short(old.get(key))} -> {_short(new.get(key))}")
    return out


def claim(out: Path, fingerprint: dict, restart: bool = False) -> None:
    """Make `out` this run's output: check a previous run's fingerprint (a mismatch is one
    ConfigError line), or, with `restart`, remove the previous run's files first."""
    out = Path(out)
    path = sidecar(out, "fingerprint.json")
    previous = [out, sidecar(out, "failed.jsonl"), sidecar(out, "manifest.json"), path]
    if restart:
        for p in previous:
            p.unlink(missing_ok=True)
    has_records = any(p.exists() and p.stat().st_size > 0 for p in previous[:2])
    hint = "write to a new --out, or add --restart to start this one over"
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = {}
        changed = differences(old, fingerprint)
        if changed and has_records:
            raise ConfigError(f"{out} was made by a different run ({'; '.join(changed)}): {hint}")
    elif has_records:
        raise ConfigError(f"{out} holds records but no fingerprint of the run that made them: {hint}")
    atomic_write_text(path, json.dumps(fingerprint, indent=2) + "\n")
