"""Evaluation throughput (problems per second) of the embedded model, batched vs not.

Runs `dasd_local.evaluate.evaluate` on the same problems once per batch size, each in
a fresh output directory, and prints problems/s with the ratio to the first batch
size (the baseline, batch 1 by default) and how many greedy answers agree with it
(llama.cpp's kernels change slightly with the batch shape, so a few may differ).

    python scripts/bench_eval.py --task mcq --data ../shared/data/arc_challenge/test.jsonl --limit 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="mcq")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "arc_challenge" / "test.jsonl"))
    ap.add_argument("--model", default=None, help="registry name or GGUF path (default: embedded)")
    ap.add_argument("--limit", type=int, default=32, help="problems per run")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batches", default="1,16", help="comma-separated batch sizes; the first is the baseline")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp CPU threads (default: all cores)")
    return ap.parse_args()


def run_once(args: argparse.Namespace, batch: int, out_dir: Path) -> tuple[dict, dict]:
    from dasd_local.evaluate import PREDICTIONS, EvalConfig, eval_decode, evaluate

    cfg = EvalConfig(task=args.task, data=args.data, model=args.model, out_dir=out_dir, limit=args.limit,
                     decode=eval_decode(max_new_tokens=args.max_new_tokens, batch=batch), threads=args.threads)
    summary = evaluate(cfg)
    lines = [json.loads(x) for x in (out_dir / PREDICTIONS).read_text().splitlines()]
    return summary, {x["id"]: x["prediction"] for x in lines}


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    args = parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    table = Table(title=f"eval throughput: {args.task}, {args.limit} problems, <= {args.max_new_tokens} new tokens")
    for col in ("batch", "seconds", "problems/s", "tokens/s", "vs baseline", "same answers", args.task + " score"):
        table.add_column(col, justify="right")
    base_rate = base_answers = None
    rates = {}
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        for batch in batches:
            s, answers = run_once(args, batch, Path(tmp) / f"b{batch}")
            rate = rates[batch] = s["problems_per_s_now"]
            base_rate, base_answers = base_rate or rate, base_answers or answers
            same = sum(answers.get(k) == v for k, v in base_answers.items())
            tok_rate = s["emitted_tokens"] / s["seconds_now"]
            table.add_row(str(batch), f"{s['seconds_now']:.1f}", f"{rate:.3f}", f"{tok_rate:.1f}", f"{rate / base_rate:.2f}x",
                          f"{same}/{len(base_answers)}", f"{100 * s['score']:.1f}%")
    Console().print(table)
    for batch, rate in rates.items():
        if batch != batches[0]:
            print(f"ratio: eval batch {batch} / batch {batches[0]} = {rate / rates[batches[0]]:.2f}x problems/s "
                  f"({rate:.3f} vs {rates[batches[0]]:.3f} problems/s, {args.task}, {args.limit} problems)")


if __name__ == "__main__":
    main()
