"""DecodeSession: one open engine decodes block after block (what a long-lived worker
does), and each block's records equal those of a fresh session. Real model, tiny runs."""

from __future__ import annotations

from dasd_local.config import DecodeConfig, EngineOptions
from dasd_local.store.problems import load_problems
from dasd_local.decoding.session import DecodeSession
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


class _Cells:
    """What auto_batch reads of an engine: the bytes one KV cell takes."""

    def __init__(self, kv_bytes_per_cell: int):
        self.kv_bytes_per_cell = kv_bytes_per_cell


def test_auto_batch_takes_the_device_ceiling_then_what_the_split_cache_holds(monkeypatch):
    import dasd_local.decoding.session as session
    from dasd_local.config import AUTO_BATCH

    monkeypatch.setattr(session, "kv_budget", lambda: 1 << 30)
    roomy = _Cells(1024)  # 1 KiB a cell: 1024 cells x 2 views = 2 MiB a problem
    assert session.auto_batch(roomy, 1024, 2, 500, n_gpu_layers=0) == AUTO_BATCH["cpu"]
    assert session.auto_batch(roomy, 1024, 2, 500, n_gpu_layers=-1) == AUTO_BATCH["gpu"]
    assert session.auto_batch(roomy, 1024, 2, 3, n_gpu_layers=0) == 3  # no more than the run has
    tight = _Cells(64 << 10)  # 64 KiB a cell: 1024 cells x 2 views = 128 MiB a problem
    assert session.auto_batch(tight, 1024, 2, 500, n_gpu_layers=0) == 8  # 1 GiB / 128 MiB
    assert session.auto_batch(tight, 1024, 1, 500, n_gpu_layers=0) == 16  # one view: half the cells
    assert session.auto_batch(_Cells(1 << 30), 1024, 2, 500, n_gpu_layers=0) == 1  # never below one


def test_batch_auto_is_the_default_and_a_number_or_auto_is_all_it_takes():
    import pytest

    from dasd_local.config import AUTO, eval_decode, parse_batch
    from dasd_local.errors import ConfigError

    assert DecodeConfig().batch == AUTO and eval_decode().batch == AUTO
    assert parse_batch("auto") == AUTO and parse_batch("8") == 8 and parse_batch(8) == 8
    with pytest.raises(ConfigError, match="--batch = 'many' is not allowed: expected auto or in"):
        parse_batch("many")
    with pytest.raises(ConfigError, match="expected auto or in"):
        DecodeConfig(batch=0)
    with pytest.raises(ConfigError, match="step_tokens"):
        DecodeConfig(batch=AUTO, step_tokens=16)  # auto may choose 32 problems: 64 rows


def test_batch_auto_resolves_per_block_and_decodes_as_a_fixed_batch(data_dir):
    """The session resolves auto from the block (here: 3 problems, so 3) and the records are
    those of the same batch given as a number."""
    task = MathTask()
    probs, _ = load_problems(data_dir / "math" / "train.jsonl", task, limit=3)
    opts = EngineOptions(threads=1)
    with DecodeSession(opts, task, DecodeConfig(max_new_tokens=8)) as s:
        auto = {r["id"]: r["response_tokens"] for r in s.run(probs)}
        assert s.cfg.batch == 3 and s.requested.batch == "auto"
    with DecodeSession(opts, task, DecodeConfig(batch=3, max_new_tokens=8)) as s:
        fixed = {r["id"]: r["response_tokens"] for r in s.run(probs)}
    assert auto == fixed
