"""The stats verb on real records: one read per file, intervals on the records it reports."""

from __future__ import annotations

import io

import pytest

from rich.console import Console

from dasd_local.config import DecodeConfig, RunConfig, StatsConfig
from dasd_local.generate import generate
from dasd_local.stats import stats


def test_overlap_intervals_come_from_the_rescored_records(tmp_path):
    """`stats --overlap` rescored the records for its tables but took the intervals from the
    files read again, whose steps have no top-k lists: the JSON had top-k overlap estimates
    without intervals. Now every overlap metric has its interval, at its own estimate."""
    out = tmp_path / "r.jsonl"
    generate(RunConfig(limit=2, out=out, threads=1), DecodeConfig(max_new_tokens=12), Console(file=io.StringIO()))
    result = stats(StatsConfig(paths=(out,), overlap=True), Console(file=io.StringIO()))
    s = result["files"][0]
    for metric in ("top1_agree", "ref1_in_base3", "ref1_in_base6", "base3_in_ref3", "base3_in_ref6"):
        assert s["all"]["overlap"][metric] is not None
        ci = s["ci"]["all"][metric]
        assert ci["estimate"] == pytest.approx(s["all"]["overlap"][metric]) and ci["lo"] <= ci["estimate"] <= ci["hi"]
    assert result["skipped"] == []
