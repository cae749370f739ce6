"""Every setting once: each run's settings as dataclasses whose fields carry their default,
help text, legal range and command-line flag (`fields.setting`). The CLI builds its options
from these fields (cli.py), the checks run in each dataclass's `__post_init__`, and the
resolved config is written beside every output.

Knows the settings and their ranges; imports nothing heavier than the standard library and
errors.py, so `dasd-local --help` stays instant and every module may import it.
"""

from .decode import (AUTO, AUTO_BATCH, BASELINE_FORMS, GREEDY, MOST_BATCH, PUBLISHED_SAMPLING, STRATEGIES, DecodeConfig,
                     RuleConfig, Sampling, eval_decode, most_batch, parse_batch)
from .export import FORMATS, ExportConfig
from .fields import (AT_LEAST_0, AT_LEAST_1, check_fields, default_of, field_of, flag, one_of, reject, resolved,
                     setting)
from .ray import RayConfig, parse_workers
from .run import (CPU_WEIGHTS, KV_TYPES, Columns, EngineOptions, EvalConfig, ProblemSource, RunConfig, ScoreConfig,
                  VerifyConfig, default_out)
from .stats import HIGH_PPL, StatsConfig, ViewConfig
from .train import TrainConfig

__all__ = [
    "AUTO", "AUTO_BATCH", "BASELINE_FORMS", "GREEDY", "MOST_BATCH", "PUBLISHED_SAMPLING", "STRATEGIES", "DecodeConfig",
    "RuleConfig", "Sampling", "eval_decode", "most_batch", "parse_batch", "FORMATS", "ExportConfig", "AT_LEAST_0",
    "AT_LEAST_1", "check_fields", "default_of", "field_of", "flag", "one_of", "reject", "resolved", "setting",
    "RayConfig", "parse_workers", "CPU_WEIGHTS", "KV_TYPES", "Columns", "EngineOptions", "EvalConfig", "ProblemSource",
    "RunConfig", "ScoreConfig", "VerifyConfig", "default_out", "HIGH_PPL", "StatsConfig", "ViewConfig", "TrainConfig",
]
