"""Where a run's problems come from, which model runs them and how llama.cpp holds it:
the settings of generate, eval, score and verify. Standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError
from .decode import DecodeConfig, eval_decode
from .fields import AT_LEAST_1, check_fields, in_memory, one_of, resolved, setting

KV_TYPES = ("f16", "q8_0")
CPU_WEIGHTS = ("auto", "plain", "repack")  # decoding.engine.cpu_placement: how llama.cpp holds the weights on the CPU


# ---- the model, the engine and the problems ------------------------------------------


@dataclass(frozen=True)
class EngineOptions:
    """Which model, and how llama.cpp runs it (the decode session's half of a run)."""

    model: str | None = setting(None, "Registry name or GGUF path (default: the embedded SmolLM2-135M).", flag="--model", short="-m")
    adapter: Path | None = setting(None, "llama.cpp GGUF LoRA adapter to apply.", flag="--adapter")
    n_gpu_layers: int = setting(0, "Layers to offload on a CUDA/Metal build (-1 = all).",
                                lambda v: v >= -1, ">= -1", flag="--n-gpu-layers")
    threads: int | None = setting(None, "CPU threads (default: all cores).", *AT_LEAST_1, flag="--threads")
    ctx: int | None = setting(None, "KV cells for all sequences (default: sized from the prompts).",
                              lambda v: v >= 64, ">= 64", flag="--ctx")
    ubatch: int | None = setting(None, "llama.cpp micro-batch (default: --step-tokens, one per decode call; smaller "
                                 "saves compute-buffer memory, but then a record depends on the other problems "
                                 "in its run).", *AT_LEAST_1, flag="--ubatch")
    kv: str = setting("auto", "KV cache layout: split (a stream per sequence, faster) | unified (one pool sized by real "
                      "lengths, less memory; shares the views' prefix; a record then depends on the other problems in "
                      "its run) | auto (split while its KV cache fits min(4 GiB, RAM/4)).", *one_of("auto", "split", "unified"), flag="--kv")
    kv_type: str = setting("f16", "KV cache element type: f16 | q8_0 (half the KV memory; probabilities move by up to "
                           "~0.05).", *one_of(*KV_TYPES), flag="--kv-type")
    cpu_weights: str = setting("auto", "Weights on the CPU: plain (the mapped file) | repack (llama.cpp's repacked "
                               "copy: ~5% faster at 1-4 rows per call, but a row's numbers then depend on its call's "
                               "other rows, and its AMX kernels crash) | auto (plain).",
                               *one_of(*CPU_WEIGHTS), flag="--cpu-weights")
    system: str | None = setting(None, "System prompt for both views.", flag="--system")


@dataclass(frozen=True)
class Columns:
    """The task and how its rows are read (shared by problem sources and scoring)."""

    task: str = setting("math", "math | code | mcq", flag="--task", short="-t")
    limit: int | None = setting(None, "Only the first N problems.", *AT_LEAST_1, flag="--limit")
    sample: int | None = setting(None, "A seeded random sample of N problems, before --limit.", *AT_LEAST_1, flag="--sample")
    seed: int = setting(0, "Seed of --sample (generate: also of the published forms' sampling).", flag="--seed")
    id_field: str | None = setting(None, "Column with the problem id.", flag="--id-field")
    question_field: str | None = setting(None, "Column with the question.", flag="--question-field")
    reference_field: str | None = setting(None, "Column with the reference solution.", flag="--reference-field")
    answer_field: str | None = setting(None, "Column with the gold answer (math/mcq).", flag="--answer-field")
    choices_field: str | None = setting(None, "Column with the choices (mcq).", flag="--choices-field")
    tests_field: str | None = setting(None, "Column with the test asserts (code: test_list).", flag="--tests-field")
    answer_format: str | None = setting(None, "Answers asked for and read back as: math boxed | answer-is (demo: answer-is), mcq answer-is, code code-block | code-block-all-tests (the question shows every assert).", flag="--answer-format")

    @property
    def fields(self):
        from ..tasks import FieldMap

        return FieldMap(self.id_field, self.question_field, self.reference_field, self.answer_field, self.choices_field, self.tests_field)


@dataclass(frozen=True)
class ProblemSource(Columns):
    """Where the problems come from."""

    data: str | None = setting(None, "JSON/JSONL/parquet file or hub dataset id (default: the demo set).", flag="--data", short="-d")
    split: str = setting("train", "Split of a hub dataset.", flag="--split")


def default_out(data, strategy: str) -> Path:
    """dasd-out/<data stem>-<strategy>.jsonl (a hub id's slashes become underscores; rows in
    memory: `rows`)."""
    if in_memory(data):
        return Path("dasd-out") / f"rows-{strategy}.jsonl"
    stem = Path(data).stem if data and Path(data).suffix else (data or "demo").replace("/", "_")
    return Path("dasd-out") / f"{stem}-{strategy}.jsonl"


@dataclass(frozen=True)
class RunConfig(EngineOptions, ProblemSource):
    """`generate`: problems + engine + output file (the decode settings are a DecodeConfig)."""

    out: Path | None = setting(None, "Output JSONL (default: dasd-out/<data>-<strategy>.jsonl).", flag="--out", short="-o")
    restart: bool = setting(False, "Remove what an earlier run wrote to --out and start over.", flag="--restart")

    def __post_init__(self):
        check_fields(self)

    def with_out(self, strategy: str) -> RunConfig:
        return self if self.out is not None else replace(self, out=default_out(self.data, strategy))


@dataclass(frozen=True)
class EvalConfig(EngineOptions, ProblemSource):
    """`eval`: greedy base-view answers on a benchmark split, judged by the task."""

    data: str | None = setting(None, "Benchmark split: JSON/JSONL/parquet file or hub dataset id.", flag="--data", short="-d")
    split: str = setting("test", "Split of a hub dataset.", flag="--split")
    out_dir: Path = setting(Path("dasd-out/eval"), "Output directory (predictions.jsonl, summary.json).", flag="--out", short="-o")
    decode: DecodeConfig = setting(help="Decode settings (strategy base, base view only).", factory=eval_decode,
                                   check=lambda d: d.base_only, expect="a base-only DecodeConfig (config.eval_decode)")
    workers: int = setting(help="Parallel answer checks (default: CPU cores).", factory=lambda: os.cpu_count() or 1,
                           check=AT_LEAST_1[0], expect=">= 1", flag="--workers")
    timeout_s: float = setting(10.0, "Wall-clock seconds per code run (task code).", lambda v: 0 < v <= 3600,
                               "in (0, 3600]", flag="--timeout")
    rejudge: bool = setting(False, "Check the answers an earlier run saved in --out again with today's checker "
                            "(no decoding for them), instead of keeping their verdicts.", flag="--rejudge")

    def __post_init__(self):
        if self.data is None:
            raise ConfigError("eval needs --data (a benchmark split: file or hub id)")
        check_fields(self)

    def flat(self) -> dict:
        """The resolved config with the decode settings lifted to the top level."""
        d = resolved(self)
        return {**d, **d.pop("decode")}


# ---- score, verify ----------------------------------------------------------------


@dataclass(frozen=True)
class ScoreConfig(EngineOptions, Columns):
    """`score` (teacher forcing) and `stats --overlap`."""

    top_k: int = setting(6, "Length of each view's recorded top-k list.", *AT_LEAST_1, flag="--top-k")
    limit: int | None = setting(None, "Only the first N records.", *AT_LEAST_1, flag="--limit")

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class VerifyConfig:
    task: str | None = setting(None, "math | code | mcq (default: the records' own task).", flag="--task", short="-t")
    on_fail: str = setting("drop", "A wrong response: drop it, or keep-reference (the gold solution replaces it).",
                           *one_of("drop", "keep-reference"), flag="--on-fail")
    workers: int = setting(help="Parallel checks (code runs, math-verify workers) (default: CPU cores).",
                           factory=lambda: os.cpu_count() or 1, check=AT_LEAST_1[0], expect=">= 1", flag="--workers")
    timeout_s: float = setting(10.0, "Wall-clock seconds per code run (task code).", lambda v: 0 < v <= 3600,
                               "in (0, 3600]", flag="--timeout")
    dedupe: bool = setting(False, "Keep one of the kept records with the same response within a problem "
                           "(`generate --samples`).", flag="--dedupe")

    def __post_init__(self):
        check_fields(self)


