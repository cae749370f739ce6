"""The training loop of `dasd-local train`: transformers' Trainer, set up from TrainConfig.

The Trainer (on accelerate) owns the optimizer, schedule, gradient accumulation, data
order, DDP / FSDP / DeepSpeed, checkpoints and resume; this module adds what is ours:
the loss (TRL's chunked LM head, with ProFit as a hook on its per-token probabilities),
the JSONL log (TrainLog) and the rich progress bar (TrainerCallbacks, on the main process only).

Why `Trainer` and not TRL's `SFTTrainer`: the data arrive tokenized by llama.cpp with the
GGUF's own vocabulary, and SFTTrainer insists on an HF tokenizer (`processing_class`),
which transformers builds from the GGUF in tens of seconds per process only to save it
beside every checkpoint. What SFTTrainer would add here, its chunked loss and its
collator for pre-tokenized input_ids + labels, is used directly (training.model.load_model,
make_trainer). Knows nothing about records or the run directory's other files.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import TrainConfig
    from .data import Example


def count_steps(n_examples: int, cfg: TrainConfig, world: int) -> int:
    """Optimizer steps the Trainer will run: each process takes every world-th micro-batch
    (accelerate pads the last round), and an epoch's last step may have fewer micro-batches."""
    micro = math.ceil(math.ceil(n_examples / cfg.batch_size) / world)
    total = cfg.epochs * math.ceil(micro / cfg.grad_accum)
    return min(total, cfg.max_steps) if cfg.max_steps else total


def training_args(cfg: TrainConfig, run: Path, steps: int):
    """TrainConfig -> TrainingArguments. Checkpoints are RUN_DIR/checkpoints/checkpoint-N
    (the Trainer's layout, which its resume and rotation read), every save_every steps and
    at the end."""
    import torch
    from transformers import TrainingArguments

    gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(run / "checkpoints"), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.lr, lr_scheduler_type=cfg.schedule, warmup_steps=cfg.warmup_ratio,  # < 1: a ratio
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, optim="adamw_torch",
        seed=cfg.seed, data_seed=cfg.seed, bf16=gpu and torch.cuda.is_bf16_supported(),
        logging_strategy="steps", logging_steps=1, report_to="none", disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        save_strategy="steps", save_steps=cfg.save_every or max(steps, 1), save_total_limit=cfg.keep_checkpoints,
        remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=gpu,
        use_cpu=not gpu,  # without it accelerate never forms a process group of CPUs (it then picks gloo)
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient
    )  # gradient checkpointing: switched on in the model itself (training.model), as Unsloth does its own


def make_trainer(model, examples: list[Example], cfg: TrainConfig, run: Path, steps: int, callbacks: list):
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    data = Dataset.from_dict({"input_ids": [e.input_ids for e in examples], "labels": [e.labels for e in examples]})
    # TRL's collator: right-pads input_ids (with 0; the attention mask hides it) and labels with -100, as they are
    trainer = _trainer_class()(model=model, args=training_args(cfg, run, steps), train_dataset=data,
                               data_collator=DataCollatorForLanguageModeling(pad_token_id=0), callbacks=callbacks)
    trainer.profit = cfg.profit
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the progress bar and the JSONL log replace it
    return trainer


def _trainer_class():
    """DasdTrainer, built on first use: it subclasses transformers.Trainer, which this
    module does not import at load time."""
    from transformers import Trainer

    from .model import kept_nll

    class DasdTrainer(Trainer):
        """Trainer with the loss taken through TRL's chunked LM head, and ProFit."""

        loss_is_scaled_for_ga = True  # divided by the step's label count (num_items_in_batch), as the Trainer expects
        profit: float | None = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs, fused_lm_head=True, use_cache=False)
            nll, kept = kept_nll(out.log_probs, out.label_mask, self.profit)
            self._kept = getattr(self, "_kept", 0) + kept.detach()
            denominator = num_items_in_batch if num_items_in_batch is not None else kept.clamp(min=1)
            loss = nll / denominator
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages the gradients; the count is global
            return (loss, out) if return_outputs else loss

        def log(self, logs: dict, start_time: float | None = None) -> None:
            if "loss" in logs:  # a step's log (every step): labels the loss counted, over all processes
                import torch

                kept = getattr(self, "_kept", torch.zeros((), device=self.args.device))
                logs["loss_tokens"] = int(self.accelerator.reduce(torch.as_tensor(kept, device=self.args.device),
                                                                  reduction="sum"))
                self._kept = 0
            super().log(logs, start_time)

    return DasdTrainer


class TrainLog:
    """train_log.jsonl: one line per optimizer step, flushed at once; on resume, lines
    after the checkpoint's step are dropped (temp + rename) and the log goes on from there."""

    def __init__(self, path: Path, after_step: int):
        from ..store.records import Appender, atomic_write_text, read_jsonl

        self.path = path
        if path.exists():
            rows, _ = read_jsonl(path)
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows if r.get("step", 0) <= after_step))
        self._f = Appender(path)  # whole lines, cut back on a full disk

    def write(self, row: dict) -> None:
        self._f.write(row)

    def close(self) -> None:
        self._f.close()


def callbacks(log_path: Path, show: bool, console=None) -> list:
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """RUN_DIR/train_log.jsonl: one line per optimizer step, main process only."""

        def on_train_begin(self, args, state, control, **kw):
            self.log = TrainLog(log_path, after_step=state.global_step) if state.is_world_process_zero else None
            self.t0 = self.t_step = time.time()
            self.seen = state.num_input_tokens_seen

        def on_log(self, args, state, control, logs=None, **kw):
            if self.log is None or "loss" not in (logs or {}):
                return
            now, tokens = time.time(), state.num_input_tokens_seen - self.seen
            self.log.write({"step": state.global_step, "loss": logs["loss"], "loss_tokens": logs["loss_tokens"],
                            "tokens": tokens, "lr": logs["learning_rate"], "grad_norm": logs.get("grad_norm"),
                            "tokens_per_s": tokens / max(now - self.t_step, 1e-9), "elapsed_s": round(now - self.t0, 3)})
            self.seen, self.t_step = state.num_input_tokens_seen, now

        def on_train_end(self, args, state, control, **kw):
            if self.log is not None:
                self.log.close()

    return [JsonlLog(), _progress_class()(console)] if show else [JsonlLog()]


def _progress_class():
    from transformers import TrainerCallback

    class BarCallback(TrainerCallback):
        """The progress bar (store.progress.Bar): steps, time, loss, lr and tokens/s (main process only)."""

        def __init__(self, console=None):
            self.console, self.bar = console, None

        def on_train_begin(self, args, state, control, **kw):
            from ..store.progress import Bar

            if not state.is_world_process_zero:
                return
            self.bar = Bar("train", state.max_steps, self.console, completed=state.global_step)
            self.bar.start()
            self.t0, self.seen = time.time(), state.num_input_tokens_seen

        def on_log(self, args, state, control, logs=None, **kw):
            if self.bar is not None and "loss" in (logs or {}):
                rate = (state.num_input_tokens_seen - self.seen) / max(time.time() - self.t0, 1e-9)
                self.bar.set_completed(state.global_step)
                self.bar.note(f"loss {logs['loss']:.4f}  lr {logs['learning_rate']:.2e}  {rate:.0f} tok/s")

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.stop()

    return BarCallback
