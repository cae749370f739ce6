"""Generation throughput and memory: DASD on the dual-view engine against plain greedy decoding.

Every configuration runs in its own process (so peak RSS is its own) on the same MATH
train problems with the embedded model, and the table reports ratios against the
baseline measured in the same run: single-view greedy decoding of the base prompts with
llama-cpp-python's high-level `Llama` class.

    python scripts/bench_generate.py                 # 64 problems, 512 new tokens (the CLI default), batch 16
    python scripts/bench_generate.py --batches 1,16,32 --threads 1
    python scripts/bench_generate.py --layouts split:f16,unified:q8_0   # KV layouts:types at batch > 1

Speculation on vs off runs at the best batch on all problems and at batch 1 on the
first --spec-problems (a batch-1 DASD run over 64 long problems takes most of an hour here).
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
    import llama_cpp
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
    llm = Llama(str(path), n_ctx=args.greedy_ctx, verbose=False, flash_attn=True,
                n_threads=args.threads or None, n_threads_batch=args.threads or None)
    n_vocab = llm.n_vocab()
    emitted, start = 0, time.perf_counter()
    for prompt in prompts:
        llm.reset()
        llm.eval(prompt)
        for _ in range(args.max_new_tokens):
            # the last position's logits (Llama keeps `scores` only with logits_all)
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            tok = int(np.argmax(logits))
            if tok in stops:
                break
            emitted += 1
            llm.eval([tok])
    return {"emitted": emitted, "seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb()}


def child_dasd(args) -> dict:
    from dasd_local.config import DecodeConfig, EngineOptions
    from dasd_local.session import DecodeSession

    task, probs = problems(args.problems)
    cfg = DecodeConfig(strategy=args.strategy, batch=args.batch, max_new_tokens=args.max_new_tokens,
                       step_tokens=args.step_tokens, speculate=args.speculate)
    opts = EngineOptions(ubatch=args.ubatch, threads=args.threads or None, kv=args.kv, kv_type=args.kv_type)
    with DecodeSession(opts, task, cfg) as session:
        start = time.perf_counter()
        n = sum(1 for _ in session.run(probs))
        secs = time.perf_counter() - start
        n_ctx = session.engine.config.n_ctx
    s = session.stats
    return {"emitted": s.emitted, "seconds": secs, "rss_mb": peak_rss_mb(), "records": n, "rows": s.rows,
            "rows_per_call": s.rows / max(s.decode_calls, 1), "n_ctx": n_ctx,
            "drafted": s.drafted, "accepted": s.accepted, "calls_per_token": s.decode_calls / max(s.emitted, 1)}


def child_ceiling(args) -> dict:
    """Forward tokens/s of one large batch (prompt-style prefill): what the hardware allows."""
    from dasd_local.engine import Engine, EngineConfig
    from dasd_local.models import resolve

    n = 512
    with Engine(resolve(None)[0], EngineConfig(n_ctx=4 * n, n_seq_max=1, n_batch=n, n_ubatch=n,
                                               n_threads=args.threads or None)) as e:
        toks = [100 + i % 1000 for i in range(n)]
        e.decode(toks, list(range(n)), [0] * n, [False] * (n - 1) + [True])  # warm-up
        start, reps = time.perf_counter(), 3
        for r in range(reps):
            e.drop(0)
            e.decode(toks, list(range(n)), [0] * n, [False] * (n - 1) + [True])
        secs = time.perf_counter() - start
    return {"emitted": n * reps, "seconds": secs, "rss_mb": peak_rss_mb()}


def child_hf(args) -> dict:
    """The paper's setup: two transformers model instances (base and reference view), each
    with its own KV cache, the same rule (rules.choose) per step, one problem at a time."""
    import torch
    from transformers import AutoModelForCausalLM

    from dasd_local import rules
    from dasd_local.engine import Engine, EngineConfig
    from dasd_local.models import resolve
    from dasd_local.prompts import ViewBuilder

    path = resolve(None)[0]
    task, probs = problems(args.problems)
    with Engine(path, EngineConfig(n_ctx=64, n_seq_max=1)) as tok_engine:
        builder = ViewBuilder(tok_engine, task)
        views = [builder.views(p) for p in probs]
        stops = {t for t in range(tok_engine.n_vocab) if tok_engine.is_eog(t)}
    torch.set_num_threads(args.threads or torch.get_num_threads())
    load = lambda: AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                        torch_dtype=torch.float32).eval()
    base_model, ref_model = load(), load()
    cfg = rules.RuleConfig()
    emitted, start = 0, time.perf_counter()
    with torch.no_grad():
        for v in views:
            out_b = base_model(torch.tensor([v.base_tokens]), use_cache=True)
            out_r = ref_model(torch.tensor([v.ref_tokens]), use_cache=True)
            for _ in range(args.max_new_tokens):
                lb = out_b.logits[:, -1].float().numpy()
                lr = out_r.logits[:, -1].float().numpy()
                tok = int(rules.choose("dasd", lb, lr, cfg).token[0])
                if tok in stops:
                    break
                emitted += 1
                t = torch.tensor([[tok]])
                out_b = base_model(t, past_key_values=out_b.past_key_values, use_cache=True)
                out_r = ref_model(t, past_key_values=out_r.past_key_values, use_cache=True)
    return {"emitted": emitted, "seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb()}


def run_child(mode: str, args, **extra) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--problems", str(args.problems), "--threads", str(args.threads or 0),
           "--max-new-tokens", str(args.max_new_tokens), "--ubatch", str(args.ubatch),
           "--step-tokens", str(args.step_tokens), "--greedy-ctx", str(args.greedy_ctx)]
    for k, v in extra.items():
        if k in ("kv", "kv_type") and mode != "dasd":
            continue
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--batches", default="16")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--strategy", default="dasd")
    ap.add_argument("--ubatch", type=int, default=32)
    ap.add_argument("--step-tokens", type=int, default=512)
    ap.add_argument("--greedy-ctx", type=int, default=2048)
    ap.add_argument("--speculate", default="auto")
    ap.add_argument("--layouts", default="split:f16,unified:f16,unified:q8_0",
                    help="KV layout:type per batched configuration (the first is used at batch 1)")
    ap.add_argument("--kv", default="split")
    ap.add_argument("--kv-type", default="f16")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--hf-problems", type=int, default=4, help="problems for the transformers baseline (0: skip)")
    ap.add_argument("--spec-problems", type=int, default=8, help="problems for speculation on/off at batch 1")
    ap.add_argument("--child", choices=["greedy", "dasd", "ceiling", "hf"])
    args = ap.parse_args()
    if args.child:
        modes = {"greedy": child_greedy, "dasd": child_dasd, "ceiling": child_ceiling, "hf": child_hf}
        print(json.dumps(modes[args.child](args)))
        return
    print(f"bench_generate: {args.problems} MATH train problems, max_new_tokens {args.max_new_tokens}, "
          f"embedded SmolLM2-135M Q4_1, llama.cpp CPU, threads {args.threads or 'all'}")
    base = run_child("greedy", args)
    base_tps = base["emitted"] / base["seconds"]
    print(f"{'config':<36}{'tokens':>8}{'seconds':>9}{'tok/s':>9}{'x greedy':>10}{'RSS MB':>9}{'x RSS':>7}")
    print(f"{'greedy (Llama, 1 view)':<36}{base['emitted']:>8}{base['seconds']:>9.1f}{base_tps:>9.1f}"
          f"{1.0:>10.2f}{base['rss_mb']:>9.0f}{1.0:>7.2f}", flush=True)
    ceiling = run_child("ceiling", args)
    ceil_tps = ceiling["emitted"] / ceiling["seconds"]
    print(f"ceiling: {ceil_tps:.0f} forward tokens/s in 512-token batches; DASD needs 2 forward tokens per "
          f"emitted token, so at most {ceil_tps / 2:.0f} emitted/s = {ceil_tps / 2 / base_tps:.2f}x greedy", flush=True)
    results = {}
    layouts = [x.split(":") for x in args.layouts.split(",")]  # kv layout:kv type
    for b in [int(x) for x in args.batches.split(",")]:
        for kv, kv_type in (layouts if b > 1 else layouts[:1]):
            r = run_child("dasd", args, batch=b, strategy=args.strategy, kv=kv, kv_type=kv_type)
            results[(b, kv, kv_type)] = r
            tps = r["emitted"] / r["seconds"]
            label = f"{args.strategy} b{b} {kv} {kv_type} (ctx {r['n_ctx']})"
            print(f"{label:<36}{r['emitted']:>8}{r['seconds']:>9.1f}{tps:>9.1f}{tps / base_tps:>10.2f}"
                  f"{r['rss_mb']:>9.0f}{r['rss_mb'] / base['rss_mb']:>7.2f}")
            print(f"ratio: {args.strategy} batch {b} ({kv} KV, {kv_type}) tokens/s / greedy = {tps / base_tps:.2f}x; "
                  f"/ half the ceiling = {tps / (ceil_tps / 2):.2f}; peak RSS / single model = "
                  f"{r['rss_mb'] / base['rss_mb']:.2f}x ({r['rows_per_call']:.1f} rows/call, "
                  f"{r['calls_per_token']:.2f} calls/token, drafts {r['accepted']}/{r['drafted']})", flush=True)
            fwd = r["rows"] / r["seconds"]  # prompt prefill of both views + 2 rows per emitted token
            per = r["rows"] / max(r["emitted"], 1)
            print(f"forward: {fwd:.0f} tokens/s = {fwd / ceil_tps:.2f} of the ceiling "
                  f"({r['rows'] - 2 * r['emitted']} prefill + {2 * r['emitted']} decode rows = {per:.2f} per emitted "
                  f"token, so the ceiling allows {ceil_tps / per:.0f} emitted/s = {ceil_tps / per / base_tps:.2f}x greedy)",
                  flush=True)
    best = max(results, key=lambda k: results[k]["emitted"] / results[k]["seconds"])
    # speculate=auto drafts nothing on a CPU (spec_rows 0), so an auto run is the "off" run
    same_off = args.speculate in ("off", "auto")
    for b in sorted({1, best[0]}):
        key = best if b == best[0] else (1, *layouts[0])
        sub = args if b == best[0] else argparse.Namespace(**{**vars(args), "problems": args.spec_problems})
        extra = dict(batch=b, kv=key[1], kv_type=key[2])
        on = results[key] if args.speculate == "on" and sub is args else run_child("dasd", sub, **extra, speculate="on")
        off = results[key] if same_off and sub is args else run_child("dasd", sub, **extra, speculate="off")
        r_on, r_off = on["emitted"] / on["seconds"], off["emitted"] / off["seconds"]
        print(f"ratio: speculation on / off at batch {b} ({key[1]} KV, {sub.problems} problems) = {r_on / r_off:.2f}x "
              f"({r_on:.1f} vs {r_off:.1f} tok/s; {on['accepted']}/{on['drafted']} drafts accepted)", flush=True)
    if args.hf_problems:
        hf_args = argparse.Namespace(**{**vars(args), "problems": args.hf_problems})
        hf = run_child("hf", hf_args)
        b_tps = results[best]["emitted"] / results[best]["seconds"]
        hf_tps = hf["emitted"] / hf["seconds"]
        print(f"ratio: dasd best (batch {best[0]}, {best[1]} KV) / transformers two-instance DASD = "
              f"{b_tps / hf_tps:.1f}x ({hf_tps:.1f} tok/s on {args.hf_problems} problems, RSS {hf['rss_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
