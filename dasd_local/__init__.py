"""dasd-local: Distribution-Aligned Self-Distillation on llama.cpp.

The verbs the CLI runs, as functions for notebooks and pipelines; each takes the same
config objects the CLI builds (dasd_local.config), and `data` may be a file path, a hub
id, a list of dicts or a `datasets.Dataset`:

    from dasd_local import generate, verify, train, evaluate, stats
    from dasd_local.config import DecodeConfig, EvalConfig, RunConfig, TrainConfig

    rows = [{"problem": "What is 2 + 3?", "solution": "2 + 3 = 5. \\\\boxed{5}", "answer": "5"}]
    records = generate(RunConfig(data=rows, out="runs/dasd.jsonl"), DecodeConfig(max_new_tokens=64))
    kept = verify("runs/dasd.jsonl", "runs/kept.jsonl")

Each is the verb module's own function (dasd_local/generate.py and so on) behind a thin
wrapper that returns what a program wants: the records, the manifest, the summary. The
modules are imported here, so `dasd_local.generate` is the function; the module is
`sys.modules["dasd_local.generate"]` and `from dasd_local.generate import ...` works as
usual. Heavy libraries (llama.cpp, torch, Ray) load only when a function runs.
"""

from __future__ import annotations

from pathlib import Path

from . import evaluate as _evaluate_verb
from . import generate as _generate_verb
from . import stats as _stats_verb
from . import train as _train_verb
from . import verify as _verify_verb

__version__ = "0.1.0"
__all__ = ["generate", "verify", "train", "evaluate", "stats"]


def generate(run=None, decode=None, *, ray=None, console=None) -> list[dict]:
    """`dasd-local generate`: decode every problem of `run` (a config.RunConfig; default: the
    demo set) under `decode` (a config.DecodeConfig; default: DASD) and return the records,
    as written to run.out (its manifest beside it). Resumable like the CLI."""
    from .config import DecodeConfig, RunConfig
    from .store.records import read_jsonl

    manifest = _generate_verb.generate(run or RunConfig(), decode or DecodeConfig(), console=console, ray=ray)
    return read_jsonl(Path(manifest["out"]))[0]


def verify(inp, out, cfg=None) -> list[dict]:
    """`dasd-local verify`: judge the records of `inp`, write the kept ones to `out` and
    return them (`cfg`: a config.VerifyConfig)."""
    from .config import VerifyConfig
    from .store.records import read_jsonl

    _verify_verb.verify_file(Path(inp), Path(out), cfg or VerifyConfig())
    return read_jsonl(Path(out))[0]


def train(cfg) -> dict | None:
    """`dasd-local train`: LoRA-tune on `cfg.data` (a config.TrainConfig); returns the run's
    manifest (adapter paths, losses), None on the other processes of a multi-process run."""
    return _train_verb.train(cfg, show_progress=False)


def evaluate(cfg, *, ray=None, console=None) -> dict:
    """`dasd-local eval`: greedy answers of cfg.model (+ adapter) on cfg.data (a
    config.EvalConfig); returns the summary (score overall, by level and subject)."""
    return _evaluate_verb.evaluate(cfg, console, ray=ray)


def stats(cfg, console=None) -> dict:
    """`dasd-local stats`: the statistics of cfg.paths (a config.StatsConfig); returns
    {"files": per-file statistics with their intervals, "paired": the --compare
    difference, "skipped": lines left out}, and prints the tables to `console`."""
    return _stats_verb.stats(cfg, console)
