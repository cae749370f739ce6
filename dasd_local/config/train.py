"""`train`'s settings: the LoRA recipe, the schedule, the run directory. Standard library only."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ConfigError
from .fields import AT_LEAST_0, AT_LEAST_1, check_fields, one_of, setting


# ---- train ------------------------------------------------------------------------


@dataclass
class TrainConfig:
    data: str = setting("", "Records JSONL: generate/verify output, or question (or base_prompt) + response.",
                        argument=True)
    model: str | None = setting(None, "Registry name or GGUF path: the adapter's base (default: the embedded "
                                "SmolLM2-135M).", flag="--model", short="-m")
    out: str = setting("", "Run directory (config, log, checkpoints, adapters).", flag="--out", short="-o")
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
                                    "(same losses).", flag="--grad-checkpoint/--no-grad-checkpoint")
    threads: int | None = setting(None, "CPU threads for llama.cpp and torch (default: all cores).", *AT_LEAST_1,
                                  flag="--threads")
    resume: bool = setting(False, "Continue the run in --out from its last checkpoint.", flag="--resume/--no-resume")

    def __post_init__(self):
        check_fields(self)
        for name in ("data", "out"):
            if not getattr(self, name):
                raise ConfigError(f"{name} is required")

    def resumable(self) -> dict:
        """The fields a resumed run must share with the run it continues."""
        free = ("resume", "save_every", "keep_checkpoints", "out", "threads", "merged", "grad_checkpoint")
        return {k: v for k, v in asdict(self).items() if k not in free}
