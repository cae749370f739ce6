"""How fast a 2,000-problem HTML report opens: headless Chromium loads, runs and dumps it.

Builds a run of N problems x T response tokens (default 2,000 x 512) by repeating the
records of a real run (any generate output with --record-candidates), writes the report
with `write_report`, then times `chromium --headless --screenshot` of it (load, scripts,
first page painted) against the same browser on a one-line HTML page (the browser's own start-up) in the same run. Prints the
file size, the problems on the first page, and the time as a ratio to the baseline.

    python scripts/bench_report.py RUN.jsonl [--problems 2000] [--tokens 512]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def load_time(browser: str, page: Path, runs: int = 3) -> float:
    """Best wall time of `runs` headless loads to a painted screenshot (start, parse,
    scripts, layout, paint), as a user opening the file waits for it."""
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1100,800",
                        f"--screenshot={page.with_suffix('.png')}", page.as_uri()], capture_output=True, timeout=600)
        best = min(best, time.perf_counter() - t)
    return best


def first_page(browser: str, page: Path) -> int:
    p = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=600)
    return p.stdout.count('class="problem"')


def big_run(src: Path, dst: Path, problems: int, tokens: int) -> int:
    records = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    steps = 0
    with dst.open("w") as f:
        for i in range(problems):
            r = records[i % len(records)]
            s = (r["steps"] * (tokens // max(len(r["steps"]), 1) + 1))[:tokens]
            steps += len(s)
            f.write(json.dumps({**r, "id": f"p{i}", "steps": s}) + "\n")
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--problems", type=int, default=2000)
    ap.add_argument("--tokens", type=int, default=512)
    args = ap.parse_args()
    from dasd_local.reporting.html import PAGE_SIZE, write_report

    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        raise SystemExit("no Chromium found")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        steps = big_run(args.run, tmp / "big.jsonl", args.problems, args.tokens)
        t = time.perf_counter()
        write_report(tmp / "big.jsonl", tmp / "big.html")
        write_s = time.perf_counter() - t
        (tmp / "empty.html").write_text("<!DOCTYPE html><p>empty</p>")
        base = load_time(browser, tmp / "empty.html")
        big = load_time(browser, tmp / "big.html")
        shown = first_page(browser, tmp / "big.html")
        size = (tmp / "big.html").stat().st_size / 1e6
    print(f"report: {args.problems} problems, {steps} tokens, {size:.1f} MB, written in {write_s:.1f} s; "
          f"first page shows {shown} problems (page size {PAGE_SIZE})")
    print(f"ratio: headless open-to-screenshot of the report / of an empty page = {big / base:.2f}x "
          f"({big:.2f} s vs {base:.2f} s)")


if __name__ == "__main__":
    main()
