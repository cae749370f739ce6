"""The rich terminal view of token choices: each response token coloured by its category.

Reads generation records; needs no model, except to spell out the candidates of
non-consistent tokens (`--candidates`), which are stored as token ids.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..config import HIGH_PPL
from ..errors import InputError
from ..store.records import read_records

STYLES = {"consistent": "", "reserved": "bold yellow", "base_selected": "bold cyan", "hard": "bold white on red", None: ""}
LEGEND = [("consistent", "both views' top token"), ("reserved", "reference's top token, plausible to base"),
          ("base_selected", "a lower reference candidate the base finds plausible"),
          ("hard", "no candidate plausible to base")]


def legend():
    """One category per line: wrapped into one paragraph, the entries split mid-phrase."""
    from rich.table import Table
    from rich.text import Text

    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for n, (cat, what) in enumerate(LEGEND):
        table.add_row("legend:" if n == 0 else "", Text(cat, style=STYLES[cat] or "underline"), what)
    return table


def response_text(record: dict):
    from rich.text import Text

    t = Text()
    for step in record.get("steps", []):
        t.append(step.get("text", ""), style=STYLES.get(step.get("category"), ""))
    return t


def counts_line(record: dict) -> str:
    cats = Counter(s.get("category") for s in record.get("steps", []))
    n = max(len(record.get("steps", [])), 1)
    parts = [f"{c} {cats.get(c, 0)} ({100 * cats.get(c, 0) / n:.1f}%)" for c, _ in LEGEND]
    high = sum(1 for s in record.get("steps", []) if 1 / max(float(s.get("p_base", 1.0)), 1e-300) > HIGH_PPL)
    return f"{n} tokens: " + ", ".join(parts) + f"; p_base < {1 / HIGH_PPL:g} (PPL > {HIGH_PPL:g}): {high}"


def candidates_table(record: dict, spell):
    from rich.table import Table

    table = Table(title="non-consistent choices", show_lines=False)
    for col in ("#", "emitted", "category", "candidates (token p_R / p_B)"):
        table.add_column(col, overflow="fold")
    for i, s in enumerate(record.get("steps", [])):
        if s.get("category") in (None, "consistent"):
            continue
        cands = "  ".join(f"{spell(t)!r} {pr:.2f}/{pb:.2f}" for t, pr, pb in s.get("candidates", []))
        table.add_row(str(i), repr(s.get("text", "")), s["category"], cands or "(run generate with --record-candidates)")
    return table


def show(path: Path, pid: str | None = None, candidates: bool = False, limit: int = 3,
         model: str | None = None, console=None) -> int:
    """Print records (all up to `limit`, or the one with id `pid`); returns how many."""
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.text import Text

    console = console or Console()
    records, _ = read_records(Path(path))
    if pid is not None:
        records = [r for r in records if str(r.get("id")) == pid]
        if not records:
            raise InputError(f"{path}: no record with id {pid!r}")
    records = records[:limit] if pid is None else records
    spell = None
    if candidates:
        from .spelling import spell_tokens

        ids = {int(c[0]) for r in records for st in r.get("steps") or [] for c in st.get("candidates") or []}
        vocab, note = spell_tokens(ids, Path(path), model)
        if note:
            console.print(note, style="dim")
        spell = lambda tok: vocab.get(int(tok), str(tok))  # noqa: E731
    console.print(legend())
    for r in records:
        title = f"{r.get('id')}  [{r.get('strategy')}]  finish={r.get('finish_reason')}"
        if "correct" in r:
            title += f"  correct={r['correct']}"
        # the counts go inside the panel: as a subtitle, an 80-column border cuts them
        body = Group(response_text(r), Text(""), Text(counts_line(r), style="dim"))
        console.print(Panel(body, title=Text(title)))
        if candidates:
            console.print(candidates_table(r, spell))
    return len(records)
