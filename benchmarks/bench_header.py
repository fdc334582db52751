"""Time the GGUF header reader on a Qwen3-235B-A22B-shaped header (1131 tensors).

The header is built in memory from the built-in tensor map with realistic metadata (a 151936-entry
token list, its token types and 151387 merges), then parsed from bytes and from a sparse temp file.
Prints figures only.

    python3 benchmarks/bench_header.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planner.gguf_encode import encode_kv  # noqa: E402
from planner.gguf_header import (  # noqa: E402
    GGUF_ARRAY, GGUF_FLOAT32, GGUF_INT32, GGUF_STRING, GGUF_UINT32, BytesSource, LocalFile, parse_gguf,
)
from planner.quants import catalogue, pad  # noqa: E402
from planner.tensors import TensorMap, builtin  # noqa: E402

# the seed card's mix: iq3_k gate/up experts, iq4_k down experts, iq6_k attention, q8_0 embeddings
_MIX = (("ffn_gate_exps", "iq3_k"), ("ffn_up_exps", "iq3_k"), ("ffn_down_exps", "iq4_k"),
        ("attn_", "iq6_k"), ("token_embd", "q8_0"), ("output.", "q8_0"))
CHAT_TEMPLATE = "{%- for message in messages %}{{ message.content }}{%- endfor %}" * 60  # ~4 KB like Qwen3's


def _type_for(name: str, shape: tuple[int, ...]) -> str:
    if len(shape) == 1 or "norm" in name or "gate_inp" in name:
        return "f32"
    return next((t for pat, t in _MIX if pat in name), "q8_0")


def synthetic_header(tmap: TensorMap, *, tokens: int = 151936, merges: int | None = None) -> bytes:
    """GGUF header bytes (no tensor data) for ``tmap`` with llama.cpp-style qwen3moe metadata."""
    p = tmap.params
    a = p.arch
    merges = tokens - 549 if merges is None else merges  # Qwen3: 151936 tokens, 151387 merges
    kv = [
        ("general.architecture", GGUF_STRING, a), ("general.name", GGUF_STRING, tmap.name),
        (f"{a}.block_count", GGUF_UINT32, p.n_layer), (f"{a}.context_length", GGUF_UINT32, p.n_ctx_train),
        (f"{a}.embedding_length", GGUF_UINT32, p.n_embd), (f"{a}.feed_forward_length", GGUF_UINT32, 12288),
        (f"{a}.attention.head_count", GGUF_UINT32, p.n_head),
        (f"{a}.attention.head_count_kv", GGUF_UINT32, p.n_head_kv),
        (f"{a}.rope.freq_base", GGUF_FLOAT32, 1e6),
        (f"{a}.attention.layer_norm_rms_epsilon", GGUF_FLOAT32, 1e-6),
        (f"{a}.expert_used_count", GGUF_UINT32, p.n_expert_used),
        (f"{a}.attention.key_length", GGUF_UINT32, p.head_dim),
        (f"{a}.attention.value_length", GGUF_UINT32, p.head_dim),
        (f"{a}.expert_count", GGUF_UINT32, p.n_expert),
        (f"{a}.expert_feed_forward_length", GGUF_UINT32, p.n_ff_exp),
        ("general.file_type", GGUF_UINT32, 139), ("tokenizer.ggml.model", GGUF_STRING, "gpt2"),
        ("tokenizer.ggml.pre", GGUF_STRING, "qwen2"),
    ]
    blobs = [encode_kv(*e) for e in kv]
    if tokens:
        blobs.append(encode_kv("tokenizer.ggml.tokens", GGUF_ARRAY,
                               [f"\u0120tok{i}" for i in range(tokens)], GGUF_STRING))
        blobs.append(encode_kv("tokenizer.ggml.token_type", GGUF_ARRAY, [1] * tokens, GGUF_INT32))
    if tokens and merges:
        blobs.append(encode_kv("tokenizer.ggml.merges", GGUF_ARRAY,
                               [f"\u0120t{i} ok{i}" for i in range(merges)], GGUF_STRING))
    tail = [("tokenizer.ggml.eos_token_id", GGUF_UINT32, 151645),
            ("tokenizer.ggml.padding_token_id", GGUF_UINT32, 151643),
            ("tokenizer.ggml.bos_token_id", GGUF_UINT32, 151643),
            ("tokenizer.chat_template", GGUF_STRING, CHAT_TEMPLATE),
            ("general.quantization_version", GGUF_UINT32, 2)]
    blobs += [encode_kv(*e) for e in tail]

    cat = catalogue()
    infos, offset = [], 0
    for t in tmap.tensors:
        qt = cat.get(_type_for(t.name, t.shape))
        name = t.name.encode()
        infos.append(struct.pack("<Q", len(name)) + name + struct.pack(f"<I{len(t.shape)}QiQ", len(t.shape),
                                                                         *t.shape, qt.id, offset))
        offset += pad(qt.tensor_bytes(t.shape))
    fixed = b"GGUF" + struct.pack("<IQQ", 3, len(tmap.tensors), len(blobs))
    return fixed + b"".join(blobs) + b"".join(infos)


def _best_ms(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()

    t0 = time.perf_counter()
    ref = builtin("qwen3-235b-a22b")
    first_ms = (time.perf_counter() - t0) * 1e3
    def rebuild():
        builtin.cache_clear()      # builtin() memoizes its result; time the expansion itself
        return builtin("qwen3-235b-a22b")

    again_ms, again_med = _best_ms(rebuild, args.repeat)
    print(f"built-in map qwen3-235b-a22b ({len(ref.tensors)} tensors): first {first_ms:.1f} ms "
          f"(loads the TOML), then best {again_ms:.1f} ms / median {again_med:.1f} ms (cached after the first call)")

    variants = [("tensor infos + small KVs (no tokenizer arrays)", synthetic_header(ref, tokens=0)),
                ("+ 151936 tokens and token types (no merges)", synthetic_header(ref, merges=0)),
                ("+ 151387 merges (a full llama.cpp header)", synthetic_header(ref))]
    catalogue()  # loaded once per process; not part of a parse
    for label, data in variants:
        best, med = _best_ms(lambda d=data: parse_gguf(BytesSource(d), check_size=False), args.repeat)
        h = parse_gguf(BytesSource(data), check_size=False)
        assert len(h.tensors) == len(ref.tensors)
        print(f"read header from bytes, {label}: {len(data) / 2**20:.2f} MiB header, "
              f"best {best:.1f} ms / median {med:.1f} ms")

    # a temp file with the full header and a sparse data section, so the size check runs too
    data = variants[-1][1]
    h = parse_gguf(BytesSource(data), check_size=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "Qwen3-235B-A22B-seed-mix.gguf")
        with open(path, "wb") as f:
            f.write(data)
            f.truncate(h.expected_file_bytes)

        def from_file() -> None:
            with LocalFile(path) as src:
                parse_gguf(src)

        best, med = _best_ms(from_file, args.repeat)
        print(f"read header from a {h.expected_file_bytes / 2**30:.1f} GiB sparse file (full header, size checked): "
              f"best {best:.1f} ms / median {med:.1f} ms")


if __name__ == "__main__":
    main()
