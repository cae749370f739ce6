"""The decode loop against the scripted fake engine: batching, admission, KV bookkeeping."""

import numpy as np
import pytest

from dasd_local.decoding import rules
from dasd_local.schema import CATEGORIES
from dasd_local.decoding.loop import PREFILL_CHUNK, DecodeConfig, Decoder, Failed
from dasd_local.tasks import Problem
from dasd_local.tasks.math import MathTask

from fake_engine import FakeConfig, FakeEngine


def problems(n, long_every=0):
    out = []
    for i in range(n):
        q = f"question {i} " + "x" * (i * 7 % 23) + ("y" * 300 if long_every and i % long_every == 0 else "")
        out.append(Problem(f"p{i}", q, f"reference {i} " + "z" * (i % 5), {"answer": str(i)}))
    return out


def run(cfg, probs, engine=None):
    engine = engine or FakeEngine()
    records = list(Decoder(engine, MathTask(), cfg).run(probs))
    return engine, records


@pytest.mark.parametrize("strategy", ["dasd", "self-distill", "base", "hint"])
def test_batching_does_not_change_output(strategy):
    probs = problems(9)
    _, one = run(DecodeConfig(strategy=strategy, batch=1, max_new_tokens=40), probs)
    eng, many = run(DecodeConfig(strategy=strategy, batch=4, max_new_tokens=40), probs)
    by_id = {r["id"]: r for r in many}
    assert [r["id"] for r in one] == [p.id for p in probs]
    for r in one:
        assert by_id[r["id"]]["response_tokens"] == r["response_tokens"]
        assert by_id[r["id"]]["steps"] == r["steps"]
    assert max(eng.calls) > 2  # several problems really shared decode calls


def test_every_step_follows_the_rule_on_the_views_logits():
    eng = FakeEngine()
    cfg = DecodeConfig(strategy="dasd", batch=3, max_new_tokens=30, tau=0.15)
    _, records = run(cfg, problems(6), eng)
    checked = 0
    for r in records:
        hb, hr = list(r["base_prompt_tokens"]), list(r["reference_prompt_tokens"])
        for step in r["steps"]:
            lb, lr = eng.logits_for(hb)[None], eng.logits_for(hr)[None]
            picks = rules.choose("dasd", lb, lr, cfg.rule())
            assert step["token"] == int(picks.token[0])
            assert step["category"] == CATEGORIES[int(picks.category[0])]
            assert step["p_base"] == pytest.approx(float(picks.p_base[0]))
            hb.append(step["token"]), hr.append(step["token"])
            checked += 1
    assert checked > 50


def test_shared_prefix_is_cached_once_and_output_unchanged():
    probs = problems(5)
    eng_a, shared = run(DecodeConfig(batch=2, max_new_tokens=25, share_prefix=True), probs)
    eng_b, plain = run(DecodeConfig(batch=2, max_new_tokens=25, share_prefix=False), probs)
    assert [r["steps"] for r in shared] == [r["steps"] for r in plain]
    assert sum(eng_a.calls) < sum(eng_b.calls)  # the common prefix was not fed twice


def test_a_new_problem_takes_the_template_opening_from_a_running_one():
    probs, system = problems(6), "You are a careful assistant who shows every step."
    engines, records = [FakeEngine(), FakeEngine()], []
    for eng, share in zip(engines, (True, False)):
        records.append(list(Decoder(eng, MathTask(), DecodeConfig(batch=2, max_new_tokens=25, share_prefix=share),
                                    system).run(probs)))
    assert [r["steps"] for r in records[0]] == [r["steps"] for r in records[1]]
    across = [(s, d, n) for s, d, n in engines[0].copies if s // 2 != d // 2]  # B of one slot -> B of another
    opening = len(f"[system]{system}[user]question ") // PREFILL_CHUNK * PREFILL_CHUNK  # whole chunks only
    assert across and all(d % 2 == 0 and n >= opening and n % PREFILL_CHUNK == 0 for _, d, n in across)


def test_prefill_and_decode_never_share_a_call_and_chunks_end_on_the_grid():
    """What keeps a problem's numbers independent of its run (decoding/loop.py): a call is all
    decode rows (one token per view) or all prompt chunks of one length, each ending at a
    multiple of PREFILL_CHUNK or at the prompt's last-but-one token."""
    probs = problems(6)
    eng = FakeEngine()
    seen = []
    real = eng.decode

    def decode(tokens, positions, seqs, want):
        seen.append((list(positions), list(seqs), list(want)))
        return real(tokens, positions, seqs, want)

    eng.decode = decode
    list(Decoder(eng, MathTask(), DecodeConfig(batch=3, max_new_tokens=25)).run(probs))
    kinds = set()
    for positions, seqs, want in seen:
        if any(want):
            assert all(want) and len(set(seqs)) == len(seqs), "a decode call: one wanted row per view"
            kinds.add("decode")
            continue
        kinds.add("prefill")
        chunks = {}
        for p, s in zip(positions, seqs):
            chunks.setdefault(s, []).append(p)
        assert len({len(c) for c in chunks.values()}) == 1, "a prefill call carries chunks of one length"
        for c in chunks.values():
            assert c == list(range(c[0], c[-1] + 1)) and c[-1] // PREFILL_CHUNK == c[0] // PREFILL_CHUNK
    assert kinds == {"decode", "prefill"}


def test_kv_budget_holds_problems_back_instead_of_overflowing():
    probs = problems(8)
    need = max(len(p.question) + len(p.reference) for p in probs) * 2 + 400
    eng = FakeEngine(FakeConfig(n_ctx=need * 2))
    _, records = run(DecodeConfig(batch=8, max_new_tokens=50, share_prefix=False), probs, eng)
    assert len(records) == 8
    assert eng.max_cells <= need * 2


def test_prompt_too_long_is_a_failed_row_and_the_rest_runs():
    probs = problems(7, long_every=3)  # p0, p3, p6 get 300 extra characters
    eng = FakeEngine(FakeConfig(n_ctx=700))
    _, out = run(DecodeConfig(batch=2, max_new_tokens=20), probs, eng)
    failed = [o for o in out if isinstance(o, Failed)]
    assert sorted(f.problem.id for f in failed) == ["p0", "p3", "p6"]
    assert all("does not fit the context" in f.error for f in failed)
    assert len(out) - len(failed) == 4


def test_stop_and_length_finish():
    _, records = run(DecodeConfig(batch=4, max_new_tokens=12, strategy="base"), problems(10))
    reasons = {r["finish_reason"] for r in records}
    assert reasons <= {"stop", "length"} and "length" in reasons
    for r in records:
        assert len(r["response_tokens"]) <= 12
        assert 0 not in r["response_tokens"]  # the stop token is not part of the response
        if r["finish_reason"] == "stop":
            assert r["stop_step"]["token"] == 0


def test_base_only_runs_one_sequence_per_problem():
    eng, records = run(DecodeConfig(strategy="base", base_only=True, batch=3, max_new_tokens=15), problems(4))
    assert all(r["reference_prompt"] is None and r["steps"][0]["p_ref"] is None for r in records)
    assert set(eng.history) <= {0, 1, 2}  # one sequence id per slot
    _, both = run(DecodeConfig(strategy="base", batch=3, max_new_tokens=15), problems(4))
    assert sorted((r["id"], r["response_tokens"]) for r in records) == sorted((r["id"], r["response_tokens"]) for r in both)


def test_config_checks_name_the_argument():
    with pytest.raises(ValueError, match="tau"):
        DecodeConfig(tau=1.5)
    with pytest.raises(ValueError, match="strategy"):
        DecodeConfig(strategy="beam")
    with pytest.raises(ValueError, match="base_only"):
        DecodeConfig(strategy="dasd", base_only=True)


@pytest.mark.parametrize("strategy", ["dasd", "self-distill", "base", "hint"])
def test_speculation_does_not_change_output(strategy):
    probs = problems(6)
    _, off = run(DecodeConfig(strategy=strategy, batch=3, max_new_tokens=40, speculate="off"), probs)
    eng, on = run(DecodeConfig(strategy=strategy, batch=3, max_new_tokens=40, speculate="on", draft_max=6), probs)
    on = {r["id"]: r for r in on}
    for a in off:
        b = on[a["id"]]
        assert a["steps"] == b["steps"] and a["stop_step"] == b["stop_step"]
    assert sum(eng.calls) > len(eng.calls) * 6  # drafts really rode along


class LoopingEngine(FakeEngine):
    """Every view predicts (last token + 1) mod 10 with certainty: the text repeats forever."""

    def logits_for(self, history):
        logits = np.full(self.n_vocab, -30.0, dtype=np.float32)
        logits[1 + history[-1] % 10] = 30.0
        return logits


def test_published_hint_stops_on_repetition_at_a_multiple_of_100():
    cfg = DecodeConfig(strategy="hint", baseline_form="published", max_new_tokens=300, batch=2)
    _, records = run(cfg, problems(2), LoopingEngine())
    assert [(r["finish_reason"], len(r["response_tokens"])) for r in records] == [("repetition", 100)] * 2
    assert records[0]["config"]["sampling"]["temperature"] == 0.3
    _, controlled = run(DecodeConfig(strategy="hint", max_new_tokens=300, batch=2), problems(2), LoopingEngine())
    assert {(r["finish_reason"], len(r["response_tokens"])) for r in controlled} == {("length", 300)}


@pytest.mark.parametrize("unified", [True, False])
def test_peak_cells_is_what_the_cache_held(unified):
    """Stats.peak_cells (the live KV that bench_generate's memory bound uses) counts the
    cells the fake cache really held: a unified cache stores copied prefixes once."""
    from dasd_local.decoding.slots import Stats

    eng, stats = FakeEngine(FakeConfig(kv_unified=unified, n_seq_max=8)), Stats()
    list(Decoder(eng, MathTask(), DecodeConfig(batch=4, max_new_tokens=20), stats=stats).run(problems(9)))
    assert eng.copies  # the views shared their prefix
    assert 0.9 * eng.max_cells <= stats.peak_cells <= eng.max_cells


def test_unified_admission_reserves_prompts_as_built():
    """A problem in flight reserves its prompts + max_new_tokens (the views' prefix once), not
    its grown token lists: a pool sized for exactly `batch` problems keeps `batch` in flight."""
    probs = problems(8)
    eng = FakeEngine()
    dec = Decoder(eng, MathTask(), DecodeConfig(batch=4, max_new_tokens=20))
    need = sorted((dec._reserve(dec._admit(p)) for p in probs), reverse=True)
    eng.config = FakeConfig(n_ctx=sum(need[:4]))
    _, records = run(DecodeConfig(batch=4, max_new_tokens=20), probs, eng)
    assert len(records) == 8 and eng.max_cells <= sum(need[:4])
    assert max(eng.calls) >= 4 * 2  # four problems decoded together
