"""ARC-shaped multiple-choice problems: pick the label of the correct choice.

Schema (ARC-Challenge, HF `ai2_arc`): `id`, `question` (the stem), `choices`
{`text`: [...], `label`: [...]}, `answerKey`. Labels are usually letters but may be
digits ("1".."4"); a few items have 3 or 5 choices. ARC has no worked solutions, so
the reference view gets a short gold statement, "The answer is (B) <choice text>.",
unless a `--reference-field` names a column with explanations.

Extraction is tolerant, in order of trust: "The answer is (X)", "Answer: X" or
"\\boxed{X}" (the last one wins; Qwen models box their choice as in math), then the last
parenthesised label, then a line holding only a label, then the one choice whose text the
response quotes. A response cut by the token limit (`finish_reason` "length") is read by
the answer sentence only, else it gets no label. A letter given for a digit-labelled item
is read by position (A = first choice), since that is how models often answer.
"""

from __future__ import annotations

import re
import string

from ..errors import InputError
from .base import FieldMap, Task, Verdict

LETTERS = string.ascii_uppercase


def choice_labels(choices) -> list[str]:
    if not isinstance(choices, dict) or not isinstance(choices.get("label"), list):
        raise InputError(f"choices must be {{'text': [...], 'label': [...]}}, got {type(choices).__name__}")
    return [str(label) for label in choices["label"]]


def format_choices(choices: dict) -> str:
    return "\n".join(f"({label}) {text}" for label, text in zip(choice_labels(choices), choices["text"]))


def _by_position(got: str, labels: list[str]) -> str | None:
    if got in labels:
        return got
    if got.upper() in labels:
        return got.upper()
    i = LETTERS.find(got.upper()) if len(got) == 1 else -1  # "B" on a 1..4 item = "2"
    return labels[i] if 0 <= i < len(labels) else None


def _patterns(labels: list[str]) -> list[re.Pattern]:
    names = sorted(set(labels) | set(LETTERS[: len(labels)]), key=len, reverse=True)
    lab = "|".join(re.escape(n) for n in names)
    end = r"(?![\w'])(?![.,]\d)"  # "3" but not "3.5" or "Apple"
    boxed = rf"\\boxed\{{\s*(?:\\text(?:bf)?\{{\s*)?\(?({lab})\)?\s*\}}"  # \boxed{B}, \boxed{\text{(B)}}
    return [
        re.compile(rf"(?i:answer)\s*(?:(?i:is|would be|should be)\s*)?[:\-]?\s*"
                   rf"(?:(?i:option|choice)\s*)?(?:\(({lab})\)|\b({lab}){end})|{boxed}"),
        re.compile(rf"\((?i:({lab}))\)"),
        re.compile(rf"^\s*({lab})\s*[.):]?\s*$", re.M),
    ]


def extract_label(response: str, choices: dict, truncated: bool = False) -> str | None:
    """The label the response commits to, or None. A response cut by the token limit
    commits only through an answer sentence: the weaker cues (a parenthesised label, a
    label on its own line, a quoted choice) are then read from the middle of an analysis
    that weighs every option, and would guess."""
    labels = choice_labels(choices)
    text = response.replace("*", "")  # **B** -> B
    patterns = _patterns(labels)
    for pattern in patterns[:1] if truncated else patterns:
        hits = [next(g for g in m.groups() if g) for m in pattern.finditer(text)]
        if hits:
            return _by_position(hits[-1], labels)
    if truncated:
        return None
    quoted = [label for label, t in zip(labels, choices["text"]) if str(t).strip() and str(t).lower() in text.lower()]
    return quoted[0] if len(quoted) == 1 else None


class McqTask(Task):
    name = "mcq"
    instruction = ('Think step by step, then finish with "The answer is (X)", '
                   "where X is the label of the correct choice.")
    formats = {"answer-is": instruction}
    answer_format, answer_marker = "answer-is", b"answer is"
    id_field = "id"
    question_field = "question"
    reference_field = "answerKey"
    gold_fields = ("answerKey", "choices")
    gold_slots = {"answerKey": "answer", "choices": "choices"}
    required_gold = ("answerKey", "choices")
    reference_ask = (
        "You are told the correct answer: {reference}\n\n"
        "Now explain step by step, in your own words, why it is correct, and finish with "
        '"The answer is (X)". Do not mention that you were told the answer.'
    )

    def question(self, row: dict, fields: FieldMap) -> str:
        return f"{super().question(row, fields).strip()}\n\n{format_choices(row[self.column('choices', fields)])}"

    def reference(self, row: dict, fields: FieldMap) -> str:
        if fields.reference:  # a column of worked explanations, when the data has one
            return str(row[fields.reference])
        key, choices = str(row[self.column("answerKey", fields)]), row[self.column("choices", fields)]
        labels = choice_labels(choices)
        if key not in labels:
            raise InputError(f"answerKey {key!r} is not one of the labels {labels}")
        return f"The answer is ({key}) {choices['text'][labels.index(key)]}."

    def slots(self, fields: FieldMap) -> dict[str, str]:
        out = super().slots(fields)
        if not fields.reference and out.get(self.reference_field) == "reference":
            del out[self.reference_field]  # the reference is written from answerKey and choices
        return out

    def verify(self, response: str, fields: dict) -> Verdict:
        gold, choices = fields.get("answerKey"), fields.get("choices")
        if gold is None or choices is None:
            return Verdict(False, None, "no answerKey/choices")
        truncated = fields.get("finish_reason") == "length"
        got = extract_label(response, choices, truncated)
        if got is None:
            return Verdict(False, None, "cut by the token limit before an answer sentence" if truncated
                           else "no answer label found")
        return Verdict(got == str(gold), got, "")
