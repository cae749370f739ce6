"""`export`'s settings: which kept records, in which format, where. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .fields import check_fields, one_of, setting

FORMATS = ("hf", "parquet", "prompt-completion", "messages", "sharegpt")


@dataclass(frozen=True)
class ExportConfig:
    """`export`: kept records to another tool's format, with a dataset card."""

    paths: tuple = setting((), "Verified records (`dasd-local verify` output).", lambda v: len(v) > 0,
                           "at least one RUN.jsonl", metavar="RUN.jsonl...", argument=True)
    format: str = setting("hf", "hf | parquet | prompt-completion | messages | sharegpt", *one_of(*FORMATS),
                          flag="--format", short="-f")
    out: Path = setting(Path("dasd-export"), "Output directory: the data files and README.md, the dataset card.",
                        flag="--out", short="-o", required=True)
    push_to_hub: str | None = setting(None, "Also upload to this hub dataset repo (owner/name; the hub extra and a "
                                      "token).", lambda v: v.count("/") == 1, "owner/name", flag="--push-to-hub")
    license: str | None = setting(None, "Licence of the source data for the card (default: known for math, mbpp, "
                                  "arc_challenge, the demo set).", flag="--license")
    command: str = setting("", "The exact command line, for the card.")

    def __post_init__(self):
        check_fields(self)
