"""The dataset card of an export: README.md with YAML front matter, written through
huggingface_hub's DatasetCard / DatasetCardData (the classes the hub reads cards with).

The numbers come from the same places as elsewhere: the token statistics from
analysis.collect (what `dasd-local stats` prints for the same files), the model and its
sha256 from the generation manifest, kept/dropped counts from the records and verify's
manifest. Knows the card's layout; knows nothing about formats or models.
"""

from __future__ import annotations

from pathlib import Path

from ..analysis.tables import pct
from ..config import HIGH_PPL
from ..schema import CATEGORIES

# Licences of the sources this project knows (see ../shared/data/SOURCES.md); others: --license.
KNOWN_LICENSES = {"math": "mit", "mbpp": "cc-by-4.0", "arc_challenge": "cc-by-sa-4.0", "demo": "mit"}
DATA_FILES = {"hf": "data-*.arrow", "parquet": "data/train-*.parquet", "prompt-completion": "train.jsonl",
              "messages": "train.jsonl", "sharegpt": "train.json"}


def guess_license(data: str | None) -> str | None:
    """The licence of a known source, by its folder (math/, mbpp/, arc_challenge/, the demo set)."""
    if not data:
        return None
    parts = Path(data).parts
    return next((KNOWN_LICENSES[p] for p in reversed(parts) if p in KNOWN_LICENSES), None)


def _stats(paths) -> list[dict]:
    """Per input file, the numbers `dasd-local stats FILE` shows (its `--json` 'all' block)."""
    from ..analysis.metrics import collect

    found, _ = collect([Path(p) for p in paths])
    keys = ("records", "tokens", "high_ppl_ratio", "ppl", "category_shares", "filtered_share", "pass_rate")
    return [{"path": s["path"], "label": s["label"], **{k: s["all"][k] for k in keys}} for s in found]


def _strategies(sources) -> dict:
    """strategy -> its parameters (the records' `config`; several when runs differ)."""
    out: dict[str, list] = {}
    for s in sources:
        for r in s.kept:
            cfg = {k: v for k, v in (r.get("config") or {}).items() if k != "strategy"}
            seen = out.setdefault(str(r.get("strategy", "?")), [])
            if cfg not in seen:
                seen.append(cfg)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


def card_facts(cfg, sources, written: dict) -> dict:
    """Everything the card states, as plain data (the YAML block `dasd`)."""
    models = {(s.manifest.get("model"), s.manifest.get("model_sha256")) for s in sources}
    data = [{"data": s.manifest.get("data"), "split": s.manifest.get("split"), "task": s.manifest.get("task")}
            for s in sources]
    licenses = {cfg.license or guess_license(d["data"]) for d in data}
    kept = sum(len(s.kept) for s in sources)
    dropped = sum(s.dropped + s.dropped_by_verify for s in sources)
    return {
        "format": cfg.format, "files": ["README.md", *written["files"]], "json_columns": written["json_columns"],
        "models": [{"model": m, "sha256": h} for m, h in sorted(models, key=str)],
        "strategies": _strategies(sources),
        "counts": {"records": sum(s.records for s in sources), "kept": kept, "dropped": dropped,
                   "dropped_in_files": sum(s.dropped for s in sources),
                   "dropped_by_verify": sum(s.dropped_by_verify for s in sources),
                   "malformed_lines": sum(len(s.malformed) for s in sources)},
        "stats": _stats(cfg.paths),
        "source_data": data, "license": sorted(x for x in licenses if x) or None,
        "inputs": [str(s.path) for s in sources], "command": cfg.command,
    }


def _size_category(n: int) -> str:
    return "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"


def card_data(facts: dict):
    """The card's YAML front matter as huggingface_hub's DatasetCardData, the class the hub
    itself reads cards with (the `dasd` block, our own facts, is an extra key it keeps)."""
    try:
        from huggingface_hub import DatasetCardData
    except ImportError:
        from ..errors import DasdError

        raise DasdError("export writes a dataset card: pip install 'dasd-local[hub]'") from None

    lic = facts["license"]
    return DatasetCardData(
        license=(lic[0] if len(lic) == 1 else "other") if lic else "unknown",
        task_categories=["text-generation"], language=["en"], tags=["dasd", "distillation", "synthetic", "dasd-local"],
        size_categories=[_size_category(facts["counts"]["kept"])],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILES[facts["format"]]}]}],
        dasd={k: facts[k] for k in ("models", "strategies", "counts", "stats", "source_data", "command")},
    )


def _stats_table(stats: list[dict]) -> list[str]:
    lines = [f"| file | records | tokens | high-PPL (PPL > {HIGH_PPL:g}) | " + " | ".join(CATEGORIES) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(CATEGORIES)]
    for s in stats:
        shares = s["category_shares"] or {}
        lines.append(f"| {Path(s['path']).name} | {s['records']} | {s['tokens']} | {pct(s['high_ppl_ratio'])} | "
                     + " | ".join(pct(shares.get(c)) for c in CATEGORIES) + " |")
    return lines


def _params(cfg) -> str:
    cfgs = cfg if isinstance(cfg, list) else [cfg]
    return " | ".join(", ".join(f"{k}={v}" for k, v in c.items()) for c in cfgs)


def card_text(facts: dict, marker: str) -> str:
    c = facts["counts"]
    models = "; ".join(f"`{Path(m['model']).name if m['model'] else 'unknown (no manifest beside the input)'}`"
                       f" (sha256 `{m['sha256'] or '-'}`)" for m in facts["models"])
    strategies = "; ".join(f"`{k}` ({_params(v)})" for k, v in facts["strategies"].items())
    sources = "; ".join(f"`{d['data'] or 'unknown'}` (split {d['split'] or '-'}, task {d['task'] or '-'})"
                        for d in facts["source_data"])
    body = [
        "# DASD training data", "", marker, "",
        "Responses written by Distribution-Aligned Self-Distillation (`dasd-local generate`), "
        "verified against the gold answers (`dasd-local verify`); only kept records are here.", "",
        f"- **Model:** {models}",
        f"- **Strategy and parameters:** {strategies}",
        f"- **Records:** {c['kept']} kept, {c['dropped']} dropped ({c['dropped_by_verify']} by `verify`, "
        f"{c['dropped_in_files']} marked incorrect in the inputs)",
        f"- **Source data:** {sources}; licence: {', '.join(facts['license'] or ['unknown (pass --license)'])}",
        f"- **Format:** `{facts['format']}`; files: {', '.join(f'`{f}`' for f in facts['files'])}",
        "", "## Tokens under the base view (as `dasd-local stats` reports them for the input files)", "",
        *_stats_table(facts["stats"]), "",
        "## Exact command", "", "```bash", facts["command"] or "(not recorded)", "```", "",
    ]
    if facts["json_columns"]:
        body += [f"Columns stored as JSON text (no common type across records): {', '.join(facts['json_columns'])}.", ""]
    from huggingface_hub import DatasetCard

    return str(DatasetCard("---\n" + card_data(facts).to_yaml() + "\n---\n\n" + "\n".join(body)))
