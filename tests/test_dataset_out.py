"""`dasd-local export`: every format reloaded by the library that consumes it, only kept
records, chat turns that render to the run's own prompt, and a card whose numbers are
`stats`' numbers. Data: a real generate + verify run (tests/conftest.py: arc_run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dasd_local.cli import app

pytestmark = pytest.mark.slow  # the fixture decodes 6 problems with the real model
datasets = pytest.importorskip("datasets", reason="the export tests need `datasets` (the test extra)")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def export(inputs, fmt, out, *extra, env=None):
    """The CLI in its own process, as a user runs it."""
    args = [sys.executable, "-m", "dasd_local", "export", *map(str, inputs), "--format", fmt, "-o", str(out), *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def verdicts(arc_run):
    """id -> correct, from the real verifier; the run has both kinds."""
    v = {r["id"]: r["correct"] for r in read_jsonl(arc_run["mixed"])}
    assert 0 < sum(v.values()) < len(v), v
    return v


def kept_ids(verdicts):
    return [pid for pid, ok in verdicts.items() if ok]


def load(fmt, out):
    """The exported rows, loaded the way the consuming tool loads them."""
    if fmt == "hf":
        return datasets.load_from_disk(str(out))
    if fmt == "parquet":
        return datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    name = "train.json" if fmt == "sharegpt" else "train.jsonl"
    return datasets.load_dataset("json", data_files=str(out / name), split="train")


@pytest.mark.parametrize("fmt", ["hf", "parquet", "prompt-completion", "messages", "sharegpt"])
def test_each_format_reloads_with_only_the_kept_records(fmt, arc_run, verdicts, tmp_path):
    p = export([arc_run["mixed"]], fmt, tmp_path / fmt)
    assert p.returncode == 0, p.stderr
    ds = load(fmt, tmp_path / fmt)
    assert ds.num_rows == len(kept_ids(verdicts))
    assert ds["id"] == kept_ids(verdicts)  # no rejected record, input order
    first = {"hf": "messages", "parquet": "messages", "prompt-completion": "prompt", "messages": "messages",
             "sharegpt": "conversations"}[fmt]
    assert ds.column_names[0] == first
    if fmt in ("hf", "parquet"):  # provenance kept: strategy, config, per-token categories and probabilities
        assert {"strategy", "config", "steps", "base_prompt", "response_tokens", "correct"} <= set(ds.column_names)
        assert all(ds["correct"])
        records = {r["id"]: r for r in read_jsonl(arc_run["mixed"])}
        for row in ds:
            rec = records[row["id"]]
            assert [s["category"] for s in row["steps"]] == [s["category"] for s in rec["steps"]]
            assert [s["p_base"] for s in row["steps"]] == [s["p_base"] for s in rec["steps"]]
            cand = row["steps"][0]["candidates"][0]
            assert [cand["token"], cand["p_ref"], cand["p_base"]] == rec["steps"][0]["candidates"][0]
            assert row["config"]["tau"] == rec["config"]["tau"]
    if fmt == "prompt-completion":  # TRL's conversational prompt-completion
        assert [t["role"] for t in ds[0]["prompt"]] == ["user"]
        assert [t["role"] for t in ds[0]["completion"]] == ["assistant"]
    if fmt == "messages":
        assert [t["role"] for t in ds[0]["messages"]] == ["user", "assistant"]


def test_sharegpt_round_trip(arc_run, tmp_path):
    """ShareGPT turns map back to the messages export, and LLaMA-Factory's registry entry
    points at the file with the tags it needs."""
    for fmt in ("messages", "sharegpt"):
        assert export([arc_run["kept"]], fmt, tmp_path / fmt).returncode == 0
    messages = load("messages", tmp_path / "messages")["messages"]
    roles = {"human": "user", "gpt": "assistant"}
    sharegpt = load("sharegpt", tmp_path / "sharegpt")
    back = [([{"role": "system", "content": row["system"]}] if row["system"] else [])
            + [{"role": roles[t["from"]], "content": t["value"]} for t in row["conversations"]] for row in sharegpt]
    assert back == messages
    info = json.loads((tmp_path / "sharegpt" / "dataset_info.json").read_text())["dasd"]
    assert info["file_name"] == "train.json" and info["formatting"] == "sharegpt"
    assert info["columns"]["messages"] == "conversations"
    assert (info["tags"]["user_tag"], info["tags"]["assistant_tag"]) == ("human", "gpt")


def test_chat_turns_render_to_the_runs_own_prompt(arc_run, model_path, tmp_path):
    """The user turn (and system turn, if any) through the GGUF's chat template is exactly
    the base view the model decoded from."""
    from dasd_local.decoding.engine import Engine, EngineConfig
    from dasd_local.decoding.views import render_chat

    assert export([arc_run["kept"]], "messages", tmp_path / "m").returncode == 0
    rows = read_jsonl(tmp_path / "m" / "train.jsonl")
    records = {r["id"]: r for r in read_jsonl(arc_run["kept"])}
    with Engine(model_path, EngineConfig(n_ctx=64, n_seq_max=1, n_threads=1)) as engine:
        for row in rows:
            rendered = render_chat(engine.chat_template(), row["messages"][:-1], engine.bos_text, engine.eos_text)
            assert rendered == records[row["id"]]["base_prompt"]
            assert row["messages"][-1]["content"] == records[row["id"]]["response"]


def test_card_numbers_equal_stats(arc_run, model_path, verdicts, tmp_path):
    from huggingface_hub import DatasetCard

    from dasd_local.store.records import sha256_file

    kept = arc_run["kept"]
    assert export([kept], "parquet", tmp_path / "out").returncode == 0
    res = CliRunner().invoke(app, ["stats", str(kept), "--json", str(tmp_path / "stats.json")])
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "stats.json").read_text())["files"][0]["all"]
    card = DatasetCard.load(tmp_path / "out" / "README.md")
    meta = card.data.to_dict()
    dasd = meta["dasd"]
    for key in ("records", "tokens", "high_ppl_ratio", "ppl", "category_shares", "filtered_share", "pass_rate"):
        assert dasd["stats"][0][key] == stats[key], key
    n_kept = len(kept_ids(verdicts))
    assert (dasd["counts"]["kept"], dasd["counts"]["dropped"]) == (n_kept, len(verdicts) - n_kept)
    assert dasd["models"] == [{"model": str(model_path), "sha256": sha256_file(model_path)}]
    assert dasd["strategies"]["dasd"]["tau"] == 0.2 and dasd["strategies"]["dasd"]["max_new_tokens"] == 48
    assert dasd["source_data"][0]["data"].endswith("arc_challenge/train.jsonl")
    assert meta["license"] == "cc-by-sa-4.0"
    assert dasd["command"] == f"dasd-local export {kept} --format parquet -o {tmp_path / 'out'}"
    assert f"{100 * stats['high_ppl_ratio']:.2f}%" in card.text  # the table a reader sees


def test_unreachable_hub_writes_locally_and_fails_in_one_line(arc_run, tmp_path):
    p = export([arc_run["kept"]], "messages", tmp_path / "out", "--push-to-hub", "someone/dasd-data",
               env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_not_a_real_token", "HF_HUB_ETAG_TIMEOUT": "2"})
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: push to someone/dasd-data failed"), p.stderr
    assert (tmp_path / "out" / "README.md").is_file() and (tmp_path / "out" / "train.jsonl").is_file()


def test_bad_inputs_are_one_line(arc_run, tmp_path):
    p = export([arc_run["run"]], "hf", tmp_path / "out")  # generate output: never verified
    assert p.returncode == 1 and "not verified" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    p = export([arc_run["kept"]], "hf", other)
    assert p.returncode == 1 and "not empty" in p.stderr
    assert (other / "notes.txt").read_text() == "mine"
    p = export([arc_run["kept"]], "csv", tmp_path / "x")
    assert p.returncode == 1 and "format" in p.stderr


def test_re_export_replaces_an_earlier_export(arc_run, tmp_path):
    out = tmp_path / "out"
    assert export([arc_run["kept"]], "messages", out).returncode == 0
    assert export([arc_run["kept"]], "sharegpt", out).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "dataset_info.json", "train.json"]


def test_several_inputs_and_columns_without_a_common_type(arc_run, verdicts, tmp_path):
    """Two files: rows of both, one card row per file (as `stats` lists them); a column whose
    values share no type (an int level here, a string level there) is kept as JSON text."""
    from huggingface_hub import DatasetCard

    odd = tmp_path / "odd.jsonl"
    odd.write_text("".join(json.dumps({**r, "level": "Level ?" if i % 2 else 3}) + "\n"
                           for i, r in enumerate(read_jsonl(arc_run["kept"]))))
    assert export([arc_run["mixed"], odd], "hf", tmp_path / "out").returncode == 0
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    n = len(kept_ids(verdicts))
    assert ds.num_rows == 2 * n
    assert [json.loads(v) if v else v for v in ds["level"]][n:] == [3 if i % 2 == 0 else "Level ?" for i in range(n)]
    dasd = DatasetCard.load(tmp_path / "out" / "README.md").data.to_dict()["dasd"]
    assert [s["path"] for s in dasd["stats"]] == [str(arc_run["mixed"]), str(odd)]
    assert dasd["counts"]["dropped_in_files"] == len(verdicts) - n
