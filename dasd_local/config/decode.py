"""The decode settings: the per-step rule, sampling, the batch and the loop's knobs.

Standard library only, like every config module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import ConfigError
from .fields import AT_LEAST_0, AT_LEAST_1, check_fields, field_of, one_of, reject, setting

STRATEGIES = ("dasd", "self-distill", "base", "hint")
AUTO = "auto"
MOST_BATCH = 128
# `--batch auto`'s ceiling (session.auto_batch lowers it to what the KV budget holds). On a
# CPU a decode call's matmuls stop gaining from more rows at about 32 (16 problems x 2
# views); scripts/bench_generate.py measures auto against the fixed batches (README,
# "Performance": auto = 16 was the best fixed batch on both Qwen2.5-Coder models). With GPU
# offload rows are cheaper; 32 problems there is not measured.
AUTO_BATCH = {"cpu": 16, "gpu": 32}

def most_batch(batch: int | str) -> int:
    """The most problems a `--batch` value may run: the number, or the most auto chooses."""
    return max(AUTO_BATCH.values()) if batch == AUTO else batch


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
PUBLISHED_SAMPLING = {  # what the authors' code ran with (decoding/baselines.py has their prompts)
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
    strategy: str = setting("dasd", "dasd | self-distill | base | hint", *one_of(*STRATEGIES), flag="--strategy",
                            short="-s")
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
                               f"auto or in [1, {MOST_BATCH}]", flag="--batch", metavar="N|auto",
                               parse=lambda text: parse_batch(text))
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
        """The baseline whose published reference view is used (decoding.views.ViewBuilder), if any."""
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

