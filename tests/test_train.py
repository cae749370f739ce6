"""`dasd-local train`: data preparation, masks, loss and schedule math, and real training
of the embedded SmolLM2-135M on CPU (a few dozen records, short sequences)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lora_check import compare, held_out_prompts, llama_logprobs, torch_logprobs

from dasd_local.errors import ConfigError, InputError, ModelError
from dasd_local.train import TrainConfig, train
from dasd_local.training.data import IGNORE, DataReport, make_example, prepare_examples, read_training_records
from dasd_local.training.loop import count_steps, training_args
from dasd_local.training.model import token_nll

N_RECORDS, INCORRECT = 20, {"3", "8", "13", "18"}  # 16 records kept


def _softmax_p(logits: np.ndarray, token: int) -> float:
    z = logits - logits.max()
    return float(np.exp(z[token]) / np.exp(z).sum())


def _incremental_p_base(engine, prompt: list[int], response: list[int]) -> list[float]:
    """p_base the way generation records it: one token per decode after the prompt."""
    engine.clear()
    n = len(prompt)
    logits = engine.decode(prompt, list(range(n)), [0] * n, [False] * (n - 1) + [True])[0]
    probs = []
    for i, tok in enumerate(response):
        probs.append(_softmax_p(logits, tok))
        logits = engine.decode([tok], [n + i], [0], [True])[0]
    return probs


@pytest.fixture(scope="module")
def records_path(model_path, data_dir, tmp_path_factory):
    """Generation-like records from real MATH train problems: base-view prompt tokens, the
    first 24 tokens of the gold solution as the response, per-token p_base, 4 marked wrong."""
    from dasd_local.decoding.engine import Engine, EngineConfig
    from dasd_local.decoding.views import ViewBuilder
    from dasd_local.tasks import Problem, get_task

    task = get_task("math")
    with open(data_dir / "math" / "train.jsonl") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(200))]
    rows = [r for r in rows if len(r["problem"]) < 160][:N_RECORDS]
    path = tmp_path_factory.mktemp("data") / "records.jsonl"
    with Engine(model_path, EngineConfig(n_ctx=512, n_threads=1)) as engine, path.open("w") as f:
        builder = ViewBuilder(engine, task)
        for i, r in enumerate(rows):
            text = builder.render(task.base_user(Problem(str(i), r["problem"], r["solution"])))
            prompt, response = engine.tokenize(text), engine.tokenize(r["solution"], special=False)[:24]
            steps = [{"token": t, "p_base": p, "category": None, "p_ref": None, "ref_rank": None}
                     for t, p in zip(response, _incremental_p_base(engine, prompt, response))]
            f.write(json.dumps({"id": str(i), "task": "math", "question": r["problem"], "base_prompt": text,
                                "base_prompt_tokens": prompt, "response": engine.detokenize(response),
                                "response_tokens": response, "finish_reason": "stop", "steps": steps,
                                "correct": str(i) not in INCORRECT}) + "\n")
    return path


def _config(records_path, out, **kw) -> TrainConfig:
    base = {"data": str(records_path), "out": str(out), "lr": 2e-3, "epochs": 1, "batch_size": 4, "grad_accum": 1,
            "max_length": 128, "save_every": 2, "rank": 8, "alpha": 16.0, "seed": 0}
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(records_path, tmp_path_factory):
    """One real run: 16 records, 4 optimizer steps, a high lr so the adapter matters."""
    run = tmp_path_factory.mktemp("run-a")
    manifest = train(_config(records_path, run), show_progress=False)
    return run, manifest


@pytest.fixture(scope="module")
def peft_model(trained, model_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, GgufConfig

    base = AutoModelForCausalLM.from_pretrained(str(model_path.parent), gguf_file=model_path.name,
                                                quantization_config=GgufConfig(dequantize=True))
    return PeftModel.from_pretrained(base, str(trained[0] / "adapter"))


# ---- pure parts ------------------------------------------------------------------------


def test_config_checks_name_the_option_and_its_range():
    with pytest.raises(ConfigError, match=r"rank = 0 is not allowed: expected >= 1"):
        TrainConfig(data="d.jsonl", out="r", rank=0)
    with pytest.raises(ConfigError, match=r"warmup_ratio = 1.5 .* \[0, 1\)"):
        TrainConfig(data="d.jsonl", out="r", warmup_ratio=1.5)
    with pytest.raises(ConfigError, match="backend"):
        TrainConfig(data="d.jsonl", out="r", backend="tpu")
    cfg = TrainConfig(data="d.jsonl", out="r")
    assert (cfg.lr, cfg.warmup_ratio) == (2e-5, 0.2)  # the paper's defaults


def test_cli_defaults_are_the_config_defaults():
    import typer.main

    from dasd_local import cli

    # the CLI's options are built from the config's fields (cli.verb)
    params = {p.name: p.default for p in typer.main.get_command(cli.app).commands["train"].params}
    defaults = {f: getattr(TrainConfig(data="d", out="o"), f) for f in params if f not in ("data", "out")}
    assert len(defaults) == 22 and {f: params[f] for f in defaults} == defaults


def test_make_example_labels_only_the_response_and_masks_low_p_base():
    cfg = TrainConfig(data="d", out="o", mask_ppl=2.5, max_length=64)
    probs = [0.9, 0.39, 0.4, 0.05, 0.41]  # 1 / 2.5 = 0.4: strictly below is masked
    report = DataReport()
    ex = make_example("x", [1, 2, 3], [10, 11, 12, 13, 14], 2, probs, cfg, report)
    assert ex.input_ids == [1, 2, 3, 10, 11, 12, 13, 14, 2]  # masked tokens stay in the input
    assert ex.labels == [IGNORE] * 3 + [10, IGNORE, 12, IGNORE, 14, 2]
    assert (report.masked_ppl, report.loss_tokens) == (2, 4)
    cut = make_example("y", [1, 2, 3], [10, 11, 12, 13, 14], 2, None, TrainConfig(data="d", out="o", max_length=8), report)
    assert len(cut.input_ids) == 8 and cut.labels[-1] == 14 and report.truncated == 1
    assert make_example("z", [1] * 8, [10], 2, None, TrainConfig(data="d", out="o", max_length=8), report) is None


def test_token_nll_and_profit_mask():
    import torch

    logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1], [0.05, 0.9, 0.05], [0.3, 0.3, 0.4]]]))
    labels = torch.tensor([[IGNORE, 1, 0]])  # targets of positions 0 and 1: p = 0.2 and 0.05
    nll, n = token_nll(logits, labels)
    assert n == 2 and float(nll) == pytest.approx(-math.log(0.2) - math.log(0.05), rel=1e-5)
    nll, n = token_nll(logits, labels, profit=0.1)  # 0.05 < 0.1: dropped
    assert n == 1 and float(nll) == pytest.approx(-math.log(0.2), rel=1e-5)


def test_logits_of_prompt_positions_are_skipped_without_changing_the_loss():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from dasd_local.training.data import Example
    from dasd_local.training.model import collate, forward_logits

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    batch = [Example("a", [1, 5, 6, 7, 8, 9], [IGNORE] * 4 + [8, 9]), Example("b", [1, 5, 6, 7], [IGNORE] * 2 + [6, 7])]
    ids, mask, labels = collate(batch, 0, "cpu")
    logits, cut = forward_logits(model, ids, mask, labels)
    assert logits.shape[1] == cut.shape[1] == 5  # from the position before the first label (row b's 2)
    full = token_nll(model(input_ids=ids, attention_mask=mask).logits, labels)
    assert float(token_nll(logits, cut)[0]) == pytest.approx(float(full[0]), rel=1e-5) and full[1] == 4


@pytest.mark.parametrize("profit", [None, 0.02])
def test_chunked_loss_gives_the_full_loss_and_gradient(monkeypatch, profit):
    """TRL's chunked LM head (the training loss) with our ProFit hook, against the full
    logits: the same loss, count and gradients, over several vocabulary and token tiles."""
    import torch
    import trl.kernels.chunked_logprob as tiles
    import trl.trainer.utils as trl_utils
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from dasd_local.training.data import Example
    from dasd_local.training.model import collate, kept_nll

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    add_fused_lm_head(model, outputs=("log_probs",))
    batch = [Example("a", list(range(1, 12)), [IGNORE] * 3 + list(range(4, 12))),
             Example("b", [1, 5, 6, 7, 9, 9], [IGNORE] * 2 + [6, 7, 9, 9])]
    ids, mask, labels = collate(batch, 0, "cpu")
    monkeypatch.setattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", 24)  # vocabulary tiles 24 + 24 + 16
    monkeypatch.setattr(tiles, "TOKEN_CHUNK_SIZE", 7)  # token tiles, the last one partial
    out = []
    for fused in (False, True):
        model.zero_grad()
        if fused:
            o = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
            nll, n = kept_nll(o.log_probs, o.label_mask, profit)
        else:
            nll, n = token_nll(model(input_ids=ids, attention_mask=mask).logits, labels, profit)
        nll.backward()
        out.append((float(nll), int(n), [p.grad.clone() for p in model.parameters()]))
    (full, n_full, g_full), (part, n_part, g_part) = out
    assert n_part == n_full and part == pytest.approx(full, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_full, g_part))


def test_lr_schedule_warms_up_then_decays_to_zero(tmp_path):
    """The Trainer's schedule as training_args sets it up: linear warmup over 20% of the
    steps, then cosine (or linear) decay to zero."""
    import torch
    from transformers import get_scheduler

    def factors(schedule: str, warmup: float) -> list[float]:
        args = training_args(TrainConfig(data="d", out="o", schedule=schedule, warmup_ratio=warmup), tmp_path, 10)
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = get_scheduler(args.lr_scheduler_type, opt, num_warmup_steps=args.get_warmup_steps(10),
                              num_training_steps=10)
        f = []
        for _ in range(10):
            f.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return f

    f = factors("cosine", 0.2)
    assert f[0] < f[1] < f[2] == 1.0 and all(a >= b for a, b in itertools.pairwise(f[2:])) and f[-1] < 0.05
    assert [factors("linear", 0.0)[s] for s in (0, 5)] == [1.0, 0.5]


def test_step_count_follows_data_batches_and_processes():
    cfg = TrainConfig(data="d", out="o", epochs=2, batch_size=3, grad_accum=2, seed=7)
    assert count_steps(10, cfg, 1) == 4  # 4 micro-batches per epoch, 2 per step
    assert count_steps(10, cfg, 2) == 2  # two processes take a step's micro-batches side by side
    assert count_steps(10, TrainConfig(data="d", out="o", epochs=2, batch_size=3, grad_accum=2, max_steps=3), 1) == 3


# ---- data preparation with the real tokenizer ---------------------------------------------


def test_records_drop_incorrect_and_mask_exactly_low_recorded_p_base(records_path, model_path):
    records, report = read_training_records(records_path)
    assert len(records) == N_RECORDS - len(INCORRECT) and report.dropped_incorrect == len(INCORRECT)
    cfg = TrainConfig(data=str(records_path), out="o", mask_ppl=2.5, max_length=256)
    examples = prepare_examples(records, model_path, cfg, report)
    for rec, ex in zip(records, examples):
        n_prompt, resp = len(rec["base_prompt_tokens"]), rec["response_tokens"]
        assert ex.input_ids == rec["base_prompt_tokens"] + resp + [2]  # + <|im_end|>, the turn's end
        want = [IGNORE if s["p_base"] < 0.4 else t for s, t in zip(rec["steps"], resp)]
        assert ex.labels == [IGNORE] * n_prompt + want + [2]
    masked = sum(s["p_base"] < 0.4 for r in records for s in r["steps"])
    assert report.masked_ppl == masked > 0 and report.scored == 0


def test_mask_ppl_scores_records_without_probabilities(records_path, model_path):
    """Without steps, p_base comes from llama.cpp teacher forcing; it must agree with the
    incrementally decoded p_base except within the kernels' batch-shape noise of 0.4."""
    records, report = read_training_records(records_path)
    bare = [{k: v for k, v in r.items() if k != "steps"} for r in records]
    cfg = TrainConfig(data=str(records_path), out="o", mask_ppl=2.5, max_length=256, threads=1)
    examples = prepare_examples(bare, model_path, cfg, report)
    assert report.scored == len(records)
    checked = 0
    for rec, ex in zip(records, examples):
        labels = ex.labels[len(rec["base_prompt_tokens"]):-1]
        for s, label in zip(rec["steps"], labels):
            if abs(s["p_base"] - 0.4) > 0.1:
                assert (label == IGNORE) == (s["p_base"] < 0.4)
                checked += 1
    assert checked > 0.8 * sum(len(r["steps"]) for r in records)


def test_text_only_records_are_tokenized_through_the_chat_template(tmp_path, model_path):
    from dasd_local.decoding.engine import Engine
    from dasd_local.decoding.views import ViewBuilder

    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"id": "a", "question": "What is 2+2?", "response": "2+2 = 4."}) + "\n")
    records, report = read_training_records(path)
    (ex,) = prepare_examples(records, model_path, TrainConfig(data=str(path), out="o", max_length=256), report)
    with Engine(model_path) as engine:
        text = ViewBuilder(engine, None).render("What is 2+2?")
        prompt, response = engine.tokenize(text), engine.tokenize("2+2 = 4.", special=False)
    assert text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert ex.input_ids == prompt + response + [2]
    assert ex.labels == [IGNORE] * len(prompt) + response + [2]


# ---- bad input: one clear error each ----------------------------------------------------


def test_bad_data_is_one_clear_error(tmp_path, records_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="nothing to train on .no records"):
        train(_config(empty, tmp_path / "r1"), show_progress=False)
    no_response = tmp_path / "nr.jsonl"
    no_response.write_text(json.dumps({"id": "q1", "question": "2+2?"}) + "\n")
    with pytest.raises(InputError, match="record 'q1' has no 'response'"):
        train(_config(no_response, tmp_path / "r2"), show_progress=False)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"id": "w", "question": "2+2?", "response": "5", "correct": False}) + "\n")
    with pytest.raises(InputError, match="all 1 records have correct = false"):
        train(_config(wrong, tmp_path / "r3"), show_progress=False)


def test_undequantizable_architecture_is_one_clear_error(tmp_path, records_path):
    import gguf

    fake = tmp_path / "rwkv.gguf"
    w = gguf.GGUFWriter(str(fake), "rwkv6")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ModelError, match="architecture 'rwkv6' cannot be dequantized .*supported: llama, qwen2"):
        train(_config(records_path, tmp_path / "r", model=str(fake)), show_progress=False)


def test_unsloth_without_gpu_is_one_red_line(tmp_path, records_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    proc = subprocess.run([sys.executable, "-c", "from dasd_local.cli import main; main()", "train", str(records_path),
                           "-o", str(tmp_path / "r"), "--backend", "unsloth"], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    line = "error: --backend unsloth needs a CUDA GPU and none is visible (use --backend peft on CPU)"
    assert proc.stderr.strip().splitlines() == [line]


@pytest.mark.slow
def test_run_directory_is_never_overwritten_and_resume_needs_a_run(trained, records_path, tmp_path):
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(_config(records_path, trained[0]), show_progress=False)
    with pytest.raises(InputError, match="no training run to resume"):
        train(_config(records_path, tmp_path / "none", resume=True), show_progress=False)
    with pytest.raises(ConfigError, match="--resume: lr = 0.1 differs"):
        train(_config(records_path, trained[0], resume=True, lr=0.1), show_progress=False)


def test_hf_model_that_is_not_the_gguf_fails_before_training(tmp_path, records_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    small = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    small.save_pretrained(tmp_path / "small")
    run = tmp_path / "r"
    with pytest.raises(ModelError, match=r"q_proj \(in 64, out 64\) does not fit blk.0.attn_q.weight \(in 576, out 576\)"):
        train(_config(records_path, run, hf_model=str(tmp_path / "small")), show_progress=False)
    assert not (run / "train_log.jsonl").exists()


# ---- real training ---------------------------------------------------------------------


@pytest.mark.slow
def test_run_directory_describes_itself(trained):
    run, manifest = trained
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["lr"] == 2e-3 and config["backend"] == "peft" and config["steps"] == 4
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["tokens_per_s"] > 0 for r in log)
    assert log[0]["lr"] < log[1]["lr"]  # warmup
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert manifest["counts"]["dropped_incorrect"] == 4 and manifest["final_loss"] == log[-1]["loss"]
    assert (run / "adapter" / "adapter_model.safetensors").exists() and (run / "adapter.gguf").exists()


@pytest.mark.slow
def test_training_lowers_the_loss_on_its_own_data(trained, peft_model, records_path, model_path):
    from dasd_local.training.model import mean_loss

    records, report = read_training_records(records_path)
    examples = prepare_examples(records, model_path, _config(records_path, "unused"), report)[:8]
    after = mean_loss(peft_model, examples)
    with peft_model.disable_adapter():
        before = mean_loss(peft_model, examples)
    print(f"loss on the training records: {before:.4f} -> {after:.4f}")
    assert after < before - 0.2


@pytest.mark.slow
def test_trained_gguf_adapter_matches_peft_and_changes_llama_cpp(trained, peft_model, model_path, data_dir, tmp_path):
    from dasd_local.training.gguf import write_merged

    prompts = held_out_prompts(model_path, data_dir, n=3)
    peft = torch_logprobs(peft_model, prompts)
    f32 = write_merged(model_path, tmp_path / "base-f32.gguf", dtype="f32")  # torch's exact weights
    top1, kl = compare(peft, llama_logprobs(f32, prompts, trained[0] / "adapter.gguf"))
    change_top1, change_kl = compare(llama_logprobs(model_path, prompts),
                                     llama_logprobs(model_path, prompts, trained[0] / "adapter.gguf"))
    print(f"trained adapter: llama.cpp vs PEFT top-1 {top1:.4f} KL {kl:.2e}; "
          f"Q4_1 with vs without adapter: top-1 {change_top1:.4f} KL {change_kl:.3f}")
    assert top1 >= 0.99 and kl < 1e-3
    assert change_top1 < 0.97 and change_kl > 0.02


@pytest.mark.slow
def test_resume_reaches_the_same_loss_as_an_uninterrupted_run(trained, records_path, tmp_path):
    """Run A, cut back to the state a crash during step 3 leaves (checkpoint 2, two log
    lines, no final adapter or manifest), resumed: the same losses and the same adapter."""
    import shutil

    run_a, manifest_a = trained
    run_b = tmp_path / "run-b"
    shutil.copytree(run_a, run_b)
    shutil.rmtree(run_b / "checkpoints" / "checkpoint-4")
    shutil.rmtree(run_b / "adapter")
    for name in ("adapter.gguf", "manifest.json"):
        (run_b / name).unlink()
    log = (run_b / "train_log.jsonl").read_text().splitlines()
    (run_b / "train_log.jsonl").write_text("\n".join(log[:2]) + "\n")

    manifest_b = train(_config(records_path, run_b, resume=True), show_progress=False)
    log_a = [json.loads(line) for line in (run_a / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in (run_b / "train_log.jsonl").read_text().splitlines()]
    print(f"final loss: uninterrupted {manifest_a['final_loss']:.6f}, resumed {manifest_b['final_loss']:.6f}")
    assert [r["step"] for r in log_b] == [1, 2, 3, 4]
    assert log_b[:2] == log_a[:2]  # kept as written (a run from scratch would rewrite their timings)
    assert [r["loss"] for r in log_b] == pytest.approx([r["loss"] for r in log_a], abs=1e-4)
    assert [r["lr"] for r in log_b] == pytest.approx([r["lr"] for r in log_a])
    from safetensors.numpy import load_file

    a, b = (load_file(str(r / "adapter" / "adapter_model.safetensors")) for r in (run_a, run_b))
    assert sorted(a) == sorted(b) and all(np.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_gradient_checkpointing_changes_no_number(trained, records_path, tmp_path):
    """--no-grad-checkpoint keeps every activation (the memory-hungry way); the default
    recomputes them in the backward pass. The losses and the adapter are the same."""
    run_a, manifest_a = trained
    assert TrainConfig(data="d", out="o").grad_checkpoint
    train(_config(records_path, tmp_path / "keep", grad_checkpoint=False), show_progress=False)
    log_a, log_b = ([json.loads(x)["loss"] for x in (r / "train_log.jsonl").read_text().splitlines()]
                    for r in (run_a, tmp_path / "keep"))
    assert log_b == pytest.approx(log_a, abs=1e-5)
    from safetensors.numpy import load_file

    a, b = (load_file(str(r / "adapter" / "adapter_model.safetensors")) for r in (run_a, tmp_path / "keep"))
    assert sorted(a) == sorted(b) and all(np.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.slow
def test_hf_model_from_a_local_checkpoint(records_path, model_path, tmp_path):
    """--hf-model takes a hub id or a directory (the same from_pretrained call; the hub is
    unreachable here): the embedded model saved as an HF checkpoint trains and exports."""
    import torch

    from dasd_local.decoding.engine import Engine
    from dasd_local.training.model import load_base

    load_base(_config(records_path, "unused"), model_path).to(torch.bfloat16).save_pretrained(tmp_path / "hf")
    manifest = train(_config(records_path, tmp_path / "run", hf_model=str(tmp_path / "hf"), max_steps=1, batch_size=2,
                             merged="f16"), show_progress=False)
    assert manifest["hf_model"] == str(tmp_path / "hf") and manifest["steps"] == 1
    with Engine(model_path) as engine:
        engine.set_adapter(tmp_path / "run" / "adapter.gguf")
    with Engine(manifest["merged_gguf"]) as merged:  # the standalone merged model loads as a model
        assert merged.n_vocab == 49152


@pytest.mark.slow
def test_two_processes_reach_the_losses_of_one(records_path, model_path, tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) against one process on the same 6 records
    with the same global batch (2 x 1 record against 1 x 2): the same loss at every step
    within 1e-4 (the gradients are summed in another order; LoRA dropout is off because
    each process draws its own masks). Only rank 0 writes: one run directory, whose GGUF
    adapter loads in llama.cpp."""
    from dasd_local.decoding.engine import Engine

    lines = records_path.read_text().splitlines()
    small = tmp_path / "six.jsonl"
    small.write_text("\n".join([line for line in lines if json.loads(line)["correct"]][:6]) + "\n")
    common = {"max_steps": 3, "warmup_ratio": 0.0, "dropout": 0.0, "grad_accum": 1, "save_every": 0}
    one = train(_config(small, tmp_path / "one", batch_size=2, **common), show_progress=False)
    two_dir = tmp_path / "runs"
    two_dir.mkdir()
    args = ["train", str(small), "-o", str(two_dir / "two"), "--batch-size", "1", "--max-steps", "3", "--lr", "2e-3",
            "--warmup-ratio", "0", "--dropout", "0", "--grad-accum", "1", "--save-every", "0", "--max-length", "128",
            "--rank", "8", "--alpha", "16", "--epochs", "1"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "dasd_local", *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.name for p in two_dir.iterdir()] == ["two"] and proc.stdout.count("trained 3 steps") == 1
    two = json.loads((two_dir / "two" / "manifest.json").read_text())
    losses = [[json.loads(x)["loss"] for x in (Path(m["adapter"]).parent / "train_log.jsonl").read_text().splitlines()]
              for m in (one, two)]
    print(f"losses, 1 process: {losses[0]}; 2 processes: {losses[1]}")
    assert two["processes"] == 2 and len(losses[1]) == 3
    assert losses[1] == pytest.approx(losses[0], abs=1e-4)
    with Engine(model_path) as engine:
        engine.set_adapter(two_dir / "two" / "adapter.gguf")
