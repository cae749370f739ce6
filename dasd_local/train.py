"""`dasd-local train`: LoRA fine-tuning on kept records, Unsloth on CUDA, PEFT on CPU.

Knows the run directory and the loop around the model:

    RUN_DIR/config.json          resolved TrainConfig, backend, data counts (written first)
    RUN_DIR/train_log.jsonl      one line per optimizer step: loss, lr, tokens/s
    RUN_DIR/checkpoints/step-N/  PEFT adapter + trainer_state.pt (optimizer, schedule, RNG)
    RUN_DIR/adapter/             the final PEFT adapter
    RUN_DIR/adapter.gguf         the same adapter for llama.cpp (`--adapter`)
    RUN_DIR/merged-f16.gguf      with --merged: a standalone model (llama-quantize can shrink it)
    RUN_DIR/manifest.json        written last: counts, losses, speed, versions, base sha256

Every file is written to a temporary name and renamed (the log is append-only, and cut
back to the checkpoint on --resume). The data order is a pure function of the seed and
the RNG state is checkpointed, so a resumed run repeats the uninterrupted one. Records
-> ids/labels live in train_data.py, torch in train_model.py, GGUF export in export.py.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from .config import TrainConfig
from .errors import ConfigError, InputError, ModelError, WriteError
from .lock import one_writer


def _write_json(path: Path, obj) -> None:
    from .records import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


# ---- run directory ---------------------------------------------------------------------


def latest_checkpoint(run: Path) -> Path | None:
    found = sorted((run / "checkpoints").glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def open_run(run: Path, cfg: TrainConfig) -> Path | None:
    """The checkpoint to resume from (None: start at step 0). A fresh run never overwrites
    another; a resumed one must have been started with the same training settings."""
    saved = run / "config.json"
    if not cfg.resume:
        if saved.exists():
            raise ConfigError(f"{run} already holds a training run: add --resume to continue it, or choose another -o")
        run.mkdir(parents=True, exist_ok=True)
        return None
    if not saved.exists():
        raise InputError(f"{run}: no training run to resume (no config.json)")
    before = json.loads(saved.read_text())["config"]
    for key, value in cfg.resumable().items():
        if before.get(key) != value:
            raise ConfigError(f"--resume: {key} = {value!r} differs from the run's {before.get(key)!r}")
    return latest_checkpoint(run)  # None: stopped before its first checkpoint, so start over


def save_checkpoint(run: Path, step: int, model, opt, sched, keep: int) -> Path:
    """checkpoints/step-N, complete or absent: written under a temporary name and renamed.
    Older ones are renamed away before they are deleted, so no half-deleted checkpoint
    keeps a step-N name. A full disk: WriteError, the earlier checkpoints stay."""
    import torch

    final = run / "checkpoints" / f"step-{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, save_embedding_layers=False)
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng},
                   tmp / "trainer_state.pt")
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _write_failure(e):
            raise
        raise WriteError(f"{final}: checkpoint not written ({e}); the run keeps its earlier checkpoints: "
                         "free space and continue with --resume") from None
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(final.parent.glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))[:-keep]:
        gone = old.with_name(old.name + ".old")
        os.replace(old, gone)
        shutil.rmtree(gone)
    for stale in final.parent.glob("step-*.old"):  # a deletion cut by a kill
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _write_failure(e: Exception) -> bool:
    """A failed write (full disk, unwritable directory) as torch.save (RuntimeError),
    safetensors (SafetensorError) or the OS report it."""
    return isinstance(e, (OSError, RuntimeError)) or type(e).__name__ == "SafetensorError"


def restore_checkpoint(ckpt: Path, model, opt, sched) -> int:
    """Adapter weights, optimizer, schedule and RNG from `ckpt`; returns its step."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    loaded = set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors"), device=str(model.device)))
    if loaded.unexpected_keys:
        raise ModelError(f"{ckpt}: checkpoint does not fit the model ({loaded.unexpected_keys[0]} ...)")
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["cpu"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"])


class TrainLog:
    """train_log.jsonl: one line per optimizer step, flushed at once; on resume, lines
    after the checkpoint's step are dropped (temp + rename) and the log goes on from there."""

    def __init__(self, path: Path, after_step: int):
        from .records import Appender, atomic_write_text, read_jsonl

        self.path = path
        if path.exists():
            rows, _ = read_jsonl(path)
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows if r.get("step", 0) <= after_step))
        self._f = Appender(path)  # whole lines, cut back on a full disk

    def write(self, row: dict) -> None:
        self._f.write(row)

    def close(self) -> None:
        self._f.close()


# ---- the loop --------------------------------------------------------------------------


def make_optimizer(model, cfg: TrainConfig, total: int):
    import torch

    from .train_model import lr_factor

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total + 0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, cfg.schedule))
    return opt, sched


def train_step(model, batches: list[list], cfg: TrainConfig) -> dict:
    """One optimizer step over its micro-batches. Every labelled token of the step weighs
    the same (the denominator is the step's label count, known before the forward passes)."""
    import torch

    from .train_data import IGNORE
    from .train_model import collate, forward_nll

    n_labels = max(1, sum(sum(1 for x in e.labels[1:] if x != IGNORE) for mb in batches for e in mb))
    device = model.device
    nll_sum, kept, tokens = 0.0, 0, 0
    for mb in batches:
        ids, mask, labels = collate(mb, 0, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            nll, n = forward_nll(model, ids, mask, labels, cfg.profit, chunked=getattr(model, "chunked_loss", False))
        (nll / n_labels).backward()
        nll_sum, kept, tokens = nll_sum + float(nll.detach()), kept + n, tokens + int(mask.sum())
    if cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
    return {"loss": nll_sum / max(kept, 1), "loss_tokens": kept, "tokens": tokens}


def _progress(console, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"), console=console, disable=not enabled)


def run_steps(model, examples, plan, start: int, opt, sched, cfg: TrainConfig, run: Path, log: TrainLog,
              console=None, show: bool = True) -> list[dict]:
    """Optimizer steps start..len(plan): log each, checkpoint every save_every and at the end."""
    rows, t0, seen = [], time.time(), 0
    model.train()
    with _progress(console, show) as bar:
        job = bar.add_task("train", total=len(plan), completed=start, info="")
        for step in range(start, len(plan)):
            t = time.time()
            lr = sched.get_last_lr()[0]
            row = train_step(model, [[examples[i] for i in mb] for mb in plan[step]], cfg)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            seen += row["tokens"]
            row = {"step": step + 1, **row, "lr": lr, "tokens_per_s": row["tokens"] / max(time.time() - t, 1e-9),
                   "elapsed_s": round(time.time() - t0, 3)}
            log.write(row)
            rows.append(row)
            bar.update(job, advance=1, info=f"loss {row['loss']:.4f}  lr {lr:.2e}  {seen / max(time.time() - t0, 1e-9):.0f} tok/s")
            if step + 1 == len(plan) or (cfg.save_every and (step + 1) % cfg.save_every == 0):
                save_checkpoint(run, step + 1, model, opt, sched, cfg.keep_checkpoints)
    return rows


def check_model(model, examples, gguf_path: Path) -> None:
    """Before training: every LoRA'd layer must map onto a tensor of the GGUF (so the
    adapter can be exported), and every token id must exist in the torch model."""
    from .export import check_fits

    check_fits({name.removeprefix("base_model.model."): (m.in_features, m.out_features)
                for name, m in model.named_modules() if hasattr(m, "lora_A")}, gguf_path)
    size = model.get_input_embeddings().num_embeddings
    top = max(max(e.input_ids) for e in examples)
    if top >= size:
        raise ModelError(f"token id {top} is outside the torch model's vocabulary ({size}): "
                         "is --hf-model the same model as the GGUF?")


@one_writer(lambda cfg, console=None, show_progress=True: Path(cfg.out), directory=True)
def train(cfg: TrainConfig, console=None, show_progress: bool = True) -> dict:
    """Run (or resume) training; returns the manifest, also written to RUN_DIR/manifest.json."""
    from .models import resolve
    from .train_data import prepare_examples, read_records
    from .train_model import check_architecture, load_model, pick_backend, plan_steps

    run = Path(cfg.out)
    backend = pick_backend(cfg.backend)  # fail before any weights are read
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    gguf_path, _ = resolve(cfg.model)
    check_architecture(gguf_path)
    records, report = read_records(cfg.data)
    ckpt = open_run(run, cfg)
    examples = prepare_examples(records, gguf_path, cfg, report)
    plan = plan_steps(len(examples), cfg)
    if show_progress:
        from rich.console import Console

        console = console or Console(stderr=True)  # stdout stays for the command's result lines
        console.print(f"{cfg.data}: {report.line()}; {len(plan)} optimizer steps ({backend})")
    if not cfg.resume:
        _write_json(run / "config.json", {"config": asdict(cfg), "backend": backend, "model_path": str(gguf_path),
                                          "examples": len(examples), "steps": len(plan), "data": asdict(report)})
    (run / "manifest.json").unlink(missing_ok=True)  # the run is open (again)
    model = load_model(cfg, backend, gguf_path, run)
    check_model(model, examples, gguf_path)
    opt, sched = make_optimizer(model, cfg, len(plan))
    start = restore_checkpoint(ckpt, model, opt, sched) if ckpt else 0
    log = TrainLog(run / "train_log.jsonl", after_step=start)
    started = time.time()
    try:
        rows = run_steps(model, examples, plan, start, opt, sched, cfg, run, log, console, show_progress)
    finally:
        log.close()
    return finish(model, run, gguf_path, cfg, backend, report, rows, time.time() - started)


def finish(model, run: Path, gguf_path: Path, cfg: TrainConfig, backend: str, report, rows, seconds) -> dict:
    """Final PEFT adapter and its GGUF export, then the manifest (last)."""
    from .export import export_adapter, write_merged
    from .records import read_jsonl, sha256_file, versions

    tmp = run / "adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, save_embedding_layers=False)
        shutil.rmtree(run / "adapter", ignore_errors=True)
        os.replace(tmp, run / "adapter")
        export_adapter(run / "adapter", gguf_path, run / "adapter.gguf")
        merged = write_merged(gguf_path, run / f"merged-{cfg.merged}.gguf", run / "adapter", cfg.merged) if cfg.merged else None
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        for part in run.glob("*.gguf.tmp"):
            part.unlink()
        if not _write_failure(e):
            raise
        raise WriteError(f"{run}: the final adapter was not written ({e}); the last checkpoint holds it: "
                         "free space and run again with --resume") from None
    log, _ = read_jsonl(run / "train_log.jsonl")
    tokens = sum(r["tokens"] for r in rows)
    manifest = {
        "model": str(gguf_path), "model_sha256": sha256_file(gguf_path), "hf_model": cfg.hf_model,
        "backend": backend, "versions": {**versions(), **_train_versions()}, "config": asdict(cfg),
        "data": report.line(), "counts": asdict(report), "steps": len(log),
        "first_loss": log[0]["loss"] if log else None, "final_loss": log[-1]["loss"] if log else None,
        "tokens_per_s": round(tokens / seconds, 2) if rows and seconds > 0 else None,
        "adapter": str(run / "adapter"), "adapter_gguf": str(run / "adapter.gguf"),
        "merged_gguf": str(merged) if merged else None,
    }
    _write_json(run / "manifest.json", manifest)
    return manifest


def _train_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "peft", "gguf", "unsloth"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
