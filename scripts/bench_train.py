"""Training throughput of `dasd-local train` on this machine, against llama.cpp prefill.

Builds training records from real MATH train problems (base-view prompt + the start of
the gold solution), runs a few optimizer steps with each backend that can run here (PEFT
always; Unsloth too when a CUDA GPU and the package are present) and prints tokens/s
(prompt + response tokens through forward and backward, first step excluded as warm-up),
with llama.cpp's prefill speed on the same sequences as the in-run baseline.

    python scripts/bench_train.py [--records 24] [--steps 5] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from dasd_local.engine import Engine, EngineConfig
from dasd_local.models import resolve
from dasd_local.prompts import ViewBuilder
from dasd_local.tasks import Problem, get_task
from dasd_local.train import TrainConfig, train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math" / "train.jsonl"


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


def prefill_tokens_per_s(model: Path, seqs: list[list[int]]) -> float:
    """llama.cpp prompt processing of the same sequences (one decode call each)."""
    with Engine(model, EngineConfig(n_ctx=1024, n_batch=1024, n_ubatch=512)) as engine:
        start = time.perf_counter()
        for s in seqs:
            engine.clear()
            engine.decode(s, list(range(len(s))), [0] * len(s), [False] * (len(s) - 1) + [True])
        return sum(map(len, seqs)) / (time.perf_counter() - start)


def train_tokens_per_s(backend: str, records: Path, model: str, args, work: Path) -> tuple[float, int]:
    cfg = TrainConfig(data=str(records), model=model, out=str(work / backend), backend=backend, epochs=100,
                      max_steps=args.steps, batch_size=args.batch_size, grad_accum=1, max_length=args.max_length,
                      lr=2e-4, save_every=0)
    train(cfg, show_progress=False)
    log = [json.loads(line) for line in (work / backend / "train_log.jsonl").read_text().splitlines()]
    steady = log[1:] or log  # the first step pays for allocations and kernel warm-up
    seconds = steady[-1]["elapsed_s"] - (log[0]["elapsed_s"] if len(log) > 1 else 0.0)
    return sum(r["tokens"] for r in steady) / seconds, sum(r["tokens"] for r in steady)


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--records", type=int, default=24)
    p.add_argument("--response-tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    args = p.parse_args()

    gguf, _ = resolve(args.model)
    gpu = torch.cuda.is_available()
    backends = ["peft"]
    if gpu:
        try:
            import unsloth  # noqa: F401

            backends.insert(0, "unsloth")
        except ImportError:
            print("CUDA GPU present but unsloth is not installed: PEFT only")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seqs = make_records(gguf, args.data, args.records, args.response_tokens, work / "records.jsonl")
        base = prefill_tokens_per_s(gguf, seqs)
        device = torch.cuda.get_device_name(0) if gpu else f"CPU, {torch.get_num_threads()} torch threads"
        print(f"model {gguf.name}; {len(seqs)} records, {sum(map(len, seqs)) / len(seqs):.0f} tokens each; {device}")
        print(f"{'backend':<10}{'tokens':>8}{'tok/s':>10}{'vs llama.cpp prefill':>24}")
        print(f"{'llama.cpp':<10}{sum(map(len, seqs)):>8}{base:>10.1f}{1.0:>24.3f}  (inference only, baseline)")
        for backend in backends:
            rate, tokens = train_tokens_per_s(backend, work / "records.jsonl", args.model, args, work)
            print(f"{backend:<10}{tokens:>8}{rate:>10.1f}{rate / base:>24.3f}")


if __name__ == "__main__":
    main()
