"""Shared fixtures: the embedded GGUF model, the real benchmark data, an isolated user dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """../shared/data beside the checkout (DASD_SHARED_DATA overrides)."""
    return Path(os.environ.get("DASD_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _user_dir(tmp_path_factory, monkeypatch):
    """Keep the demo set and caches out of the real home directory."""
    monkeypatch.setenv("DASD_HOME", str(tmp_path_factory.getbasetemp() / "dasd-home"))


@pytest.fixture(scope="session")
def model_path() -> Path:
    from dasd_local.models import resolve

    return resolve(None)[0]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data()
    if not d.is_dir():
        pytest.fail(f"benchmark data not found at {d} (set DASD_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def arc_run(tmp_path_factory, data_dir) -> dict:
    """A small real run as a user makes it: `generate` (embedded model, 6 ARC problems, 48
    tokens, candidates, one thread) then `verify` (drop), through the real engine and task.
    3 of the 6 are correct with this model: {'run', 'kept', 'mixed'} paths, where `mixed`
    holds all 6 records with their real verdicts (`correct` true or false)."""
    import json

    from typer.testing import CliRunner

    from dasd_local.cli import app
    from dasd_local.tasks import get_task

    d = tmp_path_factory.mktemp("arc-run")
    run, kept = d / "arc-dasd.jsonl", d / "arc-dasd.kept.jsonl"
    for args in (["generate", "--task", "mcq", "--data", str(data_dir / "arc_challenge" / "train.jsonl"), "--limit", "6",
                  "--max-new-tokens", "48", "--record-candidates", "--threads", "1", "-o", str(run)],
                 ["verify", str(run), "-o", str(kept), "--workers", "1"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in run.read_text().splitlines()]
    task = get_task("mcq")
    mixed = d / "arc-dasd.mixed.jsonl"
    mixed.write_text("".join(json.dumps({**r, "correct": task.verify(r["response"], r).correct}) + "\n" for r in records))
    (d / "arc-dasd.mixed.manifest.json").write_text((d / "arc-dasd.manifest.json").read_text())  # the same run
    return {"run": run, "kept": kept, "mixed": mixed}
