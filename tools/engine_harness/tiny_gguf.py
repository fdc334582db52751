"""What the tiny-model generators share: a GPT-2 byte-level BPE vocabulary with Qwen's special tokens, and a writer
that adds seeded random weights the way convert_hf_to_gguf.py stores them (2-D/3-D weights BF16 or F32, 1-D
tensors and routers F32) and writes the file.

Used by make_tiny_qwen3moe.py and make_tiny_deepseek2.py; the random draws happen in the order the generator adds
tensors, so a generator's output for a given seed is fixed.
"""

from __future__ import annotations

import gguf
import numpy as np


def bytes_to_unicode() -> dict[int, str]:
    # GPT-2 byte-level BPE mapping
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def make_vocab(n_vocab: int) -> tuple[list[str], list[gguf.TokenType], list[str], dict[str, int]]:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    b2u = bytes_to_unicode()
    byte_tokens = [b2u[b] for b in range(256)]
    n_merge = n_vocab - 256 - len(specials)
    assert n_merge >= 0, "vocab must be >= 259"
    # merges of two printable single-byte tokens (letters first)
    letters = [b2u[b] for b in list(range(ord('a'), ord('z') + 1)) + [ord(' ')] + list(range(ord('A'), ord('Z') + 1))]
    merges, merged = [], []
    seen = set(byte_tokens)
    for a in letters:
        for b in letters:
            if len(merges) >= n_merge:
                break
            t = a + b
            if t in seen:
                continue
            seen.add(t)
            merges.append(f"{a} {b}")
            merged.append(t)
        if len(merges) >= n_merge:
            break
    assert len(merges) == n_merge
    tokens = byte_tokens + merged + specials
    types = [gguf.TokenType.NORMAL] * (256 + n_merge) + [gguf.TokenType.CONTROL] * len(specials)
    return tokens, types, merges, {s: 256 + n_merge + i for i, s in enumerate(specials)}


def add_tokenizer(w: gguf.GGUFWriter, n_vocab: int) -> None:
    """The GPT-2 BPE vocabulary of :func:`make_vocab` with Qwen2's pre-tokenizer and special-token ids."""
    tokens, types, merges, sp = make_vocab(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(sp["<|im_end|>"])
    w.add_pad_token_id(sp["<|endoftext|>"])
    w.add_bos_token_id(sp["<|endoftext|>"])
    w.add_add_bos_token(False)


class TinyWeights:
    """Seeded N(0, 0.02) weights added to ``w``; shapes are numpy (row-major) shapes = reversed ggml ``ne``."""

    def __init__(self, w: gguf.GGUFWriter, seed: int, dtype: str = "bf16") -> None:
        self.w, self.rng, self.dtype = w, np.random.default_rng(seed), dtype

    def _normal(self, shape_np: tuple[int, ...]) -> np.ndarray:
        return (self.rng.standard_normal(shape_np, dtype=np.float32) * 0.02).astype(np.float32)

    def big(self, name: str, shape_np: tuple[int, ...]) -> None:
        """A 2-D/3-D weight in the file's dtype (BF16 or F32)."""
        x = self._normal(shape_np)
        if self.dtype == "bf16":
            self.w.add_tensor(name, gguf.quants.quantize(x, gguf.GGMLQuantizationType.BF16),
                              raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            self.w.add_tensor(name, x)

    def f32(self, name: str, shape_np: tuple[int, ...], val: float | None = None) -> None:
        """An F32 tensor: random, or filled with ``val`` (norms 1.0, biases 0.0)."""
        x = self._normal(shape_np) if val is None else np.full(shape_np, val, dtype=np.float32)
        self.w.add_tensor(name, x)

    def finish(self) -> None:
        """Write header, metadata and tensors, and close the file."""
        self.w.write_header_to_file()
        self.w.write_kv_data_to_file()
        self.w.write_tensors_to_file()
        self.w.close()
