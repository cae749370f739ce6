"""`dasd-local view`: one run's responses, every token coloured by how it was chosen, in the
terminal (reporting.terminal) or as one self-contained HTML page (reporting.html)."""

from __future__ import annotations

from .config import ViewConfig


def view(cfg: ViewConfig, console=None) -> dict | None:
    """Show the records (returns None), or write the HTML report (returns its totals)."""
    if cfg.html is not None:
        from .reporting.html import write_report

        return write_report(cfg.path, cfg.html, cfg.model)
    from .reporting.terminal import show

    show(cfg.path, cfg.id, cfg.candidates, cfg.limit, cfg.model, console)
    return None
