"""The live progress of a decode run, and writing its records as they finish.

The display is a bar with the count and the elapsed time, and the rates and token
categories on a line of their own: on one line, an 80-column terminal gives the long
rates text the room of the count and the clock, and rich drops them. Ctrl-C ends the
run as one `Interrupted` line saying how many records are safe. Knows rich and the
writer's surface; knows nothing about decoding beyond the Stats counters it is shown.
"""

from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..errors import Interrupted


def info_line(stats, strategy: str, seconds: float) -> str:
    """'14 tok/s  13.7 rows/call  cons 88.7% rese 4.3% ...' from the decoder's counters."""
    total = sum(stats.categories.values()) or 1
    shares = " ".join(f"{k[:4]} {100 * v / total:.1f}%" for k, v in stats.categories.items()) \
        if strategy == "dasd" else ""
    rate = stats.emitted / max(seconds, 1e-9)
    spec = f"draft {stats.accepted}/{stats.drafted}  " if stats.drafted else ""
    return f"{rate:.0f} tok/s  {stats.rows / max(stats.decode_calls, 1):.1f} rows/call  {spec}{shares}".rstrip()


LOG_EVERY_S = 60.0  # a console that is not a terminal (a log file) gets a plain line this often


class DecodeProgress(Progress):
    """`with DecodeProgress("dasd", total) as bar:` then `bar.step(stats)` and `bar.done_one()`.
    Where the console is not a terminal (`nohup ... > log`), rich draws nothing until the
    end, so a plain line ('dasd: 37/200 done, 151 s, 14 tok/s ...') goes to the log every
    LOG_EVERY_S seconds instead."""

    def __init__(self, description: str, total: int, console=None):
        self.strategy, self.info, self.started = description, "", time.time()
        self.logged = self.started
        super().__init__(TextColumn("[bold]{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                         TimeElapsedColumn(), console=console, transient=False)
        self.job = self.add_task(description, total=total)

    def _log(self) -> None:
        now = time.time()
        if self.console.is_terminal or now - self.logged < LOG_EVERY_S:
            return
        self.logged = now
        task = self.tasks[0]
        self.console.print(f"{self.strategy}: {int(task.completed)}/{int(task.total)} done, {now - self.started:.0f} s"
                           + (f", {self.info}" if self.info else ""), highlight=False, soft_wrap=True)

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        if self.info:
            yield Text(self.info, no_wrap=True, overflow="ellipsis", style="dim")

    def step(self, stats) -> None:
        self.info = info_line(stats, self.strategy, time.time() - self.started)
        self.refresh()
        self._log()

    def done_one(self) -> None:
        self.advance(self.job)
        self._log()


def interrupted(done: int) -> Interrupted:
    return Interrupted(f"interrupted: {done} done, rerun the same command to resume")


def decode_to(writer, run, todo: list, strategy: str, console=None) -> list[str]:
    """Decode `todo` through `run(problems, on_step)` under the progress display, writing
    each record (a dict) as it finishes and each failed problem to the failed file;
    returns the failures as 'id: error' lines."""
    failed = []
    try:
        with DecodeProgress(strategy, len(todo), console) as bar:
            for item in run(todo, bar.step):
                if isinstance(item, dict):
                    writer.write(item)
                else:
                    writer.write_failed(item.problem.id, item.error)
                    failed.append(f"{item.problem.id}: {item.error}")
                bar.done_one()
    except KeyboardInterrupt:
        writer.close()
        raise interrupted(len(writer.done)) from None
    return failed
