"""`--ray`: generation on a local Ray cluster that the tests start themselves (one node, this machine).

Real Ray (Ray Data actor pool), the real engine and the embedded model, 12 real MATH train
problems, 2 workers x 1 thread: the same ids as a local run, every token the rule's choice,
divergences from the local run only at near decisions (llama.cpp's numerics follow the
batch shape, and a worker's blocks are batched differently from one local run); a worker
SIGKILLed mid-run, and a driver SIGKILLed mid-run then rerun, still give every id once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from dasd_local.config import DecodeConfig, RunConfig
from dasd_local.config import RayConfig, parse_workers
from dasd_local.runner import Throughput, block_size, deliver, pool_size
from dasd_local.errors import ConfigError, ModelError
from dasd_local.generate import generate

from test_generate_real import TOL, assert_agree, check_rule

NEW = 16
CFG = DecodeConfig(max_new_tokens=NEW, batch=4, record_candidates=True, speculate="off")


def test_workers_option():
    assert parse_workers("3") == (3, 3) and parse_workers("1,4") == (1, 4) and parse_workers(None) is None
    for bad in ("0", "4,2", "a", "1,2,3"):
        with pytest.raises(ConfigError, match="--workers = "):
            RayConfig(workers=bad)
    assert pool_size(RayConfig(threads_per_worker=2), {"CPU": 8.0}, blocks=10) == (4, 4)
    assert pool_size(RayConfig(gpus_per_worker=1), {"CPU": 8.0, "GPU": 2.0}, blocks=10) == (2, 2)
    assert pool_size(RayConfig(workers="1,8"), {"CPU": 8.0}, blocks=3) == (1, 3)  # never more actors than blocks
    assert block_size(64, 2, 16) == 16 and block_size(16, 2, 16) == 8 and block_size(1000, 4, 16) == 125
    with pytest.raises(ConfigError, match="--threads-per-worker .* = 0 is not allowed"):
        RayConfig(threads_per_worker=0)


def test_the_driver_writes_each_id_once_and_stops_on_a_fatal_row():
    def row(pid, worker="n:1", fatal="", error=""):
        info = json.dumps({"stats": {"emitted": 5, "categories": {"hard": 1}}, "model": "m.gguf"})
        return {"id": pid, "record": "" if error else json.dumps({"id": pid}), "error": error, "fatal": fatal,
                "worker": worker, "busy": 2.0, "info": info}

    got, tally = [], Throughput()
    rows = [row("a"), row("b", "n:2"), row("a", "n:2"), row("old"), row("c", error="too long")]
    deliver(iter(rows), {"old"}, tally, lambda *r: got.append(r))
    assert got == [("a", {"id": "a"}, None), ("b", {"id": "b"}, None), ("c", None, "too long")]
    assert tally.duplicates == 2 and tally.manifest()["worker_count"] == 2
    assert tally.stats() == {"emitted": 10, "categories": {"hard": 2}} and tally.tokens_per_s() == 5.0
    with pytest.raises(ModelError, match="^node x: model missing$"):
        deliver(iter([row("d", fatal="node x: model missing")]), set(), Throughput(), lambda *r: None)


def cli_without_ray(*args, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a Python where `import ray` fails, as it does without the extra."""
    code = "import sys; sys.modules['ray'] = None\nfrom dasd_local.cli import main\nsys.argv[0] = 'dasd-local'\nmain()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_without_the_extra_one_error_line_and_local_runs_never_import_ray(tmp_path):
    args = ["generate", "--limit", "1", "--max-new-tokens", "4", "--threads", "1", "-o", "r.jsonl"]
    p = cli_without_ray(*args, "--ray", "auto", cwd=tmp_path)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == ["error: --ray needs Ray on this machine: pip install 'dasd-local[ray]'"]
    assert not (tmp_path / "r.jsonl").exists()  # refused before anything was opened
    p = cli_without_ray(*args, cwd=tmp_path)  # no --ray: Ray is never imported
    assert p.returncode == 0, p.stderr
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1


@pytest.fixture(scope="module")
def data12(data_dir, tmp_path_factory) -> Path:
    """The 12 shortest of the first 120 MATH train problems (short prompts keep the test fast), in file order."""
    lines = (data_dir / "math" / "train.jsonl").read_text().splitlines()[:120]
    keep = sorted(sorted(range(len(lines)), key=lambda i: len(lines[i]))[:12])
    path = tmp_path_factory.mktemp("data") / "math12.jsonl"
    path.write_text("".join(lines[i] + "\n" for i in keep))
    return path


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray cluster on this machine with 2 CPUs; yields its address for other drivers.
    (Ray replaces 127.0.0.1 by the machine's own address: services.resolve_ip_for_localhost.)"""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 << 20, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def run_cfg(data: Path, out: Path, **kw) -> RunConfig:
    return RunConfig(data=str(data), out=out, threads=1, **kw)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def local_out(data12, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    generate(run_cfg(data12, out), CFG)
    return out


@pytest.fixture(scope="module")
def local(local_out) -> list[dict]:
    return records(local_out)


@pytest.mark.slow
def test_two_workers_match_a_local_run(cluster, data12, local, tmp_path):
    out = tmp_path / "ray.jsonl"
    m = generate(run_cfg(data12, out), CFG, ray=RayConfig(ray="auto", workers="2", block=3))
    got = records(out)
    assert [r["id"] for r in got] == [r["id"] for r in local]  # input order, every id once
    assert check_rule({r["id"]: r for r in got}) > 100
    base = {r["id"]: r for r in local}
    agreed = sum(assert_agree(base[r["id"]], r, "dasd") for r in got)
    assert agreed / sum(len(r["response_tokens"]) for r in local) > 0.5
    ray = m["ray"]
    assert ray["worker_count"] == 2 and m["counts"] == {**m["counts"], "done": 12, "failed": 0}
    assert all(w["problems"] > 0 and w["tokens_per_s"] > 0 for w in ray["workers"].values())
    assert sum(w["problems"] for w in ray["workers"].values()) == 12
    assert m["stats"]["emitted"] == sum(len(r["response_tokens"]) for r in got)
    assert len(m["model_sha256"]) == 64


def worker_pids() -> list[int]:
    """Our cluster's actor processes (children of this test process's raylet)."""
    import psutil

    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "JobWorker" in " ".join(p.cmdline()):
                found.append(p.pid)
        except psutil.Error:
            pass
    return found


def wait_lines(path: Path, n: int, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < n):
        time.sleep(0.2)


@pytest.mark.slow
def test_a_worker_killed_mid_run_leaves_every_id_once(cluster, data12, local, tmp_path):
    out, killed = tmp_path / "ray.jsonl", []

    def kill_one() -> None:
        wait_lines(out, 1)
        pids = worker_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    killer = threading.Thread(target=kill_one)
    killer.start()
    m = generate(run_cfg(data12, out), CFG, ray=RayConfig(ray="auto", workers="2", block=2))
    killer.join()
    assert killed, "no worker process found to kill"
    print(f"killed {killed[0]}; workers: {m['ray']['workers']}; dropped {m['ray']['duplicates_dropped']}")
    ids = [r["id"] for r in records(out)]
    assert Counter(ids) == Counter(r["id"] for r in local) and ids == [r["id"] for r in local]
    assert m["counts"]["done"] == 12 and m["counts"]["failed"] == 0
    assert check_rule({r["id"]: r for r in records(out)}) > 100


@pytest.mark.slow
def test_a_killed_driver_resumes(cluster, data12, local, tmp_path):
    out = tmp_path / "ray.jsonl"
    args = ["generate", "--data", data12, "-o", out, "--threads-per-worker", "1", "--workers", "2", "--ray", "auto",
            "--max-new-tokens", NEW, "--batch", 4, "--record-candidates", "--speculate", "off"]
    env = {**os.environ, "RAY_ADDRESS": cluster}  # `auto` honours RAY_ADDRESS
    driver = subprocess.Popen([sys.executable, "-m", "dasd_local", *map(str, args)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_lines(out, 3)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    partial = out.read_text().splitlines()
    assert 3 <= len(partial) < 12, "kill came too late to test resume"
    assert not out.with_name("ray.manifest.json").exists()
    m = generate(run_cfg(data12, out), CFG, ray=RayConfig(ray=cluster, workers="2", block=2))
    assert [r["id"] for r in records(out)] == [r["id"] for r in local]
    assert m["counts"]["ran_now"] == 12 - len(partial)


@pytest.mark.slow
def test_a_model_missing_on_a_node_is_one_line(cluster, data12, tmp_path):
    with pytest.raises(ModelError, match=r"^node \S+ \([\d.]+\): model '/nowhere/model\.gguf'"):
        generate(replace(run_cfg(data12, tmp_path / "x.jsonl"), model="/nowhere/model.gguf"), CFG,
                 ray=RayConfig(ray="auto", workers="1"))


@pytest.mark.slow
def test_score_and_eval_on_ray_match_local_runs(cluster, data12, local_out, tmp_path):
    from dasd_local.config import EvalConfig, ScoreConfig, eval_decode
    from dasd_local.evaluate import PREDICTIONS, evaluate
    from dasd_local.score import score_file

    ray = RayConfig(ray="auto", workers="2")
    score_file(local_out, tmp_path / "here.jsonl", ScoreConfig(threads=1))
    m = score_file(local_out, tmp_path / "there.jsonl", ScoreConfig(threads=1), ray=ray)
    here, there = records(tmp_path / "here.jsonl"), records(tmp_path / "there.jsonl")
    assert [r["id"] for r in there] == [r["id"] for r in here] and m["counts"]["done"] == 12
    for x, y in zip(here, there):  # teacher forcing, one sequence: the same numbers up to batch-shape noise
        assert [s["token"] for s in x["steps"]] == [s["token"] for s in y["steps"]]
        assert max(abs(a[k] - b[k]) for a, b in zip(x["steps"], y["steps"]) for k in ("p_base", "p_ref")) <= TOL
    assert m["ray"]["worker_count"] >= 1 and len(m["model_sha256"]) == 64

    cfg = EvalConfig(data=str(data12), out_dir=tmp_path / "e-here", threads=1, workers=1,
                     decode=eval_decode(max_new_tokens=NEW, batch=4))
    a = evaluate(cfg)
    b = evaluate(replace(cfg, out_dir=tmp_path / "e-there"), ray=ray)
    ids = [sorted(json.loads(x)["id"] for x in (tmp_path / d / PREDICTIONS).read_text().splitlines())
           for d in ("e-here", "e-there")]
    assert ids[0] == ids[1] and len(ids[0]) == 12
    assert b["n"] == a["n"] == 12 and b["ray"]["worker_count"] >= 1 and b["emitted_tokens"] > 0
