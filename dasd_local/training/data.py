"""Training records -> token ids and labels, for `dasd-local train`.

Knows the records that `generate` / `verify` write (base_prompt_tokens, response_tokens,
steps[i].p_base, correct, finish_reason) and simpler ones (base_prompt or question, plus
response text, e.g. gold solutions for SFT). Token ids always come from llama.cpp, the
GGUF's own vocabulary as in generation records, so the adapter fits the GGUF that made
the data. The loss covers the response and the token that closes the assistant turn;
--mask-ppl removes labels (never inputs) of tokens the base view found unlikely. Pure
Python apart from the engine: no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig
from ..errors import InputError, ModelError

IGNORE = -100  # label of a position that adds nothing to the loss (torch's ignore_index)


@dataclass
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]  # IGNORE on the prompt and on masked response tokens


@dataclass
class DataReport:
    records: int = 0
    dropped_incorrect: int = 0
    truncated: int = 0
    too_long: int = 0
    masked_ppl: int = 0
    scored: int = 0  # records whose base probabilities came from a llama.cpp scoring pass
    loss_tokens: int = 0
    malformed: list[str] = field(default_factory=list)

    def line(self) -> str:
        kept = self.records - self.dropped_incorrect - self.too_long
        parts = [f"{kept} of {self.records} records used"]
        if self.dropped_incorrect:
            parts.append(f"{self.dropped_incorrect} dropped (correct is false)")
        if self.too_long:
            parts.append(f"{self.too_long} dropped (prompt longer than max_length)")
        if self.truncated:
            parts.append(f"{self.truncated} responses cut at max_length")
        if self.malformed:
            parts.append(f"{len(self.malformed)} malformed lines skipped")
        if self.masked_ppl:
            parts.append(f"{self.masked_ppl} high-PPL labels masked")
        return ", ".join(parts) + f"; {self.loss_tokens} loss tokens"


def read_training_records(path: str | Path) -> tuple[list[dict], DataReport]:
    """Training records: those with `correct` false are dropped (counted); a record
    without a response, or no record at all, is an error."""
    from ..store.records import read_jsonl

    path = Path(path)
    records, malformed = read_jsonl(path)
    report = DataReport(records=len(records), malformed=malformed)
    for n, rec in enumerate(records):
        if not rec.get("response_tokens") and not rec.get("response"):
            raise InputError(f"{path}: record {rec.get('id', n)!r} has no 'response' (training needs prompt -> response pairs)")
        if not any(k in rec for k in ("base_prompt_tokens", "base_prompt", "question")):
            raise InputError(f"{path}: record {rec.get('id', n)!r} has no 'base_prompt_tokens', 'base_prompt' or 'question'")
    kept = [r for r in records if r.get("correct", True) is True]
    report.dropped_incorrect = len(records) - len(kept)
    if not kept:
        why = "no records" if not records else f"all {len(records)} records have correct = false"
        raise InputError(f"{path}: nothing to train on ({why})")
    return kept, report


def recorded_probs(record: dict) -> list[float] | None:
    """p_base of each response token as recorded by generation, when present."""
    steps = record.get("steps")
    if not steps or not record.get("response_tokens") or any(s.get("p_base") is None for s in steps):
        return None
    if len(steps) != len(record["response_tokens"]):
        raise InputError(f"record {record.get('id')!r}: {len(steps)} steps for {len(record['response_tokens'])} response tokens")
    return [float(s["p_base"]) for s in steps]


def make_example(rid: str, prompt: list[int], response: list[int], end: int | None,
                 probs: list[float] | None, cfg: TrainConfig, report: DataReport) -> Example | None:
    """input = prompt + response (+ end); labels only on the response (+ end). With
    --mask-ppl, response tokens with p_base < 1 / mask_ppl keep their input but lose their
    label; the appended end token has no recorded probability and always keeps it."""
    if len(prompt) >= cfg.max_length:
        report.too_long += 1
        return None
    labels = list(response)
    if cfg.mask_ppl is not None and probs is not None:
        floor = 1.0 / cfg.mask_ppl
        labels = [IGNORE if p < floor else t for t, p in zip(response, probs)]
    ids, labels = list(prompt) + list(response), [IGNORE] * len(prompt) + labels
    if end is not None:
        ids, labels = ids + [end], labels + [end]
    if len(ids) > cfg.max_length:
        report.truncated += 1
        ids, labels = ids[:cfg.max_length], labels[:cfg.max_length]
    report.masked_ppl += sum(1 for x in labels[len(prompt):] if x == IGNORE)
    report.loss_tokens += sum(1 for t in labels if t != IGNORE)
    return Example(rid, ids, labels)


def _turn_end(engine, builder) -> int:
    """The token the chat template closes an assistant turn with (<|im_end|>,
    <end_of_turn>, ...): what generation stops on, so what the model must learn to emit."""
    from ..decoding.views import render_chat

    marker = "\u2063dasd\u2063"
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}]
    text = render_chat(builder.template, turns, engine.bos_text, engine.eos_text)
    tail = engine.tokenize(text.split(marker, 1)[1]) if marker in text else []
    bos = engine.tokenize("")  # [BOS] when the vocabulary adds one, else []
    tail = tail[len(bos):] if tail[:len(bos)] == bos else tail
    if tail and engine.is_eog(tail[0]):
        return tail[0]
    eos = engine.tokenize(engine.eos_text)[len(bos):] if engine.eos_text else []
    if not eos:
        raise ModelError(f"{engine.path}: no token ends an assistant turn (chat template) and no EOS token")
    return eos[0]


def _prompt_tokens(rec: dict, engine, builder) -> list[int]:
    if rec.get("base_prompt_tokens"):
        return [int(t) for t in rec["base_prompt_tokens"]]
    if rec.get("base_prompt"):
        return engine.tokenize(rec["base_prompt"])
    from ..tasks import Problem, task_of

    question = str(rec["question"])
    user = task_of(rec).base_user(Problem("", question, "")) if rec.get("task") else question
    return engine.tokenize(builder.render(user))


def _response_tokens(rec: dict, engine) -> list[int]:
    if rec.get("response_tokens"):
        return [int(t) for t in rec["response_tokens"]]
    return engine.tokenize(str(rec["response"]), special=False)  # plain text: no control tokens


def prepare_examples(records: list[dict], gguf_path: Path, cfg: TrainConfig, report: DataReport) -> list[Example]:
    """Token ids through llama.cpp; base probabilities from the records or, for --mask-ppl
    on records without them, from a teacher-forced llama.cpp scoring pass."""
    from ..decoding.engine import Engine, EngineConfig
    from ..decoding.views import ViewBuilder

    with Engine(gguf_path, EngineConfig(n_ctx=max(512, cfg.max_length + 8), n_threads=cfg.threads)) as engine:
        builder = ViewBuilder(engine, None)
        end = _turn_end(engine, builder)
        pairs = [(str(r.get("id", n)), _prompt_tokens(r, engine, builder), _response_tokens(r, engine))
                 for n, r in enumerate(records)]
        probs = [recorded_probs(r) for r in records]
        if cfg.mask_ppl is not None:
            probs = _score_missing(engine, pairs, probs, cfg, report)
    examples = []
    for (rid, prompt, response), rec, p in zip(pairs, records, probs):
        closing = None if rec.get("finish_reason") in ("length", "repetition") else end  # a cut response must not learn to stop
        if response and response[-1] == end:
            response, p, closing = response[:-1], (p[:-1] if p else p), end
        ex = make_example(rid, prompt, response, closing, p, cfg, report)
        if ex is not None:
            examples.append(ex)
    if not examples:
        raise InputError(f"{cfg.data}: no record fits max_length = {cfg.max_length} tokens")
    return examples


def _score_missing(engine, pairs, probs, cfg: TrainConfig, report: DataReport) -> list:
    """p_base by teacher forcing the base view in llama.cpp, for records without steps."""
    from ..decoding.forcing import teacher_force

    out = list(probs)
    for i, ((rid, prompt, response), p) in enumerate(zip(pairs, probs)):
        if p is None and len(prompt) < cfg.max_length:  # longer prompts are dropped anyway
            budget = cfg.max_length - len(prompt)  # and tokens past max_length are cut
            scored = teacher_force(engine, prompt, response[:budget]).p
            out[i] = [float(x) for x in scored] + [1.0] * (len(response) - len(scored))
            report.scored += 1
    return out
