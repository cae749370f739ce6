"""`generate --samples N`: several DASD rewrites per problem (rules.dasd_choice's sampling form) on the real
llama.cpp with the embedded model and real MATH problems: seeded samples that do not
depend on the run, every token inside the rule's accepted set, the prompts shared from a
sample's twin, resume per sample, and verify's --dedupe and per-problem yield."""

from __future__ import annotations

import json

import pytest

from dasd_local.store.problems import load_problems
from dasd_local.decoding.loop import DecodeConfig, Decoder
from dasd_local.decoding.engine import Engine, EngineConfig
from dasd_local.errors import ConfigError
from dasd_local.generate import samples_of
from dasd_local.tasks.math import MathTask
from test_cli_generate import cli, one_error_line

N = 3


def decode(path, problems, batch: int, copies: list | None = None, **kw) -> dict:
    with Engine(path, EngineConfig(n_ctx=16 * 1024, n_seq_max=16, kv_unified=False)) as e:
        if copies is not None:  # the prefixes taken from another sequence's cache
            copy = e.copy
            e.copy = lambda src, dst, p0, p1: (copies.append(p1 - p0), copy(src, dst, p0, p1))[1]
        cfg = DecodeConfig(batch=batch, speculate="off", strategy="dasd", samples=N, max_new_tokens=32,
                           record_candidates=True, **kw)
        out = list(Decoder(e, MathTask(), cfg).run(problems))
    assert all(isinstance(r, dict) for r in out), out
    return {r["id"]: r for r in out}


@pytest.fixture(scope="module")
def problems(data_dir):
    probs, _ = load_problems(data_dir / "math" / "train.jsonl", MathTask(), limit=3)
    return probs


def test_samples_are_seeded_do_not_depend_on_the_run_and_obey_the_rule(model_path, problems):
    samples = samples_of(problems, N)
    assert [s.id for s in samples[:N]] == [f"{problems[0].id}#{k}" for k in range(N)]
    copies: list[int] = []
    whole = decode(model_path, samples, 9, copies)
    for other in (decode(model_path, samples, 2),  # another batch
                  {**decode(model_path, samples[:4], 9), **decode(model_path, samples[4:], 9)}):  # a resume
        for k, rec in other.items():
            assert rec["steps"] == whole[k]["steps"], k
    for rec in whole.values():
        assert (rec["problem_id"], rec["config"]["samples"]) == (rec["id"].split("#")[0], N)
        for step in rec["steps"]:  # the replay's check: the token is a passing candidate, or C[0] when none passes
            passing = [t for t, _, pb in step["candidates"] if pb >= 0.2]
            assert step["token"] in passing if passing else step["token"] == step["candidates"][0][0]
    distinct = {p.id: len({whole[f"{p.id}#{k}"]["response"] for k in range(N)}) for p in problems}
    assert sum(distinct.values()) > len(problems), distinct  # sampling gives other rewrites
    # a sample after the first takes both of its prompts from its twin's cache, whole chunks of 32
    ref = [len(whole[f"{p.id}#0"]["reference_prompt_tokens"]) - 1 for p in problems]
    assert sum(copies.count(n // 32 * 32) for n in set(ref)) >= (N - 1) * len(problems)
    seeded = decode(model_path, samples[:N], 3, seed=1)
    assert any(seeded[k]["steps"] != whole[k]["steps"] for k in seeded)  # --seed moves the draws
    replay(model_path, whole)


def replay(model_path, records: dict, tau: float = 0.2, k: int = 6, tol: float = 0.1) -> None:
    """The independent audit: both views teacher-forced on a fresh engine find every sampled
    token inside the rule's accepted set, a reference top-K candidate the base view finds
    plausible, or the reference's top-1 where none is (within the kernels' tolerance)."""
    from dasd_local.decoding.forcing import teacher_force

    with Engine(model_path, EngineConfig(n_ctx=2048, n_seq_max=1, n_ubatch=32)) as fresh:
        for rec in records.values():
            resp = rec["response_tokens"]
            b = teacher_force(fresh, rec["base_prompt_tokens"], resp)
            r = teacher_force(fresh, rec["reference_prompt_tokens"], resp)
            ok = ((r.rank < k) & (b.p >= tau - tol)) | (r.rank == 0)
            assert ok.all(), (rec["id"], [i for i, x in enumerate(ok) if not x])


def test_samples_need_dasd():
    with pytest.raises(ConfigError, match="samples"):
        DecodeConfig(strategy="self-distill", samples=2)
    assert "samples" not in DecodeConfig().record_config()  # --samples 1: the records as before


def test_generate_samples_resume_verify_dedupe_and_stats(tmp_path):
    args = ("generate", "--samples", "2", "--max-new-tokens", "24", "-o", "s.jsonl")
    cli(*args, "--limit", "1", cwd=tmp_path)
    cli(*args, "--limit", "2", cwd=tmp_path)  # resumes: the first problem's samples are not decoded again
    manifest = json.loads((tmp_path / "s.manifest.json").read_text())
    assert manifest["counts"]["ran_now"] == 2 and manifest["counts"]["done"] == 4
    records = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["demo/apples/0#0", "demo/apples/0#1", "demo/train/0#0", "demo/train/0#1"]
    changed = cli("generate", "--samples", "3", "--max-new-tokens", "24", "-o", "s.jsonl", cwd=tmp_path, check=False)
    assert "(samples 2 -> 3)" in one_error_line(changed)  # fingerprinted: another N is another run
    p = cli("verify", "s.jsonl", "-o", "k.jsonl", "--on-fail", "keep-reference", "--dedupe", cwd=tmp_path)
    counts = json.loads((tmp_path / "k.manifest.json").read_text())["counts"]
    kept = [json.loads(x) for x in (tmp_path / "k.jsonl").read_text().splitlines()]
    keys = [(r["problem_id"], r["response"]) for r in kept]
    assert len(keys) == len(set(keys)) and counts["kept"] + counts["duplicates"] == counts["records"] == 4
    assert counts["problems"] == 2 and "problems with a correct sample:" in p.stdout
    s = cli("stats", "k.jsonl", cwd=tmp_path)
    assert f"{counts['kept']} samples of 2 problems; verify: {counts['problems_with_a_correct_sample']} of 2" in s.stdout
