"""Where a verb's problems run: here, or on a Ray cluster through Ray Data (`--ray`). One
entry point for generate, eval and score:

    facts = run(job, payloads, on_result, ray=None)

A job is any picklable object whose `open()` returns a session: `run(payloads, on_step)`
yields (id, record | None, error | None) per problem, in completion order; `stats()`
(cumulative, with `emitted` tokens) and `info()` (model path, engine, decode settings) are
small JSON-able dicts. `DecodeJob` (decoding.session) serves generate and eval,
`ScoreJob` (decoding.forcing) the scoring pass. Here, the job opens once in this process,
under the one progress bar. On Ray, the problems become a Ray Dataset processed by
`map_batches` over a pool of actors; each actor (JobWorker) opens the job once and runs it
over every block it is given, yielding one row per finished problem, so records stream
back to the driver as they finish. The driver hands them to `on_result` (the caller's
records/resume machinery: no shared filesystem is needed), drops any id it already has (a
block retried after its actor died may repeat problems), and shows the bar.

Ray Data already provides the pool, the streaming, autoscaling between MIN and MAX actors,
and fault tolerance (a dead actor is restarted and its unfinished block retried); this
module only adapts a job to it. Ray is imported only inside these functions: without
`--ray` it is never imported. Knows Ray and the job protocol; knows nothing about output
files or the CLI.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

from .config import RayConfig
from .errors import ConfigError, DasdError, ModelError
from .store.progress import Bar

INSTALL = "pip install 'dasd-local[ray]'"


# a block that has killed its actor this many times fails the run instead of looping
MAX_BLOCK_RETRIES = 3


OnResult = Callable[[str, "dict | None", "str | None"], None]


def run(job, payloads: list[tuple[str, dict]], on_result: OnResult, ray: RayConfig | None = None, *,
        skip: set[str] = frozenset(), batch: int = 16, label: str = "run", console=None) -> dict:
    """Run the job over `payloads` ((id, JSON-able dict), in input order) here or, with an
    enabled `ray`, on the cluster (each actor's engine on its share: RayConfig.worker_options);
    `on_result(id, record, error)` gets each problem once. Returns {"stats": the sessions'
    summed counters, "info": a session's info, "ray": the Ray section of the manifest (None
    here)}. Ctrl-C here propagates as KeyboardInterrupt (the caller says what is kept)."""
    if ray is not None and ray.enabled:
        return _run_on_ray(replace(job, opts=ray.worker_options(job.opts)), payloads, ray, on_result, skip=skip,
                           batch=batch, label=f"{label} (ray)", console=console)
    return _run_here(job, payloads, on_result, label, console)


def _run_here(job, payloads: list[tuple[str, dict]], on_result: OnResult, label: str, console) -> dict:
    session = job.open()
    try:
        with Bar(label, len(payloads), console) as bar:
            for pid, record, error in session.run([p for _, p in payloads], bar.step):
                on_result(pid, record, error)
                bar.done_one()
        return {"stats": session.stats(), "info": session.info(), "ray": None}
    finally:
        session.close()


def model_facts(info: dict, model: str | None) -> dict:
    """The model as the sessions opened it, with its sha256 where this machine holds that
    file (on Ray the driver need not have the model: then the sha256 is None); when nothing
    ran, what the name means here, if anything."""
    from pathlib import Path

    from .models import resolve
    from .store.records import sha256_file

    path = info.get("model")
    if path is None:
        try:
            path = str(resolve(model)[0])
        except DasdError:
            return {"model": model, "model_sha256": None}
    return {"model": path, "model_sha256": sha256_file(Path(path)) if Path(path).is_file() else None}


# ---- Ray -------------------------------------------------------------------------------------

def import_ray():
    """Ray, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra's `data` part)
    except ImportError:
        raise ConfigError(f"--ray needs Ray on this machine: {INSTALL}") from None
    return ray



def connect(address: str) -> tuple[bool, float]:
    """Join (or start) the cluster; returns (whether we started Ray here, seconds taken).

    `auto` is Ray's own address=None: RAY_ADDRESS if set, else a cluster started with
    `ray start` on this node, else a new local one."""
    import logging

    ray = import_ray()
    if ray.is_initialized():
        return False, 0.0
    # the C++ core logs at error level that Ray Data keeps constructor args in the object
    # store, on every run; the driver shows Ray's real failures as exceptions anyway
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    started = time.time()
    try:
        ray.init(address=None if address == "auto" else address, log_to_driver=False,
                 logging_level=logging.WARNING, include_dashboard=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise ConfigError(f"--ray {address}: cannot reach a Ray cluster ({str(e).splitlines()[0]})") from None
    return True, time.time() - started



def pool_size(rcfg: RayConfig, resources: dict, blocks: int) -> tuple[int, int]:
    """(min, max) actors: as asked, else as many as the cluster's CPUs (or GPUs) hold."""
    if rcfg.pool is not None:
        lo, hi = rcfg.pool
    elif rcfg.gpus_per_worker > 0:
        lo = hi = max(1, int(resources.get("GPU", 0) // rcfg.gpus_per_worker))
    else:
        lo = hi = max(1, int(resources.get("CPU", 1) // rcfg.threads_per_worker))
    hi = max(1, min(hi, blocks))
    return min(lo, hi), hi



def block_size(n: int, workers: int, batch: int) -> int:
    """Problems per block: two blocks per worker (a free worker takes the next one), at least a
    full continuous batch, but never so large that some workers get none."""
    return max(1, min(max(batch, math.ceil(n / (2 * workers))), math.ceil(n / workers)))



class JobWorker:
    """The map_batches actor: one job session per actor, opened once, run over every block.

    A model that does not resolve here (or any DasdError while opening) is reported on the
    first row this actor yields, naming the node, and the driver stops with that line."""

    def __init__(self, job):
        import socket

        import ray

        node_id = ray.get_runtime_context().get_node_id()
        ip = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), ray.util.get_node_ip_address())
        self.where, self.node = f"{ip}:{os.getpid()}", f"{socket.gethostname()} ({ip})"
        self.session, self.fatal, self.busy = None, "", 0.0
        try:
            self.session = job.open()
        except DasdError as e:
            self.fatal = f"node {self.node}: {e}"

    def __call__(self, batch: dict) -> Iterator[dict]:
        if self.fatal:
            yield self._row(-1, "", None, None, fatal=self.fatal)
            return
        index = {str(pid): int(i) for pid, i in zip(batch["id"], batch["index"])}
        payloads = [json.loads(p) for p in batch["payload"]]
        start = time.time()
        for pid, record, error in self.session.run(payloads):
            now = time.time()
            self.busy += now - start
            start = now
            yield self._row(index[pid], pid, record, error)

    def _row(self, index: int, pid: str, record: dict | None, error: str | None, fatal: str = "") -> dict:
        info = {} if self.session is None else {"stats": self.session.stats(), **self.session.info()}
        return {"index": [index], "id": [pid], "record": ["" if record is None else json.dumps(record, ensure_ascii=False)],
                "error": [error or ""], "fatal": [fatal], "worker": [self.where], "busy": [self.busy],
                "info": [json.dumps(info)]}

    def __del__(self):
        if getattr(self, "session", None) is not None:
            self.session.close()



@dataclass
class Throughput:
    """Per-worker throughput on Ray as the rows arrive (each row carries its worker's running totals)."""

    started: float = field(default_factory=time.time)
    workers: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    duplicates: int = 0
    first: float | None = None  # seconds from the start to the first row

    def add(self, worker: str, busy: float, info: dict) -> None:
        if self.first is None:
            self.first = time.time() - self.started
        w = self.workers.setdefault(worker, {"problems": 0})
        w["problems"] += 1
        w["tokens"] = int(info.get("stats", {}).get("emitted", 0))
        w["busy_s"] = round(busy, 3)
        w["tokens_per_s"] = round(w["tokens"] / busy, 2) if busy > 0 else None
        w["stats"] = info.pop("stats", {})
        self.info = info

    def tokens_per_s(self) -> float:
        """Summed over workers (each at its own rate while busy)."""
        return sum(w["tokens_per_s"] or 0 for w in self.workers.values())

    def stats(self) -> dict:
        """The workers' cumulative session stats, summed (nested dicts summed per key)."""
        total: dict = {}
        for w in self.workers.values():
            for k, v in w["stats"].items():
                if isinstance(v, dict):
                    sub = total.setdefault(k, {})
                    for kk, vv in v.items():
                        sub[kk] = sub.get(kk, 0) + vv
                elif isinstance(v, (int, float)):
                    total[k] = total.get(k, 0) + v
        return total

    def manifest(self) -> dict:
        return {"run_s": round(time.time() - self.started, 3),
                "first_record_s": None if self.first is None else round(self.first, 3),
                "worker_count": len(self.workers), "duplicates_dropped": self.duplicates,
                "workers": {k: {kk: vv for kk, vv in w.items() if kk != "stats"} for k, w in self.workers.items()}}



def dataset(job, payloads: list[tuple[str, dict]], rcfg: RayConfig, batch: int):
    """The problems as a Ray Dataset (index, id, payload) mapped by the actor pool."""
    import logging
    import warnings

    import ray

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its plan and progress notes; ours is the one bar
    n = len(payloads)
    lo, hi = pool_size(rcfg, ray.cluster_resources(), n)
    block = rcfg.block or block_size(n, hi, batch)
    ctx = ray.data.DataContext.get_current()
    ctx.target_max_block_size = 1  # every yielded row leaves as its own block: records stream back at once
    ctx.enable_progress_bars = False  # ours is the one bar
    rows = [{"index": i, "id": pid, "payload": json.dumps(p, ensure_ascii=False)} for i, (pid, p) in enumerate(payloads)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(n / block)))
    # one block in flight per actor: a free actor always takes the next block (no queue behind a slow one)
    pool = ray.data.ActorPoolStrategy(min_size=lo, max_size=hi, max_tasks_in_flight_per_actor=1)
    with warnings.catch_warnings():
        # Ray Data's defaults retry a block forever; bounded here (Ray 2.60 calls these "ray_remote_args")
        warnings.simplefilter("ignore")
        return ds.map_batches(JobWorker, fn_constructor_args=(job,), batch_size=block, compute=pool,
                              num_cpus=rcfg.threads_per_worker, num_gpus=rcfg.gpus_per_worker or None,
                              max_restarts=-1, max_task_retries=MAX_BLOCK_RETRIES), (lo, hi, block)



def _run_on_ray(job, payloads: list[tuple[str, dict]], rcfg: RayConfig, on_result: OnResult, *,
                skip: set[str] = frozenset(), batch: int = 16, label: str = "ray", console=None) -> dict:
    """Run `payloads` on the cluster; `on_result` gets each finished problem once, in
    completion order. Returns the workers' summed stats and session info and the run's Ray
    section for the manifest."""
    ray = import_ray()
    started_here, init_s = connect(rcfg.ray)
    tally, seen = Throughput(), set(skip)  # the clock starts once the cluster is there
    try:
        ds, (lo, hi, block) = dataset(job, payloads, rcfg, batch)
        with Bar(label, len(payloads), console) as bar:
            bar.note("starting workers")

            def advance(t: Throughput) -> None:
                bar.note(f"{len(t.workers)} workers  {t.tokens_per_s():.0f} tok/s")
                bar.done_one()

            rows = (row for out in ds.iter_batches(batch_size=None, prefetch_batches=0) for row in _rows(out))
            deliver(rows, seen, tally, on_result, advance)
    except DasdError:
        raise
    except Exception as e:  # Ray's failures come in many types; one line for the user
        raise DasdError(f"the Ray run failed: {_first_line(e)}") from e
    finally:
        if started_here:
            ray.shutdown()
    ray_section = {"address": rcfg.ray, "init_s": round(init_s, 2), "pool": [lo, hi], "block": block,
                   "threads_per_worker": rcfg.threads_per_worker, "gpus_per_worker": rcfg.gpus_per_worker,
                   **tally.manifest()}
    return {"stats": tally.stats(), "info": tally.info, "ray": ray_section}



def deliver(rows, seen: set[str], tally: Throughput, on_result: OnResult, advance=lambda tally: None) -> None:
    """Hand each problem's first row to `on_result`; a fatal row (a worker that could not
    open its session) stops the run with its line."""
    for row in rows:
        if row["fatal"]:
            raise ModelError(row["fatal"])
        tally.add(row["worker"], float(row["busy"]), json.loads(row["info"]))
        if row["id"] in seen:
            tally.duplicates += 1  # a retried block repeating a problem already written
            continue
        seen.add(row["id"])
        on_result(row["id"], json.loads(row["record"]) if row["record"] else None, row["error"] or None)
        advance(tally)



def _rows(batch: dict) -> Iterator[dict]:
    keys = list(batch)
    for values in zip(*(batch[k] for k in keys)):
        yield {k: (v.item() if hasattr(v, "item") else v) for k, v in zip(keys, values)}



def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"

