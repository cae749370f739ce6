"""Runs that survive anything: the real CLI, SIGKILLed at seeded random moments and resumed
each time, two runs on one output, and a disk that fills up mid-run.

Each kill test first runs the command uninterrupted (the reference, timed), then starts it
again and again on a second output, killing it at a moment drawn uniformly from the
reference's duration, checking after every kill what a crash may leave (whole lines, each
id at most once, a manifest or summary only beside a finished file), until the wanted
number of kills has landed; a last run finishes the job and must give the reference's
file. Small work on purpose (SmolLM2-135M, 16 problems, 24 new tokens, one thread) so the
whole module takes a few minutes on two cores.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

N = 16


def command(*args) -> list[str]:
    return [sys.executable, "-m", "dasd_local", *map(str, args)]


def env() -> dict:
    return {**os.environ, "COLUMNS": "120", "OMP_NUM_THREADS": "1"}


def run(args: list, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    t = time.time()
    p = subprocess.run(command(*args), cwd=cwd, env=env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    return p, time.time() - t


@dataclass
class Kills:
    landed: int = 0  # SIGKILLs that hit a live process
    finished: int = 0  # runs that ended before their moment came
    partial: list[int] = field(default_factory=list)  # output lines seen after each kill


def kill_loop(args: list, cwd: Path, kills: int, seed: int, check, lines=None, batch: int = 1,
              jitter: float = 1.0, startup: float = 1.0, sig: int = signal.SIGKILL) -> Kills:
    """Start `args` over and over and kill each run (`sig`) at a seeded random moment, calling
    `check()` after every run, until `kills` kills have landed; then run it to the end.

    A moment is drawn in progress, not in wall time (a loaded machine would move it): the run
    is let go until its output holds a random number of lines `lines()` (up to a wave of
    `batch` problems more than it had), then killed after a random further `jitter` * U(0, 1)
    seconds; once all N lines are there, U(0, startup) seconds after the start (the run only
    opens, sorts and writes the manifest). Without `lines`: U(0, jitter) after the start."""
    rng, k = random.Random(seed), Kills()
    for _ in range(4 * kills):
        if k.landed == kills:
            break
        have = lines() if lines else 0
        target = rng.randint(have, min(N, have + batch)) if lines else 0
        delay = rng.uniform(0, startup if lines and have == N else jitter)
        proc = subprocess.Popen(command(*args), cwd=cwd, env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        while lines and proc.poll() is None and lines() < target:
            time.sleep(0.02)
        try:
            proc.wait(timeout=delay)
            assert proc.returncode == 0, proc.stderr.read()
            k.finished += 1
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
            proc.wait()
            assert proc.returncode in (-sig, 0), (proc.returncode, proc.stderr.read()[-2000:])
            k.landed += proc.returncode == -sig  # 0: it finished between the timeout and the signal
            k.finished += proc.returncode == 0
        proc.stderr.close()
        k.partial.append(check())
    assert k.landed == kills, k
    run(args, cwd)
    print(f"{args[0]}: {k.landed} kills landed, {k.finished} runs finished first; output lines after each: {k.partial}")
    return k


def lines_of(path: Path) -> list[str]:
    """The whole lines of a file a killed run was appending to (its last line may be cut)."""
    if not path.exists():
        return []
    text = path.read_text()
    whole = text.splitlines(keepends=True)
    if whole and not whole[-1].endswith("\n"):
        whole = whole[:-1]
    return [x for x in whole if x.strip()]


def ids_once(path: Path) -> list[str]:
    ids = [json.loads(x)["id"] for x in lines_of(path)]
    assert len(ids) == len(set(ids)), f"{path}: an id written twice: {ids}"
    return ids


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("crash")


def gen_args(problems: Path, out, batch: int) -> list:
    return ["generate", "--data", problems, "--batch", batch, "--max-new-tokens", 24, "--threads", 1, "--out", out]


@dataclass
class Reference:
    data: bytes  # the output of an uninterrupted run
    startup: float  # seconds of a run with nothing left to do
    work: float  # seconds the uninterrupted run took beyond that


def reference(args: list, cwd: Path, out: Path) -> Reference:
    _, whole = run(args, cwd)
    data = out.read_bytes()
    _, startup = run(args, cwd)  # nothing left to do: open, check, finish
    assert out.read_bytes() == data
    return Reference(data, startup, max(whole - startup, 0.1))


@pytest.fixture(scope="module")
def problems(work, data_dir) -> Path:
    """16 real MATH train problems: the shortest of the first 400 (short prompts, fast runs)."""
    rows = [json.loads(x) for x in (data_dir / "math" / "train.jsonl").read_text().splitlines()[:400]]
    keep = {r["unique_id"] for r in sorted(rows, key=lambda r: len(r["problem"]) + len(r["solution"]))[:N]}
    path = work / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["unique_id"] in keep))
    return path


@pytest.fixture(scope="module")
def gen_reference(work, problems) -> Reference:
    """An uninterrupted `generate` at batch 1."""
    d = work / "gen-ref"
    d.mkdir()
    return reference(gen_args(problems, "ref.jsonl", 1), d, d / "ref.jsonl")


def generate_checker(out: Path, ref: bytes | None):
    def check() -> int:
        ids = ids_once(out)
        if (out.parent / (out.stem + ".manifest.json")).exists():  # only beside a finished file
            assert len(ids) == N and (ref is None or out.read_bytes() == ref)
        return len(ids)
    return check


@pytest.mark.parametrize("batch", [1, 8])
def test_generate_survives_20_kills(work, problems, gen_reference, batch):
    ref = gen_reference
    d = work / f"gen-{batch}"
    d.mkdir()
    out = d / "run.jsonl"
    k = kill_loop(gen_args(problems, "run.jsonl", batch), d, 20, seed=batch,
                  check=generate_checker(out, ref.data if batch == 1 else None),
                  lines=lambda: len(lines_of(out)), batch=batch, jitter=ref.startup + ref.work * max(1, batch // 2) / N,
                  startup=ref.startup)
    assert any(0 < n < N for n in k.partial), "no kill landed while records were being written"
    if batch == 1:
        assert out.read_bytes() == ref.data  # byte for byte the uninterrupted run
    else:
        ref_ids = [json.loads(x)["id"] for x in ref.data.decode().splitlines()]
        assert ids_once(out) == ref_ids  # every id once, in input order
    manifest = json.loads((d / "run.manifest.json").read_text())
    assert manifest["counts"]["done"] == N and manifest["counts"]["failed"] == 0


def test_generate_survives_native_crashes(work, problems, gen_reference):
    """SIGSEGV, as a crash inside llama.cpp's kernels delivers it (nothing in Python runs
    after it): every line written is whole and kept, and the same command resumes."""
    ref = gen_reference
    d = work / "gen-segv"
    d.mkdir()
    out = d / "run.jsonl"
    k = kill_loop(gen_args(problems, "run.jsonl", 8), d, 6, seed=11, check=generate_checker(out, None),
                  lines=lambda: len(lines_of(out)), batch=8, jitter=ref.startup + ref.work * 4 / N,
                  startup=ref.startup, sig=signal.SIGSEGV)
    assert any(0 < n < N for n in k.partial), "no crash landed while records were being written"
    assert ids_once(out) == [json.loads(x)["id"] for x in ref.data.decode().splitlines()]


def test_verify_survives_10_kills(work, gen_reference):
    d = work / "verify"
    d.mkdir()
    (d / "in.jsonl").write_bytes(gen_reference.data)
    args = ["verify", "in.jsonl", "--workers", 1]
    _, seconds = run([*args, "--out", "ref.jsonl"], d)
    ref = (d / "ref.jsonl").read_bytes()
    out = d / "run.jsonl"

    def check() -> int:  # the old state (nothing) or the whole new file: never a part
        assert not out.exists() or out.read_bytes() == ref
        assert not list(d.glob("run.jsonl.*"))  # no temporary left beside it
        return len(lines_of(out))

    kill_loop([*args, "--out", "run.jsonl"], d, 10, seed=3, check=check, jitter=seconds)
    assert out.read_bytes() == ref


def eval_args(data_dir: Path, out: str, batch: int) -> list:
    return ["eval", "--data", data_dir / "math" / "test.jsonl", "--limit", N, "--batch", batch,
            "--max-new-tokens", 24, "--threads", 1, "--workers", 1, "--out", out]


# what differs between two runs that judged the same answers: timings and who ran what
RUN_FIELDS = ("ran_now", "seconds_now", "problems_per_s_now", "decode_calls", "emitted_tokens", "cpu_weights", "config")


@pytest.mark.parametrize("batch", [1, 8])
def test_eval_survives_10_kills(work, data_dir, batch):
    d = work / f"eval-{batch}"
    d.mkdir()
    ref = reference(eval_args(data_dir, "ref", batch), d, d / "ref" / "predictions.jsonl")
    out = d / "run"

    def check() -> int:
        ids = ids_once(out / "predictions.jsonl")
        if (out / "summary.json").exists():  # written last, only beside the finished file
            assert len(ids) == N and (batch != 1 or (out / "predictions.jsonl").read_bytes() == ref.data)
        return len(ids)

    k = kill_loop(eval_args(data_dir, "run", batch), d, 10, seed=10 + batch, check=check,
                  lines=lambda: len(lines_of(out / "predictions.jsonl")), batch=batch,
                  jitter=ref.startup + ref.work * max(1, batch // 2) / N,
                  startup=ref.startup)
    assert any(0 < n < N for n in k.partial), "no kill landed while answers were being written"
    got = (out / "predictions.jsonl").read_bytes()
    if batch == 1:
        assert got == ref.data
    else:
        assert ids_once(out / "predictions.jsonl") == [json.loads(x)["id"] for x in ref.data.decode().splitlines()]
    a, b = (json.loads((p / "summary.json").read_text()) for p in (d / "ref", out))
    assert b["n"] == N and b["correct"] == sum(json.loads(x)["correct"] for x in got.decode().splitlines())
    if batch == 1:  # the same summary but for timings and who decoded what
        assert {k: v for k, v in a.items() if k not in RUN_FIELDS} == {k: v for k, v in b.items() if k not in RUN_FIELDS}


def test_a_second_run_on_the_same_output_is_refused_at_once(work, problems, gen_reference):
    ref = gen_reference.data
    d = work / "two"
    d.mkdir()
    args = gen_args(problems, "run.jsonl", 1)
    first = subprocess.Popen(command(*args), cwd=d, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = d / "run.lock"
    deadline = time.time() + 60
    while not (lock.exists() and lock.read_text().strip()) and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(command(*args), cwd=d, env=env(), capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first run ended before the second was refused"
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "run.jsonl" in lines[0] and f"pid {first.pid}" in lines[0]
    assert first.wait(timeout=900) == 0, first.stderr.read()
    first.stderr.close()
    assert (d / "run.jsonl").read_bytes() == ref  # the first run finished intact
    assert not lock.exists()


# ---- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted for the test (root on Linux); skips where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()}): test_full_disk_injected covers ENOSPC")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path, leave: int) -> Path:
    """A file that takes all but about `leave` bytes of the filesystem."""
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


@pytest.mark.parametrize("room", ["appends", "rewrite"])
def test_full_disk_stops_with_one_line_and_resumes(small_disk, problems, gen_reference, room):
    """`appends`: the disk fills while records are appended; `rewrite`: every record fits but
    the final input-order rewrite (a second copy) does not."""
    ref = gen_reference.data
    filler = fill(small_disk, len(ref) // 3 if room == "appends" else len(ref) * 3 // 2)
    args = gen_args(problems, small_disk / "run.jsonl", 1)
    p = subprocess.run(command(*args), cwd=small_disk.parent, env=env(), capture_output=True, text=True, timeout=900)
    line = one_error_line(p)
    assert "run.jsonl" in line and "No space left on device" in line
    out = small_disk / "run.jsonl"
    assert out.read_text().endswith("\n")  # no partial line left behind
    n = len(ids_once(out))
    assert (0 < n < N) if room == "appends" else n == N
    assert not (small_disk / "run.manifest.json").exists()  # nothing reports success
    assert not list(small_disk.glob("*.tmp"))
    filler.unlink()  # space is freed: the same command resumes and finishes
    subprocess.run(command(*args), cwd=small_disk.parent, env=env(), check=True, capture_output=True, timeout=900)
    assert out.read_bytes() == ref


INJECT = """
import errno, os, sys
from dasd_local.cli import main
out_dir, budget = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]
real = os.write
def write(fd, data):  # writes to files under out_dir fail once `budget` bytes are spent
    global budget
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = ""
    if target.startswith(out_dir):
        if len(data) > budget:
            raise OSError(errno.ENOSPC, "No space left on device")
        budget -= len(data)
    return real(fd, data)
os.write = write
sys.argv[0] = "dasd-local"
main()
"""


def test_full_disk_injected(tmp_path, problems, gen_reference):
    """Where no filesystem can be mounted: the ENOSPC comes from the append's own write call
    (the real CLI in a process whose os.write fails once the output holds a few records)."""
    ref = gen_reference.data
    out = tmp_path / "out"
    out.mkdir()
    args = gen_args(problems, out / "run.jsonl", 1)
    p = subprocess.run([sys.executable, "-c", INJECT, str(out), str(len(ref) // 3), *map(str, args)], cwd=tmp_path,
                       env=env(), capture_output=True, text=True, timeout=900)
    line = one_error_line(p)
    assert "run.jsonl" in line and "No space left on device" in line
    assert (out / "run.jsonl").read_text().endswith("\n")
    n = len(ids_once(out / "run.jsonl"))
    assert 0 < n < N and not (out / "run.manifest.json").exists()
    run(args, tmp_path)
    assert (out / "run.jsonl").read_bytes() == ref


# ---- train ----------------------------------------------------------------------------------


def train_args(records: Path, out: str, resume: bool) -> list:
    return ["train", records, "--out", out, "--epochs", 1, "--batch-size", 1, "--grad-accum", 1, "--save-every", 1,
            "--max-length", 96, "--rank", 4, "--alpha", 8, "--lr", 2e-3, "--threads", 1, "--seed", 0,
            "--no-grad-checkpoint", *(["--resume"] if resume else [])]


def checkpoints(run_dir: Path) -> list[int]:
    d = run_dir / "checkpoints"
    done = [p for p in d.glob("checkpoint-*[0-9]") if (p / "trainer_state.json").exists()] if d.is_dir() else []
    return sorted(int(p.name.split("-")[1]) for p in done)


def test_train_survives_5_kills_between_checkpoints(work, gen_reference):
    """Killed 5 times, each at a random moment after the run wrote a checkpoint (in the next
    step or while saving the next checkpoint), resumed with --resume: the same per-step
    losses and final loss as one uninterrupted run."""
    d = work / "train"
    d.mkdir()
    (d / "records.jsonl").write_bytes(gen_reference.data)
    run(train_args(d / "records.jsonl", "ref", False), d)
    steps = [json.loads(x) for x in (d / "ref" / "train_log.jsonl").read_text().splitlines()]
    assert len(steps) == N  # one record per step
    step_s = max(r["elapsed_s"] for r in steps) / len(steps)
    rng, run_dir = random.Random(5), d / "run"
    for i in range(5):
        before = max(checkpoints(run_dir), default=0)
        proc = subprocess.Popen(command(*train_args(d / "records.jsonl", "run", i > 0)), cwd=d, env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while max(checkpoints(run_dir), default=0) == before and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 1.5 * step_s))
        assert proc.poll() is None, f"run {i} ended before its kill: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        assert not (run_dir / "manifest.json").exists()
        assert all((run_dir / "checkpoints" / f"checkpoint-{c}" / "adapter_model.safetensors").exists() for c in checkpoints(run_dir))
        print(f"kill {i}: checkpoints {checkpoints(run_dir)}")
    run(train_args(d / "records.jsonl", "run", True), d)
    a, b = (json.loads((r / "manifest.json").read_text()) for r in (d / "ref", run_dir))
    log_b = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    print(f"final loss: uninterrupted {a['final_loss']:.6f}, killed 5 times {b['final_loss']:.6f}")
    assert [r["step"] for r in log_b] == list(range(1, N + 1))
    assert [r["loss"] for r in log_b] == pytest.approx([r["loss"] for r in steps], abs=1e-4)
    assert b["final_loss"] == pytest.approx(a["final_loss"], abs=1e-4)
    assert (run_dir / "adapter.gguf").exists() and not list(run_dir.glob("*.tmp"))
