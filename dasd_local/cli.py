"""The `dasd-local` command line: parse options, build a config, call one function, print.

No logic lives here. Every option takes its default and help text from its config
field (config.py, through `opt`), so they are written once. Every verb imports its
module inside the command so that `dasd-local --help` stays instant. Known errors
(DasdError) become one red line and exit code 1; set DASD_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import config as C
from .export import ExportConfig  # light: its heavy imports are inside functions
from .runner import RayConfig  # light: Ray is imported inside its functions
from .errors import DasdError

# Plain click help (rich_markup_mode=None): rich's help panels cut defaults and help
# texts at 80 columns, show `--help <bool>`, and eat `[token, p_ref, p_base]` as markup.
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Distribution-Aligned Self-Distillation on llama.cpp.")



def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"dasd-local {version('dasd-local')}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")] = False) -> None:
    """Distribution-Aligned Self-Distillation on llama.cpp."""


def opt(cls, name: str, *decls: str, **kw):
    """A typer option whose default and help are those of config field `cls.name`
    (its flag, unless `decls` names others). A computed default becomes None: unset."""
    f = C.field_of(cls, name)
    decls = decls or ((f.metadata.get("flag") or C.flag(name)),)
    return typer.Option(C.default_of(f), *decls, help=f.metadata["help"], **kw)


def _warn(line: str) -> None:
    typer.secho(line, fg="yellow", err=True)


def _echo_skipped(lines: list[str], most: int) -> None:
    for line in lines[:most]:
        typer.secho(f"skipped: {line}", fg="yellow", err=True)
    if len(lines) > most:
        typer.secho(f"skipped: ... and {len(lines) - most} more", fg="yellow", err=True)


def _pick(cls, values: dict, **extra):
    """Build config `cls` from the command's arguments that are its fields."""
    names = {f.name for f in C.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names}, **extra)


# ---- generate / view / models (engine issue) -------------------------------------


@app.command()
def generate(
    model: Optional[str] = opt(C.RunConfig, "model", "--model", "-m"),
    data: Optional[str] = opt(C.RunConfig, "data", "--data", "-d"),
    task: str = opt(C.RunConfig, "task", "--task", "-t"),
    answer_format: Optional[str] = opt(C.RunConfig, "answer_format"),
    strategy: str = opt(C.DecodeConfig, "strategy", "--strategy", "-s"),
    out: Optional[Path] = opt(C.RunConfig, "out", "--out", "-o"),
    restart: bool = opt(C.RunConfig, "restart"),
    limit: Optional[int] = opt(C.RunConfig, "limit"),
    sample: Optional[int] = opt(C.RunConfig, "sample"),
    seed: int = opt(C.RunConfig, "seed"),  # one --seed: RunConfig (--sample) and DecodeConfig (sampling) take it
    batch: str = opt(C.DecodeConfig, "batch", metavar="N|auto"),
    max_new_tokens: int = opt(C.DecodeConfig, "max_new_tokens"),
    top_k: int = opt(C.DecodeConfig, "top_k"),
    tau: float = opt(C.DecodeConfig, "tau"),
    hard_mode: str = opt(C.DecodeConfig, "hard_mode"),
    hint_beta: float = opt(C.DecodeConfig, "hint_beta"),
    samples: int = opt(C.DecodeConfig, "samples"),
    temperature: float = opt(C.DecodeConfig, "temperature"),
    record_candidates: bool = opt(C.DecodeConfig, "record_candidates"),
    baseline_form: str = opt(C.DecodeConfig, "baseline_form"),
    hint_analysis_tokens: Optional[int] = opt(C.DecodeConfig, "hint_analysis_tokens"),
    split: str = opt(C.RunConfig, "split"),
    id_field: Optional[str] = opt(C.RunConfig, "id_field"),
    question_field: Optional[str] = opt(C.RunConfig, "question_field"),
    reference_field: Optional[str] = opt(C.RunConfig, "reference_field"),
    answer_field: Optional[str] = opt(C.RunConfig, "answer_field"),
    choices_field: Optional[str] = opt(C.RunConfig, "choices_field"),
    tests_field: Optional[str] = opt(C.RunConfig, "tests_field"),
    ctx: Optional[int] = opt(C.RunConfig, "ctx"),
    step_tokens: int = opt(C.DecodeConfig, "step_tokens"),
    speculate: str = opt(C.DecodeConfig, "speculate"),
    draft_max: int = opt(C.DecodeConfig, "draft_max"),
    ubatch: Optional[int] = opt(C.RunConfig, "ubatch"),
    kv: str = opt(C.RunConfig, "kv"),
    kv_type: str = opt(C.RunConfig, "kv_type"),
    cpu_weights: str = opt(C.RunConfig, "cpu_weights"),
    n_gpu_layers: int = opt(C.RunConfig, "n_gpu_layers"),
    threads: Optional[int] = opt(C.RunConfig, "threads"),
    adapter: Optional[Path] = opt(C.RunConfig, "adapter"),
    system: Optional[str] = opt(C.RunConfig, "system"),
    ray: Optional[str] = opt(RayConfig, "ray"),
    workers: Optional[str] = opt(RayConfig, "workers"),
    threads_per_worker: int = opt(RayConfig, "threads_per_worker"),
    gpus_per_worker: float = opt(RayConfig, "gpus_per_worker"),
) -> None:
    """Decode every problem with the base and reference views; write training records.

    Columns each task reads (others pass through to the records): math: unique_id (id), problem
    (question), solution (reference solution), answer; code: task_id (id), text (question), code
    (reference solution), test_list; mcq: id (id), question, answerKey (reference), choices."""
    from .generate import generate as run_generate

    args = dict(locals(), batch=C.parse_batch(batch))
    _echo_generated(run_generate(_pick(C.RunConfig, args), _pick(C.DecodeConfig, args), warn=_warn,
                                 ray=_pick(RayConfig, args)))


def _echo_generated(m: dict) -> None:
    """generate's result lines."""
    c, st = m["counts"], m["stats"]
    typer.echo(f"wrote {m['out']}: {c['done']} records ({c['ran_now']} now, {c['failed']} failed, "
               f"{c['skipped_rows']} rows skipped); {st['emitted']} tokens at {st['emitted_per_s']} tok/s")
    if st["drafted"]:
        typer.echo(f"speculation: {st['accepted']}/{st['drafted']} drafted tokens accepted; "
                   f"{st['rows_per_call']} rows per decode call")
    if st["category_shares"]:
        typer.echo("categories: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in st["category_shares"].items()))
    _echo_skipped(m["failed_now"], 5)  # skipped rows were shown before decoding


@app.command()
def view(
    path: Annotated[Path, typer.Argument(help="A generation output JSONL.")],
    id: Annotated[Optional[str], typer.Option("--id", help="Show only this problem.")] = None,
    candidates: Annotated[bool, typer.Option(help="List each non-consistent token's candidates with p_R and p_B.")] = False,
    limit: Annotated[int, typer.Option(help="How many records to show without --id.")] = 3,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model to spell candidate tokens (default: the run's).")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write every record as one self-contained HTML report here instead.")] = None,
) -> None:
    """Show responses with every token coloured by how DASD chose it (terminal, or --html)."""
    if html is not None:
        from .reporting.html import write_report

        t = write_report(path, html, model)
        typer.echo(f"wrote {html}: {t['problems']} problems, {t['tokens']} tokens")
        return
    from .reporting.terminal import show

    show(path, id, candidates, limit, model)


@app.command()
def models() -> None:
    """List the model registry."""
    from rich.console import Console

    from .models import registry_table

    Console().print(registry_table())

# ---- export (data out) -------------------------------------------------------------


@app.command("export")
def export_(
    paths: Annotated[list[Path], typer.Argument(metavar="RUN.jsonl...", help="Verified records (`dasd-local verify` output).")],
    out: Annotated[Path, typer.Option("--out", "-o", help=C.field_of(ExportConfig, "out").metadata["help"])],
    format: str = opt(ExportConfig, "format", "--format", "-f"),
    push_to_hub: Optional[str] = opt(ExportConfig, "push_to_hub"),
    license: Optional[str] = opt(ExportConfig, "license"),
) -> None:
    """Kept records to a datasets dataset, parquet, TRL JSONL or ShareGPT, with a dataset card."""
    import shlex

    from .export import export

    argv = ["dasd-local", "export", *map(str, paths), "--format", format, "-o", str(out)]
    argv += [f"--push-to-hub={push_to_hub}"] * bool(push_to_hub) + [f"--license={license}"] * bool(license)
    s = export(ExportConfig(paths=tuple(paths), format=format, out=out, push_to_hub=push_to_hub, license=license,
                              command=shlex.join(argv)))
    typer.echo(f"wrote {out} ({format}): {s['kept']} records kept, {s['dropped']} dropped; "
               + ", ".join(s["files"]) + (f"; pushed to {s['pushed']}" if s.get("pushed") else ""))

# ---- verify / eval (benchmarks issue) ---------------------------------------------


@app.command()
def verify(
    inp: Annotated[Path, typer.Argument(metavar="IN.jsonl", help="Records written by `dasd-local generate`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the kept records (JSONL).")],
    task: Optional[str] = opt(C.VerifyConfig, "task", "--task", "-t"),
    on_fail: str = opt(C.VerifyConfig, "on_fail"),
    workers: Optional[int] = opt(C.VerifyConfig, "workers"),
    timeout: float = opt(C.VerifyConfig, "timeout_s"),
    dedupe: bool = opt(C.VerifyConfig, "dedupe"),
) -> None:
    """Mark every record correct or not (answer check / tests), write the kept ones."""
    from rich.console import Console

    from .verify import report_table, verify_file

    cfg = C.VerifyConfig(task=task, on_fail=on_fail, timeout_s=timeout, dedupe=dedupe,
                         **({"workers": workers} if workers else {}))
    report = verify_file(inp, out, cfg)
    console = Console()
    console.print(report_table(report, f"verify {inp.name}"))
    n, correct, kept = report.totals()
    console.print(f"wrote {out}: {kept} of {n} records kept ({correct} correct"
                  + (f", {report.replaced} replaced by the reference" if report.replaced else "")
                  + (f", {report.duplicates} duplicates dropped" if report.duplicates else "") + ")")
    if report.sampled:
        console.print(f"problems with a correct sample: {report.solved()} of {len(report.problems)}")
    _echo_skipped(report.skipped, 10)


@app.command("eval")
def eval_(
    data: str = opt(C.EvalConfig, "data", "--data", "-d"),
    out: Path = opt(C.EvalConfig, "out_dir", "--out", "-o"),
    model: Optional[str] = opt(C.EvalConfig, "model", "--model", "-m"),
    adapter: Optional[Path] = opt(C.EvalConfig, "adapter"),
    task: str = opt(C.EvalConfig, "task", "--task", "-t"),
    answer_format: Optional[str] = opt(C.EvalConfig, "answer_format"),
    split: str = opt(C.EvalConfig, "split"),
    limit: Optional[int] = opt(C.EvalConfig, "limit"),
    sample: Optional[int] = opt(C.EvalConfig, "sample"),
    seed: int = opt(C.EvalConfig, "seed"),
    batch: str = opt(C.DecodeConfig, "batch", metavar="N|auto"),
    max_new_tokens: int = opt(C.DecodeConfig, "max_new_tokens"),
    id_field: Optional[str] = opt(C.EvalConfig, "id_field"),
    question_field: Optional[str] = opt(C.EvalConfig, "question_field"),
    answer_field: Optional[str] = opt(C.EvalConfig, "answer_field"),
    choices_field: Optional[str] = opt(C.EvalConfig, "choices_field"),
    tests_field: Optional[str] = opt(C.EvalConfig, "tests_field"),
    ctx: Optional[int] = opt(C.EvalConfig, "ctx"),
    n_gpu_layers: int = opt(C.EvalConfig, "n_gpu_layers"),
    threads: Optional[int] = opt(C.EvalConfig, "threads"),
    cpu_weights: str = opt(C.EvalConfig, "cpu_weights"),
    workers: Optional[int] = opt(C.EvalConfig, "workers"),
    timeout: float = opt(C.EvalConfig, "timeout_s"),
    rejudge: bool = opt(C.EvalConfig, "rejudge"),
    system: Optional[str] = opt(C.EvalConfig, "system"),
    ray: Optional[str] = opt(RayConfig, "ray"),
    ray_workers: Optional[str] = opt(RayConfig, "workers", "--ray-workers"),  # --workers: the answer checks
    threads_per_worker: int = opt(RayConfig, "threads_per_worker"),
    gpus_per_worker: float = opt(RayConfig, "gpus_per_worker"),
) -> None:
    """Greedy answers (base view) of a model (+ adapter) on a split: accuracy or pass@1."""
    from rich.console import Console

    from .evaluate import evaluate, summary_table

    args = dict(locals())
    if workers is None:
        del args["workers"]  # unset: the config's default (CPU cores)
    cfg = _pick(C.EvalConfig, args, out_dir=out, timeout_s=timeout,
                decode=C.eval_decode(batch=C.parse_batch(batch), max_new_tokens=max_new_tokens))
    console = Console()
    summary = evaluate(cfg, console, ray=RayConfig(ray=ray, workers=ray_workers, threads_per_worker=threads_per_worker,
                                                     gpus_per_worker=gpus_per_worker))
    console.print(summary_table(summary, f"{summary['task']} {summary['metric']}: {Path(summary['model']).name}"
                                + (f" + {Path(summary['adapter']).name}" if summary.get("adapter") else "")))
    rejudged = f", {summary['rejudged']} earlier answers judged again" if summary.get("rejudged") is not None else ""
    console.print(f"wrote {out / 'predictions.jsonl'} and {out / 'summary.json'} "
                  f"({summary['ran_now']} answered now{rejudged}, {summary['n']} judged in all)")

# ---- train (training issue) -------------------------------------------------------


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help=C.field_of(C.TrainConfig, "data").metadata["help"])],
    out: Path = opt(C.TrainConfig, "out", "--out", "-o"),
    model: Optional[str] = opt(C.TrainConfig, "model", "--model", "-m"),
    hf_model: Optional[str] = opt(C.TrainConfig, "hf_model"),
    backend: str = opt(C.TrainConfig, "backend"),
    rank: int = opt(C.TrainConfig, "rank"),
    alpha: float = opt(C.TrainConfig, "alpha"),
    dropout: float = opt(C.TrainConfig, "dropout"),
    lr: float = opt(C.TrainConfig, "lr"),
    warmup_ratio: float = opt(C.TrainConfig, "warmup_ratio"),
    schedule: str = opt(C.TrainConfig, "schedule"),
    epochs: int = opt(C.TrainConfig, "epochs"),
    batch_size: int = opt(C.TrainConfig, "batch_size"),
    grad_accum: int = opt(C.TrainConfig, "grad_accum"),
    max_length: int = opt(C.TrainConfig, "max_length"),
    max_steps: int = opt(C.TrainConfig, "max_steps"),
    seed: int = opt(C.TrainConfig, "seed"),
    mask_ppl: Optional[float] = opt(C.TrainConfig, "mask_ppl"),
    profit: Optional[float] = opt(C.TrainConfig, "profit"),
    save_every: int = opt(C.TrainConfig, "save_every"),
    grad_checkpoint: bool = opt(C.TrainConfig, "grad_checkpoint", "--grad-checkpoint/--no-grad-checkpoint"),
    resume: bool = opt(C.TrainConfig, "resume", "--resume/--no-resume"),
    merged: Optional[str] = opt(C.TrainConfig, "merged"),
    threads: Optional[int] = opt(C.TrainConfig, "threads"),
) -> None:
    """LoRA-tune the model on kept records (loss on the response); write a PEFT and a llama.cpp GGUF adapter.

    Several processes: `torchrun --nproc_per_node N -m dasd_local train ...` or `accelerate launch -m dasd_local train ...`."""
    from .train import train as run_train

    args = dict(locals())
    m = run_train(_pick(C.TrainConfig, {**args, "data": str(data), "out": str(out)}))
    if m is None:  # another process of a torchrun / accelerate launch run: the main one reports
        return
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
    ci: Annotated[bool, typer.Option("--ci/--no-ci", help="95% bootstrap intervals over problems on every ratio.")] = True,
    boot: Annotated[int, typer.Option(help="Bootstrap resamples.", min=10)] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed (same seed, same intervals).")] = 0,
    segments: Annotated[bool, typer.Option(help="Segment-level (per line) PPL distributions per level (Fig. 2).")] = False,
    level_field: Annotated[Optional[str], typer.Option(help="Record field read as the difficulty level (default: level).")] = None,
) -> None:
    """High-PPL ratio, perplexity, token categories, pass rate and view overlap, per file and level.
    With --compare and two files: their paired difference over the common problem ids."""
    from .stats import Evidence, report

    problems = report(paths, threshold, compare, C.ScoreConfig(model=model) if overlap else None, json_out, plots,
                      evidence=Evidence(ci, boot, seed, segments, level_field))
    _echo_skipped(problems, 10)


@app.command("score")
def score_(
    inp: Annotated[Path, typer.Argument(metavar="IN.jsonl", help="Records with a response (text or tokens), or dataset rows (their gold solution is scored).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output JSONL: the records with per-token fields under both views.")],
    task: str = opt(C.ScoreConfig, "task", "--task", "-t"),
    answer_format: Optional[str] = opt(C.ScoreConfig, "answer_format"),
    model: Optional[str] = opt(C.ScoreConfig, "model", "--model", "-m"),
    limit: Optional[int] = opt(C.ScoreConfig, "limit"),
    sample: Optional[int] = opt(C.ScoreConfig, "sample"),
    seed: int = opt(C.ScoreConfig, "seed"),
    top_k: int = opt(C.ScoreConfig, "top_k"),
    id_field: Optional[str] = opt(C.ScoreConfig, "id_field"),
    question_field: Optional[str] = opt(C.ScoreConfig, "question_field"),
    reference_field: Optional[str] = opt(C.ScoreConfig, "reference_field"),
    answer_field: Optional[str] = opt(C.ScoreConfig, "answer_field"),
    n_gpu_layers: int = opt(C.ScoreConfig, "n_gpu_layers"),
    threads: Optional[int] = opt(C.ScoreConfig, "threads"),
    cpu_weights: str = opt(C.ScoreConfig, "cpu_weights"),
    system: Optional[str] = opt(C.ScoreConfig, "system"),
    ray: Optional[str] = opt(RayConfig, "ray"),
    workers: Optional[str] = opt(RayConfig, "workers"),
    threads_per_worker: int = opt(RayConfig, "threads_per_worker"),
    gpus_per_worker: float = opt(RayConfig, "gpus_per_worker"),
) -> None:
    """Teacher-force any response under the base and reference views (the scoring pass)."""
    from .score import score_file

    args = dict(locals())
    m = score_file(inp, out, _pick(C.ScoreConfig, args), ray=_pick(RayConfig, args))
    c = m["counts"]
    typer.echo(f"wrote {out}: {c['done']} records ({c['scored_now']} scored now, {c['failed']} failed) in {m['seconds']} s")
    _echo_skipped(m["skipped"], 5)


def main() -> None:
    import errno

    try:
        app()
    except DasdError as e:
        if os.environ.get("DASD_DEBUG"):
            raise
        interrupted = getattr(e, "exit_code", 1) == 130
        typer.secho(str(e) if interrupted else f"error: {e}", fg="yellow" if interrupted else "red", err=True)
        sys.exit(getattr(e, "exit_code", 1))
    except KeyboardInterrupt:  # a verb without its own count of what is done
        typer.secho("interrupted: rerun the same command to resume", fg="yellow", err=True)
        sys.exit(130)
    except OSError as e:  # a path no verb checked itself (a full disk, a read-only file)
        if os.environ.get("DASD_DEBUG") or not e.filename:
            raise
        typer.secho(f"error: {e.filename}: {e.strerror}", fg="red", err=True)
        sys.exit(1)
    except OSError as e:  # a full disk or a read-only directory inside a library's own write
        if os.environ.get("DASD_DEBUG") or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        typer.secho(f"error: {e.filename or 'output'}: {e.strerror}; the run stopped and keeps what it finished: "
                    "free space (or make it writable) and run the same command again", fg="red", err=True)
        sys.exit(1)
