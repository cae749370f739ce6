"""(pre-merge scaffold) `generate` on Ray: folded into generate.py once the decode session lands."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

from .distributed import DecodeJob, RayConfig, problem_payload, run_blocks


def generate_on_ray(run, cfg, rcfg: RayConfig, console=None) -> dict:
    from .generate import load
    from .records import RunWriter, sha256_file, versions

    task, source, problems, skipped = load(run)
    writer = RunWriter(run.out)
    done = writer.done | writer.failed
    todo = [p for p in problems if p.id not in done]
    failed: list[str] = []

    def on_result(pid, record, error):
        if record is None:
            writer.write_failed(pid, error)
            failed.append(f"{pid}: {error}")
        else:
            writer.write(record)

    gpu_layers = run.n_gpu_layers or (-1 if rcfg.gpus_per_worker > 0 else 0)
    job = DecodeJob(replace(run, threads=rcfg.threads_per_worker, n_gpu_layers=gpu_layers), cfg)
    started = time.time()
    try:
        ray_info = run_blocks(job, [(p.id, problem_payload(p)) for p in todo], rcfg, on_result, skip=done,
                              batch=cfg.batch, label=f"{cfg.strategy} (ray)", console=console) if todo else {}
    finally:
        writer.close()
    info = ray_info.pop("info", {}) if ray_info else {}
    stats = ray_info.pop("stats", {}) if ray_info else {}
    seconds = time.time() - started
    model = info.get("model")
    manifest = {
        "model": model, "model_sha256": sha256_file(model) if model and Path(model).is_file() else None,
        "versions": versions(), "task": task.name, "data": str(source), "split": run.split, "out": str(run.out),
        "decode": asdict(cfg), "run": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(run).items()},
        "engine": info.get("engine"), "template": info.get("template"),
        "counts": {"problems": len(problems), "done": len(writer.done), "ran_now": len(todo) - len(failed),
                   "failed": len(writer.failed), "skipped_rows": len(skipped.rows)},
        "skipped": skipped.rows[:100], "failed_now": failed[:100],
        "stats": {**stats, "seconds": round(seconds, 3),
                  "emitted_per_s": round(stats.get("emitted", 0) / seconds, 2) if seconds > 0 else None},
        "ray": ray_info,
    }
    writer.finish([p.id for p in problems], manifest)
    return manifest
