"""Tasks: what a problem looks like, how its two views are worded, how an answer is checked.

The shared types live in base.py (the task modules import them from there, so the
package and its modules never import each other); this module names the tasks.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import REFERENCE_ASK, FieldMap, Problem, Task, Verdict  # noqa: F401


def get_task(name: str) -> Task:
    from . import code, math, mcq

    tasks = {"math": math.MathTask, "code": code.CodeTask, "mcq": mcq.McqTask}
    if name not in tasks:
        raise ConfigError(f"unknown task {name!r}: expected one of {', '.join(tasks)}")
    return tasks[name]()
