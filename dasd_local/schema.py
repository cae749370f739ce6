"""The record layout every subsystem shares: the token categories, a record's top-level
fields, and which problem a record answers. Standard library only, at the bottom of the
import layers with config and errors, so the decode loop that writes records and the
readers (store, analysis, reporting) that read them spell them the same way.
"""

from __future__ import annotations

# How DASD chose each emitted token (the paper's Fig. 5/7): both views' top token; the
# reference's top token, plausible to the base; a lower reference candidate the base finds
# plausible; none plausible (the hard mode decides). `filtered` = base_selected + hard.
CATEGORIES = ("consistent", "reserved", "base_selected", "hard")

# Top-level fields of a generation record (decoding.slots.problem_record) and of what verify
# and score add; an input column of the same name passes through as `input_<name>`.
RECORD_KEYS = frozenset({
    "id", "task", "answer_format", "strategy", "config", "question", "reference_solution", "base_prompt",
    "reference_prompt", "base_prompt_tokens", "reference_prompt_tokens", "response", "response_tokens",
    "finish_reason", "steps", "stop_step", "correct", "extracted", "verify_detail", "response_source",
    "rejected_response", "rewrite_correct",
})


def problem_id_of(record: dict) -> str:
    """The problem a record answers: its `problem_id` (one of `generate --samples`' samples), else its id."""
    return str(record.get("problem_id", record.get("id")))
