"""`generate --samples N` against greedy DASD on the same problems, in one run: verified
yield per problem, distinct verified solutions, the kept data's high-PPL ratio (is the
sampled data still aligned with the model?) and what N samples cost against N runs.

    python scripts/bench_samples.py --model qwen2.5-coder-0.5b --problems 32 --samples 4

Both runs decode the first --problems of MBPP train (`--task code`, the default) with the
CLI's defaults (batch auto, 512 new tokens), are verified by the task's own sandboxed
tests with `--dedupe`, and print one line each, then the comparison:

    samples: N=4 solves A/P problems (N=1: B/P); distinct verified solutions C (N=1: D); high-PPL ...

"N separate runs" is N times the greedy run's wall time: a seeded run with one sample
and another seed costs the same as the greedy one (one sequence pair per problem).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MBPP = REPO.parent / "shared" / "data" / "mbpp" / "train.jsonl"


def run(args, samples: int, out: Path) -> dict:
    """Generate + verify --dedupe; the kept records and the numbers of the line."""
    from dasd_local.config import DecodeConfig, RunConfig, VerifyConfig
    from dasd_local.generate import generate
    from dasd_local.store.records import read_jsonl
    from dasd_local.verify import verify_file

    started = time.time()
    manifest = generate(RunConfig(model=args.model, data=str(args.data), task=args.task, limit=args.problems,
                                  out=out / f"s{samples}.jsonl"),
                        DecodeConfig(samples=samples, temperature=args.temperature, seed=args.seed,
                                     max_new_tokens=args.max_new_tokens))
    seconds = time.time() - started
    report = verify_file(out / f"s{samples}.jsonl", out / f"k{samples}.jsonl", VerifyConfig(dedupe=True))
    kept = read_jsonl(out / f"k{samples}.jsonl")[0]
    n, correct, _ = report.totals()
    return {"samples": samples, "seconds": seconds, "tokens": manifest["stats"]["emitted"],
            "tok_s": manifest["stats"]["emitted"] / seconds, "records": n, "correct": correct,
            "solved": report.solved(), "problems": len(report.problems), "distinct": len(kept), "kept": kept}


def high_ppl(kept: list[dict], threshold: float) -> dict:
    """High-PPL token ratio of the kept responses, its bootstrap interval over problems."""
    from dasd_local.schema import problem_id_of
    from dasd_local.analysis.intervals import ratio_ci

    by_problem: dict[str, list[int]] = {}
    for rec in kept:
        tally = by_problem.setdefault(problem_id_of(rec), [0, 0])
        for step in rec.get("steps") or []:
            tally[0] += 1 / max(step["p_base"], 1e-300) > threshold
            tally[1] += 1
    return ratio_ci([v[0] for v in by_problem.values()], [v[1] for v in by_problem.values()])


def pct(ci: dict) -> str:
    return "-" if ci["estimate"] is None else f"{100 * ci['estimate']:.2f}% [{100 * ci['lo']:.2f}, {100 * ci['hi']:.2f}]"


def main() -> None:
    from dasd_local.config import HIGH_PPL

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--task", default="code")
    ap.add_argument("--data", type=Path, default=MBPP)
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--threshold", type=float, default=HIGH_PPL, help="high PPL: 1/p_base above this (Table 3)")
    ap.add_argument("--out", type=Path, default=None, help="keep the records here (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        rows = [run(args, 1, out), run(args, args.samples, out)]
        for r in rows:
            r["high_ppl"] = high_ppl(r.pop("kept"), args.threshold)
            print(json.dumps(r), flush=True)
    one, many = rows
    n = args.samples
    print(f"samples: N={n} solves {many['solved']}/{many['problems']} problems (N=1: {one['solved']}/{one['problems']}); "
          f"distinct verified solutions {many['distinct']} (N=1: {one['distinct']}); "
          f"sample pass rate {100 * many['correct'] / many['records']:.1f}% (N=1: {100 * one['correct'] / one['records']:.1f}%); "
          f"high-PPL ratio of the kept data {pct(many['high_ppl'])} (N=1: {pct(one['high_ppl'])}); "
          f"{many['tok_s']:.1f} tok/s (N=1: {one['tok_s']:.1f}); ratio: N separate runs / one run of N samples "
          f"{n * one['seconds'] / many['seconds']:.2f}x time, {many['tokens'] / (n * one['tokens']):.2f}x tokens")


if __name__ == "__main__":
    main()
