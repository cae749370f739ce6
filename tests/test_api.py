"""The Python API (`from dasd_local import generate, verify, train, evaluate, stats`): the
README's example, rows in memory as data, the same files as the CLI."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

import dasd_local
from dasd_local import evaluate, generate, stats, train, verify
from dasd_local.config import DecodeConfig, EvalConfig, RunConfig, StatsConfig, TrainConfig
from dasd_local.store.demo import demo_rows

QUIET = Console(file=io.StringIO())


def rows(n: int) -> list[dict]:
    return demo_rows()[:n]


def test_generate_verify_stats_on_rows_in_memory_and_a_dataset_resumes_them(tmp_path):
    out = tmp_path / "dasd.jsonl"
    run = RunConfig(data=rows(3), answer_format="answer-is", out=out, threads=1)
    records = generate(run, DecodeConfig(max_new_tokens=16), console=QUIET)
    assert [r["id"] for r in records] == [r["unique_id"] for r in rows(3)]
    assert all(r["strategy"] == "dasd" and r["steps"] for r in records)
    manifest = (tmp_path / "dasd.manifest.json").read_text()
    assert '"data": "<3 rows in memory>"' in manifest and "unique_id" not in manifest  # rows never in the manifest
    kept = verify(out, tmp_path / "kept.jsonl")
    assert all(r["correct"] for r in kept) and len(kept) <= 3
    result = stats(StatsConfig(paths=(out,)), QUIET)
    assert result["files"][0]["all"]["records"] == 3 and result["files"][0]["ci"]["all"]["high_ppl_ratio"]["n"] == 3
    # the same rows as a datasets.Dataset are the same data: the run resumes, nothing decodes again
    import datasets

    again = generate(RunConfig(data=datasets.Dataset.from_list(rows(3)), answer_format="answer-is", out=out, threads=1),
                     DecodeConfig(max_new_tokens=16), console=QUIET)
    assert again == records
    manifest = __import__("json").loads((tmp_path / "dasd.manifest.json").read_text())
    assert manifest["counts"]["ran_now"] == 0


def test_evaluate_takes_rows_in_memory(tmp_path):
    summary = evaluate(EvalConfig(data=rows(2), task="math", answer_format="answer-is", out_dir=tmp_path / "e",
                                  threads=1, workers=1, limit=2), console=QUIET)
    assert summary["n"] == 2 and summary["data"] == "<2 rows in memory>"
    assert (tmp_path / "e" / "predictions.jsonl").is_file()


def test_the_api_names_are_functions_and_the_verb_modules_stay_importable():
    import sys

    from dasd_local.generate import samples_of  # noqa: F401  (the module behind the function)

    for name in dasd_local.__all__:
        assert callable(getattr(dasd_local, name)) and not isinstance(getattr(dasd_local, name), type(sys))
        assert f"dasd_local.{name}" in sys.modules


@pytest.mark.slow
def test_train_returns_the_manifest(tmp_path):
    out = tmp_path / "r.jsonl"
    generate(RunConfig(data=rows(4), answer_format="answer-is", out=out, threads=1), DecodeConfig(max_new_tokens=24),
             console=QUIET)
    m = train(TrainConfig(data=str(out), out=str(tmp_path / "run"), max_steps=1, batch_size=2, grad_accum=1,
                          threads=1, save_every=0))
    assert m["steps"] == 1 and (tmp_path / "run" / "adapter.gguf").is_file()
