"""Tensor-map data model: a checkpoint's architecture numbers (:class:`ModelParams`), its tensors
(:class:`TensorInfo`: name, ``ne`` shape, stored type; role and layer parsed from the GGUF name) and the map of
them all (:class:`TensorMap`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

_BLK = re.compile(r"^blk\.(\d+)\.(.+?)(?:\.(weight|bias|scale))?$")   # ssm_a has no suffix
_GLOBAL = re.compile(r"^(.+?)\.(weight|bias|scale)$")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ModelParams:
    """Architecture numbers the planner needs (GGUF ``{arch}.*`` keys / config.json fields)."""

    arch: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff: int = 0
    n_ff_exp: int = 0
    n_ctx_train: int = 0
    tied: bool = False
    n_dense_lead: int = 0
    kv_lora_rank: int = 0       # MLA (deepseek2); 0 = not an MLA model
    mla_legacy: bool = False    # an MLA GGUF in the old converter layout (one attn_kv_b, no key_length_mla): mainline
                                # runs it as plain multi-head attention (is_mla() false), ik still as MLA
    n_rot: int = 0
    head_dim_v: int = 0         # 0 = same as head_dim
    q_lora_rank: int = 0        # MLA query compression (attn_q_a/attn_q_b); 0 = a plain attn_q
    qk_nope_head_dim: int = 0   # MLA: per-head Q/K width without RoPE (head_dim = qk_nope_head_dim + n_rot)
    n_shared_exp: int = 0       # shared experts per MoE layer: ffn_*_shexp are n_ff_exp * n_shared_exp wide
    n_nextn: int = 0            # trailing NextN/MTP blocks the file keeps (counted in n_layer)
    nextn_shares_embd: bool = False  # the NextN block reuses token_embd/output: the checkpoint stores no
                                     # nextn.embed_tokens/shared_head_head (GLM-4.6), so the converter writes none
    qk_norm: bool = False       # attn_q_norm/attn_k_norm where a template makes them optional (GLM-4.5)
    # --- attention / state layout (what sizes the KV cache; planner/kv_cache.py) ---
    n_swa: int = 0              # sliding-window (or chunked) attention window in tokens; 0 = none
    expert_weights_scale: float = 0.0   # {arch}.expert_weights_scale of a GGUF header (0: not given)
    swa_period: int = 0         # layer il is SWA when il % swa_period < swa_period - 1 (llama.cpp set_swa_pattern)
    swa_layers: tuple[bool, ...] = ()   # explicit per-layer SWA flags (a header array); wins over swa_period
    head_dim_swa: int = 0       # key/value head width on SWA layers when it differs (key_length_swa); 0 = head_dim
    n_head_kv_layers: tuple[int, ...] = ()   # per-layer head_count_kv when the header stores an array
    n_layer_kv: int = 0         # layers il >= n_layer_kv reuse an earlier layer's K/V and allocate none (gemma3n,
                                # gemma4 attention.shared_kv_layers: hparams.has_kv in both engines); 0 = all own
    full_attn_interval: int = 0  # hybrid models: layer il is full attention when (il + 1) % interval == 0, else
                                 # a recurrent (gated delta-net) layer; 0 = no recurrent layers
    recurrent_layers: tuple[bool, ...] = ()  # per-layer recurrent flags when the header stores them
                                             # (attention.recurrent_layers); wins over full_attn_interval
    recurrent_attn: bool = False   # a recurrent layer also runs attention and keeps a KV cache (Falcon-H1's
                                   # parallel attention + Mamba-2 layers); False: recurrent layers have no KV
    ssm_d_conv: int = 0         # recurrent state sizes ({arch}.ssm.conv_kernel/inner_size/state_size/...)
    ssm_d_inner: int = 0
    ssm_d_state: int = 0
    ssm_dt_rank: int = 0
    ssm_n_group: int = 0
    state_r: int = 0            # per-layer, per-sequence state rows (F32 floats) when they are not Mamba's conv/SSM
    state_s: int = 0            # formulas: mainline n_embd_r()/n_embd_s() of RWKV (token shift, wkv state) and LFM2
                                # (short-conv cache), from architectures.toml ``derived``; 0 = the Mamba formulas
    # RWKV time mix (architectures.toml ``gguf_keys``; their graphs' widths, mainline src/models/rwkv6-base.cpp,
    # rwkv7-base.cpp @0c1e57098): the wkv head width, RWKV-6's halving of the residual every n layers
    # (rescale_every_n_layers) and the low-rank widths: the token-shift mix (time_mix_extra_dim), the decay
    # (time_decay_extra_dim, RWKV-7 decay_lora_rank), RWKV-7's in-context learning rate, value-residual mix, gate
    wkv_head_size: int = 0
    rescale_every: int = 0
    mix_rank: int = 0
    decay_rank: int = 0
    iclr_rank: int = 0
    vres_rank: int = 0
    gate_rank: int = 0
    indexer_n_head: int = 0     # DeepSeek sparse attention lightning indexer ({arch}.attention.indexer.*)
    indexer_head_size: int = 0
    indexer_top_k: int = 0      # keys each query keeps (attention.indexer.top_k; config.json index_topk)
    compress_ratios: tuple[int, ...] = ()    # DeepSeek-V4 per-layer KV compression ratio (0, 4 or 128)
    o_groups: int = 0           # DeepSeek-V4 grouped output LoRA (attn_output_a/_b): groups and rank per group
    o_lora_rank: int = 0
    hc_mult: int = 0            # DeepSeek-V4 hyper-connection streams (hc_*_fn/base/scale)
    n_hash_layers: int = 0      # DeepSeek-V4 leading layers routed by a token-id table (ffn_gate_tid2eid)
    n_ff_shexp: int = 0         # shared-expert FFN width when it is not n_ff_exp * n_shared_exp (Qwen3-Next)
    moe_every: int = 0          # MoE only in layers where (il + 1) % moe_every == 0 (Llama-4 Maverick); 0 = all
    unknown_layout: str = ""    # what a GGUF carries that the KV/state model cannot size (named in its error)

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0

    @property
    def n_loaded_layers(self) -> int:
        """Layers the engines load: trailing NextN/MTP blocks are skipped unless MTP is enabled (facts §5)."""
        return self.n_layer - self.n_nextn

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def n_gqa(self) -> int:
        return self.n_head // max(1, self.n_head_kv)

    @property
    def n_embd_k_gqa(self) -> int:
        return self.head_dim * self.n_head_kv

    @property
    def n_embd_v_gqa(self) -> int:
        return (self.head_dim_v or self.head_dim) * self.n_head_kv

    def is_swa(self, il: int) -> bool:
        """Whether layer ``il`` uses sliding-window (or chunked) attention."""
        if self.n_swa <= 0:
            return False
        if self.swa_layers:
            return il < len(self.swa_layers) and self.swa_layers[il]
        return self.swa_period > 0 and il % self.swa_period < self.swa_period - 1

    def is_recurrent(self, il: int) -> bool:
        """Whether layer ``il`` is a recurrent (linear-attention) layer of a hybrid model; NextN blocks never are."""
        if il >= self.n_loaded_layers:
            return False
        if self.recurrent_layers:
            return il < len(self.recurrent_layers) and self.recurrent_layers[il]
        return self.full_attn_interval > 0 and (il + 1) % self.full_attn_interval != 0

    def head_count_kv(self, il: int) -> int:
        if self.n_head_kv_layers and il < len(self.n_head_kv_layers):
            return self.n_head_kv_layers[il]
        return self.n_head_kv

    def layer_head_dim(self, il: int) -> int:
        return self.head_dim_swa if (self.head_dim_swa and self.is_swa(il)) else self.head_dim

    def is_moe_layer(self, il: int) -> bool:
        if not self.is_moe or il < self.n_dense_lead:
            return False
        return self.moe_every <= 1 or (il + 1) % self.moe_every == 0


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor: llama.cpp name, ggml ``ne`` shape, stored type name, and derived role/layer."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str = field(init=False)
    layer: int | None = field(init=False)
    n_elements: int = field(init=False)
    n_rows: int = field(init=False)

    def __post_init__(self) -> None:
        m = _BLK.match(self.name)
        if m:
            role, layer = m.group(2), int(m.group(1))
        else:
            g = _GLOBAL.match(self.name)
            role, layer = (g.group(1) if g else self.name), None
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "n_elements", math.prod(self.shape))
        object.__setattr__(self, "n_rows", math.prod(self.shape[1:]) if len(self.shape) > 1 else 1)

    @property
    def ne0(self) -> int:
        return self.shape[0]

    @property
    def n_dims(self) -> int:
        return len(self.shape)

    @property
    def is_expert(self) -> bool:
        return self.role.endswith("_exps") and len(self.shape) == 3

    @property
    def n_expert(self) -> int:
        return self.shape[2] if self.is_expert else 1


@dataclass(frozen=True, slots=True)
class TensorMap:
    """All tensors of a checkpoint plus the numbers that size its KV cache and compute."""

    name: str
    params: ModelParams
    tensors: tuple[TensorInfo, ...]
    source: str                       # "builtin:NAME", a path, or a URL
    file_bytes: int | None = None     # size of the source file(s) when known
    header: Any = field(default=None, compare=False, repr=False, metadata={"json": False})
    # built from an architecture template (built-in, config.json, hf://): the types are what the converter
    # writes, so a quantized tensor there (gpt-oss's or DeepSeek-V4's MXFP4 experts) is part of a source that
    # llama-quantize starts from, not the output of an earlier llama-quantize run
    converter_types: bool = False
    # tables other stages derive from this map alone (derived(): built on first use, kept with the map)
    _derived: dict[tuple[Callable[..., Any], tuple[Hashable, ...]], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False, metadata={"json": False})

    def derived(self, build: Callable[..., _T], *args: Hashable) -> _T:
        """``build(self, *args)``, computed once per map and ``args``: the map is immutable, so a table derived
        from it alone (a stage's per-tensor constants) never goes stale; a map made with ``replace`` starts
        without any.  ``build`` must be pure, and its result is shared: callers must not mutate it."""
        key = (build, args)
        try:
            return cast(_T, self._derived[key])
        except KeyError:
            value = self._derived[key] = build(self, *args)
            return value

    @property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    def by_name(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.tensors}

    def layers(self) -> range:
        return range(self.params.n_layer)

    @property
    def is_quantized(self) -> bool:
        """Whether this is an output of llama-quantize (a quantized GGUF: its types are fixed), not a source.

        A converter's output that already stores some tensors quantized (MXFP4 experts) is a source."""
        return not self.converter_types and bool(self.prequantized)

    @property
    def prequantized(self) -> frozenset[str]:
        """Names of the tensors stored in a quantized type."""
        from planner.quants import catalogue

        cat = catalogue()
        return frozenset(t.name for t in self.tensors if cat.get(t.dtype).is_quantized)

    def is_loaded(self, t: TensorInfo) -> bool:
        """False for tensors of NextN/MTP blocks, which ik and mainline skip at load time."""
        return t.layer is None or t.layer < self.params.n_loaded_layers

    def nextn_twin(self, t: TensorInfo) -> str | None:
        """The loaded tensor a NextN/MTP tensor is quantized like (issue 12: "like the last loaded layer"): the
        same role in the last loaded layer, token_embd for its own embedding, output for its own head, the last
        layer's attn_output for its eh_proj (the block's dense projection); None for loaded tensors."""
        if self.is_loaded(t) or t.layer is None:
            return None
        rest = t.name.split(".", 2)[2]
        special = {"nextn.embed_tokens.weight": "token_embd.weight", "nextn.shared_head_head.weight": "output.weight",
                   "nextn.eh_proj.weight": f"blk.{self.params.n_loaded_layers - 1}.attn_output.weight"}
        return special.get(rest, f"blk.{self.params.n_loaded_layers - 1}.{rest}")


def with_tensors(tmap: TensorMap, tensors: tuple[TensorInfo, ...]) -> TensorMap:
    return replace(tmap, tensors=tensors)
