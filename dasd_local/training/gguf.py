"""A trained PEFT LoRA adapter, written as a llama.cpp GGUF LoRA adapter.

Knows PEFT's adapter files (adapter_config.json + adapter_model.safetensors), the
tensor names and shapes of the base GGUF, and llama.cpp's adapter conventions
(src/llama-adapter.cpp and build_lora_mm in src/llama-graph.cpp):

- metadata: general.type = "adapter", general.architecture = the base model's
  architecture (llama.cpp refuses a mismatch), adapter.type = "lora",
  adapter.lora.alpha; llama.cpp scales B(Ax) by alpha / rank with rank = lora_b.ne[0],
  the same alpha / r as PEFT.
- tensors: `<base tensor name>.lora_a` / `.lora_b`. For a base weight with ggml shape
  ne = [n_in, n_out], llama.cpp expects lora_a ne = [n_in, r] and lora_b
  ne = [r, n_out]: as numpy arrays (r, n_in) and (n_out, r), which are exactly PEFT's
  lora_A.weight and lora_B.weight. No transpose.
- llama-architecture GGUFs store the rows of q and k permuted (convert_hf_to_gguf's
  LlamaModel.permute, for llama.cpp's rope layout). The rows of B @ A follow the rows
  of W, so B's rows get the same permutation and A stays as it is.

Knows nothing about training. The base GGUF is only read (names, shapes, head counts).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError

# GGUF architectures whose linear layers we can map, and whether their GGUF q/k rows
# are permuted relative to the HF checkpoint (convert_hf_to_gguf: LlamaModel permutes,
# Qwen2Model / Qwen3Model / Gemma2Model / Gemma3Model do not).
ARCHITECTURES = {"llama": True, "qwen2": False, "qwen3": False, "gemma2": False, "gemma3": False}


@dataclass(frozen=True)
class BaseGGUF:
    """What export needs to know about the base model file."""

    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    shapes: dict[str, tuple[int, ...]]  # tensor name -> ggml ne (n_in first)


def read_base(path: str | Path) -> BaseGGUF:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError) as e:  # bad magic, short or cut files
        raise ModelError(f"{path}: not a readable GGUF file ({e})") from None
    fields = reader.fields

    def value(key: str, default=None):
        return fields[key].contents() if key in fields else default

    arch = value("general.architecture")
    if arch is None:
        raise ModelError(f"{path}: GGUF without general.architecture")
    n_head = value(f"{arch}.attention.head_count", 0)
    return BaseGGUF(
        arch=arch,
        n_layer=int(value(f"{arch}.block_count", 0)),
        n_head=int(n_head),
        n_head_kv=int(value(f"{arch}.attention.head_count_kv", n_head)),
        shapes={t.name: tuple(int(n) for n in t.shape) for t in reader.tensors},
    )


def permute_rows(b: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute on the output rows of B: within each
    head, interleaved rope pairs (HF: first half / second half) become adjacent."""
    rows = b.shape[0]
    return b.reshape(n_head, 2, rows // n_head // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def _adapter_config(peft_dir: Path) -> dict:
    path = peft_dir / "adapter_config.json"
    if not path.exists():
        raise ModelError(f"{peft_dir}: no adapter_config.json (not a PEFT adapter directory)")
    cfg = json.loads(path.read_text())
    unsupported = [k for k in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save") if cfg.get(k)]
    if cfg.get("peft_type", "LORA") != "LORA" or unsupported or cfg.get("bias", "none") != "none":
        raise ModelError(f"{path}: only plain LoRA exports to llama.cpp (found {unsupported or cfg.get('peft_type')})")
    return cfg


def _lora_pairs(peft_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """HF module name ('model.layers.0.self_attn.q_proj') -> {'A': (r, in), 'B': (out, r)}."""
    from safetensors.torch import load_file  # torch tensors: bf16 has no numpy dtype

    path = peft_dir / "adapter_model.safetensors"
    if not path.exists():
        raise ModelError(f"{peft_dir}: no adapter_model.safetensors")
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in load_file(str(path)).items():
        module, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise ModelError(f"{path}: unexpected tensor {key!r} (only LoRA A/B weights export)")
        pairs.setdefault(module, {})[kind[0]] = tensor.float().numpy()
    return pairs


def _tensor_map(base: BaseGGUF):
    import gguf

    if base.arch not in ARCHITECTURES:
        raise ModelError(f"architecture {base.arch!r} has no LoRA export (supported: {', '.join(ARCHITECTURES)})")
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == base.arch)
    return gguf.get_tensor_name_map(arch_id, base.n_layer)


def gguf_name(module: str, n_in: int, n_out: int, tensor_map, base: BaseGGUF) -> str:
    """The base GGUF tensor an HF linear module ('model.layers.0.self_attn.q_proj') maps
    to, checked to have the module's shape."""
    name = tensor_map.get_name(module + ".weight", try_suffixes=(".weight",))
    if name is None or name not in base.shapes:
        raise ModelError(f"LoRA module {module!r} has no tensor in the base GGUF ({base.arch}): wrong base model?")
    if tuple(base.shapes[name][:2]) != (n_in, n_out):
        have = base.shapes[name][:2]
        raise ModelError(f"{module} (in {n_in}, out {n_out}) does not fit {name} (in {have[0]}, out {have[1]}): wrong base model?")
    return name


def check_fits(modules: dict[str, tuple[int, int]], base_gguf: str | Path) -> None:
    """Fail early (before training) when LoRA'd modules {name: (in, out)} cannot be
    exported onto `base_gguf`, e.g. an --hf-model that is not the GGUF's model."""
    base = read_base(base_gguf)
    tensor_map = _tensor_map(base)
    for module, (n_in, n_out) in modules.items():
        gguf_name(module, n_in, n_out, tensor_map, base)


def gguf_tensors(pairs: dict, base: BaseGGUF, permute_qk: bool) -> dict[str, np.ndarray]:
    """GGUF tensor name -> float32 array, shapes checked against the base weights."""
    tensor_map = _tensor_map(base)
    out: dict[str, np.ndarray] = {}
    for module, ab in sorted(pairs.items()):
        a, b = ab["A"], ab["B"]
        if b.shape[1] != a.shape[0]:
            raise ModelError(f"{module}: LoRA A{a.shape} and B{b.shape} do not chain")
        name = gguf_name(module, a.shape[1], b.shape[0], tensor_map, base)
        if permute_qk and name.endswith(".attn_q.weight"):
            b = permute_rows(b, base.n_head)
        elif permute_qk and name.endswith(".attn_k.weight"):
            b = permute_rows(b, base.n_head_kv)
        out[name + ".lora_a"] = np.ascontiguousarray(a, dtype=np.float32)
        out[name + ".lora_b"] = np.ascontiguousarray(b, dtype=np.float32)
    return out


def export_adapter(peft_dir: str | Path, base_gguf: str | Path, out_path: str | Path, permute_qk: bool | None = None) -> Path:
    """Write `out_path` (GGUF LoRA adapter for `base_gguf`) from a PEFT adapter directory.

    `permute_qk` defaults to what the base architecture needs; it is a parameter so
    that tests can show a wrong choice is detectable.
    """
    import gguf

    peft_dir, out_path = Path(peft_dir), Path(out_path)
    base = read_base(base_gguf)
    cfg = _adapter_config(peft_dir)
    # rsLoRA scales by alpha / sqrt(r); llama.cpp by alpha / r: fold the difference into alpha.
    alpha = float(cfg["lora_alpha"]) * (float(cfg["r"]) ** 0.5 if cfg.get("use_rslora") else 1.0)
    permute = ARCHITECTURES[base.arch] if permute_qk is None else permute_qk
    tensors = gguf_tensors(_lora_pairs(peft_dir), base, permute)
    if not tensors:
        raise ModelError(f"{peft_dir}: the adapter holds no LoRA tensors")

    tmp = out_path.with_name(out_path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), base.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(f"{peft_dir.name} (LoRA r={cfg['r']}, alpha={cfg['lora_alpha']})")
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    return _finish(writer, tmp, out_path)


def _finish(writer, tmp: Path, out_path: Path) -> Path:
    """Write the GGUF to its temp file, then rename it into place (never a torn file)."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out_path)
    return out_path


def _copy_metadata(reader, writer) -> None:
    """Every key of the base GGUF except those the writer owns (as gguf_new_metadata does)."""
    import gguf

    for f in reader.fields.values():
        if f.name in ("general.architecture", "general.file_type") or f.name.startswith("GGUF."):
            continue
        vtype = f.types[0]
        writer.add_key_value(f.name, f.contents(), vtype, sub_type=f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)


def write_merged(base_gguf: str | Path, out_path: str | Path, peft_dir: str | Path | None = None, dtype: str = "f16") -> Path:
    """A standalone GGUF with the LoRA folded in (W + alpha / r * B @ A, in the GGUF's row
    order), every matrix dequantized to f16 or f32 (vectors stay f32, as llama.cpp wants).
    Without `peft_dir`: the dequantized base alone. llama.cpp's quantize tool turns the
    result into a quantized model; this module does not quantize."""
    import gguf

    if dtype not in ("f16", "f32"):
        raise ModelError(f"dtype = {dtype!r} is not allowed: expected f16 or f32")
    reader, base = gguf.GGUFReader(str(base_gguf)), read_base(base_gguf)
    lora, scale = {}, 0.0
    if peft_dir is not None:
        cfg = _adapter_config(Path(peft_dir))
        scale = float(cfg["lora_alpha"]) / (float(cfg["r"]) ** 0.5 if cfg.get("use_rslora") else float(cfg["r"]))
        lora = gguf_tensors(_lora_pairs(Path(peft_dir)), base, ARCHITECTURES[base.arch])
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), base.arch)
    _copy_metadata(reader, writer)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(n) for n in reversed(t.shape)])
        if t.name + ".lora_a" in lora:
            w = w + scale * (lora[t.name + ".lora_b"] @ lora[t.name + ".lora_a"])
        writer.add_tensor(t.name, w.astype(np.float16) if dtype == "f16" and w.ndim > 1 else w)
    return _finish(writer, tmp, out_path)
