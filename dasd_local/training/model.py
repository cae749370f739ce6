"""The torch side of `dasd-local train`: base weights, LoRA layers and the loss math.

Knows torch, transformers, peft, TRL's chunked LM head and unsloth (each imported inside
the function that needs it; unsloth only with a CUDA GPU). Weights come from an HF
checkpoint or from the GGUF, dequantized by transformers. Knows nothing about records,
the trainer or the run directory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..config import TrainConfig
from ..errors import ConfigError, ModelError
from .data import IGNORE, Example


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
    from .gguf import ARCHITECTURES, read_base

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
    """Base model with fresh LoRA layers on every linear layer of the blocks, and TRL's
    chunked LM head: `model(..., labels=, fused_lm_head=True)` returns each label's
    log-probability, projecting onto the vocabulary a tile at a time, so the (batch,
    length, vocabulary) logits never exist at once (for a 49k vocabulary at 4 x 2048
    tokens that is 1.6 GB per copy). Same loss and gradient as the full logits (tested)."""
    import torch
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(cfg.seed)  # LoRA A init
    model = _load_unsloth(cfg, gguf_path, run) if backend == "unsloth" else _load_peft(cfg, gguf_path)
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs",))  # what SFTTrainer does, minus its metrics
    return model


def _load_peft(cfg: TrainConfig, gguf_path: Path):
    import torch
    from peft import LoraConfig, get_peft_model

    model = load_base(cfg, gguf_path)
    if cfg.grad_checkpoint:  # same gradients; activations are recomputed block by block
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=LINEAR,
                      bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft 0.21 reads an attribute transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = get_peft_model(model, lora)
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def _load_unsloth(cfg: TrainConfig, gguf_path: Path, run: Path):
    """Unsloth's documented path: FastLanguageModel.from_pretrained + get_peft_model; the
    same trainer then runs it. Not run on this project's CPU-only machines."""
    from accelerate import PartialState
    from unsloth import FastLanguageModel  # first: unsloth patches transformers

    source = cfg.hf_model
    if not source:  # Unsloth reads HF checkpoints only: dequantize the GGUF once into the run dir
        source = run / "base-hf"
        with PartialState().main_process_first():  # one process writes it, the others read it
            if not (source / "config.json").exists():
                load_base(cfg, gguf_path).save_pretrained(source)
    model, _ = FastLanguageModel.from_pretrained(model_name=str(source), max_seq_length=cfg.max_length,
                                                 dtype=None, load_in_4bit=False)
    return FastLanguageModel.get_peft_model(model, r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                            target_modules=LINEAR, bias="none", random_state=cfg.seed,
                                            use_gradient_checkpointing="unsloth" if cfg.grad_checkpoint else False)


# ---- loss --------------------------------------------------------------------------------


def kept_nll(log_probs, label_mask, profit: float | None = None):
    """Summed NLL over labelled positions and how many were counted, from per-position
    log-probabilities of the labels. ProFit: with `profit`, positions whose label has a
    probability below it under the model being trained are dropped (a mask: no gradient
    flows through the decision). The denominator stays the step's label count (the
    trainer's num_items_in_batch), so dropped tokens weigh nothing rather than
    re-weighting the rest."""
    keep = label_mask if profit is None else label_mask & (log_probs.detach().exp() >= profit)
    return -(log_probs * keep).sum(), keep.sum()


def token_nll(logits, labels, profit: float | None = None):
    """kept_nll from full logits (the reference the chunked loss is tested against, and
    evaluation): next-token NLL of `labels` shifted by one, and the count as an int."""
    import torch

    target = labels[:, 1:]
    mask = target != IGNORE
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    logp = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    nll, n = kept_nll(torch.where(mask, logp, 0.0), mask, profit)
    return nll, int(n)


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
