"""`dasd-local view RUN.jsonl --html OUT.html`: the token view as one self-contained HTML file.

Every response token is a span coloured by its category (class `cat-<category>`,
`cat-none` for strategies without categories); hovering one shows its p_B, p_R, rank and
the step's candidates spelled by the model. Per-problem and total counts, filters by
category and by verification result, and the `stats` plots (base64 PNG) are in the same
file, which loads nothing from the network. The records travel as one JSON block and
the page renders PAGE_SIZE problems at a time, so a 2,000-problem run opens at once.
Knows the record layout and HTML; the model only spells candidate token ids.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from importlib.resources import files
from pathlib import Path

from ..config import HIGH_PPL
from ..schema import CATEGORIES
from ..store.records import atomic_write_text, read_jsonl
from .spelling import spell_tokens
from .terminal import LEGEND

PAGE_SIZE = 25
# Past this many steps in a file, only non-consistent tokens keep their candidates (a
# consistent token is both views' top choice): it keeps a 2,000 x 512-token run near 30 MB.
FULL_CANDIDATES_STEPS = 200_000


def _r(x):
    return None if x is None else round(float(x), 4)


def compact_step(step: dict, full: bool) -> list:
    """[text, category index (-1: none), p_base, p_ref, ref_rank, candidates, token]."""
    cat = step.get("category")
    cands = step.get("candidates") if full or cat != "consistent" else None
    return [step.get("text", ""), CATEGORIES.index(cat) if cat in CATEGORIES else -1, _r(step.get("p_base")),
            _r(step.get("p_ref")), step.get("ref_rank"),
            [[int(t), _r(pr), _r(pb)] for t, pr, pb in cands] if cands else 0, step.get("token")]


def token_counts(steps: list[dict], threshold: float = HIGH_PPL) -> dict:
    c = Counter(s.get("category") if s.get("category") in CATEGORIES else "none" for s in steps)
    high = sum(1 for s in steps if s.get("p_base") is not None and 1 / max(float(s["p_base"]), 1e-300) > threshold)
    return {"tokens": len(steps), **c, "high_ppl": high}


def report_data(records: list[dict], vocab: dict, note: str) -> dict:
    """Everything the page shows, as one JSON-able object."""
    full = sum(len(r.get("steps") or []) for r in records) <= FULL_CANDIDATES_STEPS
    problems, total = [], Counter()
    for r in records:
        steps = r.get("steps") or []
        c = token_counts(steps)
        total.update(c)
        problems.append({"id": str(r.get("id")), "strategy": r.get("strategy"), "finish": r.get("finish_reason"),
                         "correct": r.get("correct"), "counts": c, "response": r.get("response", ""),
                         # a string, parsed when its page renders: opening the file builds no step objects
                         "steps": json.dumps([compact_step(s, full) for s in steps], ensure_ascii=False,
                                             separators=(",", ":"))})
    verdicts = Counter(str(p["correct"]) for p in problems)
    return {
        "categories": list(CATEGORIES), "legend": [*LEGEND, ("none", "no category (not a dasd run)")],
        "page_size": PAGE_SIZE, "problems": problems, "vocab": {str(k): v for k, v in vocab.items()},
        "totals": {"problems": len(problems), "tokens": total["tokens"], "correct": verdicts["True"],
                   "incorrect": verdicts["False"], "unverified": verdicts["None"], "counts": dict(total)},
        "candidates_note": "no candidates recorded for this token" + ("" if full else " (consistent tokens of large runs keep none)")
                           + "; run generate with --record-candidates",
        "note": note,
    }


def plots_html(path: Path, records: list[dict]) -> str:
    """The `stats --plots` figures as inline base64 PNG images (a note without matplotlib)."""
    import tempfile

    from ..analysis.metrics import file_stats
    from ..analysis.plots import write_plots

    try:
        import matplotlib  # noqa: F401  (the analysis extra)
    except ImportError:
        return '<p class="note">plots need the analysis extra: pip install "dasd-local[analysis]"</p>'
    found = [file_stats(path, records)]  # what `stats` computes, without reading the file again
    with tempfile.TemporaryDirectory() as tmp:
        return "\n".join(f'<div><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}"></div>'
                         for p in write_plots(found, Path(tmp)))


def _escape_json(obj) -> str:
    """JSON safe inside <script>: no '<' at all, so no '</script>' or '<!--' can end it early."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def write_report(path: Path, out: Path, model: str | None = None) -> dict:
    """Write the HTML report of a run; returns the totals it shows."""
    from html import escape

    records, problems = read_jsonl(Path(path))
    ids = {int(c[0]) for r in records for s in r.get("steps") or [] for c in s.get("candidates") or []}
    vocab, note = spell_tokens(ids, Path(path), model)
    data = report_data(records, vocab, "; ".join([note, *problems[:5]]).strip("; "))
    template = files("dasd_local.reporting").joinpath("report_template.html").read_text(encoding="utf-8")
    html = (template.replace("__TITLE__", escape(Path(path).name)).replace("__PLOTS__", plots_html(Path(path), records))
            .replace("__DATA__", _escape_json(data)))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out), html)
    return data["totals"]
