"""Tasks: what a problem looks like, how its two views are worded, how an answer is checked.

The shared types live in base.py (the task modules import them from there, so the
package and its modules never import each other); this module names the tasks.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import REFERENCE_ASK, FieldMap, Problem, Task, Verdict  # noqa: F401


def get_task(name: str, answer_format: str | None = None) -> Task:
    from . import code, math, mcq

    tasks = {"math": math.MathTask, "code": code.CodeTask, "mcq": mcq.McqTask}
    if name not in tasks:
        raise ConfigError(f"--task {name} is not allowed: expected one of {', '.join(tasks)}")
    return tasks[name]().use_format(answer_format)


def task_of(record: dict, name: str | None = None) -> Task:
    """The task (and answer format) a generation record was made with; `name` overrides
    the task, never the format."""
    return get_task(name or record["task"], record.get("answer_format"))
