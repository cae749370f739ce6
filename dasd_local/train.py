"""`dasd-local train`: LoRA fine-tuning on kept records, Unsloth on CUDA, PEFT on CPU.

Knows the run directory and the steps around the trainer:

    RUN_DIR/config.json          resolved TrainConfig, backend, data counts (written first)
    RUN_DIR/train_log.jsonl      one line per optimizer step: loss, lr, tokens/s
    RUN_DIR/checkpoints/checkpoint-N/  the Trainer's checkpoint: PEFT adapter, optimizer,
                                 schedule, RNG and trainer state (written last)
    RUN_DIR/adapter/             the final PEFT adapter
    RUN_DIR/adapter.gguf         the same adapter for llama.cpp (`--adapter`)
    RUN_DIR/merged-f16.gguf      with --merged: a standalone model (llama-quantize can shrink it)
    RUN_DIR/manifest.json        written last: counts, losses, speed, versions, base sha256

Runs as one process or several (`torchrun` / `accelerate launch`): every process checks
the input and trains; only the main process (rank 0) tokenizes, writes the run directory
and exports. Our files are written to a temporary name and renamed (the log is
append-only, and cut back to the checkpoint on --resume); a checkpoint counts only once
the Trainer has written its trainer_state.json, its last file, so --resume never starts
from a half-written one. Records -> ids/labels live in training/data.py, the model and the
loss math in training/model.py, the Trainer in training/loop.py, GGUF export in training/gguf.py.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from .config import TrainConfig
from .errors import ConfigError, InputError, ModelError, WriteError


def _write_json(path: Path, obj) -> None:
    from .store.records import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


# ---- run directory ---------------------------------------------------------------------


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint (the Trainer writes trainer_state.json last)."""
    done = [p for p in (run / "checkpoints").glob("checkpoint-*[0-9]") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def open_run(run: Path, cfg: TrainConfig, create: bool = True) -> Path | None:
    """The checkpoint to resume from (None: start at step 0). A fresh run never overwrites
    another; a resumed one must have been started with the same training settings.
    Only checks (every process does) and, with `create`, makes the directory."""
    saved = run / "config.json"
    if not cfg.resume:
        if saved.exists():
            raise ConfigError(f"{run} already holds a training run: add --resume to continue it, or choose another -o")
        if create:
            run.mkdir(parents=True, exist_ok=True)
        return None
    if not saved.exists():
        raise InputError(f"{run}: no training run to resume (no config.json)")
    before = json.loads(saved.read_text())["config"]
    for key, value in cfg.resumable().items():
        if before.get(key) != value:
            raise ConfigError(f"--resume: {key} = {value!r} differs from the run's {before.get(key)!r}")
    return latest_checkpoint(run)  # None: stopped before its first checkpoint, so start over


# ---- the run ---------------------------------------------------------------------------


def check_model(model, examples, gguf_path: Path) -> None:
    """Before training: every LoRA'd layer must map onto a tensor of the GGUF (so the
    adapter can be exported), and every token id must exist in the torch model."""
    from .training.gguf import check_fits

    check_fits({name.removeprefix("base_model.model."): (m.in_features, m.out_features)
                for name, m in model.named_modules() if hasattr(m, "lora_A")}, gguf_path)
    size = model.get_input_embeddings().num_embeddings
    top = max(max(e.input_ids) for e in examples)
    if top >= size:
        raise ModelError(f"token id {top} is outside the torch model's vocabulary ({size}): "
                         "is --hf-model the same model as the GGUF?")


def _same_processes(run: Path, processes: int) -> None:
    """A checkpoint's data position counts micro-batches per process: resume with as many."""
    before = json.loads((run / "config.json").read_text()).get("processes", 1)
    if before != processes:
        raise ConfigError(f"--resume: {processes} process(es), but the run was started with {before}")


def prepare_on_main(records, gguf_path: Path, cfg: TrainConfig, report, state):
    """Token ids (and --mask-ppl scores) through llama.cpp on the main process only; the
    other processes receive the examples and counts, or the error, and raise it too."""
    from .training.data import prepare_examples

    if state.num_processes == 1:
        return prepare_examples(records, gguf_path, cfg, report), report
    from accelerate.utils import broadcast_object_list

    payload = [None]
    if state.is_main_process:
        try:
            payload = [(prepare_examples(records, gguf_path, cfg, report), report)]
        except Exception as e:  # noqa: BLE001 - handed to every process, then raised everywhere
            payload = [e]
    broadcast_object_list(payload, from_process=0)
    if isinstance(payload[0], Exception):
        raise payload[0]
    return payload[0]


def _prepare(cfg: TrainConfig, run: Path):
    """Every check that needs no weights, on every process; then the examples (rank 0
    tokenizes). Returns the process state, backend, GGUF, checkpoint, examples and counts."""
    import torch

    from .models import resolve
    from .training.data import read_training_records
    from .training.model import check_architecture, pick_backend

    backend = pick_backend(cfg.backend)  # fail before any weights are read; unsloth (GPU) is imported first
    from accelerate import PartialState
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # (accelerate sets it per process when several share a CPU)
    gguf_path, _ = resolve(cfg.model)
    check_architecture(gguf_path)
    records, report = read_training_records(cfg.data)
    state = PartialState(cpu=not torch.cuda.is_available())  # joins the process group under torchrun / accelerate
    ckpt = open_run(run, cfg, create=state.is_main_process)
    if cfg.resume and ckpt is not None:
        _same_processes(run, state.num_processes)
    state.wait_for_everyone()  # every process has checked the run directory before rank 0 writes to it
    examples, report = prepare_on_main(records, gguf_path, cfg, report, state)
    return state, backend, gguf_path, ckpt, examples, report


def train(cfg: TrainConfig, console=None, show_progress: bool = True) -> dict | None:
    """Run (or resume) training; returns the manifest, also written to RUN_DIR/manifest.json
    (None on the other processes of a multi-process run). The main process holds the run
    directory's lock for the whole run (one writer); the others only read it."""
    import contextlib

    from .store.lock import output_lock

    rank0 = int(os.environ.get("RANK", "0")) == 0
    with output_lock(Path(cfg.out), directory=True) if rank0 else contextlib.nullcontext():
        return _train(cfg, console, show_progress)


def _train(cfg: TrainConfig, console=None, show_progress: bool = True) -> dict | None:
    from .training.loop import callbacks, count_steps, make_trainer
    from .training.model import load_model

    run = Path(cfg.out)
    state, backend, gguf_path, ckpt, examples, report = _prepare(cfg, run)
    steps, main = count_steps(len(examples), cfg, state.num_processes), state.is_main_process
    show_progress = show_progress and main
    if show_progress:
        from rich.console import Console

        console = console or Console(stderr=True)  # stdout stays for the command's result lines
        console.print(f"{cfg.data}: {report.line()}; {steps} optimizer steps ({backend}, {state.num_processes} "
                      f"process{'es' if state.num_processes > 1 else ''})")
    if main and not cfg.resume:
        _write_json(run / "config.json", {"config": asdict(cfg), "backend": backend, "model_path": str(gguf_path),
                                          "examples": len(examples), "steps": steps, "processes": state.num_processes,
                                          "data": asdict(report)})
    if main:
        (run / "manifest.json").unlink(missing_ok=True)  # the run is open (again)
    model = load_model(cfg, backend, gguf_path, run)
    check_model(model, examples, gguf_path)
    trainer = make_trainer(model, examples, cfg, run, steps, callbacks(run / "train_log.jsonl", show_progress, console))
    started = time.time()
    with warnings.catch_warnings():  # peft asks the hub whether a GGUF directory's vocabulary grew: never here
        warnings.filterwarnings("ignore", message="Could not find a config file in")
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
        start = int(ckpt.name.split("-")[1]) if ckpt else 0
        return finish(trainer, run, gguf_path, cfg, backend, report, start, time.time() - started)


def _write_failure(e: Exception) -> bool:
    """A failed write (full disk, unwritable directory) as torch.save (RuntimeError),
    safetensors (SafetensorError) or the OS report it."""
    return isinstance(e, (OSError, RuntimeError)) or type(e).__name__ == "SafetensorError"


def finish(trainer, run: Path, gguf_path: Path, cfg: TrainConfig, backend: str, report, start: int,
           seconds: float) -> dict | None:
    """Final PEFT adapter (every process takes part: FSDP and DeepSpeed gather it) and,
    on the main process, its GGUF export, then the manifest (last)."""
    from .training.gguf import export_adapter, write_merged
    from .store.records import read_jsonl, sha256_file, versions

    tmp = run / "adapter.tmp"
    if trainer.is_world_process_zero():
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if not trainer.is_world_process_zero():
        return None
    try:
        (tmp / "training_args.bin").unlink(missing_ok=True)  # the Trainer's, not the adapter's
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
    ran = [r for r in log if r["step"] > start]  # the steps this invocation ran
    tokens = sum(r["tokens"] for r in ran)
    manifest = {
        "model": str(gguf_path), "model_sha256": sha256_file(gguf_path), "hf_model": cfg.hf_model,
        "backend": backend, "processes": trainer.args.world_size, "versions": {**versions(), **_train_versions()},
        "config": asdict(cfg), "data": report.line(), "counts": asdict(report), "steps": len(log),
        "first_loss": log[0]["loss"] if log else None, "final_loss": log[-1]["loss"] if log else None,
        "tokens_per_s": round(tokens / seconds, 2) if ran and seconds > 0 else None,
        "adapter": str(run / "adapter"), "adapter_gguf": str(run / "adapter.gguf"),
        "merged_gguf": str(merged) if merged else None,
    }
    _write_json(run / "manifest.json", manifest)
    return manifest


def _train_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "peft", "trl", "accelerate", "gguf", "unsloth"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
