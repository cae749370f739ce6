"""Kept records as other trainers read them: a `datasets` dataset (hf), parquet in the hub's
layout, TRL's prompt/completion or messages JSONL, ShareGPT for LLaMA-Factory and Axolotl.

Chat turns are the base view's own: the optional system prompt of the run, the task's user
message, the response; rendered through the model's chat template they give the record's
`base_prompt` again. hf and parquet keep every provenance column (strategy, config,
per-token steps with categories and probabilities; a step's candidates become {token,
p_ref, p_base}) after the training column `messages`. Knows the record layout and the
formats; knows nothing about models or cards.
"""

from __future__ import annotations

import json
from pathlib import Path


SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}  # LLaMA-Factory's default tags



def conversation(record: dict, system: str | None) -> list[dict]:
    """The base view's chat turns and the response (the roles the chat template renders)."""
    from ..tasks import Problem, get_task

    user = get_task(record["task"]).base_user(Problem(str(record["id"]), record["question"], ""))
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": user}, {"role": "assistant", "content": record["response"]}]



def _typed_step(step: dict) -> dict:
    """A step with its candidates as {token, p_ref, p_base} (a JSON triple mixes int and float)."""
    if not step.get("candidates"):
        return step
    cands = [{"token": int(t), "p_ref": pr, "p_base": pb} for t, pr, pb in step["candidates"]]
    return {**step, "candidates": cands}



def full_row(record: dict, system: str | None) -> dict:
    """hf / parquet: the training column first, then every field of the record."""
    row = {"messages": conversation(record, system), **record}
    if row.get("steps"):
        row["steps"] = [_typed_step(s) for s in row["steps"]]
    return row



def light_meta(record: dict) -> dict:
    return {k: record.get(k) for k in ("id", "task", "strategy", "response_source")}



def trl_row(record: dict, system: str | None, fmt: str) -> dict:
    turns = conversation(record, system)
    if fmt == "messages":
        return {"messages": turns, **light_meta(record)}
    return {"prompt": turns[:-1], "completion": turns[-1:], **light_meta(record)}



def sharegpt_row(record: dict, system: str | None) -> dict:
    turns = [{"from": SHAREGPT_ROLES[t["role"]], "value": t["content"]}
             for t in conversation(record, system) if t["role"] != "system"]
    return {"conversations": turns, "system": system or "", **light_meta(record)}



def columns_aligned(rows: list[dict]) -> list[dict]:
    """Every row with every column, in first-seen order (datasets takes the first row's keys)."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in names} for r in rows]



def arrow_table(rows: list[dict]):
    """A pyarrow table of the rows; a column whose values have no common type (e.g. a level
    that is 3 in one file and "Level ?" in another) is stored as JSON text instead."""
    import pyarrow as pa

    rows = columns_aligned(rows)
    names = list(rows[0]) if rows else []
    arrays, as_json = [], []
    for name in names:
        values = [r[name] for r in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values]))
            as_json.append(name)
    return pa.table(dict(zip(names, arrays))), as_json



def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")



def write_format(fmt: str, pairs: list[tuple[dict, str | None]], out: Path) -> dict:
    """Write the rows of `fmt` into `out`; returns {'files': [...], 'json_columns': [...]}."""
    if fmt in ("hf", "parquet"):
        import datasets

        datasets.disable_progress_bars()
        table, as_json = arrow_table([full_row(r, s) for r, s in pairs])
        ds = datasets.Dataset(table)
        if fmt == "hf":
            ds.save_to_disk(str(out))
            return {"files": sorted(p.name for p in out.iterdir()), "json_columns": as_json}
        (out / "data").mkdir()
        ds.to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
        return {"files": ["data/train-00000-of-00001.parquet"], "json_columns": as_json}
    if fmt == "sharegpt":
        rows = [sharegpt_row(r, s) for r, s in pairs]
        (out / "train.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        info = {"dasd": {"file_name": "train.json", "formatting": "sharegpt",
                         "columns": {"messages": "conversations", "system": "system"},
                         "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                                  "assistant_tag": "gpt", "system_tag": "system"}}}
        (out / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        return {"files": ["train.json", "dataset_info.json"], "json_columns": []}
    _write_jsonl(out / "train.jsonl", [trl_row(r, s, fmt) for r, s in pairs])
    return {"files": ["train.jsonl"], "json_columns": []}

