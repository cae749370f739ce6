"""Ray's own cost: `generate` in one local process with 2 threads against `--ray` with
2 workers x 1 thread, on the same MATH train problems, in the same run.

Each configuration runs in its own process; the Ray one starts a fresh local cluster
(`--ray auto`, no cluster running). Throughput is emitted tokens per second of decoding:
for the local run from the manifest's decode seconds, for Ray from the first block handed
out to the last record written (actor start and model load included, Ray's own start-up
not: it is printed apart). Target: Ray at >= 0.9x the local run.

    python scripts/bench_ray.py                          # 64 problems, 512 new tokens, batch 16
    python scripts/bench_ray.py --max-new-tokens 128     # shorter (a shared 2-core machine)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "math" / "train.jsonl"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads of the local run (Ray: 1 per worker)")
    ap.add_argument("--child", choices=("local", "ray"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def child(args) -> dict:
    from dasd_local.config import DecodeConfig, RunConfig
    from dasd_local.runner import RayConfig
    from dasd_local.generate import generate

    cfg = DecodeConfig(max_new_tokens=args.max_new_tokens, batch=args.batch)
    out = Path(args.out)
    if args.child == "local":
        m = generate(RunConfig(data=str(DATA), limit=args.problems, out=out, threads=args.threads), cfg)
        return {"emitted": m["stats"]["emitted"], "seconds": m["stats"]["seconds"]}
    m = generate(RunConfig(data=str(DATA), limit=args.problems, out=out), cfg,
                 ray=RayConfig(ray="auto", workers=str(args.workers), threads_per_worker=1))
    ray = m["ray"]
    return {"emitted": m["stats"]["emitted"], "seconds": ray["run_s"], "init_s": ray["init_s"],
            "first_record_s": ray["first_record_s"], "workers": ray["workers"]}


def run(args, kind: str, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--out", str(out), "--problems", str(args.problems),
           "--max-new-tokens", str(args.max_new_tokens), "--batch", str(args.batch),
           "--workers", str(args.workers), "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)  # a fresh local cluster: its start-up is part of what we measure
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{kind} run failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min average, {os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        local = run(args, "local", Path(tmp) / "local.jsonl")
        ray = run(args, "ray", Path(tmp) / "ray.jsonl")
        same = [json.loads(x)["id"] for x in (Path(tmp) / "local.jsonl").read_text().splitlines()] == \
               [json.loads(x)["id"] for x in (Path(tmp) / "ray.jsonl").read_text().splitlines()]
    rate = {k: r["emitted"] / r["seconds"] for k, r in (("local", local), ("ray", ray))}
    print(f"{args.problems} MATH train problems, {args.max_new_tokens} new tokens, batch {args.batch}")
    print(f"{'run':<34}{'tokens':>8}{'seconds':>10}{'tok/s':>9}{'ratio':>8}")
    print(f"{f'local, 1 process x {args.threads} threads':<34}{local['emitted']:>8}{local['seconds']:>10.1f}"
          f"{rate['local']:>9.1f}{1.0:>8.2f}")
    print(f"{f'ray, {args.workers} workers x 1 thread':<34}{ray['emitted']:>8}{ray['seconds']:>10.1f}"
          f"{rate['ray']:>9.1f}{rate['ray'] / rate['local']:>8.2f}")
    print(f"Ray start-up: {ray['init_s']:.1f} s (ray.init, fresh local cluster); first record "
          f"{ray['first_record_s']:.1f} s after the dataset started; same ids in the same order: {same}")
    for w, s in ray["workers"].items():
        print(f"  worker {w}: {s['problems']} problems, {s['tokens_per_s']} tok/s while busy")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
