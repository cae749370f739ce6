"""The base and reference views of a problem, rendered through the model's chat template.

Knows Jinja chat templates (the GGUF's `tokenizer.chat_template`) and the task's
wording; knows nothing about decoding. Both views are single-turn user messages that
end with the assistant generation prompt, so both decode the same response.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..errors import ModelError
from ..tasks import Problem, Task

# Used only when a GGUF carries no chat template.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n\n"
    "{% else %}Assistant: {{ m['content'] }}\n\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _raise(message: str):
    raise ModelError(f"chat template: {message}")


def render_chat(template: str, messages: list[dict], bos: str = "", eos: str = "") -> str:
    """Render like transformers' apply_chat_template(add_generation_prompt=True)."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=_raise, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    try:
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos)
    except TemplateError as e:
        raise ModelError(f"chat template could not be rendered: {e}") from None


@dataclass(frozen=True)
class Views:
    base_text: str
    ref_text: str
    base_tokens: list[int]
    ref_tokens: list[int]


class ViewBuilder:
    """Builds both views of each problem for one engine (tokenizer + template) and task.
    `published` names a baseline (self-distill or hint) whose reference view is the
    authors' own prompt (baselines.py) instead of our controlled reference view."""

    def __init__(self, engine, task: Task, system: str | None = None, published: str | None = None):
        self.engine, self.task, self.system, self.published = engine, task, system, published
        self.template = engine.chat_template() or PLAIN_TEMPLATE
        self.template_source = "gguf" if engine.chat_template() else "plain"

    def _messages(self, user: str) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [{"role": "user", "content": user}]

    def render_messages(self, messages: list[dict]) -> str:
        return render_chat(self.template, messages, self.engine.bos_text, self.engine.eos_text)

    def render(self, user: str) -> str:
        return self.render_messages(self._messages(user))

    def reference_text(self, problem: Problem, analysis: str = "") -> str:
        """The reference view. The published forms put our base view's user message (the
        question and the task's answer format) where their templates say query/question;
        Hinted decoding's shadow prompt is continued with its analysis pre-pass."""
        from . import baselines

        query = self.task.base_user(problem)
        if self.published == "self-distill":
            return baselines.sdft_reference_prompt(self.task.name, query, problem.reference, self.render_messages)
        if self.published == "hint":
            return self.render_messages(baselines.hinted_shadow_messages(query, problem.reference)) + analysis
        return self.render(self.task.reference_user(problem))

    def views(self, problem: Problem, analysis: str = "") -> Views:
        base = self.render(self.task.base_user(problem))
        ref = self.reference_text(problem, analysis)
        return Views(base, ref, self.engine.tokenize(base), self.engine.tokenize(ref))


def shared_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common token prefix of two prompts."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
