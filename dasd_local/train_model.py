"""The torch side of `dasd-local train`: base weights, LoRA layers, loss, schedule, batches.

Knows torch, transformers, peft and unsloth (each imported inside the function that needs
it; unsloth only with a CUDA GPU). Weights come from an HF checkpoint or from the GGUF,
dequantized by transformers. Knows nothing about records or the run directory.
"""

from __future__ import annotations

import math
import random
import warnings
from pathlib import Path

from .config import TrainConfig
from .errors import ConfigError, ModelError
from .train_data import IGNORE, Example


# ---- model -----------------------------------------------------------------------------

LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def pick_backend(name: str) -> str:
    """auto: Unsloth on a CUDA GPU when installed, else PEFT. Unsloth is imported only here
    and only with a GPU (it patches transformers on import)."""
    import torch

    gpu = torch.cuda.is_available()
    if name == "unsloth" and not gpu:
        raise ConfigError("--backend unsloth needs a CUDA GPU and none is visible (use --backend peft on CPU)")
    if name == "peft" or not gpu:
        return "peft"
    try:
        import unsloth  # noqa: F401
    except ImportError:
        if name == "unsloth":
            raise ConfigError("--backend unsloth: the unsloth package is not installed (pip install unsloth)") from None
        return "peft"
    return "unsloth"


def check_architecture(gguf_path: Path) -> None:
    """Training needs weights transformers can dequantize from the GGUF (or --hf-model) and
    an adapter export.py can map back onto the GGUF's tensors: the same architectures."""
    from .export import ARCHITECTURES, read_base

    arch = read_base(gguf_path).arch
    if arch not in ARCHITECTURES:
        raise ModelError(f"{gguf_path}: architecture {arch!r} cannot be dequantized to torch weights or get a "
                         f"llama.cpp LoRA adapter here (supported: {', '.join(ARCHITECTURES)})")


def load_base(cfg: TrainConfig, gguf_path: Path):
    """The torch base model: --hf-model, else the GGUF dequantized by transformers. Always
    dense: transformers 5 otherwise keeps GGUF blocks packed when the `kernels` package is
    installed, and such layers neither take LoRA nor save as a checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    if cfg.hf_model:
        source, kwargs = cfg.hf_model, {}
    else:
        source, kwargs = str(gguf_path.parent), {"gguf_file": gguf_path.name,
                                                 "quantization_config": GgufConfig(dequantize=True)}
    dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelError(f"{source}: transformers could not load the weights ({str(e).splitlines()[0]})") from None


def load_model(cfg: TrainConfig, backend: str, gguf_path: Path, run: Path):
    """Base model with fresh LoRA layers on every linear layer of the blocks."""
    import torch

    torch.manual_seed(cfg.seed)  # LoRA A init
    if backend == "unsloth":
        return _load_unsloth(cfg, gguf_path, run)
    from peft import LoraConfig, get_peft_model

    model = load_base(cfg, gguf_path)
    if cfg.grad_checkpoint:  # same gradients; activations are recomputed block by block
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=LINEAR,
                      bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft 0.21 reads an attribute transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = get_peft_model(model, lora)
    model.chunked_loss = True  # forward_nll: the loss chunk by chunk (Unsloth has its own)
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def _load_unsloth(cfg: TrainConfig, gguf_path: Path, run: Path):
    import os

    os.environ.setdefault("UNSLOTH_RETURN_LOGITS", "1")  # token_nll needs the logits themselves
    from unsloth import FastLanguageModel  # first: unsloth patches transformers

    source = cfg.hf_model
    if not source:  # Unsloth reads HF checkpoints only: dequantize the GGUF once into the run dir
        source = run / "base-hf"
        if not (source / "config.json").exists():
            load_base(cfg, gguf_path).save_pretrained(source)
    model, _ = FastLanguageModel.from_pretrained(model_name=str(source), max_seq_length=cfg.max_length,
                                                 dtype=None, load_in_4bit=False)
    return FastLanguageModel.get_peft_model(model, r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                            target_modules=LINEAR, bias="none", random_state=cfg.seed,
                                            use_gradient_checkpointing="unsloth" if cfg.grad_checkpoint else False)


# ---- loss and schedule -----------------------------------------------------------------


def token_nll(logits, labels, profit: float | None = None):
    """Summed next-token NLL over labelled positions, and how many were counted. With
    `profit`, positions whose target probability under the model is below it are dropped
    (a mask: no gradient flows through the decision)."""
    nll, n = _aligned_nll(logits[:, :-1], labels[:, 1:], profit)
    return nll, int(n)


def _aligned_nll(logits, target, profit: float | None):
    """Summed NLL of `target` under `logits` at the same positions, and the count (a tensor)."""
    import torch.nn.functional as F

    logits = logits.float()
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                          ignore_index=IGNORE, reduction="none")
    keep = target.reshape(-1) != IGNORE
    if profit is not None:
        keep &= (-nll.detach()).exp() >= profit
    return (nll * keep).sum(), keep.sum()


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr before optimizer step `step` (0-based): linear warmup
    over `warmup` steps, then cosine or linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else max(0.0, 1 - progress)


def plan_steps(n_examples: int, cfg: TrainConfig) -> list[list[list[int]]]:
    """Optimizer step -> micro-batches -> example indices. Epoch e shuffles with seed + e,
    so the plan, and therefore a resumed run, is the same every time."""
    steps = []
    for epoch in range(cfg.epochs):
        order = list(range(n_examples))
        random.Random(cfg.seed + epoch).shuffle(order)
        micro = [order[i:i + cfg.batch_size] for i in range(0, n_examples, cfg.batch_size)]
        steps += [micro[i:i + cfg.grad_accum] for i in range(0, len(micro), cfg.grad_accum)]
    return steps[:cfg.max_steps] if cfg.max_steps else steps


def collate(batch: list[Example], pad_id: int, device):
    """Right-padded input ids, attention mask and labels (IGNORE on padding)."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e.input_ids), torch.tensor(e.labels), 1
    return ids.to(device), mask.to(device), labels.to(device)


# Causal LMs whose logits are exactly lm_head(last hidden state): their loss can be taken
# chunk by chunk (no softcapping or logit scaling after the head).
PLAIN_HEAD = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM"}
CE_CHUNK = 256  # positions per vocabulary-projection chunk


def forward_nll(model, ids, mask, labels, profit: float | None = None, chunked: bool = False):
    """Summed NLL of one micro-batch and its label count (token_nll's contract).

    chunked: the decoder runs once, then the vocabulary projection and the loss run over
    CE_CHUNK positions at a time, each chunk recomputed in the backward pass, so the
    (batch, length, vocab) logits and their gradient never exist at once (for a 49k
    vocabulary at 4 x 2048 tokens that is 1.6 GB per copy). Same numbers as the full path."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not chunked or type(base).__name__ not in PLAIN_HEAD:
        return token_nll(*forward_logits(model, ids, mask, labels), profit)
    import torch
    from torch.utils.checkpoint import checkpoint

    start = _first_logit(labels)
    hidden = base.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state[:, start:]
    labels = labels[:, start:]
    head = base.get_output_embeddings()
    total, count = hidden.new_zeros((), dtype=torch.float32), 0
    for s in range(0, hidden.size(1) - 1, CE_CHUNK):
        e = min(s + CE_CHUNK, hidden.size(1) - 1)
        target = labels[:, s + 1:e + 1]
        if not (target != IGNORE).any():
            continue
        nll, n = checkpoint(_chunk_nll, head, hidden[:, s:e], target, profit, use_reentrant=False)
        total, count = total + nll, count + int(n)
    return total, count


def _chunk_nll(head, hidden, target, profit):
    return _aligned_nll(head(hidden), target, profit)


def _first_logit(labels) -> int:
    """Position of the first logit the loss needs: the one before the batch's first label."""
    labelled = (labels != IGNORE).any(dim=0).nonzero()
    first = int(labelled[0]) if len(labelled) else labels.size(1) - 1
    return max(first - 1, 0)


def forward_logits(model, ids, mask, labels):
    """Logits from the position before the batch's first label on, and the labels cut to
    match: the vocabulary projection of prompt positions is skipped (transformers'
    logits_to_keep), which saves time on CPU and memory with large vocabularies."""
    import inspect

    keep = labels.size(1) - _first_logit(labels)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return model(input_ids=ids, attention_mask=mask).logits, labels
    return model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits, labels[:, -keep:]


def mean_loss(model, examples: list[Example], batch_size: int = 4) -> float:
    """Mean NLL per labelled token of `examples` (evaluation mode, no gradient)."""
    import torch

    was_training, total, count = model.training, 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            ids, mask, labels = collate(examples[i:i + batch_size], 0, model.device)
            nll, n = token_nll(*forward_logits(model, ids, mask, labels))
            total, count = total + float(nll), count + n
    model.train(was_training)
    return total / max(count, 1)
