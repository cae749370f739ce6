"""The only importer of llama_cpp: one model, one context, many sequences.

Knows llama.cpp's low-level API (llama-cpp-python 0.3.36): loading a GGUF, a context
holding up to `n_seq_max` sequences in one KV cache, ONE `llama_decode` per call over
entries from any sequences, logits copied out only for the rows that asked for them,
KV edits (drop positions, copy prefixes), LoRA adapters. Every C pointer is owned here and
freed deterministically by `close()`. Knows nothing about problems or strategies.
"""

from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import CPU_WEIGHTS, KV_TYPES
from ..errors import ModelError

# Architectures whose GGUF is an encoder or embedding model, not a causal LM.
ENCODER_ARCHS = {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "neo-bert",
                 "modern-bert", "t5encoder", "wavtokenizer-dec", "clip"}


@dataclass(frozen=True)
class EngineConfig:
    n_ctx: int = 4096  # KV cells shared by all sequences (unified cache)
    n_seq_max: int = 2
    n_batch: int = 512  # most tokens one decode call may carry
    # one micro-batch per decode call: llama.cpp cuts a call into micro-batches by the
    # sequences in it, and a sequence's numbers change with how its tokens are cut (loop.py)
    n_ubatch: int = 512
    n_gpu_layers: int = 0
    n_threads: int | None = None
    flash_attn: bool = True  # lets the CPU kernel skip other sequences' masked cells
    # True: one cell pool for all sequences (memory follows real lengths; views can share a
    # prefix). False: n_ctx / n_seq_max cells per sequence in its own stream, so attention
    # never scans other sequences' cells (faster with many sequences; copies of prefixes only).
    kv_unified: bool = True
    kv_type: str = "f16"  # KV cache element type: f16 | q8_0 (half the memory, small numeric change)
    # How the weights sit on the CPU (cpu_placement): auto | plain | repack. A resolved
    # engine's config holds what was used (plain or repack), never auto.
    cpu_weights: str = "auto"

    def __post_init__(self):
        for name in ("n_ctx", "n_seq_max", "n_batch", "n_ubatch"):
            if getattr(self, name) < 1:
                raise ModelError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kv_type not in KV_TYPES:
            raise ModelError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {self.kv_type!r}")
        if self.n_seq_max > 256:
            raise ModelError(f"n_seq_max must be <= 256 (llama.cpp's limit), got {self.n_seq_max}")
        if self.cpu_weights not in CPU_WEIGHTS:
            raise ModelError(f"cpu_weights must be one of {', '.join(CPU_WEIGHTS)}, got {self.cpu_weights!r}")


_LOG_CALLBACK = None  # kept alive: llama.cpp holds the pointer


def _quiet_llama() -> None:
    """Silence llama.cpp's stderr chatter once per process (errors come back as return codes)."""
    global _LOG_CALLBACK
    import llama_cpp

    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p())
        llama_cpp.llama_backend_init()


def _check_gguf(path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelError(f"{path}: not a GGUF file (llama.cpp needs GGUF weights)")


K_QUANT_FTYPES = set(range(10, 19))  # llama_ftype MOSTLY_Q2_K .. MOSTLY_Q6_K

def system_info() -> str:
    """llama.cpp's own report of the CPU features its kernels were built for and found."""
    import llama_cpp

    _quiet_llama()
    return llama_cpp.llama_print_system_info().decode("utf-8", "replace")


def has_amx(info: str) -> bool:
    """Whether llama.cpp reports its AMX kernels live (`AMX_INT8 = 1` in its system info)."""
    return re.search(r"\bAMX_INT8\s*=\s*1\b", info) is not None


def cpu_placement(choice: str) -> str:
    """The one rule for where the weights go: `auto` is `plain`.

    plain: the mapped file, llama.cpp's ordinary kernels. repack: llama.cpp's "extra buffer
    types" (use_extra_bufts): a second, private copy of the weights repacked for its CPU
    kernels (the file is then read, not mapped), and on a CPU with AMX the AMX buffer type.

    auto never repacks. The repacked kernels take a call's rows in groups of four (gemm)
    and the rest one by one (gemv), so a row's numbers depend on how many rows share its
    call: a problem's record would depend on the other problems in its run, which plain's
    kernels never let happen (loop.py). What that costs is small: repacking won about 5%
    at 1-4 rows per call (README, "Repacking") and lost 25-35% at 64+ rows for K-quants.
    On a CPU where llama.cpp runs AMX kernels (has_amx), repacking also crashes: its AMX
    matmul segfaults on the first decode (ggml-org/llama.cpp#20824, unfixed in 0.3.36's
    llama.cpp; measured on a Sapphire Rapids Xeon). An explicit `plain` or `repack` is
    taken as it is."""
    if choice not in CPU_WEIGHTS:
        raise ModelError(f"--cpu-weights must be one of {', '.join(CPU_WEIGHTS)}, got {choice!r}")
    return "plain" if choice == "auto" else choice


def open_llama(path: str | Path, cpu_weights: str = "auto", **kwargs):
    """llama-cpp-python's high-level `Llama` under the same placement rule, for baselines and
    cross-checks; returns (llm, placement). `Llama` takes no use_extra_bufts argument, so the
    default model params its constructor starts from are patched for the load (it reads them
    from llama_cpp.llama_cpp once, in __init__)."""
    import llama_cpp.llama_cpp as raw
    from llama_cpp import Llama

    placement = cpu_placement(cpu_weights)
    default = raw.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = placement == "repack"
        return p

    raw.llama_model_default_params = params
    try:
        return Llama(str(path), **kwargs), placement
    finally:
        raw.llama_model_default_params = default


def gguf_file_type(path: str | Path) -> int | None:
    """The GGUF's general.file_type (a llama_ftype), read by a vocabulary-only load."""
    import llama_cpp

    _check_gguf(Path(path))
    _quiet_llama()
    mp = llama_cpp.llama_model_default_params()
    mp.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mp)
    if not model:
        return None
    try:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_model_meta_val_str(model, b"general.file_type", buf, len(buf))
        return int(buf.value) if n > 0 and buf.value.isdigit() else None
    finally:
        llama_cpp.llama_model_free(model)


class Engine:
    """A GGUF model with one multi-sequence context. Narrow surface: tokenize, detokenize,
    decode (one call, any sequences), drop/copy KV positions, adapters, close."""

    def __init__(self, model_path: str | Path, config: EngineConfig = EngineConfig(),
                 adapter: str | Path | None = None, adapter_scale: float = 1.0):
        import llama_cpp

        self._ll = llama_cpp
        self.path = Path(model_path)
        self.config = config
        self._model = self._ctx = self._batch = None
        self._adapters: list = []
        self._active = None  # (adapter pointer, scale) applied to the context
        _check_gguf(self.path)
        _quiet_llama()
        mp = llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = config.n_gpu_layers
        placement = cpu_placement(config.cpu_weights)
        self.config = config = replace(config, cpu_weights=placement)  # what was used, for manifests
        mp.use_extra_bufts = placement == "repack"
        if placement == "repack":  # the repacked copy is what runs: mapping the file too would hold it twice
            mp.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mp)
        if not self._model:
            raise ModelError(f"{self.path}: llama.cpp could not load this GGUF as a model")
        try:
            self._check_causal()
            self._vocab = llama_cpp.llama_model_get_vocab(self._model)
            self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
            self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
            self._ctx = self._new_context()
            self._batch_cap = config.n_batch
            self._batch = llama_cpp.llama_batch_init(self._batch_cap, 0, 1)
            self._mem = llama_cpp.llama_get_memory(self._ctx)
            if adapter is not None:
                self.set_adapter(adapter, adapter_scale)
        except BaseException:
            self.close()
            raise

    # ---- setup -----------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._ll.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return None if n < 0 else buf.value.decode("utf-8", "replace")

    def _check_causal(self) -> None:
        arch = self.meta("general.architecture") or "?"
        if arch in ENCODER_ARCHS or self.meta(f"{arch}.pooling_type") is not None \
                or not self._ll.llama_model_has_decoder(self._model):
            raise ModelError(f"{self.path}: architecture {arch!r} is not a causal language model")
        self.arch = arch

    def _new_context(self):
        ll, c = self._ll, self.config
        cp = ll.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = c.n_ctx, c.n_batch, min(c.n_ubatch, c.n_batch), c.n_seq_max
        threads = c.n_threads or os.cpu_count() or 1
        cp.n_threads = cp.n_threads_batch = threads
        cp.kv_unified = c.kv_unified
        cp.type_k = cp.type_v = getattr(ll, f"GGML_TYPE_{c.kv_type.upper()}")  # f16 -> GGML_TYPE_F16
        cp.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED if c.flash_attn else ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.no_perf = True
        ctx = ll.llama_init_from_model(self._model, cp)
        if not ctx:
            raise ModelError(f"{self.path}: llama.cpp could not create a context of {c.n_ctx} tokens "
                             f"for {c.n_seq_max} sequences (out of memory?)")
        return ctx

    @property
    def seq_cells(self) -> int:
        """KV cells one sequence can use."""
        c = self.config
        return c.n_ctx if c.kv_unified else c.n_ctx // c.n_seq_max

    @property
    def kv_bytes_per_cell(self) -> float:
        """KV cache bytes one token of one sequence takes (K and V, every layer)."""
        ll = self._ll
        n_head = max(ll.llama_model_n_head(self._model), 1)
        head = int(self.meta(f"{self.arch}.attention.key_length") or ll.llama_model_n_embd(self._model) // n_head)
        per_elem = 2.0 if self.config.kv_type == "f16" else 34 / 32
        return ll.llama_model_n_layer(self._model) * 2 * ll.llama_model_n_head_kv(self._model) * head * per_elem

    def resize(self, n_ctx: int, n_seq_max: int, kv_unified: bool | None = None) -> None:
        """A fresh context of another size (the KV cache is emptied; adapters stay set)."""
        unified = self.config.kv_unified if kv_unified is None else kv_unified
        self.config = replace(self.config, n_ctx=n_ctx, n_seq_max=n_seq_max, kv_unified=unified)
        self._ll.llama_free(self._ctx)
        self._ctx = None
        self._ctx = self._new_context()
        self._mem = self._ll.llama_get_memory(self._ctx)
        self._apply_adapters()

    def set_adapter(self, path: str | Path | None, scale: float = 1.0) -> None:
        """Apply one GGUF LoRA adapter (or none) to every following decode."""
        ll = self._ll
        if path is None:
            ll.llama_set_adapters_lora(self._ctx, None, 0, None)
            self._active = None
            return
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such adapter file")
        adapter = ll.llama_adapter_lora_init(self._model, str(path).encode())
        if not adapter:
            raise ModelError(f"{path}: llama.cpp could not load this LoRA adapter for {self.path.name}")
        self._adapters.append(adapter)
        self._active = (adapter, scale)
        self._apply_adapters()

    def _apply_adapters(self) -> None:
        if self._active is None:
            return
        ll = self._ll
        arr = (ll.llama_adapter_lora_p_ctypes * 1)(self._active[0])
        if ll.llama_set_adapters_lora(self._ctx, arr, 1, (ctypes.c_float * 1)(self._active[1])) != 0:
            raise ModelError("llama.cpp refused to apply the LoRA adapter")

    # ---- vocabulary --------------------------------------------------------------

    def token_text(self, token: int, special: bool = True) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = self._ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:max(n, 0)]

    @property
    def bos_text(self) -> str:
        bos = self._ll.llama_vocab_bos(self._vocab)
        return "" if bos < 0 else self.token_text(bos).decode("utf-8", "replace")

    @property
    def eos_text(self) -> str:
        eos = self._ll.llama_vocab_eos(self._vocab)
        return "" if eos < 0 else self.token_text(eos).decode("utf-8", "replace")

    def chat_template(self) -> str | None:
        tmpl = self._ll.llama_model_chat_template(self._model, None)
        return tmpl.decode("utf-8") if tmpl else None

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Tokens of `text`; special tokens in the text are parsed. BOS is added when the
        vocabulary asks for it and the text (a rendered template) does not already start with it."""
        raw = text.encode("utf-8")
        add_bos = special and bool(self._ll.llama_vocab_get_add_bos(self._vocab))
        if add_bos and self.bos_text and text.startswith(self.bos_text):
            add_bos = False
        cap = len(raw) + 8
        buf = (self._ll.llama_token * cap)()
        n = self._ll.llama_tokenize(self._vocab, raw, len(raw), buf, cap, add_bos, special)
        if n < 0:
            raise ModelError(f"tokenization overflow ({-n} tokens)")
        return list(buf[:n])

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.token_text(t, special=False) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self._vocab, int(token)))

    # ---- decoding ------------------------------------------------------------------

    def decode(self, tokens, positions, seqs, want) -> np.ndarray:
        """ONE llama_decode over the entries (token, position, sequence id, wants logits).
        Returns the logits of the wanted entries, in entry order, as a (n_wanted, vocab) copy."""
        n = len(tokens)
        if n == 0 or n > self._batch_cap:
            raise ValueError(f"decode takes 1..{self._batch_cap} entries, got {n}")
        b = self._batch
        b.n_tokens = n
        for i in range(n):
            b.token[i] = int(tokens[i])
            b.pos[i] = int(positions[i])
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = int(seqs[i])
            b.logits[i] = 1 if want[i] else 0
        rc = self._ll.llama_decode(self._ctx, b)
        if rc == 1:
            raise ModelError(f"KV cache full: {self.config.n_ctx} cells are not enough (raise --ctx)")
        if rc != 0:
            raise ModelError(f"llama_decode failed with code {rc}")
        rows = [i for i in range(n) if want[i]]
        out = np.empty((len(rows), self.n_vocab), dtype=np.float32)
        for j, i in enumerate(rows):
            ptr = self._ll.llama_get_logits_ith(self._ctx, i)
            out[j] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        return out

    def drop(self, seq: int, p0: int = 0, p1: int = -1) -> None:
        """Forget positions [p0, p1) of a sequence (-1: to the end)."""
        self._ll.llama_memory_seq_rm(self._mem, seq, p0, p1)

    def copy(self, src: int, dst: int, p0: int = 0, p1: int = -1) -> None:
        """Share positions [p0, p1) of `src` with `dst` (no recomputation).

        Unified cache: the cells are tagged with `dst` too (no extra cells). Split cache:
        llama.cpp copies only whole streams, so `dst`'s stream is replaced by a copy of
        `src`'s (applied before the next decode) and trimmed back to [0, p1); only a
        prefix (p0 = 0) can be copied this way, and whatever `dst` held is gone."""
        if self.config.kv_unified:
            self._ll.llama_memory_seq_cp(self._mem, src, dst, p0, p1)
            return
        if p0 > 0:
            raise ModelError(f"a split KV cache copies prefixes only (positions from 0), not from {p0}")
        self._ll.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        if p1 >= 0:
            self._ll.llama_memory_seq_rm(self._mem, dst, p1, -1)

    def clear(self) -> None:
        self._ll.llama_memory_clear(self._mem, True)

    # ---- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        ll = self._ll
        if self._batch is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            ll.llama_free(self._ctx)
            self._ctx = None
        for a in self._adapters:
            ll.llama_adapter_lora_free(a)
        self._adapters = []
        if self._model:
            ll.llama_model_free(self._model)
            self._model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
