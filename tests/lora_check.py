"""Shared by test_train and test_export: next-token distributions of the same token
sequences in torch (a PEFT model) and in llama.cpp (a GGUF, optionally with a LoRA
adapter), and how far apart they are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def held_out_prompts(model_path: Path, data_dir: Path, n: int = 4, solution_chars: int = 240) -> list[list[int]]:
    """MATH *test* problems (never trained on) as base-view prompts followed by the start of
    their gold solution, so positions cover both prompt and response-like text."""
    from dasd_local.decoding.engine import Engine
    from dasd_local.decoding.views import ViewBuilder
    from dasd_local.tasks import Problem, get_task

    task = get_task("math")
    with open(data_dir / "math" / "test.jsonl") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(40))]
    rows = [r for r in rows if len(r["problem"]) < 200][:n]
    with Engine(model_path) as engine:
        builder = ViewBuilder(engine, task)
        prompts = []
        for r in rows:
            base = engine.tokenize(builder.render(task.base_user(Problem("", r["problem"], ""))))
            prompts.append(base + engine.tokenize(r["solution"][:solution_chars], special=False))
    return prompts


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def llama_logprobs(gguf: Path, prompts: list[list[int]], adapter: Path | None = None) -> np.ndarray:
    """(positions, vocab) log-probabilities at every position of every prompt. One thread:
    on a shared 2-core machine llama.cpp's two spinning threads run 3x slower than one.

    Without repacked weights: the comparison is against torch, and the repacked Q4_K kernels
    quantize activations differently. Measured on Gemma 3 270M with a random LoRA: the same
    KL to torch either way (0.0062 repacked, 0.0055 not), but 6 of 50 top-1 flips instead of
    2, all at near-ties (torch margins 0.03-0.18 nats against a median of 1.31)."""
    from dasd_local.decoding.engine import Engine, EngineConfig

    out = []
    cfg = EngineConfig(n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=1, cpu_weights="plain")
    with Engine(gguf, cfg, adapter=adapter) as engine:
        for tokens in prompts:
            engine.clear()
            n = len(tokens)
            out.append(_log_softmax(engine.decode(tokens, list(range(n)), [0] * n, [True] * n)))
    return np.concatenate(out)


def torch_logprobs(model, prompts: list[list[int]]) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([torch.log_softmax(model(input_ids=torch.tensor([t])).logits[0].float(), -1).numpy()
                               for t in prompts])


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, mean KL(a || b)) over positions."""
    top1 = float((a.argmax(axis=1) == b.argmax(axis=1)).mean())
    kl = float((np.exp(a) * (a - b)).sum(axis=1).mean())
    return top1, kl


def scaled_random_lora(gguf: Path, out_dir: Path, r: int, scale: float):
    """A PEFT model with random A and B (scaled by `scale`: full-size random factors drive a
    real model's activations out of range) on every linear layer of the dequantized GGUF,
    saved and exported: (peft model, adapter GGUF)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, GgufConfig

    from dasd_local.training.gguf import export_adapter
    from dasd_local.training.model import LINEAR

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 quantization_config=GgufConfig(dequantize=True))
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=LINEAR, init_lora_weights=False))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.mul_(scale)
    model.save_pretrained(out_dir / "peft")
    return model, export_adapter(out_dir / "peft", gguf, out_dir / "adapter.gguf")


def adapter_parity(model, gguf: Path, adapter: Path, prompts: list[list[int]]) -> dict:
    """PEFT in torch against llama.cpp with the exported adapter on the quantized file, beside
    how well the two base models agree (the quantization's own share) and the adapter's effect."""
    peft = torch_logprobs(model, prompts)
    with model.disable_adapter():
        plain = torch_logprobs(model, prompts)
    base_top1, base_kl = compare(plain, llama_logprobs(gguf, prompts))
    top1, kl = compare(peft, llama_logprobs(gguf, prompts, adapter))
    _, effect_kl = compare(plain, peft)
    return {"base_top1": base_top1, "base_kl": base_kl, "top1": top1, "kl": kl, "effect_kl": effect_kl}
