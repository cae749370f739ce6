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
