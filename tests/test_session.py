"""DecodeSession: one open engine decodes block after block (what a long-lived worker
does), and each block's records equal those of a fresh session. Real model, tiny runs."""

from __future__ import annotations

from dasd_local.config import DecodeConfig, EngineOptions
from dasd_local.data import load_problems
from dasd_local.session import DecodeSession
from dasd_local.tasks.math import MathTask


def test_blocks_on_one_open_engine_equal_fresh_sessions(data_dir):
    task = MathTask()
    probs, _ = load_problems(data_dir / "math" / "train.jsonl", task, limit=5)
    cfg = DecodeConfig(batch=2, max_new_tokens=10, record_candidates=True)
    opts = EngineOptions(threads=1)
    with DecodeSession(opts, task, cfg) as s:
        first = {r["id"]: r for r in s.run(probs[:2])}
        second = {r["id"]: r for r in s.run(probs[2:])}
        assert s.stats.finished == 5
    for block, got in ((probs[:2], first), (probs[2:], second)):
        with DecodeSession(opts, task, cfg) as fresh:
            want = {r["id"]: r for r in fresh.run(block)}
        assert {i: (r["response_tokens"], r["steps"]) for i, r in got.items()} == \
               {i: (r["response_tokens"], r["steps"]) for i, r in want.items()}
