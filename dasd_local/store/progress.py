"""The one progress display of every long step: decoding (generate, eval, score, here or on
Ray), training, assembling a model from its pieces.

A bar with the count (or bytes), the elapsed and remaining time, and an info line of its
own below it (rates, token categories, loss): on one line, an 80-column terminal gives a
long info text the room of the count and the clock, and rich drops them. Where the console
is not a terminal (`nohup ... > log`), rich draws nothing until the end, so a plain line
('eval: 37/200 done, 151 s, 14 tok/s ...') goes to the log every LOG_EVERY_S seconds
instead. Knows rich; knows nothing about what is counted beyond the decode loop's Stats
counters that `step` shows.
"""

from __future__ import annotations

import time

from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

from ..errors import Interrupted

LOG_EVERY_S = 60.0  # a console that is not a terminal (a log file) gets a plain line this often


def info_line(stats, strategy: str, seconds: float) -> str:
    """'14 tok/s  13.7 rows/call  cons 88.7% rese 4.3% ...' from the decoder's counters."""
    total = sum(stats.categories.values()) or 1
    shares = " ".join(f"{k[:4]} {100 * v / total:.1f}%" for k, v in stats.categories.items()) \
        if strategy == "dasd" else ""
    rate = stats.emitted / max(seconds, 1e-9)
    spec = f"draft {stats.accepted}/{stats.drafted}  " if stats.drafted else ""
    return f"{rate:.0f} tok/s  {stats.rows / max(stats.decode_calls, 1):.1f} rows/call  {spec}{shares}".rstrip()


class Bar(Progress):
    """`with Bar("dasd", total) as bar:` then `bar.done_one()` per item, `bar.step(stats)` per
    decode call or `bar.note(text)` for any info line; `nbytes=True` counts bytes
    (`bar.advance_by(n)`); `transient` clears the bar when it ends."""

    def __init__(self, label: str, total: int, console=None, *, nbytes: bool = False, transient: bool = False,
                 completed: int = 0):
        self.label, self.info, self.started = label, "", time.time()
        self.logged = self.started
        count = DownloadColumn() if nbytes else MofNCompleteColumn()
        super().__init__(TextColumn("[bold]{task.description}"), BarColumn(bar_width=30), count, TimeElapsedColumn(),
                         TimeRemainingColumn(), console=console, transient=transient)
        self.job = self.add_task(label, total=total, completed=completed)

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        if self.info:
            yield Text(self.info, no_wrap=True, overflow="ellipsis", style="dim")

    def _log(self) -> None:
        now = time.time()
        if self.console.is_terminal or now - self.logged < LOG_EVERY_S:
            return
        self.logged = now
        task = self.tasks[0]
        self.console.print(f"{self.label}: {int(task.completed)}/{int(task.total)} done, {now - self.started:.0f} s"
                           + (f", {self.info}" if self.info else ""), highlight=False, soft_wrap=True)

    def note(self, info: str) -> None:
        self.info = info
        self.refresh()
        self._log()

    def step(self, stats) -> None:
        """The decode loop's counters as the info line."""
        self.note(info_line(stats, self.label, time.time() - self.started))

    def done_one(self) -> None:
        self.advance(self.job)
        self._log()

    def advance_by(self, n: int) -> None:
        self.advance(self.job, n)

    def set_completed(self, n: int) -> None:
        self.update(self.job, completed=n)
        self._log()


def interrupted(done: int) -> Interrupted:
    return Interrupted(f"interrupted: {done} done, rerun the same command to resume")
