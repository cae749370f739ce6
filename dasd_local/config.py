"""Every run's settings, in one place: default, help text and legal range of each field.

A field is declared once with `setting(...)`; its metadata is the single source that
the CLI's options (cli.opt), the range checks (`check_fields`) and the resolved config
written beside every output all read. Errors name the setting as the user typed it
(`--top-k = 0 is not allowed: expected >= 1`), its value and the allowed range.

Knows the settings and their ranges; imports nothing heavier than the standard library
and errors.py, so `dasd-local --help` stays instant and every module may import it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

from .errors import ConfigError

STRATEGIES = ("dasd", "self-distill", "base", "hint")
KV_TYPES = ("f16", "q8_0")
CPU_WEIGHTS = ("auto", "plain", "repack")  # engine.cpu_placement: how llama.cpp holds the weights on the CPU


def setting(default=MISSING, help: str = "", check=None, expect: str = "", *, flag: str | None = None, factory=MISSING):
    """A dataclass field whose metadata carries its help, its check (value -> bool, skipped
    for None) with the range it expects, and the CLI flag that sets it (None: none does)."""
    meta = {"help": help, "check": check, "expect": expect, "flag": flag}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def reject(cfg, name: str, expect: str):
    """The one error style: the setting (as the CLI spells it), its value, the legal range.

    `--top-k / top_k = 0 is not allowed: expected >= 1` names the field both ways when
    the flag's spelling differs from the field's."""
    meta = next((f.metadata for f in fields(cfg) if f.name == name), {})
    who = meta.get("flag") or name
    if who.lstrip("-") != name:
        who = f"{who} / {name}"  # the CLI's spelling and the Python one, for scripts and tests
    raise ConfigError(f"{who} = {getattr(cfg, name)!r} is not allowed: expected {expect}")


def check_fields(cfg) -> None:
    """Run every field's own check (None values are 'not set' and pass)."""
    for f in fields(cfg):
        value, check = getattr(cfg, f.name), f.metadata.get("check")
        if value is not None and check is not None and not check(value):
            reject(cfg, f.name, f.metadata["expect"])


def field_of(cls, name: str) -> dataclasses.Field:
    found = {f.name: f for f in fields(cls)}
    if name not in found:
        raise KeyError(f"{cls.__name__} has no field {name!r}")
    return found[name]


def default_of(f: dataclasses.Field):
    """A field's default; None for a computed one (the CLI then means 'let the config decide')."""
    return None if f.default is MISSING else f.default


def resolved(cfg) -> dict:
    """The config as JSON-ready values (paths as strings), for the files beside an output."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return str(v) if isinstance(v, Path) else v
    return plain(asdict(cfg))


def one_of(*names):
    return lambda v: v in names, " or ".join(names) if len(names) < 3 else "one of " + ", ".join(names)


AUTO = "auto"
MOST_BATCH = 128
# `--batch auto`'s ceiling (session.auto_batch lowers it to what the KV budget holds). On a
# CPU a decode call's matmuls stop gaining from more rows at about 32 (16 problems x 2
# views); scripts/bench_generate.py measures auto against the fixed batches (README,
# "Performance"; not yet run). With GPU offload rows are cheaper; 32 problems there is not measured.
AUTO_BATCH = {"cpu": 16, "gpu": 32}

def most_batch(batch: int | str) -> int:
    """The most problems a `--batch` value may run: the number, or the most auto chooses."""
    return max(AUTO_BATCH.values()) if batch == AUTO else batch


AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
AT_LEAST_0 = (lambda v: v >= 0, ">= 0")


# ---- the per-step rule and the decode loop ------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """Sampling in place of argmax, for the baselines' published forms; temperature 0 is
    greedy. `top_p_first`: Hinted decoding's NucleusProcessor cuts top-p on the
    temperature-1 distribution, then scales; transformers' warpers (SDFT's LLaMA-Factory
    run) scale, then cut top-k, then top-p."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p_first: bool = False


GREEDY = Sampling()
PUBLISHED_SAMPLING = {  # what the authors' code ran with (published.py has their prompts)
    "self-distill": Sampling(temperature=0.95, top_p=0.7, top_k=50),  # LLaMA-Factory GeneratingArguments defaults
    "hint": Sampling(temperature=0.3, top_p=0.95, top_p_first=True),  # Run_HD_example.py: NucleusProcessor(.3, .95)
}
BASELINE_FORMS = ("controlled", "published")


@dataclass(frozen=True)
class RuleConfig:
    """What rules.choose needs; derived from a DecodeConfig by field name (rule_of)."""

    top_k: int = setting(6, "Reference candidates K.", *AT_LEAST_1, flag="--top-k")
    tau: float = setting(0.2, "Base-view probability a candidate needs.", lambda v: 0.0 <= v <= 1.0, "in [0, 1]",
                         flag="--tau")
    hard_mode: str = setting("ref", "When no candidate passes: ref (C[0]) | base (argmax p_B).", *one_of("ref", "base"),
                             flag="--hard-mode")
    hint_beta: float = setting(3.0, "Hinted decoding's entropy scale.", *AT_LEAST_0, flag="--hint-beta")
    sampling: Sampling = setting(GREEDY, "Sampling in place of argmax (a baseline's published form).")

    def __post_init__(self):
        check_fields(self)


def _rule_field(name: str):
    f = field_of(RuleConfig, name)
    return setting(f.default, f.metadata["help"], check=f.metadata["check"], expect=f.metadata["expect"],
                   flag=f.metadata["flag"])


@dataclass(frozen=True)
class DecodeConfig:
    strategy: str = setting("dasd", "dasd | self-distill | base | hint", *one_of(*STRATEGIES), flag="--strategy")
    top_k: int = _rule_field("top_k")
    tau: float = _rule_field("tau")
    hard_mode: str = _rule_field("hard_mode")
    hint_beta: float = _rule_field("hint_beta")
    baseline_form: str = setting("controlled", "self-distill / hint as our controlled variant (DASD's reference view, "
                                 "greedy) or as their authors published them (their prompts, sampling, SDFT's filter).",
                                 *one_of(*BASELINE_FORMS), flag="--baseline-form")
    seed: int = setting(0, "Seed of the published forms' sampling and of --samples (each problem's generator: seed + "
                        "problem id).", flag="--seed")
    samples: int = setting(1, "DASD rewrites per problem: 1 is greedy DASD; N > 1 draws each token among the "
                           "reference's top-K candidates that pass --tau, weighted by p_ref^(1/--temperature), one "
                           "record per sample (id '<problem id>#<k>').", lambda v: 1 <= v <= 64, "in [1, 64]",
                           flag="--samples")
    temperature: float = setting(1.0, "With --samples > 1: temperature of that draw (0: every sample is greedy DASD).",
                                 lambda v: 0.0 <= v <= 10.0, "in [0, 10]", flag="--temperature")
    hint_analysis_tokens: int | None = setting(None, "Published hint: token limit of the greedy analysis pre-pass on "
                                               "the shadow prompt (default: --max-new-tokens; 0 skips it, which is "
                                               "not the published form).", *AT_LEAST_0, flag="--hint-analysis-tokens")
    max_new_tokens: int = setting(512, "Response length limit.", *AT_LEAST_1, flag="--max-new-tokens")
    batch: int | str = setting(AUTO, "Problems decoded together (2 sequences each): N, or auto (16 on a CPU, 32 with "
                               "GPU offload, fewer where their split KV cache would pass min(4 GiB, RAM/4)).",
                               lambda v: v == AUTO or (type(v) is int and 1 <= v <= MOST_BATCH),
                               f"auto or in [1, {MOST_BATCH}]", flag="--batch")
    step_tokens: int = setting(512, "Most tokens one decode call carries.", flag="--step-tokens")
    record_candidates: bool = setting(False, "Store each step's K candidates [token, p_ref, p_base].",
                                      flag="--record-candidates")
    base_only: bool = setting(False, "decode the base view alone (strategy base)")
    share_prefix: bool = setting(True, "prefill the views' common prefix once")
    speculate: str = setting("auto", "Prompt-lookup drafts verified by the rule: on | off | auto (on with "
                             "--n-gpu-layers, where decode calls have spare rows; off on a CPU, where they cost more "
                             "than they save).", *one_of("on", "off", "auto"), flag="--speculate")
    draft_max: int = setting(8, "Most drafted tokens per problem and step.", lambda v: 0 <= v <= 64, "in [0, 64]",
                             flag="--draft-max")
    ngram: int = setting(3, "longest suffix matched when drafting", *AT_LEAST_1)
    # measured on a 2-core CPU (scripts/bench_generate.py): drafts cost more rows than they
    # save even at batch 1 (on/off 0.93x), so None resolves to 0 there and 512 with GPU offload
    spec_rows: int | None = setting(None, "auto: draft only while a decode call has fewer rows "
                                    "(None: 0 on a CPU, 512 with GPU offload)", *AT_LEAST_0)

    def __post_init__(self):
        check_fields(self)
        if self.step_tokens < 2 * self.most_batch:
            reject(self, "step_tokens", f">= 2 x batch = {2 * self.most_batch}")
        if self.base_only and self.strategy != "base":
            reject(self, "base_only", "only with strategy base")
        if self.baseline_form == "published" and self.strategy not in PUBLISHED_SAMPLING:
            reject(self, "baseline_form", f"controlled for strategy {self.strategy} (published: self-distill, hint)")
        if self.samples > 1 and self.strategy != "dasd":
            reject(self, "samples", f"1 for strategy {self.strategy} (several samples: strategy dasd)")
        if self.sampling.temperature > 0 and self.speculate == "on":
            reject(self, "speculate", "off or auto with a sampled form (published, or --samples): drafts are "
                   "checked greedily")

    @property
    def most_batch(self) -> int:
        return most_batch(self.batch)

    @property
    def published(self) -> str | None:
        """The baseline whose published reference view is used (prompts.ViewBuilder), if any."""
        return self.strategy if self.baseline_form == "published" else None

    @property
    def sampling(self) -> Sampling:
        if self.samples > 1:
            return Sampling(temperature=self.temperature)  # rules.dasd_choice samples (temperature 0: greedy)
        return PUBLISHED_SAMPLING[self.strategy] if self.baseline_form == "published" else GREEDY

    def rule(self) -> RuleConfig:
        """The rule's settings, taken from this config by name."""
        return RuleConfig(**{f.name: getattr(self, f.name) for f in fields(RuleConfig)})

    def for_device(self, n_gpu_layers: int) -> DecodeConfig:
        """spec_rows resolved: speculation pays only where decode calls have spare rows (a GPU)."""
        if self.spec_rows is not None:
            return self
        return replace(self, spec_rows=0 if n_gpu_layers == 0 else 512)

    def record_config(self) -> dict:
        """The part of the config that decides the output (goes into every record)."""
        keys = ("strategy", "top_k", "tau", "hard_mode", "hint_beta", "max_new_tokens", "baseline_form")
        out = {k: v for k, v in asdict(self).items() if k in keys}
        if self.samples > 1:
            out.update(samples=self.samples, temperature=self.temperature, seed=self.seed)
        if self.baseline_form == "published":
            out.update(seed=self.seed, sampling=asdict(self.sampling))
            if self.strategy == "hint":
                out["hint_analysis_tokens"] = self.analysis_tokens
        return out

    @property
    def analysis_tokens(self) -> int:
        return self.max_new_tokens if self.hint_analysis_tokens is None else self.hint_analysis_tokens


def parse_batch(text: str | int) -> int | str:
    """`--batch` as typed: a number or `auto` (anything else is the usual range error)."""
    if text == AUTO or type(text) is int:
        return text
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--batch = {text!r} is not allowed: expected auto or in [1, {MOST_BATCH}]") from None


def eval_decode(**kw) -> DecodeConfig:
    """Greedy answers from the base view alone (one sequence per problem)."""
    most = most_batch(kw.get("batch", field_of(DecodeConfig, "batch").default))
    return DecodeConfig(**{"strategy": "base", "base_only": True, "step_tokens": max(512, 2 * most), **kw})


# ---- the model, the engine and the problems ------------------------------------------


@dataclass(frozen=True)
class EngineOptions:
    """Which model, and how llama.cpp runs it (the decode session's half of a run)."""

    model: str | None = setting(None, "Registry name or GGUF path (default: the embedded SmolLM2-135M).", flag="--model")
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

    task: str = setting("math", "math | code | mcq", flag="--task")
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
        from .tasks import FieldMap

        return FieldMap(self.id_field, self.question_field, self.reference_field, self.answer_field, self.choices_field, self.tests_field)


@dataclass(frozen=True)
class ProblemSource(Columns):
    """Where the problems come from."""

    data: str | None = setting(None, "JSON/JSONL/parquet file or hub dataset id (default: the demo set).", flag="--data")
    split: str = setting("train", "Split of a hub dataset.", flag="--split")


def default_out(data: str | None, strategy: str) -> Path:
    """dasd-out/<data stem>-<strategy>.jsonl (a hub id's slashes become underscores)."""
    stem = Path(data).stem if data and Path(data).suffix else (data or "demo").replace("/", "_")
    return Path("dasd-out") / f"{stem}-{strategy}.jsonl"


@dataclass(frozen=True)
class RunConfig(EngineOptions, ProblemSource):
    """`generate`: problems + engine + output file (the decode settings are a DecodeConfig)."""

    out: Path | None = setting(None, "Output JSONL (default: dasd-out/<data>-<strategy>.jsonl).", flag="--out")
    restart: bool = setting(False, "Remove what an earlier run wrote to --out and start over.", flag="--restart")

    def __post_init__(self):
        check_fields(self)

    def with_out(self, strategy: str) -> RunConfig:
        return self if self.out is not None else replace(self, out=default_out(self.data, strategy))


@dataclass(frozen=True)
class EvalConfig(EngineOptions, ProblemSource):
    """`eval`: greedy base-view answers on a benchmark split, judged by the task."""

    data: str | None = setting(None, "Benchmark split: JSON/JSONL/parquet file or hub dataset id.", flag="--data")
    split: str = setting("test", "Split of a hub dataset.", flag="--split")
    out_dir: Path = setting(Path("dasd-out/eval"), "Output directory (predictions.jsonl, summary.json).", flag="--out")
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
    task: str | None = setting(None, "math | code | mcq (default: the records' own task).", flag="--task")
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


# ---- train ------------------------------------------------------------------------


@dataclass
class TrainConfig:
    data: str = setting("", "Records JSONL: generate/verify output, or question (or base_prompt) + response.")
    model: str | None = setting(None, "Registry name or GGUF path: the adapter's base (default: the embedded "
                                "SmolLM2-135M).", flag="--model")
    out: str = setting("", "Run directory (config, log, checkpoints, adapters).", flag="--out")
    hf_model: str | None = setting(None, "HF hub id or local checkpoint of the same model (default: dequantize the "
                                   "GGUF).", flag="--hf-model")
    backend: str = setting("auto", "auto (Unsloth on a CUDA GPU, else PEFT) | unsloth | peft.",
                           *one_of("auto", "unsloth", "peft"), flag="--backend")
    rank: int = setting(16, "LoRA rank r.", *AT_LEAST_1, flag="--rank")
    alpha: float = setting(32.0, "LoRA alpha (update scaled by alpha / r).", lambda v: v > 0, "> 0", flag="--alpha")
    dropout: float = setting(0.05, "LoRA dropout.", lambda v: 0 <= v < 1, "in [0, 1)", flag="--dropout")
    lr: float = setting(2e-5, "Peak learning rate (paper: 2e-5).", lambda v: 0 < v < 1, "in (0, 1)", flag="--lr")
    warmup_ratio: float = setting(0.2, "Share of steps with linear warmup (paper: 0.2).", lambda v: 0 <= v < 1,
                                  "in [0, 1)", flag="--warmup-ratio")
    schedule: str = setting("cosine", "Decay after warmup: cosine | linear.", *one_of("cosine", "linear"),
                            flag="--schedule")
    epochs: int = setting(3, "Passes over the data.", *AT_LEAST_1, flag="--epochs")
    batch_size: int = setting(4, "Records per micro-batch (per process).", *AT_LEAST_1, flag="--batch-size")
    grad_accum: int = setting(4, "Micro-batches per optimizer step.", *AT_LEAST_1, flag="--grad-accum")
    max_length: int = setting(2048, "Longest prompt + response in tokens (longer responses are cut).",
                              lambda v: v >= 8, ">= 8", flag="--max-length")
    max_steps: int = setting(0, "Stop after N optimizer steps (0: epochs decide).", *AT_LEAST_0, flag="--max-steps")
    seed: int = setting(0, "Seed of LoRA init, data order and dropout.", flag="--seed")
    weight_decay: float = setting(0.0, "AdamW weight decay", *AT_LEAST_0)
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0: off)", *AT_LEAST_0)
    mask_ppl: float | None = setting(None, "Mask labels whose base-view PPL exceeds this (paper: 2.5).",
                                     lambda v: v > 1, "> 1", flag="--mask-ppl")
    profit: float | None = setting(None, "Mask labels whose probability under the trained model is below this "
                                   "(e.g. 0.1).", lambda v: 0 < v < 1, "in (0, 1)", flag="--profit")
    save_every: int = setting(50, "Checkpoint every N optimizer steps (0: only at the end).", *AT_LEAST_0,
                              flag="--save-every")
    keep_checkpoints: int = setting(2, "checkpoints kept (older ones are deleted)", *AT_LEAST_1)
    merged: str | None = setting(None, "Also write a standalone GGUF with the LoRA merged in: f16 | f32.",
                                 *one_of("f16", "f32"), flag="--merged")
    grad_checkpoint: bool = setting(True, "Recompute activations in the backward pass: far less memory, more compute "
                                    "(same losses).", flag="--grad-checkpoint")
    threads: int | None = setting(None, "CPU threads for llama.cpp and torch (default: all cores).", *AT_LEAST_1,
                                  flag="--threads")
    resume: bool = setting(False, "Continue the run in --out from its last checkpoint.", flag="--resume")

    def __post_init__(self):
        check_fields(self)
        for name in ("data", "out"):
            if not getattr(self, name):
                raise ConfigError(f"{name} is required")

    def resumable(self) -> dict:
        """The fields a resumed run must share with the run it continues."""
        free = ("resume", "save_every", "keep_checkpoints", "out", "threads", "merged", "grad_checkpoint")
        return {k: v for k, v in asdict(self).items() if k not in free}
