"""Rules about tensor roles that several stages share, each written once.

* :data:`TIED_ROLES`: gate and up share one type and one device (ik fuses them, ``-ot`` regexes move them
  together).
* :func:`moves_with_ffn` / :func:`is_movable`: which tensors a placement may send to another device than their
  layer's.  ``-ot``/``--override-tensor`` moves FFN matrices and the output; ``ffn_gate_inp`` (the router) is
  an FFN tensor the engines keep with the layer's attention (it is used before the expert matmuls; llama.cpp
  ``--cpu-moe`` and ik's ``-ncmoe`` patterns match ``ffn_(up|down|gate)_exps`` only, common/common.cpp).
* :func:`layer_copies`: global tensors every layer (or every full-attention layer) loads: one copy per buffer
  (mainline) or per layer (ik).
* :func:`tied_output`: the ``token_embd`` an output without ``output.weight`` is tied to.
* :func:`active_fraction`: the share of a tensor's weights one token reads: routed experts by
  ``n_expert_used / n_expert`` (the router's top-k, llama.cpp ``llm_graph_context::build_moe_ffn``), the token
  embedding one row (a ``get_rows`` lookup), everything else fully.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from planner.tensors import TensorInfo, TensorMap

TIED_ROLES = {"ffn_gate_exps": "ffn_gate_up_exps", "ffn_up_exps": "ffn_gate_up_exps",
              "ffn_gate": "ffn_gate_up", "ffn_up": "ffn_gate_up",
              "ffn_gate_shexp": "ffn_gate_up_shexp", "ffn_up_shexp": "ffn_gate_up_shexp"}

# Global tensors that the engines create once per layer: layer 0's (the first loading layer's) call makes the
# tensor, later calls pass TENSOR_DUPLICATED (mainline models/llama.cpp, phi3.cpp ...: ``i != 0 ?
# TENSOR_DUPLICATED : 0``; gemma4.cpp: full-attention layers only). The role is LLM_TENSOR_LAYER_REPEATING, so
# each copy goes to its layer's buffer, and mainline's create_tensor returns the copy a context already has
# (llama-model-loader.cpp @0c1e57098): one copy per device that holds a loading layer. ik's
# ``llama_model_loader::create_tensor_for`` (src/llama-model-loader.cpp:910 @8337e4cd3) looks nothing up: every
# call ``ggml_dup_tensor``s a new tensor into the layer's context, so each loading layer has its own copy, in
# memory wherever the buffer is allocated; in a buffer over the mmap'ed file (src/llama.cpp:4735) every copy
# points at the same file bytes (gemma-4 over one rpc-server: 512 bytes more than mainline, one rope_freqs per
# full-attention layer; tests/fixtures/kv_kinds_ik).
D = TypeVar("D", bound=Hashable | None)
PER_LAYER_GLOBALS = frozenset({"rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"})

# The norm right after the token embedding (RWKV's LN0, BLOOM's word_embeddings_layernorm): mainline's
# LLM_TENSOR_TOKEN_EMBD_NORM is LLM_TENSOR_LAYER_REPEATING, "do the norms on the first layer (not the input
# layer)" (src/llama-arch.cpp:732 @0c1e57098; the loaders create it as tn(..., "weight", 0)), so it sits in layer
# 0's buffer.  LFM2 stores its final norm under the same name (LLM_TENSOR_OUTPUT_NORM_LFM2 -> "token_embd_norm",
# src/llama-arch.cpp:442, LAYER_OUTPUT): architectures.toml says so with ``token_embd_norm_is_output``.
FIRST_LAYER_GLOBALS = frozenset({"token_embd_norm.weight", "token_embd_norm.bias"})


def on_first_layer(tmap: TensorMap, name: str) -> bool:
    """Whether the global tensor ``name`` is loaded into layer 0's buffer (:data:`FIRST_LAYER_GLOBALS`)."""
    from planner.tensors.templates import _architectures

    return name in FIRST_LAYER_GLOBALS and not _architectures().get(tmap.params.arch, {}).get(
        "token_embd_norm_is_output", False)


def layer_copies(name: str, arch: str, layer_device: Sequence[D], is_swa: Callable[[int], bool], *,
                 engine: str = "mainline", mapped: D | None = None) -> list[D]:
    """Devices holding a copy of a :data:`PER_LAYER_GLOBALS` tensor, the first loading layer's first, a device
    repeated once per copy it holds; empty for any other tensor or when no layer is on a device.

    ``engine``: "mainline" keeps one copy per device; ik (any other profile) one per loading layer, except on
    ``mapped`` (the device whose weights are a buffer over the mmap'ed file: the CPU under mmap), where the copies
    share the file's bytes.
    """
    if name not in PER_LAYER_GLOBALS:
        return []
    loading = [il for il in range(len(layer_device)) if not (arch.startswith("gemma4") and is_swa(il))]
    devices = [layer_device[il] for il in loading]
    if engine == "mainline":
        return list(dict.fromkeys(devices))
    out: list[D] = []
    for dev in devices:
        if dev != mapped or dev not in out:
            out.append(dev)
    return out


def tied_output(tmap: TensorMap) -> TensorInfo | None:
    """``token_embd`` when the model has no ``output.weight``: the output is tied to it, and both engines load a
    second copy with the output layer (:meth:`planner.memory.Placement.tied_duplicate_device`), which multiplies
    all of it every token. None otherwise. Call as ``tmap.derived(tied_output)`` (computed once per map)."""
    if any(t.name == "output.weight" for t in tmap.tensors):
        return None
    return next((t for t in tmap.tensors if t.name == "token_embd.weight"), None)


def moves_with_ffn(role: str) -> bool:
    """An FFN role the placement may move off the layer's device (every ``ffn_*`` except the router)."""
    return role.startswith("ffn_") and role != "ffn_gate_inp"


def is_movable(t: TensorInfo) -> bool:
    """Tensors a placement may send to another device than their layer's: FFN matrices and the output."""
    return t.n_dims >= 2 and (moves_with_ffn(t.role) or t.role == "output")


def active_fraction(t: TensorInfo, n_expert_used: int) -> float:
    """Share of a tensor's weights one token reads.

    Routed experts: ``n_expert_used / n_expert`` (all experts when the model does not say how many are used:
    the conservative reading for both speed and quality); ``token_embd``: one row; everything else: all.
    """
    if t.is_expert and t.n_expert:
        return min(1.0, (n_expert_used or t.n_expert) / t.n_expert)
    if t.role == "token_embd":
        return 1.0 / max(1, t.shape[1])
    return 1.0
