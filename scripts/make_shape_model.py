"""A random-weight GGUF with the shape of a real laptop-class model, for speed and memory.

Decode speed and memory depend on a model's shape (layers, width, heads, FFN, vocabulary)
and quantization, not on its weight values. The model hubs are out of reach here, so this
writes a llama-architecture GGUF of a named model's shape with random weights, the
embedded SmolLM2 model's tokenizer and chat template (so the same prompts tokenize the
same way), and quantizes it with llama.cpp's own quantize API. Its text is noise: use it
with `bench_generate.py --fixed-length`.

    python scripts/make_shape_model.py llama-3.2-1b          # prints the file's path
    python scripts/make_shape_model.py llama-3.2-3b --type q4_k_m

The file goes to the models cache (`$DASD_HOME/models`, default ~/.cache/dasd-local/models),
never into the repository; an existing file is reused.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# name -> (layers, width, query heads, KV heads, FFN, rope base); vocabulary: the embedded model's
SHAPES = {
    "llama-3.2-1b": (16, 2048, 32, 8, 8192, 500000.0),
    "llama-3.2-3b": (28, 3072, 24, 8, 8192, 500000.0),
    "llama-3.1-8b": (32, 4096, 32, 8, 14336, 500000.0),
    "tiny": (2, 256, 4, 2, 512, 10000.0),  # for tests: built in seconds
}
FTYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}


def tokenizer_fields(path: Path) -> list[tuple]:
    """(key, value, type, sub type) of every tokenizer.* field of a GGUF, to copy verbatim."""
    import gguf

    out = []
    for key, field in gguf.GGUFReader(str(path)).fields.items():
        if key.startswith("tokenizer."):
            sub = field.types[1] if len(field.types) > 1 else None
            out.append((key, field.contents(), field.types[0], sub))
    return out


def tensor_shapes(layers: int, width: int, heads: int, kv_heads: int, ffn: int, vocab: int) -> list[tuple]:
    """(name, numpy shape) of a llama model with tied embeddings, as llama.cpp names them."""
    hd = width // heads
    out = [("token_embd.weight", (vocab, width)), ("output_norm.weight", (width,))]
    for i in range(layers):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", (width,)), (b + "attn_q.weight", (heads * hd, width)),
                (b + "attn_k.weight", (kv_heads * hd, width)), (b + "attn_v.weight", (kv_heads * hd, width)),
                (b + "attn_output.weight", (width, heads * hd)), (b + "ffn_norm.weight", (width,)),
                (b + "ffn_gate.weight", (ffn, width)), (b + "ffn_up.weight", (ffn, width)),
                (b + "ffn_down.weight", (width, ffn))]
    return out


def write_f16(name: str, out: Path, tokenizer: Path, seed: int = 0) -> None:
    """Stream a random-weight F16 GGUF of the named shape to `out` (one tensor in memory at a time)."""
    import gguf
    import numpy as np

    layers, width, heads, kv_heads, ffn, rope = SHAPES[name]
    fields = tokenizer_fields(tokenizer)
    vocab = next(len(v) for k, v, _, _ in fields if k == "tokenizer.ggml.tokens")
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name(f"random-weight {name} shape")
    w.add_block_count(layers)
    w.add_context_length(131072)
    w.add_embedding_length(width)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(width // heads)
    w.add_rope_freq_base(rope)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for key, value, vtype, sub in fields:
        w.add_key_value(key, value, vtype, sub_type=sub)
    shapes = tensor_shapes(layers, width, heads, kv_heads, ffn, vocab)
    for tname, shape in shapes:
        dtype = np.float32 if len(shape) == 1 else np.float16
        w.add_tensor_info(tname, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for tname, shape in shapes:
        if len(shape) == 1:  # norms: ones keep activations finite
            w.write_tensor_data(np.ones(shape, dtype=np.float32))
        else:  # small random weights: finite logits, a flat-ish distribution
            w.write_tensor_data((rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16))
    w.close()


def quantize(src: Path, dst: Path, ftype: str, threads: int) -> None:
    import llama_cpp

    from dasd_local.decoding.engine import _quiet_llama

    _quiet_llama()  # a line per tensor otherwise
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[ftype])
    params.nthread = threads
    tmp = dst.with_suffix(".part")
    if llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params) != 0:
        raise SystemExit(f"llama.cpp could not quantize {src}")
    os.replace(tmp, dst)


def make(name: str, ftype: str = "q4_k_m", threads: int = 0) -> Path:
    """The cached file for `name` (built once)."""
    from dasd_local.models import models_dir, resolve

    out = models_dir() / f"shape-{name}-{ftype}.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    f16 = out.with_suffix(".f16.part")
    try:
        print(f"writing {name} random weights (F16) to {f16}", file=sys.stderr, flush=True)
        write_f16(name, f16, resolve(None)[0])
        print(f"quantizing to {ftype}", file=sys.stderr, flush=True)
        quantize(f16, out, ftype, threads or os.cpu_count() or 1)
    finally:
        f16.unlink(missing_ok=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(SHAPES))
    ap.add_argument("--type", default="q4_k_m", choices=sorted(FTYPES))
    ap.add_argument("--threads", type=int, default=0, help="quantization threads (0: all cores)")
    args = ap.parse_args()
    path = make(args.name, args.type, args.threads)
    print(f"{path}  ({path.stat().st_size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
