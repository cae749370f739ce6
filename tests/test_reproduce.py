"""scripts/reproduce.py without models: the plan, resuming, and the results tables.

The stages run a fake `dasd_local` (a script that records its arguments and writes the
output the real command would), so the ordering, skip and resume logic are exercised
end to end in milliseconds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rp():
    spec = importlib.util.spec_from_file_location("reproduce", REPO / "scripts" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def args(rp, tmp_path, *extra):
    return rp.parse(["--out", str(tmp_path / "out"), "--train-limit", "3", "--eval-limit", "2",
                     "--max-new-tokens", "16", "--train-args", "--max-steps 1", *extra])


def names(plan):
    return [s.name for s in plan.stages]


def test_plan_covers_every_strategy_in_dependency_order(rp, tmp_path):
    a = args(rp, tmp_path)
    p = rp.plan(a)
    order = names(p)
    assert order[0] == "score/gold"
    for s in rp.GENERATED:
        assert order.index(f"generate/{s}") < order.index(f"verify/{s}") < order.index(f"train/{s}") < order.index(f"eval/{s}")
    for s in rp.STRATEGIES:
        assert f"train/{s}" in order and f"eval/{s}" in order
    assert "eval/origin" in order and order[-2:] == ["stats/generated", "stats/training"]
    stage = {s.name: s for s in p.stages}
    assert stage["train/sft"].args[1] == stage["train/mask-ppl"].args[1] == str(a.out / "data" / "gold.jsonl")
    assert stage["train/mask-ppl"].args[-2:] == ["--mask-ppl", "2.5"] and "--mask-ppl" not in stage["train/sft"].args
    assert "--max-steps" in stage["train/dasd"].args
    assert stage["eval/dasd"].args[-2:] == ["--adapter", str(a.out / "train" / "dasd" / "adapter.gguf")]
    assert "--adapter" not in stage["eval/origin"].args
    assert stage["generate/dasd"].args[stage["generate/dasd"].args.index("--limit") + 1] == "3"
    assert stage["score/gold"].args[stage["score/gold"].args.index("--limit") + 1] == "3"


def test_subset_without_gold_strategies_skips_gold_scoring(rp, tmp_path):
    p = rp.plan(args(rp, tmp_path, "--strategies", "dasd,self-distill", "--skip-origin"))
    assert names(p)[:2] == ["generate/dasd", "verify/dasd"]  # in the order asked for
    assert "score/gold" not in names(p) and "eval/origin" not in names(p)
    overlap = rp.plan(args(rp, tmp_path, "--strategies", "dasd", "--overlap"))
    assert {"score/gold", "score/dasd"} <= set(names(overlap))
    stats = {s.name: s for s in overlap.stages}["stats/generated"]
    assert str(tmp_path / "out" / "data" / "dasd.scored.jsonl") in stats.args


def test_unknown_strategy_is_rejected(rp, tmp_path):
    with pytest.raises(SystemExit):
        args(rp, tmp_path, "--strategies", "dasd,magic")


def test_train_resumes_from_a_checkpoint_and_restarts_without_one(rp, tmp_path):
    a = args(rp, tmp_path)
    run = a.out / "train" / "dasd"
    assert "--resume" not in rp.train_stage(a, "dasd", []).args
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    fresh = rp.train_stage(a, "dasd", [])
    assert "--resume" not in fresh.args and fresh.clean == run  # nothing to resume from: start again
    (run / "checkpoints" / "checkpoint-4").mkdir()  # the Trainer's layout, but not yet complete
    assert "--resume" not in rp.train_stage(a, "dasd", []).args
    (run / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    resumed = rp.train_stage(a, "dasd", [])
    assert resumed.args[-1] == "--resume" and resumed.clean is None


FAKE = r'''
import json, sys
from pathlib import Path
args = sys.argv[1:]
with open(LOG, "a") as f:
    f.write(" ".join(args) + "\n")
verb = args[0]
def opt(name):
    return args[args.index(name) + 1] if name in args else None
def write(path, lines):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(x) + "\n" for x in lines))
def manifest(path):
    Path(path).with_name(Path(path).name.removesuffix(".jsonl") + ".manifest.json").write_text("{}")
steps = [{"p_base": 0.9}, {"p_base": 0.3}]
if verb in ("generate", "score"):
    n = int(opt("--sample") or 3)
    steps = [{"p_base": 0.9, "category": "consistent"}, {"p_base": float(opt("--tau") or 0.3), "category": "hard"}]
    write(opt("-o"), [{"id": str(i), "strategy": opt("--strategy") or "gold", "level": 1 + i, "steps": steps} for i in range(n)])
    manifest(opt("-o"))
elif verb == "verify":
    if FAIL in args[1]:
        sys.exit(1)
    write(opt("-o"), [] if "base" in args[1] else [{"id": "0", "strategy": "x", "level": 1, "correct": True, "steps": steps}])
elif verb == "train":
    Path(opt("-o")).mkdir(parents=True, exist_ok=True)
    (Path(opt("-o")) / "adapter.gguf").write_bytes(b"GGUF\xa4\x00")  # binary, as a real adapter
    (Path(opt("-o")) / "manifest.json").write_text("{}")
elif verb == "eval":
    Path(opt("-o")).mkdir(parents=True, exist_ok=True)
    (Path(opt("-o")) / "summary.json").write_text(json.dumps({"score": 0.5, "n": 2, "by_level": {"1": {"score": 1.0}}}))
    solved = ["0"] if "--adapter" in args else ["1"]  # each adapter solves problem 0; the untuned model problem 1
    write(Path(opt("-o")) / "predictions.jsonl", [{"id": i, "prediction": "x", "correct": i in solved} for i in ("0", "1")])
elif verb == "stats":
    from dasd_local.config import StatsConfig
    from dasd_local.stats import stats
    files = [Path(p) for p in args[1:args.index("--threshold")]]
    stats(StatsConfig(paths=tuple(files), json_out=Path(opt("--json"))))
'''


@pytest.fixture
def fake(tmp_path):
    """A python that runs FAKE for `-m dasd_local`."""
    log = tmp_path / "calls.log"
    script = tmp_path / "fake.py"
    fail = tmp_path / "fail"
    script.write_text(f"LOG = {str(log)!r}\nFAIL = open({str(fail)!r}).read() if __import__('os').path.exists({str(fail)!r}) else '\\0'\n"
                      + FAKE)
    runner = tmp_path / "python"
    runner.write_text(f"#!/bin/sh\nshift 2\nexec {sys.executable} {script} \"$@\"\n")
    runner.chmod(0o755)
    return runner, log, fail


def test_run_resume_and_results(rp, tmp_path, fake):
    runner, log, fail = fake
    fail.write_text("dasd.jsonl")  # verify/dasd fails the first time
    argv = ["--strategies", "base,dasd,sft,mask-ppl", "--python", str(runner)]
    assert rp.main(list(map(str, args_list(tmp_path, argv)))) == 1
    first = log.read_text().splitlines()
    assert first[-1].startswith("verify ") and "dasd.jsonl" in first[-1]
    fail.unlink()
    assert rp.main(list(map(str, args_list(tmp_path, argv)))) == 0
    second = log.read_text().splitlines()[len(first):]
    verbs = [line.split()[0] for line in second]
    assert "score" not in verbs and verbs.count("generate") == 0  # done the first time: skipped
    assert verbs[0] == "verify" and verbs.count("train") == 3  # base kept nothing: no training
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    status = {r["stage"]: r["status"] for r in rows}
    assert status["train/base"] == status["eval/base"] == "no data"
    assert (out / "commands.sh").read_text().count("verify") == 3  # base, dasd (failed), dasd again
    results = json.loads((out / "results.json").read_text())
    dasd = results["table1"]["dasd"]
    assert {k: dasd[k] for k in ("train_records", "generated", "gold_replacements", "accuracy", "n", "by_level")} == {
        "train_records": 1, "generated": 3, "gold_replacements": 0, "accuracy": 0.5, "n": 2, "by_level": {"1": 1.0}}
    assert dasd["ci"]["lo"] <= 0.5 <= dasd["ci"]["hi"]
    assert dasd["vs_origin"]["diff"] == 0.0 and (dasd["vs_origin"]["only_b"], dasd["vs_origin"]["only_a"]) == (1, 1)
    assert results["table1"]["origin"]["vs_origin"] is None
    assert results["table1"]["base"]["accuracy"] is None
    assert results["table3"]["generated"]["dasd"]["all"] == 0.5  # one of two tokens has p_base < 0.4
    assert results["table3"]["training"]["sft"]["tokens"] == 6
    assert results["stages"]["verify/dasd"]["runs"] == 2
    md = (out / "results.md").read_text()
    assert "## Table 1" in md and "| dasd | 1 of 3 generated (yield 33.33%) | 50.00% (n=2) | [" in md
    assert "+0.00 points [" in md and "(1 / 1) | 100.00% |" in md
    assert "## Table 3" in md and "| sft | 6 | 50.00% |" in md


def test_table1_counts_gold_replacements(rp, tmp_path):
    path = tmp_path / "dasd.verified.jsonl"
    rows = [{"id": "a", "response_source": "generated"}, {"id": "b", "response_source": "reference"}, {"id": "c"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    assert rp.count_replacements(path) == 1 and rp.count_replacements(tmp_path / "missing.jsonl") is None


def args_list(tmp_path, extra):
    return ["--out", tmp_path / "out", "--train-limit", "3", "--eval-limit", "2", *extra]


def test_two_value_sweep_on_4_problems_writes_both_rows(rp, tmp_path, fake):
    runner, log, _ = fake
    argv = ["--out", tmp_path / "out", "--sample", "4", "--seed", "3", "--sweep", "tau=0.2,0.5", "--python", runner]
    assert rp.main(list(map(str, argv))) == 0
    calls = [line for line in log.read_text().splitlines() if line.startswith("generate")]
    assert len(calls) == 2 and all("--sample 4 --seed 3" in c for c in calls) and "--tau 0.5" in calls[1]
    out = tmp_path / "out"
    rows = json.loads((out / "sweep.json").read_text())["table2"]
    assert list(rows) == ["default", "tau=0.5"]
    assert rows["default"]["high_ppl_ratio"] == 0.5 and rows["tau=0.5"]["high_ppl_ratio"] == 0.0  # fake: p = tau
    assert rows["default"]["generated"] == 4 and rows["default"]["verified_share"] == 0.25
    assert rows["tau=0.5"]["category_shares"]["hard"] == 0.5 and "--tau 0.5" in rows["tau=0.5"]["command"]
    ci = rows["default"]["high_ppl_ci"]
    assert ci["lo"] <= 0.5 <= ci["hi"]
    md = (out / "sweep.md").read_text()
    assert "## Table 2" in md and "| default |" in md and "| tau=0.5 |" in md


def test_sweep_variants_vary_one_axis_around_the_defaults(rp):
    import evidence_stages as ev

    sweeps = ev.parse_sweeps(["tau=0.1,0.2,0.25", "top_k=3,6,9", "hard_mode=ref,base"])
    names = [n for n, _ in ev.variants(sweeps)]
    assert names == ["default", "tau=0.1", "tau=0.25", "top_k=3", "top_k=9", "hard_mode=base"]
    with pytest.raises(SystemExit):
        ev.parse_sweeps(["temperature=1"])


def test_levels_split_and_forgetting_stages(rp, tmp_path):
    import evidence_stages as ev

    src = tmp_path / "v.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "level": lv}) + "\n" for i, lv in enumerate([1, 2, "Level 2", 5])))
    ev.split_levels(src, tmp_path / "lv", ["1", "2", "3"])
    assert [rp.count_lines(tmp_path / "lv" / f"L{x}.jsonl") for x in "123"] == [1, 2, 0]
    p = rp.plan(args(rp, tmp_path, "--strategies", "dasd", "--per-level", "--forgetting", "--preflight"))
    order = names(p)
    assert order.index("verify/dasd") < order.index("levels/split") < order.index("levels/L5/train")
    assert {"forget/mcq/origin", "forget/mcq/dasd", "forget/code/dasd", "preflight"} <= set(order)
    data_only = names(rp.plan(args(rp, tmp_path, "--strategies", "dasd,hint", "--data-only")))
    assert not any(n.startswith(("train/", "eval/")) for n in data_only) and "stats/generated" in data_only
    a = args(rp, tmp_path, "--strategies", "dasd", "--data-only")
    alone = {s.name: s for s in rp.plan(a).stages}  # nothing verified: "no data", not a failed stats
    assert alone["stats/training"].requires == rp.paths(a.out, "dasd")["verified"]
    forget = {s.name: s for s in p.stages}["forget/code/dasd"]
    assert forget.args[-2:] == ["--adapter", str(tmp_path / "out" / "train" / "dasd" / "adapter.gguf")]


def test_forgetting_table_gives_the_paired_change_with_its_interval(rp, tmp_path):
    import evidence_stages as ev

    a = args(rp, tmp_path, "--strategies", "dasd", "--forgetting", "--forget-tasks", "mcq")
    for name, right in ((rp.ORIGIN, [1, 0, 0, 1]), ("dasd", [1, 1, 0, 1, 1])):  # dasd has one id more
        run = a.out / "forget" / "mcq" / name
        run.mkdir(parents=True)
        rows = [{"id": str(i), "correct": bool(c)} for i, c in enumerate(right)]
        (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "summary.json").write_text(json.dumps({"score": sum(right) / len(right)}))
    text = ev.forget_markdown(a, rp, [rp.ORIGIN, "dasd"])
    dasd = next(line for line in text.splitlines() if line.startswith("| dasd"))
    assert "80.00% (+25.00 pts [" in dasd and "n=4)" in dasd  # 3/4 vs 2/4 over the 4 common ids
    lo, hi = (float(x) for x in dasd.split("[")[1].split("]")[0].split(", "))
    assert lo <= 25.0 <= hi
    assert "(" not in next(line for line in text.splitlines() if line.startswith(f"| {rp.ORIGIN}"))


def test_answer_format_reaches_every_stage_that_takes_it(rp, tmp_path, capsys):
    argv = ["--strategies", "dasd,sft", "--overlap", "--preflight", "--forgetting", "--answer-format", "answer-is"]
    p = rp.plan(args(rp, tmp_path, *argv))
    takes = [s for s in p.stages if s.args and s.args[0] in ("generate", "score", "eval") and not s.name.startswith("forget/")]
    assert {"generate/dasd", "score/gold", "score/dasd", "eval/origin", "eval/dasd", "eval/sft"} <= {s.name for s in takes}
    for s in takes:
        assert s.args[s.args.index("--answer-format") + 1] == "answer-is", s.name
    stage = {s.name: s for s in p.stages}
    assert "--answer-format" not in stage["verify/dasd"].args  # read back in the records' own format
    assert "--answer-format" not in stage["forget/mcq/dasd"].args  # another task, its own format
    sweep = rp.plan(args(rp, tmp_path, "--sweep", "tau=0.1", "--answer-format", "answer-is"))
    assert all("--answer-format answer-is" in " ".join(s.args) for s in sweep.stages if s.name.endswith("/generate"))
    assert "--answer-format" not in " ".join(rp.plan(args(rp, tmp_path, "--strategies", "dasd")).stages[0].args)
    assert rp.main(list(map(str, args_list(tmp_path, [*argv, "--dry-run"])))) == 0
    plan = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()}
    assert "--answer-format answer-is" in plan["generate/dasd"] and "--answer-format" not in plan["verify/dasd"]


def test_preflight_checks_the_answer_formats_opening(rp, tmp_path):
    import evidence_stages as ev

    gold = tmp_path / "gold.jsonl"
    steps = [{"text": t, "p_base": p} for t, p in (("So", 0.9), (" the", 0.8), (" answer", 0.1), (" is", 0.9), (" 4", 0.5))]
    gold.write_text(json.dumps({"id": "0", "steps": steps}) + "\n")
    for fmt, marker, found in (("answer-is", "answer is", 1), (None, "\\boxed{", 0)):
        a = args(rp, tmp_path, "--preflight", *(["--answer-format", fmt] if fmt else []))
        ev.run_preflight(gold, tmp_path / "pf.json", a)
        result = json.loads((tmp_path / "pf.json").read_text())
        assert (result["marker"], result["with_marker"], result["below_tau"]) == (marker, found, found)


def test_publish_writes_text_only_and_pass_at_1_rechecks(rp, tmp_path, fake):
    import gzip

    runner, _, _ = fake
    dest = tmp_path / "published"
    argv = ["--strategies", "dasd,self-distill,sft", "--python", str(runner), "--publish", str(dest)]
    assert rp.main(list(map(str, args_list(tmp_path, argv)))) == 0
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert "results.md" in files and "commands.sh" in files and "versions.json" in files
    assert not any(f.endswith((".gguf", ".safetensors", ".pt")) for f in files)
    preds = [json.loads(x) for x in gzip.open(dest / "eval" / "dasd.predictions.jsonl.gz", "rt")]
    summary = json.loads((dest / "eval" / "dasd.summary.json").read_text())
    assert sum(p["correct"] for p in preds) / len(preds) == summary["score"]  # re-checkable without a rerun
    kept = [json.loads(x) for x in gzip.open(dest / "data" / "dasd.kept.jsonl.gz", "rt")]
    assert kept and set(kept[0]) == {"id", "prompt", "response"}
    assert (dest / "data" / "sft.kept.jsonl.gz").exists() and not (dest / "data" / "origin.kept.jsonl.gz").exists()
    results = json.loads((dest / "results.json").read_text())
    assert results["comparisons"]["dasd - self-distill"]["diff"] == 0.0
    assert "dasd - self-distill: +0.00 points" in (dest / "results.md").read_text()


def test_only_runs_the_named_stages_and_a_later_run_skips_them(rp, tmp_path, fake):
    runner, log, _ = fake
    argv = ["--strategies", "sft", "--python", str(runner)]
    assert rp.main(list(map(str, args_list(tmp_path, argv + ["--only", "eval/origin"])))) == 0
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["eval"]
    assert rp.main(list(map(str, args_list(tmp_path, argv)))) == 0
    verbs = [line.split()[0] for line in log.read_text().splitlines()[1:]]
    assert verbs[:3] == ["score", "train", "eval"] and set(verbs[3:]) == {"stats"}  # origin's evaluation was not run again
