"""Laptop-class shapes: scripts/make_shape_model.py writes a random-weight llama GGUF that
the real llama.cpp loads, with the embedded model's tokenizer and template, and
scripts/bench_generate.py runs on it at a fixed length (a tiny shape keeps this fast)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dasd_local.decoding.engine import Engine, EngineConfig, K_QUANT_FTYPES, gguf_file_type
from dasd_local.models import resolve

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    home = tmp_path_factory.mktemp("dasd_home")
    old = os.environ.get("DASD_HOME")
    os.environ["DASD_HOME"] = str(home)
    try:
        spec = importlib.util.spec_from_file_location("make_shape_model", REPO / "scripts" / "make_shape_model.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        path = mod.make("tiny", "q4_k_m", threads=1)
        assert mod.make("tiny", "q4_k_m", threads=1) == path  # cached, not rebuilt
        yield path
    finally:
        os.environ.pop("DASD_HOME") if old is None else os.environ.__setitem__("DASD_HOME", old)


def test_shape_model_loads_with_the_embedded_tokenizer(tiny):
    assert tiny.parent.name == "models" and not tiny.with_suffix(".f16.part").exists()
    assert gguf_file_type(tiny) in K_QUANT_FTYPES  # quantized by llama.cpp to Q4_K_M
    text = "Find $x$ if $2x + 3 = 7$. \\boxed{2}"
    with Engine(resolve(None)[0], EngineConfig(n_ctx=64)) as ref, Engine(tiny, EngineConfig(n_ctx=64)) as e:
        assert e.arch == "llama" and e.meta("llama.block_count") == "2"
        assert e.tokenize(text) == ref.tokenize(text)
        assert e.chat_template() == ref.chat_template()
        logits = e.decode(e.tokenize(text), list(range(len(e.tokenize(text)))), [0] * len(e.tokenize(text)),
                          [False] * (len(e.tokenize(text)) - 1) + [True])
        assert logits.shape == (1, e.n_vocab) and (logits == logits).all()  # finite: no NaN


def test_bench_generate_fixed_length_on_a_shape(tiny):
    out = subprocess.run([sys.executable, "scripts/bench_generate.py", "--model", str(tiny), "--fixed-length",
                          "--problems", "3", "--max-new-tokens", "8", "--batches", "1,2", "--base-batches", "2",
                          "--layouts", "auto:f16", "--spec-problems", "0", "--hf-problems", "0", "--threads", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    # a 36-column label (configuration and weight placement), then the emitted tokens
    rows = [line for line in out.stdout.splitlines() if line.startswith(("greedy (Llama", "dasd b", "base b"))]
    assert len(rows) == 4 and all(r[36:].split()[0] == "24" for r in rows), rows
    assert all(":repack" in r or ":plain" in r for r in rows if not r.startswith("greedy")), rows
    assert out.stdout.count("memory: ") == 4
    assert "ratio: dasd batch 2" in out.stdout and "/ base batch 2 =" in out.stdout
    own = [line for line in out.stdout.splitlines() if line.startswith("own rows: ")]
    assert len(own) == 3 and all("inside llama.cpp's decode calls" in line for line in own), own


def test_bench_call_shapes_on_a_shape(tiny):
    out = subprocess.run([sys.executable, "scripts/bench_call_shapes.py", "--model", str(tiny), "--streams", "4",
                          "--contexts", "32,64", "--reps", "2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert sum(line.startswith("prefill 512 rows") for line in lines) == 1
    assert [line.split(" at ")[1].split(":")[0] for line in lines if line.startswith("decode 4 rows")] == ["32 cells", "64 cells"]
