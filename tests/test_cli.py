"""cli.main: how errors that no verb turned into a DasdError reach the user (no model)."""

from __future__ import annotations

import errno
import sys

import pytest

from dasd_local import cli


def run_main(monkeypatch, capsys, error: OSError) -> tuple[int, str]:
    def app():
        raise error

    monkeypatch.setattr(cli, "app", app)
    monkeypatch.setattr(sys, "argv", ["dasd-local", "generate"])
    monkeypatch.delenv("DASD_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        cli.main()
    return e.value.code, capsys.readouterr().err


def test_a_full_disk_inside_a_library_write_says_what_is_kept(monkeypatch, capsys):
    """The full-disk clause sat below a broader `except OSError` that re-raised every error
    without a file name, so this message was unreachable."""
    code, err = run_main(monkeypatch, capsys, OSError(errno.ENOSPC, "No space left on device"))
    assert code == 1 and err.startswith("error: output: No space left on device; the run stopped and keeps")


def test_a_full_disk_naming_its_file_says_so(monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, OSError(errno.ENOSPC, "No space left on device", "/x/out.jsonl"))
    assert code == 1 and err.startswith("error: /x/out.jsonl: No space left on device; the run stopped")


def test_another_os_error_with_a_file_is_one_line(monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, FileNotFoundError(errno.ENOENT, "No such file or directory", "a.jsonl"))
    assert code == 1 and err.strip() == "error: a.jsonl: No such file or directory"


def test_an_os_error_naming_nothing_is_a_bug_and_keeps_its_traceback(monkeypatch, capsys):
    with pytest.raises(OSError):
        run_main(monkeypatch, capsys, OSError(errno.EIO, "Input/output error"))
