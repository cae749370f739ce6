"""Generation throughput and memory: DASD on the dual-view engine against plain greedy decoding.

Every configuration runs in its own process (so peak RSS is its own) on the same MATH
train problems with the embedded model, and the table reports ratios against the
baseline measured in the same run: single-view greedy decoding of the base prompts with
llama-cpp-python's high-level `Llama` class.

    python scripts/bench_generate.py                 # 32 problems, batch 1 and 16
    python scripts/bench_generate.py --problems 64 --batches 1,16,32
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "math" / "train.jsonl"


def problems(n: int):
    from dasd_local.data import load_problems
    from dasd_local.tasks import get_task

    task = get_task("math")
    return task, load_problems(DATA, task, limit=n)[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_greedy(args) -> dict:
    """Baseline: greedy decoding of each base prompt, one sequence, high-level Llama."""
    import numpy as np
    from llama_cpp import Llama

    from dasd_local.engine import Engine, EngineConfig
    from dasd_local.models import resolve
    from dasd_local.prompts import ViewBuilder

    path = resolve(None)[0]
    task, probs = problems(args.problems)
    with Engine(path, EngineConfig(n_ctx=64, n_seq_max=1)) as tok_engine:  # prompts only
        builder = ViewBuilder(tok_engine, task)
        prompts = [builder.views(p).base_tokens for p in probs]
        stops = {t for t in range(tok_engine.n_vocab) if tok_engine.is_eog(t)}
    llm = Llama(str(path), n_ctx=args.greedy_ctx, verbose=False, flash_attn=True)
    emitted, start = 0, time.perf_counter()
    for prompt in prompts:
        llm.reset()
        llm.eval(prompt)
        for _ in range(args.max_new_tokens):
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if tok in stops:
                break
            emitted += 1
            llm.eval([tok])
    return {"emitted": emitted, "seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb()}


def child_dasd(args) -> dict:
    from dasd_local.decode import DecodeConfig, Decoder
    from dasd_local.engine import Engine, EngineConfig
    from dasd_local.generate import RunConfig, size_context
    from dasd_local.models import resolve
    from dasd_local.prompts import ViewBuilder

    task, probs = problems(args.problems)
    cfg = DecodeConfig(strategy=args.strategy, batch=args.batch, max_new_tokens=args.max_new_tokens,
                       step_tokens=args.step_tokens)
    engine = Engine(resolve(None)[0], EngineConfig(n_ctx=64, n_seq_max=1, n_batch=args.step_tokens,
                                                   n_ubatch=args.ubatch))
    size_context(engine, ViewBuilder(engine, task), probs, RunConfig(), cfg)
    dec = Decoder(engine, task, cfg)
    start = time.perf_counter()
    n = sum(1 for _ in dec.run(probs))
    secs = time.perf_counter() - start
    s = dec.stats
    return {"emitted": s.emitted, "seconds": secs, "rss_mb": peak_rss_mb(), "records": n,
            "rows_per_call": s.rows / max(s.decode_calls, 1), "n_ctx": engine.config.n_ctx}


def run_child(mode: str, args, **extra) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--problems", str(args.problems),
           "--max-new-tokens", str(args.max_new_tokens), "--ubatch", str(args.ubatch),
           "--step-tokens", str(args.step_tokens), "--greedy-ctx", str(args.greedy_ctx)]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--strategy", default="dasd")
    ap.add_argument("--ubatch", type=int, default=32)
    ap.add_argument("--step-tokens", type=int, default=512)
    ap.add_argument("--greedy-ctx", type=int, default=2048)
    ap.add_argument("--child", choices=["greedy", "dasd"])
    args = ap.parse_args()
    if args.child:
        print(json.dumps({"greedy": child_greedy, "dasd": child_dasd}[args.child](args)))
        return
    print(f"bench_generate: {args.problems} MATH train problems, max_new_tokens {args.max_new_tokens}, "
          f"embedded SmolLM2-135M Q4_1, llama.cpp CPU")
    base = run_child("greedy", args)
    base_tps = base["emitted"] / base["seconds"]
    print(f"{'config':<28}{'tokens':>8}{'seconds':>9}{'tok/s':>9}{'x greedy':>10}{'RSS MB':>9}{'x RSS':>7}")
    print(f"{'greedy (Llama, 1 view)':<28}{base['emitted']:>8}{base['seconds']:>9.1f}{base_tps:>9.1f}"
          f"{1.0:>10.2f}{base['rss_mb']:>9.0f}{1.0:>7.2f}")
    for b in [int(x) for x in args.batches.split(",")]:
        r = run_child("dasd", args, batch=b, strategy=args.strategy)
        tps = r["emitted"] / r["seconds"]
        label = f"{args.strategy} batch {b} (ctx {r['n_ctx']})"
        print(f"{label:<28}"
              f"{r['emitted']:>8}{r['seconds']:>9.1f}{tps:>9.1f}{tps / base_tps:>10.2f}{r['rss_mb']:>9.0f}"
              f"{r['rss_mb'] / base['rss_mb']:>7.2f}")
        print(f"ratio: {args.strategy} batch {b} tokens/s / greedy = {tps / base_tps:.2f}x; "
              f"peak RSS / single model = {r['rss_mb'] / base['rss_mb']:.2f}x "
              f"({r['rows_per_call']:.1f} rows per decode call)")


if __name__ == "__main__":
    main()
