"""reproduce.py's evidence beyond one configuration: Table 2's sweeps, Fig. 6's per-level
training, forgetting on other tasks, and the small-model pre-flight; stages and tables.

Imported by reproduce.py, which passes its Stage class and helpers in (`rp`), so this
file holds plans and tables only; every stage is still one `dasd-local` command (or a
small local step that splits or checks files), skipped once its output exists.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

AXES = {"tau": ("--tau", 0.2, float), "top_k": ("--top-k", 6, int), "hard_mode": ("--hard-mode", "ref", str)}
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FORGET = {"mcq": DATA / "arc_challenge" / "test.jsonl", "code": DATA / "mbpp" / "test.jsonl"}


def parse_sweeps(items: list[str]) -> dict[str, list]:
    """['tau=0.1,0.2', 'top_k=3,6'] -> {'tau': [0.1, 0.2], 'top_k': [3, 6]} (values typed)."""
    out = {}
    for item in items:
        axis, _, values = item.partition("=")
        if axis not in AXES or not values:
            raise SystemExit(f"--sweep {item!r}: expected AXIS=V1,V2 with AXIS one of {', '.join(AXES)}")
        out[axis] = [AXES[axis][2](v) for v in values.split(",") if v.strip()]
    return out


def variants(sweeps: dict[str, list]) -> list[tuple[str, dict]]:
    """The default configuration, then each axis varied alone around it (as Table 2):
    (name, {axis: value}) with the default variant named 'default'."""
    out = [("default", {})]
    for axis, values in sweeps.items():
        out += [(f"{axis}={v}", {axis: v}) for v in values if v != AXES[axis][1]]
    return out


def variant_dir(a, name: str) -> Path:
    return a.out / "sweep" / name.replace("=", "-")


def sweep_stages(a, rp, model: list[str]) -> list:
    """Per variant: generate (DASD) -> verify -> stats, and with --sweep-train train -> eval."""
    stages = []
    for name, change in variants(a.sweeps):
        d = variant_dir(a, name)
        gen, ver = d / "dasd.jsonl", d / "dasd.verified.jsonl"
        flags = [x for axis, v in change.items() for x in (AXES[axis][0], str(v))]
        stages += [
            rp.Stage(f"sweep/{name}/generate", ["generate", "--data", str(a.train_data), "--task", a.task, "--strategy",
                                                "dasd", *rp.answer_format(a), "-o", str(gen), *model, *rp.selection(a), "--max-new-tokens",
                                                str(a.max_new_tokens), "--batch", str(a.batch), *flags], rp.manifest_of(gen)),
            rp.Stage(f"sweep/{name}/verify", ["verify", str(gen), "--task", a.task, "-o", str(ver),
                                              *shlex.split(a.verify_args)], ver),
            rp.Stage(f"sweep/{name}/stats", ["stats", str(gen), "--threshold", str(a.threshold), "--json",
                                             str(d / "stats.json"), "--seed", str(a.seed)], d / "stats.json"),
        ]
        if a.sweep_train:
            stages += [train_on(a, rp, f"sweep/{name}", ver, d / "train", model),
                       rp.eval_stage(a, f"sweep/{name}", model, d / "train" / "adapter.gguf", d / "eval")]
    return stages


def train_on(a, rp, name: str, data: Path, run: Path, model: list[str]):
    """A training stage on any records file (resumes from a checkpoint, like reproduce's)."""
    args = ["train", str(data), "-o", str(run), *model, *shlex.split(a.train_args)]
    started = (run / "config.json").exists()
    if started and any((run / "checkpoints").glob("step-*")):
        return rp.Stage(f"{name}/train", args + ["--resume"], run / "manifest.json", requires=data)
    return rp.Stage(f"{name}/train", args, run / "manifest.json", clean=run if started else None, requires=data)


# ---- Fig. 6: one level at a time ----------------------------------------------------------

def split_levels(src: Path, out_dir: Path, levels: list[str], field: str = "level") -> None:
    """Write src's records of each level to out_dir/L<level>.jsonl (a local stage)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in src.open(encoding="utf-8") if line.strip()] if src.exists() else []
    for lv in levels:
        keep = [r for r in rows if str(r.get(field)).removeprefix("Level ").strip() == lv]
        tmp = out_dir / f"L{lv}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
        tmp.replace(out_dir / f"L{lv}.jsonl")


def level_stages(a, rp, model: list[str]) -> list:
    """Fig. 6: the verified DASD records split by level, one adapter per level, each evaluated."""
    src = rp.paths(a.out, "dasd")["verified"]
    root = a.out / "levels"
    stages = [rp.Stage("levels/split", [], root / "split.done", call=lambda: _split_done(src, root, a))]
    for lv in a.levels:
        run = root / f"L{lv}" / "train"
        stages += [train_on(a, rp, f"levels/L{lv}", root / f"L{lv}.jsonl", run, model),
                   rp.eval_stage(a, f"levels/L{lv}", model, run / "adapter.gguf", root / f"L{lv}" / "eval")]
    return stages


def _split_done(src: Path, root: Path, a) -> None:
    split_levels(src, root, a.levels, a.level_field)
    (root / "split.done").write_text("")


# ---- forgetting: every adapter on the other tasks ------------------------------------------

def forget_stages(a, rp, model: list[str], adapters: dict[str, Path | None]) -> list:
    stages = []
    for task, data in a.forget.items():
        for name, adapter in adapters.items():
            out = a.out / "forget" / task / name
            args = ["eval", "--data", str(data), "--task", task, "-o", str(out), *model, "--max-new-tokens",
                    str(a.forget_max_new_tokens), "--batch", str(a.batch)]
            args += ["--sample", str(a.forget_sample), "--seed", str(a.seed)] if a.forget_sample else []
            args += ["--adapter", str(adapter)] if adapter else []
            stages.append(rp.Stage(f"forget/{task}/{name}", args, out / "summary.json", requires=adapter))
    return stages


# ---- the pre-flight -------------------------------------------------------------------------

def preflight_stage(a, rp):
    gold, out = a.out / "data" / "gold.jsonl", a.out / "preflight.json"
    return rp.Stage("preflight", [], out, call=lambda: run_preflight(gold, out, a), requires=gold)


def run_preflight(gold: Path, out: Path, a) -> None:
    from dasd_local.analysis.preflight import preflight
    from dasd_local.tasks import get_task

    marker = a.answer_marker or get_task(a.task, a.answer_format).answer_marker.decode()
    rows = [json.loads(line) for line in gold.open(encoding="utf-8") if line.strip()]
    result = preflight(rows, marker, a.tau)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if result["warn"]:
        print(f"WARNING: in {result['below_tau']} of {result['with_marker']} gold solutions the base view gives the "
              f"answer format's opening ({marker!r}) p_base < tau = {a.tau}: DASD will rarely write the "
              "answer the verifier looks for. Use an answer format the model already writes, or a larger model.",
              flush=True)


# ---- tables ---------------------------------------------------------------------------------

def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _ci(ci: dict | None) -> str:
    if not ci or ci.get("estimate") is None:
        return "-"
    return f"{100 * ci['estimate']:.2f}% [{100 * ci['lo']:.2f}, {100 * ci['hi']:.2f}]"


def sweep_rows(a, rp) -> dict:
    """Table 2: one row per variant, from its stats JSON, verified file and evaluation."""
    rows = {}
    for name, change in variants(a.sweeps):
        d = variant_dir(a, name)
        stats = (_read(d / "stats.json") or {"files": [{}]})["files"][0]
        made, kept = rp.count_lines(d / "dasd.jsonl"), rp.count_lines(d / "dasd.verified.jsonl")
        ev = _read(d / "eval" / "summary.json")
        summary = stats.get("all", {})
        rows[name] = {"change": change, "high_ppl_ratio": summary.get("high_ppl_ratio"),
                      "high_ppl_ci": stats.get("ci", {}).get("all", {}).get("high_ppl_ratio"),
                      "category_shares": summary.get("category_shares"), "filtered_share": summary.get("filtered_share"),
                      "generated": made, "verified": kept, "verified_share": kept / made if made and kept is not None else None,
                      "accuracy": ev and ev.get("score"), "command": generate_command(a, rp, name)}
    return rows


def generate_command(a, rp, name: str) -> str | None:
    log = a.out / "log.jsonl"
    for line in (log.read_text().splitlines() if log.exists() else []):
        row = json.loads(line)
        if row["stage"] == f"sweep/{name}/generate":
            return row["cmd"]
    return None


def sweep_markdown(a, rp, rows: dict) -> str:
    pct = rp.pct
    head = ["variant", "high-PPL [95% CI]", "consistent", "reserved", "base_selected", "hard", "verified", "accuracy"]
    body = []
    for name, r in rows.items():
        c = r["category_shares"] or {}
        ver = "-" if r["verified_share"] is None else f"{r['verified']}/{r['generated']} ({pct(r['verified_share'])})"
        body.append([name, _ci(r["high_ppl_ci"]), *(pct(c.get(k)) for k in ("consistent", "reserved", "base_selected", "hard")),
                     ver, pct(r["accuracy"])])
    cmds = "\n".join(f"- {n}: `{r['command']}`" for n, r in rows.items() if r["command"])
    return ("## Table 2 shape: DASD ablations at the data level (each axis varied around tau 0.2, K 6, hard ref)\n\n"
            + rp.md_table(head, body) + ("\nGeneration commands:\n\n" + cmds + "\n" if cmds else ""))


def levels_markdown(a, rp) -> str:
    rows = []
    for lv in a.levels:
        ev = _read(a.out / "levels" / f"L{lv}" / "eval" / "summary.json")
        n = rp.count_lines(a.out / "levels" / f"L{lv}.jsonl")
        by = (ev or {}).get("by_level", {})
        rows.append([f"L{lv}", "-" if n is None else str(n), rp.pct(ev and ev.get("score")),
                     *(rp.pct(by.get(x, {}).get("score")) for x in a.levels)])
    return ("## Fig. 6 shape: training on one level at a time (verified DASD records of that level)\n\n"
            + rp.md_table(["trained on", "records", "accuracy", *(f"eval L{x}" for x in a.levels)], rows))


def forget_markdown(a, rp, names: list[str]) -> str:
    rows = []
    for name in names:
        cells = []
        for task in a.forget:
            run, origin = (a.out / "forget" / task / n for n in (name, rp.ORIGIN))
            ev = _read(run / "summary.json")
            delta = "" if name == rp.ORIGIN else _forget_delta(rp, origin / "predictions.jsonl", run / "predictions.jsonl", a.seed)
            cells.append(rp.pct(ev and ev.get("score")) + delta)
        rows.append([name, *cells])
    return ("## Forgetting: other tasks after training (paired change against the untuned model, 95% CI)\n\n"
            + rp.md_table(["adapter", *a.forget], rows))


def _forget_delta(rp, origin: Path, adapted: Path, seed: int) -> str:
    """' (+x.xx pts [lo, hi])': the adapter's accuracy minus the untuned model's over the
    problems both answered, with a bootstrap interval that resamples problems jointly."""
    d = rp.paired(rp.passed_at(origin), rp.passed_at(adapted), seed)
    if d is None:
        return ""
    return f" ({100 * d['diff']:+.2f} pts [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}], n={d['n']})"
