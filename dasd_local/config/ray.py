"""`--ray`: where generate, score and eval run. Standard library only (Ray is imported by runner.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .fields import AT_LEAST_0, AT_LEAST_1, check_fields, setting


def parse_workers(text: str | None) -> tuple[int, int] | None:
    """`N` (a fixed pool) or `MIN,MAX` (autoscaling) -> (min, max); None: as the cluster allows."""
    if text is None:
        return None
    parts = str(text).split(",")
    try:
        lo, hi = int(parts[0]), int(parts[-1])
    except ValueError:
        return None
    return (lo, hi) if len(parts) <= 2 and 1 <= lo <= hi else None


@dataclass(frozen=True)
class RayConfig:
    """Where generate, score and eval run: this process, or a Ray cluster's actor pool (runner.py)."""

    ray: str | None = setting(None, "Run on a Ray cluster (needs the ray extra): auto (RAY_ADDRESS, else a cluster "
                              "started on this node, else a new local one) | HEAD:PORT.", flag="--ray")
    workers: str | None = setting(None, "Ray actors, each with its own engine: N, or MIN,MAX to autoscale (default: "
                                  "the cluster's CPUs / --threads-per-worker, or GPUs / --gpus-per-worker).",
                                  lambda v: parse_workers(v) is not None, "N or MIN,MAX with 1 <= MIN <= MAX",
                                  flag="--workers")
    threads_per_worker: int = setting(1, "CPU threads (and Ray CPUs) of each Ray actor's engine.", *AT_LEAST_1,
                                      flag="--threads-per-worker")
    gpus_per_worker: float = setting(0.0, "Ray GPUs of each actor (a CUDA build of llama-cpp-python; all layers are "
                                     "offloaded unless --n-gpu-layers says otherwise).", *AT_LEAST_0,
                                     flag="--gpus-per-worker")
    block: int | None = setting(None, "problems per block handed to an actor (None: block_size, two blocks per "
                                "actor)", *AT_LEAST_1)

    def __post_init__(self):
        check_fields(self)

    @property
    def enabled(self) -> bool:
        return self.ray is not None

    @property
    def pool(self) -> tuple[int, int] | None:
        return parse_workers(self.workers)

    def worker_options(self, opts):
        """Engine options (an EngineOptions) as each actor runs them: its thread share; with
        GPUs, every layer offloaded unless --n-gpu-layers says otherwise."""
        gpu_layers = opts.n_gpu_layers or (-1 if self.gpus_per_worker > 0 else 0)
        return replace(opts, threads=self.threads_per_worker, n_gpu_layers=gpu_layers)
