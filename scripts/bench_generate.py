"""Generation throughput and memory: DASD on the dual-view engine against plain greedy decoding.

Every configuration runs in its own process (so peak RSS is its own) on the same MATH
train problems, and the table reports ratios against the baseline measured in the same
run: single-view greedy decoding of the base prompts with llama-cpp-python's high-level
`Llama` class (same thread count as the engine).

    python scripts/bench_generate.py                 # 64 problems, 512 new tokens (the CLI default), batch 16
    python scripts/bench_generate.py --batches 1,16,32 --threads 1
    python scripts/bench_generate.py --layouts split:f16,unified:q8_0   # KV layouts:types at batch > 1
    python scripts/bench_generate.py --batches 1,16 --placements auto,plain  # weight placements (--cpu-weights)

Laptop-class shapes (a random-weight GGUF from scripts/make_shape_model.py: its text is
noise, so every configuration decodes a fixed number of tokens past end-of-generation):

    python scripts/bench_generate.py --model "$(python scripts/make_shape_model.py llama-3.2-1b | cut -d' ' -f1)" \
        --fixed-length --max-new-tokens 256 --batches 1,8,16,32 --base-batches 16,32 --layouts auto:f16

`--base-batches` adds this engine's batched single-view generation (strategy base) at those
batches: DASD / base at the same batch is what the second view costs. Each configuration
prints its peak RSS against the model file + 1.25x the KV its live sequences held + 300 MB.

Speculation on vs off runs at the best batch on all problems and at batch 1 on the
first --spec-problems (a batch-1 DASD run over 64 long problems takes most of an hour here).
"""

from __future__ import annotations

import argparse
import json
import resource
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "math" / "train.jsonl"
MBPP = REPO.parent / "shared" / "data" / "mbpp" / "train.jsonl"


def model_path(args) -> Path:
    from dasd_local.models import resolve

    return resolve(args.model)[0]


def problems(args):
    """The first --problems of --data (MATH train, or MBPP train with --task code)."""
    from dasd_local.store.problems import load_problems
    from dasd_local.tasks import get_task

    task = get_task(args.task)
    data = Path(args.data) if args.data else (MBPP if args.task == "code" else DATA)
    return task, load_problems(data, task, limit=args.problems)[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_greedy(args) -> dict:
    """Baseline: greedy decoding of each base prompt, one sequence, high-level Llama."""
    import llama_cpp
    import numpy as np

    from dasd_local.decoding.engine import Engine, EngineConfig, open_llama
    from dasd_local.decoding.views import ViewBuilder

    path = model_path(args)
    task, probs = problems(args)
    with Engine(path, EngineConfig(n_ctx=64, n_seq_max=1)) as tok_engine:  # prompts only
        builder = ViewBuilder(tok_engine, task)
        prompts = [builder.views(p).base_tokens for p in probs]
        stops = set() if args.fixed_length else {t for t in range(tok_engine.n_vocab) if tok_engine.is_eog(t)}
        cell = tok_engine.kv_bytes_per_cell
    threads = args.threads or os.cpu_count()  # Llama's own default is half the cores: give it all, as the engine
    llm, placement = open_llama(path, args.cpu_weights, n_ctx=args.greedy_ctx, verbose=False, flash_attn=True,
                                n_threads=threads, n_threads_batch=threads)
    n_vocab = llm.n_vocab()
    emitted, live, start = 0, 0, time.perf_counter()
    for prompt in prompts:
        llm.reset()
        llm.eval(prompt)
        n = 0
        for n in range(args.max_new_tokens):
            # the last position's logits (Llama keeps `scores` only with logits_all)
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            tok = int(np.argmax(logits))
            if tok in stops:
                break
            emitted += 1
            llm.eval([tok])
        live = max(live, len(prompt) + n + 1)
    return {"emitted": emitted, "seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb(),
            "live_kv_mb": live * cell / 2**20, "rows": emitted + sum(map(len, prompts)), "cpu_weights": placement}


def child_dasd(args) -> dict:
    from dasd_local.config import DecodeConfig, EngineOptions, parse_batch
    from dasd_local.decoding.session import DecodeSession

    task, probs = problems(args)
    cfg = DecodeConfig(strategy=args.strategy, batch=parse_batch(args.batch), max_new_tokens=args.max_new_tokens,
                       step_tokens=args.step_tokens, speculate=args.speculate, base_only=args.strategy == "base")
    opts = EngineOptions(model=args.model, ubatch=args.ubatch or None, threads=args.threads or None, kv=args.kv,
                         kv_type=args.kv_type, cpu_weights=args.cpu_weights)
    with DecodeSession(opts, task, cfg) as session:
        if args.fixed_length:  # a random-weight model's text is noise: decode max_new_tokens regardless
            session.engine.is_eog = lambda token: False
        start = time.perf_counter()
        n = sum(1 for _ in session.run(probs))
        secs = time.perf_counter() - start
        e = session.engine
        layout, n_ctx, cell = ("unified" if e.config.kv_unified else "split"), e.config.n_ctx, e.kv_bytes_per_cell
        placement, batch = e.config.cpu_weights, session.cfg.batch
    s = session.stats
    return {"batch": batch, "emitted": s.emitted, "seconds": secs, "rss_mb": peak_rss_mb(), "records": n, "rows": s.rows,
            "decode_seconds": s.decode_seconds,
            "rows_per_call": s.rows / max(s.decode_calls, 1), "n_ctx": n_ctx, "layout": layout,
            "kv_mb": n_ctx * cell / 2**20, "live_kv_mb": s.peak_cells * cell / 2**20,
            "drafted": s.drafted, "accepted": s.accepted, "calls_per_token": s.decode_calls / max(s.emitted, 1),
            "cpu_weights": placement}


def child_ceiling(args) -> dict:
    """Forward tokens/s of one large batch (prompt-style prefill): what the hardware allows."""
    from dasd_local.decoding.engine import Engine, EngineConfig

    n, path = 512, model_path(args)
    with Engine(path, EngineConfig(n_ctx=4 * n, n_seq_max=1, n_batch=n, n_ubatch=n, n_threads=args.threads or None,
                                   cpu_weights=args.cpu_weights)) as e:
        toks = [100 + i % 1000 for i in range(n)]
        e.decode(toks, list(range(n)), [0] * n, [False] * (n - 1) + [True])  # warm-up
        start, reps = time.perf_counter(), 3
        for r in range(reps):
            e.drop(0)
            e.decode(toks, list(range(n)), [0] * n, [False] * (n - 1) + [True])
        secs = time.perf_counter() - start
        placement = e.config.cpu_weights
    return {"emitted": n * reps, "seconds": secs, "rss_mb": peak_rss_mb(), "cpu_weights": placement}


def child_hf(args) -> dict:
    """The paper's setup: two transformers model instances (base and reference view), each
    with its own KV cache, the same rule (rules.choose) per step, one problem at a time."""
    import torch
    from transformers import AutoModelForCausalLM

    from dasd_local.decoding import rules
    from dasd_local.decoding.engine import Engine, EngineConfig
    from dasd_local.models import resolve
    from dasd_local.decoding.views import ViewBuilder

    path = resolve(None)[0]
    task, probs = problems(args)
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
           "--step-tokens", str(args.step_tokens), "--greedy-ctx", str(args.greedy_ctx),
           "--cpu-weights", args.cpu_weights, "--task", args.task] + (["--data", args.data] if args.data else [])
    cmd += (["--model", args.model] if args.model else []) + (["--fixed-length"] if args.fixed_length else [])
    for k, v in extra.items():
        if k in ("kv", "kv_type") and mode != "dasd":
            continue
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"bench child {mode} {extra} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def tps(r: dict) -> float:
    return r["emitted"] / r["seconds"]


def memory_line(label: str, r: dict, file_mb: float) -> str:
    """The memory target: peak RSS <= model file + 1.25 x the KV live sequences held + 300 MB."""
    bound = file_mb + 1.25 * r["live_kv_mb"] + 300
    kv = f", KV cache {r['kv_mb']:.0f} MB ({r['layout']}, {r['n_ctx']} cells)" if "kv_mb" in r else ""
    return (f"memory: {label}: peak RSS {r['rss_mb']:.0f} MB vs file {file_mb:.0f} + 1.25 x live KV "
            f"{r['live_kv_mb']:.0f} + 300 = {bound:.0f} MB: {'within' if r['rss_mb'] <= bound else 'OVER'}{kv}")


def report(label: str, r: dict, base: dict, ceil_tps: float, args) -> None:
    t, b = tps(r), tps(base)
    print(f"{label:<36}{r['emitted']:>8}{r['seconds']:>9.1f}{t:>9.1f}{t / b:>10.2f}"
          f"{r['rss_mb']:>9.0f}{r['rss_mb'] / base['rss_mb']:>7.2f}")
    print(f"ratio: {label} tokens/s / greedy = {t / b:.2f}x; / half the ceiling = {t / (ceil_tps / 2):.2f}; "
          f"peak RSS / single model = {r['rss_mb'] / base['rss_mb']:.2f}x ({r['rows_per_call']:.1f} rows/call, "
          f"{r['calls_per_token']:.2f} calls/token, drafts {r['accepted']}/{r['drafted']})", flush=True)
    fwd, per = r["rows"] / r["seconds"], r["rows"] / max(r["emitted"], 1)
    views = 1 if r.get("strategy") == "base" else 2
    print(f"forward: {fwd:.0f} tokens/s = {fwd / ceil_tps:.2f} of the ceiling ({r['rows'] - views * r['emitted']} "
          f"prefill + {views * r['emitted']} decode rows = {per:.2f} per emitted token, so the ceiling allows "
          f"{ceil_tps / per:.0f} emitted/s = {ceil_tps / per / b:.2f}x greedy)", flush=True)
    if r.get("decode_seconds"):  # the same calls at llama.cpp's own speed: everything else is ours
        inside = r["decode_seconds"]
        print(f"own rows: {inside:.1f} of {r['seconds']:.1f} s inside llama.cpp's decode calls = "
              f"{inside / r['seconds']:.2f} of the ceiling for its own rows (those calls alone; "
              f"{r['rows'] / inside:.0f} rows/s there vs {ceil_tps:.0f} in 512-token prefill batches); "
              f"views, the rule and the loop take the other {1 - inside / r['seconds']:.2f}", flush=True)


def sweep(args, base: dict, ceil_tps: float, file_mb: float) -> dict:
    """DASD at every batch and KV layout, then base (single view) at --base-batches."""
    results = {}
    layouts = [x.split(":") for x in args.layouts.split(",")]  # kv layout:kv type
    batch = lambda b: b if b == "auto" else int(b)
    runs = [(args.strategy, b, kv, t) for b in map(batch, args.batches.split(",")) for kv, t in (layouts if b != 1 else layouts[:1])]
    runs += [("base", b, *layouts[0]) for b in map(batch, filter(None, args.base_batches.split(",")))]
    single = argparse.Namespace(**{**vars(args), "problems": args.single_problems or args.problems})
    placements = args.placements.split(",") if args.placements else [args.cpu_weights]
    for strategy, b, kv, kv_type in runs:
        by_placement = {}
        for placement in placements:
            r = run_child("dasd", single if b == 1 else args, batch=b, strategy=strategy, kv=kv, kv_type=kv_type,
                          cpu_weights=placement)
            r["strategy"] = strategy
            by_placement[placement] = r
            label = f"{strategy} b{b}{'=' + str(r['batch']) if b == 'auto' else ''} {r['layout']} {kv_type} {placement}:{r['cpu_weights']}"
            report(label, r, base, ceil_tps, args)
            print(memory_line(label, r, file_mb), flush=True)
        first, r = placements[0], by_placement[placements[0]]
        for other in placements[1:]:
            o = by_placement[other]
            print(f"ratio: {strategy} batch {b} --cpu-weights {other} ({o['cpu_weights']}) / {first} "
                  f"({r['cpu_weights']}) = {tps(o) / tps(r):.2f}x tokens/s ({tps(o):.1f} vs {tps(r):.1f}; peak RSS "
                  f"{o['rss_mb']:.0f} vs {r['rss_mb']:.0f} MB)", flush=True)
        results[(strategy, b, kv, kv_type)] = r
        if strategy == "base":
            for key, d in results.items():
                if key[0] != "base" and key[1] == b and b != "auto":
                    print(f"ratio: {key[0]} batch {b} ({d['layout']} KV) / base batch {b} = {tps(d) / tps(r):.2f}x "
                          f"tokens/s (the second view's cost)", flush=True)
    return results


def auto_line(results: dict) -> None:
    """`--batch auto` against the fastest fixed batch of the same strategy and KV layout."""
    for key, r in results.items():
        fixed = [k for k in results if k[1] != "auto" and (k[0], k[2], k[3]) == (key[0], key[2], key[3])]
        if key[1] != "auto" or not fixed:
            continue
        best = max(fixed, key=lambda k: tps(results[k]))
        print(f"ratio: {key[0]} batch auto (= {r['batch']}) / best fixed batch {best[1]} ({key[2]} KV) = "
              f"{tps(r) / tps(results[best]):.2f}x tokens/s ({tps(r):.1f} vs {tps(results[best]):.1f})", flush=True)


def speculation(args, results: dict, layouts: list) -> None:
    best = max((k for k in results if k[0] != "base" and k[1] != "auto"), key=lambda k: tps(results[k]))
    # speculate=auto drafts nothing on a CPU (spec_rows 0), so an auto run is the "off" run
    same_off = args.speculate in ("off", "auto")
    for b in sorted({1, best[1]}):
        key = best if b == best[1] else (args.strategy, 1, *layouts[0])
        sub = args if b == best[1] else argparse.Namespace(**{**vars(args), "problems": args.spec_problems})
        extra = dict(batch=b, kv=key[2], kv_type=key[3], strategy=args.strategy)
        on = results[key] if args.speculate == "on" and sub is args else run_child("dasd", sub, **extra, speculate="on")
        off = results[key] if same_off and sub is args and key in results else run_child("dasd", sub, **extra, speculate="off")
        r_on, r_off = tps(on), tps(off)
        print(f"ratio: speculation on / off at batch {b} ({key[2]} KV, {sub.problems} problems) = {r_on / r_off:.2f}x "
              f"({r_on:.1f} vs {r_off:.1f} tok/s; {on['accepted']}/{on['drafted']} drafts accepted)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="registry name or GGUF path (default: the embedded SmolLM2-135M)")
    ap.add_argument("--fixed-length", action="store_true", help="decode --max-new-tokens per problem, past end-of-generation")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--single-problems", type=int, default=0, help="single-stream runs (greedy, batch 1) on the first N "
                    "problems only (0: all): one stream's tokens/s does not depend on how many problems follow")
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--batches", default="16", help="DASD batches, auto among them (e.g. 1,8,16,32,auto)")
    ap.add_argument("--base-batches", default="", help="batches for the single-view base strategy (e.g. 16,32)")
    ap.add_argument("--batch", default="16")
    ap.add_argument("--task", default="math", help="math (MATH train) | code (MBPP train)")
    ap.add_argument("--data", default=None, help="problems file (default: MATH train, or MBPP train with --task code)")
    ap.add_argument("--strategy", default="dasd")
    ap.add_argument("--ubatch", type=int, default=0, help="llama.cpp micro-batch (0: the CLI's default, --step-tokens)")
    ap.add_argument("--step-tokens", type=int, default=512)
    ap.add_argument("--greedy-ctx", type=int, default=2048)
    ap.add_argument("--speculate", default="auto")
    ap.add_argument("--layouts", default="split:f16,unified:f16,unified:q8_0",
                    help="KV layout:type per batched configuration (auto|split|unified; the first is used at batch 1)")
    ap.add_argument("--kv", default="split")
    ap.add_argument("--kv-type", default="f16")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cpu-weights", default="auto", help="weight placement for every run: auto | plain | repack "
                    "(engine.cpu_placement; each line names the placement asked for and the one used)")
    ap.add_argument("--placements", default="", help="run each DASD configuration under these placements too "
                    "(e.g. auto,plain) and print the ratio of each to the first")
    ap.add_argument("--hf-problems", type=int, default=4, help="problems for the transformers baseline (0: skip; "
                    "embedded model only)")
    ap.add_argument("--spec-problems", type=int, default=8, help="problems for speculation on/off at batch 1 (0: skip "
                    "speculation)")
    ap.add_argument("--child", choices=["greedy", "dasd", "ceiling", "hf"])
    args = ap.parse_args()
    if args.child:
        modes = {"greedy": child_greedy, "dasd": child_dasd, "ceiling": child_ceiling, "hf": child_hf}
        print(json.dumps(modes[args.child](args)))
        return
    path = model_path(args)
    file_mb = path.stat().st_size / 2**20
    print(f"bench_generate: {args.problems} {'MBPP' if args.task == 'code' else 'MATH'} train problems, max_new_tokens {args.max_new_tokens}"
          f"{' (fixed length)' if args.fixed_length else ''}, {path.name} ({file_mb:.0f} MiB), llama.cpp CPU, "
          f"threads {args.threads or os.cpu_count()}")
    single = argparse.Namespace(**{**vars(args), "problems": args.single_problems or args.problems})
    if args.single_problems:
        print(f"single-stream runs (greedy, batch 1) on the first {single.problems} problems")
    base = run_child("greedy", single)
    print(f"{'config':<36}{'tokens':>8}{'seconds':>9}{'tok/s':>9}{'x greedy':>10}{'RSS MB':>9}{'x RSS':>7}")
    print(f"{'greedy (Llama, 1 view, ' + base['cpu_weights'] + ')':<36}{base['emitted']:>8}{base['seconds']:>9.1f}{tps(base):>9.1f}"
          f"{1.0:>10.2f}{base['rss_mb']:>9.0f}{1.0:>7.2f}", flush=True)
    print(memory_line("greedy", base, file_mb), flush=True)
    ceiling = run_child("ceiling", args)
    ceil_tps = tps(ceiling)
    print(f"ceiling ({ceiling['cpu_weights']}): {ceil_tps:.0f} forward tokens/s in 512-token batches = "
          f"{ceil_tps / tps(base):.2f}x greedy; DASD "
          f"needs 2 forward tokens per emitted token, so at most {ceil_tps / 2:.0f} emitted/s = "
          f"{ceil_tps / 2 / tps(base):.2f}x greedy", flush=True)
    results = sweep(args, base, ceil_tps, file_mb)
    auto_line(results)
    if args.spec_problems:
        speculation(args, results, [x.split(":") for x in args.layouts.split(",")])
    if args.hf_problems and not args.model:
        hf = run_child("hf", argparse.Namespace(**{**vars(args), "problems": args.hf_problems}))
        best = max(tps(r) for k, r in results.items() if k[0] != "base")
        print(f"ratio: dasd best / transformers two-instance DASD = {best / tps(hf):.1f}x "
              f"({tps(hf):.1f} tok/s on {args.hf_problems} problems, RSS {hf['rss_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
