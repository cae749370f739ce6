"""The whole pipeline as one resumable run: every strategy from data to the paper's tables.

For a model and a task: the gold solutions are scored (the data of `sft` and
`mask-ppl`); `base`, `self-distill`, `hint` and `dasd` generate, verify and train; every
trained adapter and the untuned model (`origin`) are evaluated; `dasd-local stats`
measures the generated and the training data. Each stage is a `dasd-local` subprocess,
skipped when its output exists (stages that the CLI itself resumes, generation,
scoring, evaluation and training, continue where a killed run stopped). Every command
and its wall time goes to OUT/log.jsonl and OUT/commands.sh; the results go to
OUT/results.md and OUT/results.json in the shape of the paper's Table 1 (accuracy per
strategy) and Table 3 (high-PPL ratio per strategy and level).

    python scripts/reproduce.py --train-limit 300 --eval-data ../shared/data/math/math500.jsonl
    python scripts/reproduce.py --train-limit 3 --eval-limit 3 --max-new-tokens 16 \\
        --train-args "--max-steps 1 --batch-size 1 --grad-accum 1" --out runs/smoke
    python scripts/reproduce.py ... --dry-run     # print the plan, run nothing
    python scripts/reproduce.py --sample 200 --sweep tau=0.1,0.2,0.25 --sweep top_k=3,6,9 \\
        --sweep hard_mode=ref,base --out runs/sweep   # Table 2 at the data level (--sweep-train: + accuracy)
    python scripts/reproduce.py --sample 200 --per-level --forgetting   # + Fig. 6 and other tasks

Sweeps, per-level training, forgetting and the pre-flight are planned in evidence_stages.py.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # evidence_stages.py, beside this script
import evidence_stages as ev  # noqa: E402

from dasd_local.train import latest_checkpoint  # noqa: E402  (the checkpoint --resume continues from)

DATA = REPO.parent / "shared" / "data"
GENERATED = ("base", "self-distill", "hint", "dasd")  # strategies that generate their data
ON_GOLD = ("sft", "mask-ppl")  # strategies trained on the gold solutions
STRATEGIES = GENERATED + ON_GOLD
ORIGIN = "origin"  # the untuned model, evaluated as Table 1's first row


@dataclass
class Stage:
    name: str
    args: list[str]  # dasd-local arguments
    done: Path  # exists once the stage has finished
    clean: Path | None = None  # removed before running (a half-started run that cannot resume)
    always: bool = False  # cheap and derived from other outputs: rerun every time
    requires: Path | None = None  # a non-empty file without which the stage has nothing to do
    call: object = None  # a local step (split a file, check one) instead of a dasd-local command

    def command(self, python: str) -> list[str]:
        return ["(local)", self.name] if self.call else [python, "-m", "dasd_local", *self.args]


@dataclass
class Plan:
    out: Path
    stages: list[Stage] = field(default_factory=list)


def paths(out: Path, strategy: str) -> dict[str, Path]:
    data = out / "data"
    train_data = data / "gold.jsonl" if strategy in ON_GOLD else data / f"{strategy}.verified.jsonl"
    return {"generated": data / f"{strategy}.jsonl", "verified": data / f"{strategy}.verified.jsonl",
            "scored": data / f"{strategy}.scored.jsonl", "train_data": train_data,
            "run": out / "train" / strategy, "eval": out / "eval" / strategy}


def manifest_of(jsonl: Path) -> Path:
    return jsonl.with_name(jsonl.name.removesuffix(".jsonl") + ".manifest.json")


def train_stage(a, strategy: str, model: list[str]) -> Stage:
    """Fresh, or --resume when a killed run left a checkpoint; a run killed before its first
    checkpoint cannot resume and is started again."""
    p = paths(a.out, strategy)
    run = p["run"]
    args = ["train", str(p["train_data"]), "-o", str(run), *model, *shlex.split(a.train_args)]
    if strategy == "mask-ppl":
        args += ["--mask-ppl", str(a.threshold)]
    started = (run / "config.json").exists()
    if started and latest_checkpoint(run) is not None:
        return Stage(f"train/{strategy}", args + ["--resume"], run / "manifest.json", requires=p["train_data"])
    return Stage(f"train/{strategy}", args, run / "manifest.json", clean=run if started else None,
                 requires=p["train_data"])


def selection(a) -> list[str]:
    """Which training problems: a seeded random sample, else the first N."""
    if a.sample:
        return ["--sample", str(a.sample), "--seed", str(a.seed)]
    return ["--limit", str(a.train_limit)] if a.train_limit else []


def answer_format(a) -> list[str]:
    """The answer format of both views, verification (read from the records) and evaluation."""
    return ["--answer-format", a.answer_format] if a.answer_format else []


def eval_stage(a, name: str, model: list[str], adapter: Path | None, out: Path | None = None) -> Stage:
    out = out or paths(a.out, name)["eval"]
    args = ["eval", "--data", str(a.eval_data), "--task", a.task, *answer_format(a), "-o", str(out), *model,
            "--max-new-tokens", str(a.eval_max_new_tokens or a.max_new_tokens), "--batch", str(a.batch)]
    args += ["--limit", str(a.eval_limit)] if a.eval_limit else []
    args += ["--adapter", str(adapter)] if adapter else []
    return Stage(f"eval/{name}", args, out / "summary.json", requires=adapter)


def data_stages(a, model: list[str]) -> list[Stage]:
    """Gold scoring, then generate -> verify (-> score, for the overlap metrics) per strategy."""
    limit = selection(a)
    gold = a.out / "data" / "gold.jsonl"
    stages = []
    if set(a.strategies) & set(ON_GOLD) or a.overlap or a.preflight:
        stages.append(Stage("score/gold", ["score", str(a.train_data), "--task", a.task, *answer_format(a), "-o", str(gold),
                                              *model, *limit],
                            manifest_of(gold)))
        stages += [ev.preflight_stage(a, sys.modules[__name__])] if a.preflight else []
    for s in (s for s in a.strategies if s in GENERATED):
        p = paths(a.out, s)
        stages.append(Stage(f"generate/{s}", ["generate", "--data", str(a.train_data), "--task", a.task, *answer_format(a),
                                              "--strategy", s, "-o", str(p["generated"]), *model, *limit, "--max-new-tokens",
                                              str(a.max_new_tokens), "--batch", str(a.batch)], manifest_of(p["generated"])))
        stages.append(Stage(f"verify/{s}", ["verify", str(p["generated"]), "--task", a.task, "-o", str(p["verified"]),
                                            *shlex.split(a.verify_args)], p["verified"]))
        if a.overlap:
            stages.append(Stage(f"score/{s}", ["score", str(p["generated"]), "--task", a.task, *answer_format(a), "-o", str(p["scored"]),
                                               *model], manifest_of(p["scored"])))
    return stages


def stats_stages(a) -> list[Stage]:
    """Generated data (with the scoring pass's top-k lists when --overlap) and training data."""
    gen = [paths(a.out, s)["scored" if a.overlap else "generated"] for s in a.strategies if s in GENERATED]
    if a.overlap or a.preflight or set(a.strategies) & set(ON_GOLD):  # the gold solutions were scored
        gen.append(a.out / "data" / "gold.jsonl")
    train = list(dict.fromkeys(paths(a.out, s)["train_data"] for s in a.strategies))  # sft, mask-ppl: one file
    stages = []
    for name, files in (("generated", gen), ("training", train)):  # one empty file (nothing verified): no data
        if files:
            out = a.out / "stats" / name
            stages.append(Stage(f"stats/{name}", ["stats", *map(str, files), "--threshold", str(a.threshold),
                                                  "--json", str(out.with_suffix(".json")), "--plots", str(out),
                                                  "--compare", "--segments", "--seed", str(a.seed)], out.with_suffix(".json"),
                                  always=True, requires=files[0] if len(files) == 1 else None))
    return stages


def plan(a) -> Plan:
    # the options of every stage that runs the model
    model = (["--model", a.model] if a.model else []) + (["--threads", str(a.threads)] if a.threads else [])
    rp = sys.modules[__name__]
    if a.sweeps:  # Table 2 alone: DASD variants (and the untuned model when they are trained)
        origin = [eval_stage(a, ORIGIN, model, None)] if a.sweep_train and not a.skip_origin else []
        return Plan(a.out, ev.sweep_stages(a, rp, model) + origin)
    stages = data_stages(a, model)
    if a.data_only:  # Table 3 and the categories need no training
        return Plan(a.out, stages + stats_stages(a))
    stages += [train_stage(a, s, model) for s in a.strategies]
    if not a.skip_origin:
        stages.append(eval_stage(a, ORIGIN, model, None))
    stages += [eval_stage(a, s, model, paths(a.out, s)["run"] / "adapter.gguf") for s in a.strategies]
    if a.per_level and "dasd" in a.strategies:
        stages += ev.level_stages(a, rp, model)
    if a.forgetting:
        adapters = {ORIGIN: None, **{s: paths(a.out, s)["run"] / "adapter.gguf" for s in a.strategies}}
        stages += ev.forget_stages(a, rp, model, adapters)
    return Plan(a.out, stages + stats_stages(a))


# ---- running ------------------------------------------------------------------------------

def log_line(out: Path, row: dict) -> None:
    with (out / "log.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def run_stage(stage: Stage, out: Path, python: str) -> dict:
    """Run one stage (or skip it); returns its log row."""
    cmd = stage.command(python)
    row = {"stage": stage.name, "cmd": shlex.join(cmd), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if stage.done.exists() and not stage.always:
        return {**row, "status": "skipped", "seconds": 0.0}
    if stage.requires is not None and not has_data(stage.requires):
        return {**row, "status": "no data", "seconds": 0.0, "why": f"{stage.requires} is missing or empty"}
    if stage.clean is not None and stage.clean.exists():
        shutil.rmtree(stage.clean)
    if stage.call is not None:
        t = time.time()
        stage.call()
        return {**row, "status": "ok", "seconds": round(time.time() - t, 1)}
    with (out / "commands.sh").open("a", encoding="utf-8") as f:
        f.write(row["cmd"] + "\n")
    t = time.time()
    rc = subprocess.run(cmd, cwd=REPO).returncode
    return {**row, "status": "ok" if rc == 0 else "failed", "rc": rc, "seconds": round(time.time() - t, 1)}


def execute(p: Plan, python: str) -> list[dict]:
    """Run the stages in order; stop at the first failure (a rerun resumes there)."""
    p.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for stage in p.stages:
        print(f"== {stage.name}", flush=True)
        row = run_stage(stage, p.out, python)
        log_line(p.out, row)
        rows.append(row)
        print(f"== {stage.name}: {row['status']} ({row['seconds']} s){' ' + row['why'] if 'why' in row else ''}", flush=True)
        if row["status"] == "failed":
            break
    return rows


# ---- results ------------------------------------------------------------------------------

def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def count_lines(path: Path) -> int | None:
    return sum(1 for line in path.open(encoding="utf-8") if line.strip()) if path.exists() else None


def count_replacements(path: Path) -> int | None:
    """Verified records whose failed rewrite was replaced by the gold solution (--on-fail keep-reference)."""
    if not path.exists():
        return None
    return sum(1 for r in records(path) if r.get("response_source") == "reference")


def has_data(path: Path) -> bool:
    """A JSONL file with a record, or any other non-empty file (an adapter)."""
    if path.suffix == ".jsonl":
        return bool(count_lines(path))
    return path.is_file() and path.stat().st_size > 0


def stage_seconds(out: Path) -> dict[str, dict]:
    """Wall time per stage summed over every attempt in the log (a resumed stage ran twice)."""
    totals: dict[str, dict] = {}
    log = out / "log.jsonl"
    for line in (log.read_text().splitlines() if log.exists() else []):
        row = json.loads(line)
        t = totals.setdefault(row["stage"], {"seconds": 0.0, "runs": 0, "status": row["status"]})
        if row["status"] == "skipped":
            continue  # done in an earlier attempt: keep that attempt's status
        t["status"] = row["status"]
        if row["status"] in ("ok", "failed"):
            t["seconds"] += row["seconds"]
            t["runs"] += 1
    return totals


def _levels(summaries: list[dict | None], key: str) -> list[str]:
    found = {lv for s in summaries if s for lv in s.get(key, {})}
    return sorted(found, key=lambda lv: (not lv.isdigit(), int(lv) if lv.isdigit() else 0, lv))


def records(path: Path) -> list[dict]:
    """The records of a JSONL file (none when it does not exist yet)."""
    from dasd_local.store.records import read_jsonl

    return read_jsonl(path)[0] if path.exists() else []


def passed_at(predictions: Path) -> dict[str, bool]:
    """Problem id -> passed, from an evaluation's predictions.jsonl (empty before it ran)."""
    return {str(r["id"]): bool(r.get("correct")) for r in records(predictions)}


def verdicts(a, names: list[str]) -> dict[str, dict[str, bool]]:
    """Each row's passed-by-id, read once for every table that needs it."""
    return {name: passed_at(a.out / "eval" / name / "predictions.jsonl") for name in names}


def interval(passed: dict[str, bool], seed: int) -> dict | None:
    """pass@1 with its 95% bootstrap interval over problems."""
    from dasd_local.analysis.intervals import ratio_ci

    if not passed:
        return None
    ci = ratio_ci([float(v) for v in passed.values()], [1.0] * len(passed), seed=seed)
    return {"lo": ci["lo"], "hi": ci["hi"]}


def paired(a_passed: dict[str, bool], b_passed: dict[str, bool], seed: int) -> dict | None:
    """pass@1(b) - pass@1(a) over the problems both were judged on, with a 95% paired
    bootstrap interval (the problems resampled jointly) and the per-problem disagreements."""
    from dasd_local.analysis.intervals import paired_diff

    ids = [i for i in a_passed if i in b_passed]
    if not ids:
        return None
    x, y = [float(a_passed[i]) for i in ids], [float(b_passed[i]) for i in ids]
    d = paired_diff(x, [1.0] * len(ids), y, [1.0] * len(ids), seed=seed)
    return {"diff": d["diff"], "lo": d["lo"], "hi": d["hi"], "n": len(ids),
            "only_b": sum(1 for u, v in zip(x, y) if v and not u), "only_a": sum(1 for u, v in zip(x, y) if u and not v)}


def table1(a, passed: dict[str, dict[str, bool]]) -> dict:
    """Accuracy of the untuned model and of every strategy's adapter, overall and by level,
    with intervals: each row's own, and its paired difference to the untuned model."""
    origin = passed.get(ORIGIN, {})
    rows = {}
    for name in passed:
        summary = read_json(a.out / "eval" / name / "summary.json")
        p = paths(a.out, name)
        data = None if name == ORIGIN else count_lines(p["train_data"])
        made = count_lines(p["generated"]) if name in GENERATED else None
        gold = count_replacements(p["train_data"]) if made is not None else None
        row = passed[name] if summary else {}
        rows[name] = {"train_records": data, "generated": made, "gold_replacements": gold,
                      "accuracy": summary and summary.get("score"), "n": summary and summary.get("n"),
                      "by_level": {lv: c["score"] for lv, c in (summary or {}).get("by_level", {}).items()},
                      "ci": interval(row, a.seed),
                      "vs_origin": paired(origin, row, a.seed) if name != ORIGIN and row else None}
    return rows


def comparisons(a, passed: dict[str, dict[str, bool]]) -> dict:
    """DASD against self-distillation, paired over the evaluation problems (Table 1's question)."""
    pairs = [("self-distill", "dasd")] if {"self-distill", "dasd"} <= set(passed) else []
    found = {f"{y} - {x}": paired(passed[x], passed[y], a.seed) for x, y in pairs}
    return {k: v for k, v in found.items() if v}


def stats_path(a, name: str, which: str) -> Path:
    """The file `stats/<which>` measured for a strategy (`gold`: the scored gold solutions)."""
    if name == "gold":
        return a.out / "data" / "gold.jsonl"
    p = paths(a.out, name)
    if which == "training":
        return p["train_data"]
    return p["scored"] if a.overlap else p["generated"]


def table3(a, which: str) -> dict:
    """High-PPL ratio per strategy and level, from `dasd-local stats --json`."""
    stats = read_json(a.out / "stats" / f"{which}.json") or {"files": []}
    by_path = {Path(f["path"]).resolve(): f for f in stats["files"]}
    names = list(a.strategies) if which == "training" else [s for s in a.strategies if s in GENERATED] + ["gold"]
    rows = {}
    for name in names:
        f = by_path.get(stats_path(a, name, which).resolve())
        if f is not None:
            rows[name] = {"all": f["all"]["high_ppl_ratio"], "tokens": f["all"]["tokens"],
                          "by_level": {lv: c["high_ppl_ratio"] for lv, c in f["by_level"].items()}}
    return rows


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def span(ci: dict | None) -> str:
    return "-" if not ci or ci["lo"] is None else f"[{pct(ci['lo'])}, {pct(ci['hi'])}]"


def diff(d: dict | None) -> str:
    if not d or d["diff"] is None:
        return "-"
    return f"{100 * d['diff']:+.2f} points [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}] ({d['only_b']} / {d['only_a']})"


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def markdown(a, results: dict) -> str:
    t1, times = results["table1"], results["stages"]
    levels = _levels(list(t1.values()), "by_level")
    rows1 = []
    for name, r in t1.items():
        data = "-" if r["train_records"] is None else str(r["train_records"]) + (
            f" of {r['generated']} generated (yield {pct(r['train_records'] / r['generated'])})"
            if r["generated"] else " gold")
        if r.get("gold_replacements"):
            data += f" ({r['train_records'] - r['gold_replacements']} own, {r['gold_replacements']} gold replacements)"
        rows1.append([name, data, pct(r["accuracy"]) + (f" (n={r['n']})" if r["n"] else ""), span(r.get("ci")),
                      diff(r.get("vs_origin")), *(pct(r["by_level"].get(lv)) for lv in levels)])
    out = [f"# Results: task {a.task}, model {a.model or 'embedded default'}\n",
           f"Training data: {a.train_data} ({selected(a)}); evaluation: {a.eval_data} "
           f"(first {a.eval_limit or 'all'}); max_new_tokens {a.max_new_tokens}; train args `{a.train_args}`.\n",
           "## Table 1: accuracy\n",
           md_table(["strategy", "training records", "accuracy", "95% interval", "vs origin (paired 95% interval; "
                     "problems only it / only origin solves)", *(f"L{lv}" for lv in levels)], rows1)]
    for name, d in results.get("comparisons", {}).items():
        out.append(f"{name}: {diff(d)} over {d['n']} problems.\n")
    for which, title in (("training", "training data (verified; the gold solutions for sft and mask-ppl)"),
                         ("generated", "all generated data, before verification, and the gold solutions")):
        t3 = results["table3"][which]
        lv3 = _levels(list(t3.values()), "by_level")
        rows = [[name, str(r["tokens"]), pct(r["all"]), *(pct(r["by_level"].get(lv)) for lv in lv3)] for name, r in t3.items()]
        out += [f"## Table 3: high-PPL token ratio (PPL > {a.threshold:g} under the base view), {title}\n",
                md_table(["strategy", "tokens", "all", *(f"L{lv}" for lv in lv3)], rows)]
    if "keep-reference" in a.verify_args:
        out.append("Records whose rewrite failed and was replaced by the gold solution carry no per-token data, "
                   "so the training-data rows count only kept rewrites; `dasd-local score` on a verified file "
                   "measures the replacements too.\n")
    if "mask-ppl" in a.strategies:
        out.append("mask-ppl trains on the gold solutions with the high-PPL tokens' labels masked: its loss sees none of them.\n")
    rp = sys.modules[__name__]
    if a.per_level and "dasd" in a.strategies:
        out.append(ev.levels_markdown(a, rp))
    if a.forgetting:
        out.append(ev.forget_markdown(a, rp, [ORIGIN, *a.strategies]))
    if results.get("preflight"):
        f = results["preflight"]
        out.append(f"Pre-flight: in {f['below_tau']} of {f['with_marker']} gold solutions the base view gives the answer "
                   f"format's opening ({f['marker']!r}) p_base < tau = {f['tau']}" + (" (WARNING)" if f["warn"] else "") + ".\n")
    out += ["## Stage times\n", md_table(["stage", "status", "runs", "seconds"],
                                         [[k, v["status"], str(v["runs"]), f"{v['seconds']:.1f}"] for k, v in times.items()])]
    out.append("Exact commands: `commands.sh`; per attempt: `log.jsonl`.\n")
    return "\n".join(out)


def selected(a) -> str:
    return f"a random {a.sample}, seed {a.seed}" if a.sample else f"first {a.train_limit or 'all'}"


def write_results(a) -> dict:
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items() if k != "forget"}
    if a.sweeps:
        rows = ev.sweep_rows(a, sys.modules[__name__])
        results = {"config": config, "table2": rows, "stages": stage_seconds(a.out)}
        (a.out / "sweep.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        (a.out / "sweep.md").write_text(f"# Sweep: task {a.task}, model {a.model or 'embedded default'}, "
                                        f"{a.train_data} ({selected(a)})\n\n" + ev.sweep_markdown(a, sys.modules[__name__], rows),
                                        encoding="utf-8")
        return results
    passed = verdicts(a, ([] if a.skip_origin else [ORIGIN]) + list(a.strategies))
    results = {"config": config, "table1": table1(a, passed), "comparisons": comparisons(a, passed), "table3": {w: table3(a, w) for w in ("training", "generated")},
               "preflight": read_json(a.out / "preflight.json"), "stages": stage_seconds(a.out)}
    (a.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (a.out / "results.md").write_text(markdown(a, results), encoding="utf-8")
    return results


# ---- publishing -----------------------------------------------------------------------------

PUBLISHED_VERSIONS = ("llama-cpp-python", "torch", "transformers", "peft", "trl", "accelerate", "numpy")


def _gz_jsonl(path: Path, rows) -> None:
    """Write rows as gzipped JSONL with a fixed mtime (the same rows give the same bytes)."""
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        for row in rows:
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode())


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in PUBLISHED_VERSIONS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    found["dasd-local commit"] = head.stdout.strip() or None
    found["python"] = sys.version.split()[0]
    return found


def publish(a, dest: Path) -> None:
    """Copy what a reader needs to re-check every number into `dest` (for git): the tables,
    the commands and their times, the versions, per row the evaluation predictions (id,
    response, verdict) and the kept training records as text (id, prompt, response). No
    weights, no per-step arrays."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("results.md", "results.json", "commands.sh", "log.jsonl"):
        if (a.out / name).exists():
            shutil.copyfile(a.out / name, dest / name)
    for name in ("generated.json", "training.json"):
        if (a.out / "stats" / name).exists():
            (dest / "stats").mkdir(exist_ok=True)
            shutil.copyfile(a.out / "stats" / name, dest / "stats" / name)
    (dest / "versions.json").write_text(json.dumps(versions(), indent=2) + "\n", encoding="utf-8")
    keep = ("id", "prediction", "extracted", "correct", "detail", "finish_reason", "response_tokens")
    for name in ([] if a.skip_origin else [ORIGIN]) + list(a.strategies):
        evald = a.out / "eval" / name
        if (evald / "summary.json").exists():
            _gz_jsonl(dest / "eval" / f"{name}.predictions.jsonl.gz",
                      ({k: r.get(k) for k in keep} for r in records(evald / "predictions.jsonl")))
            shutil.copyfile(evald / "summary.json", dest / "eval" / f"{name}.summary.json")
        if name == ORIGIN:
            continue
        train_data = paths(a.out, name)["train_data"]
        if train_data.exists():
            _gz_jsonl(dest / "data" / f"{name}.kept.jsonl.gz",
                      ({"id": r["id"], "prompt": r.get("base_prompt") or r.get("question"), "response": r.get("response")}
                       for r in records(train_data)))
    print(f"published {dest}")


def parse(argv: list[str] | None = None):
    from dasd_local.config import HIGH_PPL

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="registry name or GGUF path (default: the embedded model)")
    ap.add_argument("--task", default="math")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads per stage (0: all cores)")
    ap.add_argument("--train-data", type=Path, default=DATA / "math" / "train.jsonl")
    ap.add_argument("--eval-data", type=Path, default=DATA / "math" / "math500.jsonl")
    ap.add_argument("--train-limit", type=int, default=300, help="first N training problems (0: all)")
    ap.add_argument("--eval-limit", type=int, default=0, help="first N evaluation problems (0: all)")
    ap.add_argument("--sample", type=int, default=0, help="a random sample of N training problems (overrides --train-limit)")
    ap.add_argument("--seed", type=int, default=0, help="seed of --sample and of the bootstrap intervals")
    ap.add_argument("--max-new-tokens", type=int, default=512, help="at least 512: shorter responses stop before the answer")
    ap.add_argument("--eval-max-new-tokens", type=int, default=0, help="0: as --max-new-tokens")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threshold", type=float, default=HIGH_PPL, help="high-PPL threshold (stats and mask-ppl)")
    ap.add_argument("--train-args", default="", help="extra `dasd-local train` options, e.g. '--epochs 1'")
    ap.add_argument("--verify-args", default="--on-fail drop", help="extra `dasd-local verify` options, e.g. '--on-fail keep-reference'")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help=f"comma-separated subset of {','.join(STRATEGIES)}")
    ap.add_argument("--overlap", action="store_true", help="score generated data for the view-overlap metrics")
    ap.add_argument("--skip-origin", action="store_true", help="do not evaluate the untuned model")
    ap.add_argument("--sweep", action="append", default=[], metavar="AXIS=V1,V2",
                    help="Table 2: vary tau, top_k or hard_mode around the defaults (repeatable); runs the sweep alone")
    ap.add_argument("--data-only", action="store_true", help="generate, verify and measure; no training or evaluation")
    ap.add_argument("--sweep-train", action="store_true", help="also train and evaluate every sweep variant")
    ap.add_argument("--per-level", action="store_true", help="Fig. 6: train and evaluate on one level at a time (dasd)")
    ap.add_argument("--levels", default="1,2,3,4,5", help="levels for --per-level")
    ap.add_argument("--level-field", default="level", help="record field holding the level")
    ap.add_argument("--forgetting", action="store_true", help="evaluate the untuned model and every adapter on other tasks")
    ap.add_argument("--forget-tasks", default="mcq,code", help="tasks for --forgetting (mcq: ARC-Challenge, code: MBPP test)")
    ap.add_argument("--forget-sample", type=int, default=200, help="random problems per forgetting task (0: all)")
    ap.add_argument("--forget-max-new-tokens", type=int, default=512)
    ap.add_argument("--preflight", action="store_true", help="score the gold solutions and warn when the base view "
                    "gives the answer format's opening tokens p_base < tau")
    ap.add_argument("--answer-format", help="answers asked for and read back as (math: boxed | answer-is), "
                    "alike in generation, scoring, verification and evaluation (default: the task's)")
    ap.add_argument("--answer-marker", help="the answer format's opening text, for --preflight "
                    "(default: the format's own, e.g. '\\boxed{' or 'answer is')")
    ap.add_argument("--tau", type=float, default=0.2, help="tau the pre-flight checks against")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "reproduce")
    ap.add_argument("--python", default=sys.executable, help="interpreter with dasd-local installed")
    ap.add_argument("--dry-run", action="store_true", help="print the plan (run / skip per stage), run nothing")
    ap.add_argument("--only", default="", help="comma-separated stage names or prefixes to run now, in plan order "
                    "(e.g. 'eval/origin' or 'score/gold,train/sft'); the tables are written as always")
    ap.add_argument("--publish", type=Path, help="after the run, copy the tables, commands, versions, predictions and "
                    "kept training records (text, no weights) into this directory, e.g. results/<name>")
    a = ap.parse_args(argv)
    a.strategies = [s.strip() for s in a.strategies.split(",") if s.strip()]
    unknown = [s for s in a.strategies if s not in STRATEGIES]
    if unknown or not a.strategies:
        ap.error(f"--strategies: unknown {unknown}; expected a subset of {','.join(STRATEGIES)}")
    a.out = a.out.resolve()
    a.sweeps = ev.parse_sweeps(a.sweep)
    a.levels = [x.strip() for x in a.levels.split(",") if x.strip()]
    a.forget = {t: ev.FORGET[t] for t in a.forget_tasks.split(",") if t in ev.FORGET}
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    p = plan(a)
    if a.only:
        wanted = [w.strip() for w in a.only.split(",") if w.strip()]
        p.stages = [s for s in p.stages if any(s.name == w or s.name.startswith(w.rstrip("/") + "/") for w in wanted)]
    if a.dry_run:
        for stage in p.stages:
            state = "rerun" if stage.always else "skip" if stage.done.exists() else "run"
            print(f"{state:5} {stage.name:22} {shlex.join(stage.command(a.python))}")
        return 0
    rows = execute(p, a.python)
    write_results(a)
    if a.publish and not a.sweeps:
        publish(a, a.publish.resolve())
    name = "sweep" if a.sweeps else "results"
    print(f"wrote {a.out / (name + '.md')} and {a.out / (name + '.json')}")
    return 1 if rows and rows[-1]["status"] == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
