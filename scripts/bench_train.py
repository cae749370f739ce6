"""Training throughput and memory of `dasd-local train`: the Trainer path against the loop it
replaced, one process against two, and llama.cpp prefill as the in-run scale.

Builds training records from real MATH train problems (base-view prompt + the start of
the gold solution) and runs `dasd-local train` on them as a subprocess per configuration:

  - before: the hand-written loop (optimizer, schedule, chunked loss) of commit BASELINE,
    extracted with `git archive` and run on the same records in the same run (if git or
    the commit is missing, the numbers measured at that commit are printed instead);
  - trainer, 1 process: transformers' Trainer + TRL's chunked LM head (this checkout);
  - trainer, 2 processes: the same under `torchrun --standalone --nproc_per_node 2`
    (gloo on a CPU; the same per-process micro-batch, so twice the global batch).

Tokens/s counts prompt + response tokens through forward and backward, first step excluded
(warm-up); peak RSS is the child's (for torchrun, the largest of its processes). Prints
ratios: trainer / before (target >= 0.9x tokens/s, <= 1.1x peak RSS) and 2 processes /
1 process.

    python scripts/bench_train.py [--records 24] [--steps 5] [--threads 1] [--baseline REF]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dasd_local.decoding.engine import Engine, EngineConfig
from dasd_local.models import resolve
from dasd_local.decoding.views import ViewBuilder
from dasd_local.tasks import Problem, get_task

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "math" / "train.jsonl"
BASELINE = "dcb94d4"  # the last commit with the hand-written training loop
# Measured at BASELINE on the project's shared 2-core CPU while 3-4 other jobs ran (load ~14),
# `python scripts/bench_train.py` of that commit (24 records, 5 steps, 2 torch threads):
# peft 3.4 tokens/s; peak RSS of the whole benchmark process (llama.cpp prefill + training) 2877 MB.
RECORDED = {"tokens_per_s": 3.4, "peak_rss_mb": 2877.0}


def make_records(model: Path, data: Path, n: int, response_tokens: int, out: Path) -> list[list[int]]:
    """n generation-like records; returns the full token sequences for the baseline."""
    task = get_task("math")
    rows = [json.loads(line) for line, _ in zip(data.open(), range(10 * n))]
    rows = [r for r in rows if len(r["problem"]) < 300][:n]
    seqs = []
    with Engine(model) as engine, out.open("w") as f:
        builder = ViewBuilder(engine, task)
        for i, r in enumerate(rows):
            prompt = engine.tokenize(builder.render(task.base_user(Problem(str(i), r["problem"], ""))))
            response = engine.tokenize(r["solution"], special=False)[:response_tokens]
            f.write(json.dumps({"id": str(i), "base_prompt_tokens": prompt, "response_tokens": response,
                                "response": engine.detokenize(response)}) + "\n")
            seqs.append(prompt + response)
    return seqs


def prefill_tokens_per_s(model: Path, seqs: list[list[int]], threads: int | None) -> float:
    """llama.cpp prompt processing of the same sequences (one decode call each)."""
    with Engine(model, EngineConfig(n_ctx=1024, n_batch=1024, n_ubatch=512, n_threads=threads)) as engine:
        start = time.perf_counter()
        for s in seqs:
            engine.clear()
            engine.decode(s, list(range(len(s))), [0] * len(s), [False] * (len(s) - 1) + [True])
        return sum(map(len, seqs)) / (time.perf_counter() - start)


def baseline_tree(ref: str, work: Path) -> Path | None:
    """The package as it was at `ref`, extracted into work/ref (None without git or ref)."""
    out = work / ref
    try:
        tar = subprocess.run(["git", "-C", str(REPO), "archive", ref, "dasd_local", "models"],  # registry.toml links
                             capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    out.mkdir()
    subprocess.run(["tar", "-x", "-C", str(out)], input=tar.stdout, check=True)
    return out


def run_training(records: Path, out: Path, args, processes: int = 1, package: Path = REPO) -> dict:
    """One `dasd-local train` subprocess: steady tokens/s from its log, and its peak RSS."""
    cli = ["train", str(records), "-o", str(out), "--model", args.model, "--epochs", "100",
           "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--grad-accum", "1",
           "--max-length", str(args.max_length), "--lr", "2e-4", "--save-every", "0"]
    if processes == 1:
        cmd = [sys.executable, "-m", "dasd_local", *cli] + (["--threads", str(args.threads)] if args.threads else [])
    else:  # torchrun gives each process OMP_NUM_THREADS=1
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "dasd_local", *cli]
    env = {**os.environ, "PYTHONPATH": str(package)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed:\n{proc.stderr.read()[-3000:]}")
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steady = log[1:] or log  # the first step pays for allocations and warm-up
    seconds = steady[-1]["elapsed_s"] - (log[0]["elapsed_s"] if len(log) > 1 else 0.0)
    tokens = sum(r["tokens"] for r in steady)
    return {"tokens": tokens, "tokens_per_s": tokens / seconds, "peak_rss_mb": usage.ru_maxrss / 1024,
            "final_loss": log[-1]["loss"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--records", type=int, default=24)
    p.add_argument("--response-tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch threads of the 1-process runs (default: all)")
    p.add_argument("--baseline", default=BASELINE, help="commit with the loop to compare against")
    args = p.parse_args()

    gguf, _ = resolve(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = work / "records.jsonl"
        seqs = make_records(gguf, args.data, args.records, args.response_tokens, records)
        base = prefill_tokens_per_s(gguf, seqs, args.threads)
        print(f"model {gguf.name}; {len(seqs)} records, {sum(map(len, seqs)) / len(seqs):.0f} tokens each; "
              f"{args.steps} steps of {args.batch_size} records per process; torch threads: "
              f"{args.threads or os.cpu_count()} (1 process), 1 each (2 processes)")
        old_tree = baseline_tree(args.baseline, work)
        old = run_training(records, work / "old", args, package=old_tree) if old_tree else RECORDED
        new = run_training(records, work / "one", args)
        two = run_training(records, work / "two", args, processes=2)
        print(f"{'configuration':<34}{'tokens':>8}{'tok/s':>9}{'x prefill':>11}{'peak RSS':>11}")
        print(f"{'llama.cpp prefill (inference)':<34}{sum(map(len, seqs)):>8}{base:>9.1f}{1.0:>11.3f}{'':>11}")
        label = f"before: loop of {args.baseline}" + ("" if old_tree else " (recorded)")
        for name, r in ((label, old), ("trainer, 1 process", new), ("trainer, 2 processes (torchrun)", two)):
            print(f"{name:<34}{r.get('tokens', 0):>8}{r['tokens_per_s']:>9.1f}{r['tokens_per_s'] / base:>11.3f}"
                  f"{r['peak_rss_mb']:>8.0f} MB")
        print(f"ratio: trainer / before = {new['tokens_per_s'] / old['tokens_per_s']:.2f}x tokens/s (target >= 0.9), "
              f"{new['peak_rss_mb'] / old['peak_rss_mb']:.2f}x peak RSS (target <= 1.1)")
        print(f"ratio: 2 processes / 1 process = {two['tokens_per_s'] / new['tokens_per_s']:.2f}x tokens/s "
              f"({two['peak_rss_mb'] / new['peak_rss_mb']:.2f}x peak RSS per process)")


if __name__ == "__main__":
    main()
