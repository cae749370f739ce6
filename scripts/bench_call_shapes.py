"""llama.cpp alone, on the call shapes DASD makes, against a 512-token prefill in the same run.

DASD's decode loop spends ~95% of its time inside llama.cpp's decode calls (bench_generate's
"own rows" line), so its speed is llama.cpp's speed on those calls: S sequences in split KV
streams, one row each per call, every row's logits wanted (both views' distributions), each
row attending to its own context. This script measures that shape with nothing else running
in Python, beside the prefill batch bench_generate calls its ceiling:

    python scripts/bench_call_shapes.py --model qwen2.5-coder-1.5b
"""
from __future__ import annotations

import argparse
import time


def seconds(fn, reps: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="registry name or GGUF path (default: the embedded model)")
    ap.add_argument("--streams", type=int, default=32, help="sequences per decode call (batch 16 = 32 views)")
    ap.add_argument("--contexts", default="32,256,640", help="cells each sequence holds before the decode calls")
    ap.add_argument("--reps", type=int, default=8)
    a = ap.parse_args()

    from dasd_local.decoding.engine import Engine, EngineConfig
    from dasd_local.models import resolve

    path, n, S = resolve(a.model)[0], 512, a.streams
    contexts = [int(c) for c in a.contexts.split(",")]
    cells = -(-max(n, max(contexts) + a.reps + 2) // 256) * 256  # stream 0 also holds the prefill
    toks = [100 + i % 1000 for i in range(n)]
    cfg = EngineConfig(n_ctx=S * cells, n_seq_max=S, n_batch=n, n_ubatch=n, kv_unified=False, cpu_weights="plain")
    print(f"bench_call_shapes: {path.name}, {S} split streams of {cells} cells, llama.cpp CPU")
    with Engine(path, cfg) as e:
        def prefill(every_row: bool):
            def call():
                e.drop(0)
                e.decode(toks, list(range(n)), [0] * n, [every_row] * (n - 1) + [True])
            return call

        one, every = n / seconds(prefill(False), 3), n / seconds(prefill(True), 3)
        print(f"prefill {n} rows, one sequence: {one:.0f} rows/s with one row's logits (bench_generate's ceiling), "
              f"{every:.0f} rows/s with every row's logits ({every / one:.2f}x)")
        per_call = n // 32  # fill: 32-token chunks of n // 32 streams per call, as DASD prefills
        for ctx in contexts:
            for s in range(S):
                e.drop(s)
            for p in range(0, ctx, 32):
                for first in range(0, S, per_call):
                    seqs = list(range(first, min(S, first + per_call)))
                    e.decode(toks[p % n:p % n + 32] * len(seqs), [q for _ in seqs for q in range(p, p + 32)],
                             [s for s in seqs for _ in range(32)], [False] * 32 * len(seqs))
            pos = [-(-ctx // 32) * 32]

            def step(every_row: bool):
                def call():
                    e.decode([toks[pos[0] % n]] * S, [pos[0]] * S, list(range(S)), [every_row] * (S - 1) + [True])
                    pos[0] += 1
                return call

            with_logits, without = S / seconds(step(True), a.reps), S / seconds(step(False), a.reps)
            print(f"decode {S} rows (one per stream) at {ctx} cells: {with_logits:.0f} rows/s with every row's logits "
                  f"= {with_logits / one:.2f} of the ceiling; {without:.0f} rows/s with one row's = {without / one:.2f}")


if __name__ == "__main__":
    main()
