"""The `dasd-local` command line: parse options, build configs, call one function, print.

No logic lives here, and no option is declared here: each verb names the config fields it
takes (`uses`), and `verb` builds the typer options from those fields' metadata (flag,
one-letter alias, default, help, metavar; config/fields.py), as llama-cpp-python's server
builds its parser from its settings models. One command-line value feeds every config of
the verb that has a field of that name (generate's `--seed` seeds both the sample and the
sampling). Only the two file parameters of `verify` and `score` (IN.jsonl, -o OUT.jsonl)
are declared with their verb. Every verb imports its module inside the command so that
`dasd-local --help` stays instant. Known errors (DasdError) become one red line and exit
code 1; set DASD_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import inspect
import os
import sys
import typing
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import config as C
from .errors import DasdError

# Plain click help (rich_markup_mode=None): rich's help panels cut defaults and help
# texts at 80 columns, show `--help <bool>`, and eat `[token, p_ref, p_base]` as markup.
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Distribution-Aligned Self-Distillation on llama.cpp.")

ALL = None  # a `uses` entry's fields: every field of the config that has a flag or is an argument
PRIMARY = ("data", "out", "model", "task", "answer_format", "strategy")  # listed first in --help


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"dasd-local {version('dasd-local')}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")] = False) -> None:
    """Distribution-Aligned Self-Distillation on llama.cpp."""


# ---- options from config fields ---------------------------------------------------------


def _cli_type(hint, meta: dict):
    """The type typer parses: the field's own, `str` where the field reads its text (`parse`),
    a list for a tuple of paths, Optional where the value may be None."""
    if meta.get("parse") is not None:
        return str
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = len(args) < len(typing.get_args(hint))
    base = args[0] if args else hint
    if base is tuple:
        return list[Path]
    return Optional[base] if optional else base


def _param(f, hint, flag: str | None):
    """(parameter name, inspect.Parameter) of one config field on the command line."""
    m = f.metadata
    if m.get("argument"):  # positional arguments are always given
        name = f.name
        info = typer.Argument(..., help=m["help"], metavar=m.get("metavar"), show_default=False)
    else:
        flag = flag or m.get("flag") or C.flag(f.name)
        name = flag.split("/")[0].removeprefix("--").replace("-", "_")
        decls = [flag] + ([m["short"]] if m.get("short") else [])
        info = typer.Option(... if m.get("required") else C.default_of(f), *decls, help=m["help"],
                            metavar=m.get("metavar"))
    return name, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=_cli_type(hint, m))


class Values:
    """The parsed command line of one verb; `build(cls)` makes config `cls` from it."""

    def __init__(self, kw: dict, feeds: dict):
        self.kw, self.feeds = kw, feeds

    def __getitem__(self, name: str):
        return self.kw[name]

    def build(self, cls, **extra):
        """`cls` from every value that feeds one of its fields; an unset value (None) leaves
        the config's own default (a computed one, such as the CPU count)."""
        own = {f.name: f for f in fields(cls)}
        args = {}
        for name, targets in self.feeds.items():
            for field in (f for c, f in targets if c is cls):
                value, parse = self.kw[name], own[field].metadata.get("parse")
                if value is None and own[field].default is not None:
                    continue
                if value is not None and parse is not None:
                    value = parse(value)
                args[field] = tuple(value) if isinstance(value, list) else value
        return cls(**{**args, **extra})


def verb(name: str, *, uses: list, extra: list = ()):
    """Register `body(values)` as a command whose options are the named config fields.

    `uses`: (config class, field names or ALL[, {field: flag}]) in option order; `extra`:
    (name, type, typer.Argument / typer.Option) for a verb's own file parameters."""
    def deco(body):
        params, feeds = {}, {}
        for entry in uses:
            cls, names, renamed = (*entry, {})[:3]
            types = typing.get_type_hints(cls)
            for f in fields(cls):
                m = f.metadata
                listed = names is ALL and (m.get("flag") or m.get("argument")) or names is not ALL and f.name in names
                if not listed:
                    continue
                pname, param = _param(f, types[f.name], renamed.get(f.name))
                params.setdefault(pname, param)
                feeds.setdefault(pname, []).append((cls, f.name))
        for pname, annotation, info in extra:
            params[pname] = inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)
            feeds.setdefault(pname, [])
        # typer reads the signature: arguments first, then what a user types most, then the rest as declared
        ordered = sorted(params.values(), key=lambda p: (not isinstance(p.default, typer.models.ArgumentInfo),
                                                         PRIMARY.index(p.name) if p.name in PRIMARY else len(PRIMARY)))

        def command(**kw):
            body(Values(kw, feeds))

        command.__signature__ = inspect.Signature(ordered)
        command.__annotations__ = {p.name: p.annotation for p in ordered}
        command.__doc__ = body.__doc__
        command.__name__ = body.__name__
        app.command(name)(command)
        return body
    return deco


def _warn(line: str) -> None:
    typer.secho(line, fg="yellow", err=True)


def _echo_skipped(lines: list[str], most: int) -> None:
    for line in lines[:most]:
        typer.secho(f"skipped: {line}", fg="yellow", err=True)
    if len(lines) > most:
        typer.secho(f"skipped: ... and {len(lines) - most} more", fg="yellow", err=True)


RAY = (C.RayConfig, ALL)
IN_JSONL = "Records written by `dasd-local generate`."


# ---- the verbs -------------------------------------------------------------------------


@verb("generate", uses=[(C.RunConfig, ALL), (C.DecodeConfig, ALL), RAY])
def _generate(v: Values) -> None:
    """Decode every problem with the base and reference views; write training records.

    Columns each task reads (others pass through to the records): math: unique_id (id), problem
    (question), solution (reference solution), answer; code: task_id (id), text (question), code
    (reference solution), test_list; mcq: id (id), question, answerKey (reference), choices."""
    from .generate import generate as run_generate

    m = run_generate(v.build(C.RunConfig), v.build(C.DecodeConfig), warn=_warn, ray=v.build(C.RayConfig))
    c, st = m["counts"], m["stats"]
    typer.echo(f"wrote {m['out']}: {c['done']} records ({c['ran_now']} now, {c['failed']} failed, "
               f"{c['skipped_rows']} rows skipped); {st['emitted']} tokens at {st['emitted_per_s']} tok/s")
    if st["drafted"]:
        typer.echo(f"speculation: {st['accepted']}/{st['drafted']} drafted tokens accepted; "
                   f"{st['rows_per_call']} rows per decode call")
    if st["category_shares"]:
        typer.echo("categories: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in st["category_shares"].items()))
    _echo_skipped(m["failed_now"], 5)  # skipped rows were shown before decoding


@verb("view", uses=[(C.ViewConfig, ALL)])
def _view(v: Values) -> None:
    """Show responses with every token coloured by how DASD chose it (terminal, or --html)."""
    from .view import view as run_view

    totals = run_view(v.build(C.ViewConfig))
    if totals is not None:
        typer.echo(f"wrote {v['html']}: {totals['problems']} problems, {totals['tokens']} tokens")


@app.command("models")
def _models() -> None:
    """List the model registry."""
    from rich.console import Console

    from .models import registry_table

    Console().print(registry_table())


@verb("export", uses=[(C.ExportConfig, ALL)])
def _export(v: Values) -> None:
    """Kept records to a datasets dataset, parquet, TRL JSONL or ShareGPT, with a dataset card."""
    import shlex

    from .export import export

    cfg = v.build(C.ExportConfig)
    argv = ["dasd-local", "export", *map(str, cfg.paths), "--format", cfg.format, "-o", str(cfg.out)]
    argv += [f"--push-to-hub={cfg.push_to_hub}"] * bool(cfg.push_to_hub) + [f"--license={cfg.license}"] * bool(cfg.license)
    s = export(v.build(C.ExportConfig, command=shlex.join(argv)))
    typer.echo(f"wrote {cfg.out} ({cfg.format}): {s['kept']} records kept, {s['dropped']} dropped; "
               + ", ".join(s["files"]) + (f"; pushed to {s['pushed']}" if s.get("pushed") else ""))


@verb("verify", uses=[(C.VerifyConfig, ALL)],
      extra=[("inp", Path, typer.Argument(..., metavar="IN.jsonl", help=IN_JSONL)),
             ("out", Path, typer.Option(..., "--out", "-o", help="Where to write the kept records (JSONL)."))])
def _verify(v: Values) -> None:
    """Mark every record correct or not (answer check / tests), write the kept ones."""
    from rich.console import Console

    from .verify import report_table, verify_file

    inp, out = v["inp"], v["out"]
    report = verify_file(inp, out, v.build(C.VerifyConfig))
    console = Console()
    console.print(report_table(report, f"verify {inp.name}"))
    n, correct, kept = report.totals()
    console.print(f"wrote {out}: {kept} of {n} records kept ({correct} correct"
                  + (f", {report.replaced} replaced by the reference" if report.replaced else "")
                  + (f", {report.duplicates} duplicates dropped" if report.duplicates else "") + ")")
    if report.sampled:
        console.print(f"problems with a correct sample: {report.solved()} of {len(report.problems)}")
    _echo_skipped(report.skipped, 10)


EVAL_SKIPS = ("reference_field", "ubatch", "kv", "kv_type")  # eval decodes the base view alone, as the engine likes


@verb("eval", uses=[(C.EvalConfig, [f.name for f in fields(C.EvalConfig) if f.name not in EVAL_SKIPS
                                     and (f.metadata.get("flag"))]),
                    (C.DecodeConfig, ["batch", "max_new_tokens"]),
                    (C.RayConfig, ALL, {"workers": "--ray-workers"})])  # --workers: the answer checks
def _eval(v: Values) -> None:
    """Greedy answers (base view) of a model (+ adapter) on a split: accuracy or pass@1."""
    from rich.console import Console

    from .evaluate import evaluate, summary_table

    decode = C.eval_decode(batch=C.parse_batch(v["batch"]), max_new_tokens=v["max_new_tokens"])
    console = Console()
    summary = evaluate(v.build(C.EvalConfig, decode=decode), console, ray=v.build(C.RayConfig))
    console.print(summary_table(summary, f"{summary['task']} {summary['metric']}: {Path(summary['model']).name}"
                                + (f" + {Path(summary['adapter']).name}" if summary.get("adapter") else "")))
    rejudged = f", {summary['rejudged']} earlier answers judged again" if summary.get("rejudged") is not None else ""
    out = Path(v["out"])
    console.print(f"wrote {out / 'predictions.jsonl'} and {out / 'summary.json'} "
                  f"({summary['ran_now']} answered now{rejudged}, {summary['n']} judged in all)")


@verb("train", uses=[(C.TrainConfig, ALL)])
def _train(v: Values) -> None:
    """LoRA-tune the model on kept records (loss on the response); write a PEFT and a llama.cpp GGUF adapter.

    Several processes: `torchrun --nproc_per_node N -m dasd_local train ...` or `accelerate launch -m dasd_local train ...`."""
    from .train import train as run_train

    m = run_train(v.build(C.TrainConfig))
    if m is None:  # another process of a torchrun / accelerate launch run: the main one reports
        return
    loss = f"loss {m['first_loss']:.4f} -> {m['final_loss']:.4f}" if m["steps"] else "no steps"
    typer.echo(f"trained {m['steps']} steps ({m['backend']}): {loss}, {m['tokens_per_s']} tok/s")
    typer.echo(f"adapter: {m['adapter_gguf']} (llama.cpp, use with --adapter) and {m['adapter']} (PEFT)")
    if m["merged_gguf"]:
        typer.echo(f"merged model: {m['merged_gguf']}")


@verb("stats", uses=[(C.StatsConfig, ALL)])
def _stats(v: Values) -> None:
    """High-PPL ratio, perplexity, token categories, pass rate and view overlap, per file and level.
    With --compare and two files: their paired difference over the common problem ids."""
    from .stats import stats as run_stats

    _echo_skipped(run_stats(v.build(C.StatsConfig))["skipped"], 10)


SCORE_SKIPS = ("choices_field", "tests_field", "adapter", "ctx", "ubatch", "kv", "kv_type")


@verb("score", uses=[(C.ScoreConfig, [f.name for f in fields(C.ScoreConfig) if f.name not in SCORE_SKIPS
                                      and f.metadata.get("flag")]), RAY],
      extra=[("inp", Path, typer.Argument(..., metavar="IN.jsonl", help="Records with a response (text or tokens), or "
                                          "dataset rows (their gold solution is scored).")),
             ("out", Path, typer.Option(..., "--out", "-o", help="Output JSONL: the records with per-token fields "
                                        "under both views."))])
def _score(v: Values) -> None:
    """Teacher-force any response under the base and reference views (the scoring pass)."""
    from .score import score_file

    m = score_file(v["inp"], v["out"], v.build(C.ScoreConfig), ray=v.build(C.RayConfig))
    c = m["counts"]
    typer.echo(f"wrote {v['out']}: {c['done']} records ({c['scored_now']} scored now, {c['failed']} failed) "
               f"in {m['seconds']} s")
    _echo_skipped(m["skipped"], 5)


# ---- the entry point ---------------------------------------------------------------------

def main() -> None:
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
    except OSError as e:
        line = os_error_line(e)
        if os.environ.get("DASD_DEBUG") or line is None:
            raise
        typer.secho(line, fg="red", err=True)
        sys.exit(1)


def os_error_line(e: OSError) -> str | None:
    """The one line for an OSError no verb turned into a DasdError: a full disk or a
    read-only directory (inside a library's own write too) says that the run keeps what it
    finished; any other one that names its file names it; the rest are bugs (None: raise)."""
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return (f"error: {e.filename or 'output'}: {e.strerror}; the run stopped and keeps what it finished: "
                "free space (or make it writable) and run the same command again")
    if e.filename:
        return f"error: {e.filename}: {e.strerror}"
    return None
