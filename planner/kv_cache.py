"""KV cache and recurrent state per layer, as the engines allocate them.

One function per engine, each a transcription of the engine's allocation code:

* ik_llama.cpp @ 8337e4cd: ``llama_kv_cache_init`` (src/llama.cpp, line 1161) and its own per-layer size
  estimate ``llama_model::cache_size`` (src/llama-model.cpp, line 2463); the DeepSeek-V4 compressed caches in
  ``llama_context::ensure_dsv4_cache_tensors`` (src/llama-dsv4.cpp, line 883).
* llama.cpp (mainline): ``llama_kv_cache::llama_kv_cache`` (src/llama-kv-cache.cpp: ``has_v = !is_mla``, K and V
  ``[n_embd_{k,v}_gqa, kv_size, n_stream]``), ``llama_kv_cache_iswa::llama_kv_cache_iswa``
  (src/llama-kv-cache-iswa.cpp: the SWA cache holds ``GGML_PAD(min(kv_size, n_swa * n_seq + n_ubatch), 256)``
  cells) and ``llama_memory_recurrent`` (src/llama-memory-recurrent.cpp: F32 ``r``/``s`` rows of
  ``n_embd_r()``/``n_embd_s()`` per sequence, src/llama-hparams.cpp); DeepSeek-V4 in ``llama_kv_cache_dsv4``
  (src/llama-kv-cache-dsv4.cpp @0c1e57098): a window-sized raw K cache, compressed/indexer caches and compressor
  states.  Checked against real mainline logs of tiny models of every kind in tests/test_kv_engine_logs.py.

Every layer gets a :class:`LayerCache` (bytes on the device that holds the layer, all streams).  A layout the planner cannot
size exactly raises :class:`planner.errors.UnknownModelError` naming what is missing; nothing is guessed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from planner.errors import UnknownModelError
from planner.quants import catalogue
from planner.tensors import ModelParams
from planner.tensors.templates import _architectures

# ik: is_mla_model() (src/llama-model.h:593 @ 8337e4cd)
MLA_ARCHS = frozenset({"deepseek2", "glm-dsa", "mistral4", "bailingmoe3"})
# ik: llm_arch_is_hybrid() (src/llama-arch.cpp:318 @ 8337e4cd): gated delta-net state in a per-sequence tail
HYBRID_ARCHS = frozenset({"qwen3next", "qwen35", "qwen35moe", "bailingmoe3"})
# ik: llama_mtp_tail_uses_layer_cache() (src/llama.cpp:1154 @ 8337e4cd)
MTP_TAIL_CACHE_ARCHS = frozenset({"glm-dsa", "qwen35moe", "step35"})
# DeepSeek-V4 (ik only): runtime compression ratios, llama-context.h dsv4_runtime::CSA_RATIO / HCA_RATIO
DSV4_CSA_RATIO, DSV4_HCA_RATIO, DSV4_CACHE_PAD = 4, 128, 256
ENGINES = ("ik", "mainline")


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The run flags that change the cache: engine, ``-c``, ``-ctk/-ctv``, ``-fa``, ``-mla``, ``-np``, ``-ub``.

    ``-c`` cells are shared by all sequences in ik (one cache, always) and in mainline with ``-kvu``
    (``unified``).  Mainline without it keeps one stream per sequence of ``n_ctx_seq = GGML_PAD(n_ctx / np, 256)``
    cells (src/llama-context.cpp:290-300, llama-kv-cache.cpp:84 ``n_stream = unified ? 1 : n_seq_max``,
    tensors ``[n_embd, kv_size, n_stream]`` at :233), and its SWA cache ``n_swa + n_ubatch`` cells per stream
    instead of ``n_swa * np + n_ubatch`` in the one unified stream (llama-kv-cache-iswa.cpp:73 @0c1e57098).
    """

    engine: str = "ik"              # "ik" (ik_llama.cpp) or "mainline" (llama.cpp)
    ctx: int = 32768
    type_k: str = "q8_0"
    type_v: str = "q8_0"
    flash_attn: bool = True
    mla: int = 3                    # ik -mla (0 = plain attention on an MLA model)
    n_seq: int = 1                  # -np: sequences (recurrent state slots, mainline SWA cells)
    ubatch: int = 512
    idx_type_k: str = "f16"         # ik DSA indexer key cache type (cparams.idx_type_k default F16)
    mtp: bool = False               # NextN/MTP layers loaded (ik -mtp); mainline never allocates them
    swa_full: bool = False          # mainline --swa-full: SWA layers get the full context
    unified: bool = False           # mainline -kvu: one stream shared by the -np sequences (ik: always one cache)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {self.engine!r}")
        if self.ctx < 1 or self.n_seq < 1 or self.ubatch < 1:
            raise ValueError("ctx, n_seq and ubatch must be positive")
        if self.n_ctx_seq < 1:
            raise UnknownModelError(f"-c {self.ctx} over -np {self.n_seq} leaves no cells per sequence (mainline "
                                    "throws n_ctx_seq == 0)", hint="raise -c, lower -np or give -kvu")

    @property
    def pad(self) -> int:
        """Cell padding: ik ``llama_kv_cache::get_padding`` = 256 with FA, 32 without; mainline pads to 256."""
        return 256 if (self.flash_attn or self.engine == "mainline") else 32

    @property
    def kv_size(self) -> int:
        return -(-self.ctx // self.pad) * self.pad

    @property
    def n_stream(self) -> int:
        """Cache streams: mainline ``unified ? 1 : n_seq_max`` (src/llama-kv-cache.cpp:84); ik one."""
        return self.n_seq if self.engine == "mainline" and not self.unified else 1

    @property
    def n_ctx_seq(self) -> int:
        """Cells of one stream: mainline ``n_ctx`` unified, else ``GGML_PAD(n_ctx / n_seq_max, 256)``
        (src/llama-context.cpp:290-300 @0c1e57098, ``n_ctx`` already padded to 256); the DeepSeek-V4 caches, one
        stream per sequence whatever -kvu says, are this many cells each."""
        if self.engine != "mainline" or self.unified or self.n_seq == 1:
            return self.kv_size
        return _pad(self.kv_size // self.n_seq, 256)

    @property
    def slot_ctx(self) -> int:
        """Tokens one llama-server slot can hold: mainline's ``llama_n_ctx_seq`` (the whole padded context with
        -kvu, else one stream's cells), ik's ``n_ctx / n_parallel`` (examples/server: ``n_ctx_slot``, ``n_ctx``
        padded like the cache)."""
        return self.n_ctx_seq if self.engine == "mainline" else self.kv_size // self.n_seq

    @classmethod
    def from_run(cls, run: Any) -> CacheConfig:
        """From a RunConfig-like object (engine profile names such as ``ik-2025`` map to ``ik``)."""
        engine = "mainline" if getattr(run, "engine", "ik") == "mainline" else "ik"
        return cls(engine=engine, ctx=int(run.ctx), type_k=run.type_k, type_v=run.type_v,
                   flash_attn=bool(run.flash_attn), mla=int(getattr(run, "mla", 3)),
                   n_seq=max(1, int(getattr(run, "n_parallel", 1))), ubatch=int(getattr(run, "ubatch", 512)),
                   mtp=bool(getattr(run, "mtp", False)),
                   swa_full=engine == "mainline" and bool(getattr(run, "swa_full", False)),
                   unified=engine == "mainline" and bool(getattr(run, "kv_unified", False)))


@dataclass(frozen=True, slots=True)
class LayerCache:
    """Cache bytes of one layer, by kind: ``full``, ``swa``, ``mla``, ``recurrent``, ``dsv4`` (``none``: a layer
    without attention or state, e.g. a Mamba-2 hybrid's MLP layer)."""

    layer: int
    kind: str
    cells: int                      # KV cells (0 for a recurrent layer)
    k_bytes: int = 0
    v_bytes: int = 0
    state_bytes: int = 0            # recurrent state (per sequence, independent of the context)
    index_bytes: int = 0            # DSA indexer key cache / DeepSeek-V4 compressed caches
    total_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total_bytes", self.k_bytes + self.v_bytes + self.state_bytes + self.index_bytes)


def _row(type_name: str, n: int) -> int:
    return catalogue().get(type_name).row_bytes(n)


def cache_layers(params: ModelParams, cfg: CacheConfig) -> range:
    """Layers that get a cache: NextN/MTP blocks only when ik loads them (``-mtp``).

    ik ``llama_kv_cache_init``: ``n_layer = model.mtp ? n_layer : n_layer - nextn_predict_layers``; mainline sets
    ``n_layer_kv_from_start = n_layer - nextn_predict_layers`` (GLM-4.5, Qwen3.5), so NextN blocks have no KV; nor
    do layers that share an earlier layer's KV (``n_layer_kv``).
    """
    if cfg.engine == "ik" and cfg.mtp:
        n = params.n_layer
    else:
        n = params.n_loaded_layers
    # hparams.has_kv(il) = il < n_layer_kv_from_start: gemma3n/gemma4 layers past it reuse an earlier layer's K/V
    # (mainline src/llama-hparams.cpp:321 and the reuse callback in llama_model::create_memory, src/llama-model.cpp
    # :2780 @0c1e57098; ik src/llama-hparams.h:257 and llama_kv_cache_init, src/llama.cpp:1466 @8337e4cd)
    return range(min(n, params.n_layer_kv) if params.n_layer_kv else n)


def n_embd_v_s(params: ModelParams) -> int:
    """ik ``llama_hparams::n_embd_v_s`` (src/llama-hparams.h:329 @ 8337e4cd): gated delta-net conv + state floats."""
    if params.ssm_n_group > 0:
        key_dim = params.ssm_d_state * params.ssm_n_group
        conv = max(0, params.ssm_d_conv - 1) * (2 * key_dim + params.ssm_d_inner)
        head_v = params.ssm_d_inner // params.ssm_dt_rank if params.ssm_dt_rank else 0
        return conv + head_v * head_v * params.ssm_dt_rank
    return params.ssm_d_state * params.ssm_d_inner


def n_embd_r_s(params: ModelParams) -> tuple[int, int]:
    """mainline ``llama_hparams::n_embd_r`` / ``n_embd_s`` (src/llama-hparams.cpp:208-258 @0c1e57098): conv rows
    and SSM state; an architecture whose rows are not Mamba's (RWKV's token shift and wkv state, LFM2's short-conv
    cache) gives them as ``state_r``/``state_s`` (architectures.toml ``derived``, the same branches' formulas)."""
    if params.state_r or params.state_s:
        return params.state_r, params.state_s
    r = max(0, params.ssm_d_conv - 1) * (params.ssm_d_inner + 2 * params.ssm_n_group * params.ssm_d_state)
    return r, params.ssm_d_state * params.ssm_d_inner


def check_engine(params: ModelParams, engine: str) -> None:
    """Refuse, in one line, an architecture the engine does not run (``engines`` in architectures.toml; an engine
    profile name such as ``ik-2025`` counts as ik), naming the engine that does.

    Raises:
        UnknownModelError: the engine's reference build refuses the architecture (``refusals`` says why when it
            knows the name but cannot run it).
    """
    engine = "mainline" if engine == "mainline" else "ik"
    tpl = _architectures().get(params.arch, {})
    loads = tpl.get("engines")
    if loads and engine not in loads:
        name, ref = ("ik_llama.cpp", "8337e4cd") if engine == "ik" else ("llama.cpp", "0c1e57098")
        kind = state_kind(params)
        pure = params.recurrent_layers and not params.recurrent_attn and all(params.recurrent_layers)
        # refusals: why an engine that knows the architecture's name still cannot run it (architectures.toml)
        why = tpl.get("refusals", {}).get(engine, "does not load this architecture")
        raise UnknownModelError(f"{params.arch}: {name} {why}"
                                + (f" ({kind} {'model' if pure else 'hybrid'})" if kind else "")
                                + f" in the planner's reference ({ref}); use --engine {loads[0]}")


def _check_supported(params: ModelParams, cfg: CacheConfig) -> None:
    """Refuse layouts whose cache the planner does not size exactly, naming what is missing."""
    if params.unknown_layout:
        sized = sorted(a for a, t in _architectures().items() if t.get("recurrent_from"))
        raise UnknownModelError(f"{params.arch}: cannot size the KV/state cache: {params.unknown_layout}",
                                hint="no state formula for this architecture; supported recurrent layouts: "
                                     "gated delta-net hybrids (qwen3next, qwen35, qwen35moe) and the per-layer "
                                     f"hybrids of architectures.toml ({', '.join(sized)})")
    check_engine(params, cfg.engine)
    hybrid = params.full_attn_interval or params.recurrent_layers
    own_rows = params.state_r or params.state_s      # RWKV / LFM2: rows from their own keys, no ssm.* numbers
    if hybrid and not own_rows and not (params.ssm_d_inner and params.ssm_d_state and params.ssm_d_conv):
        raise UnknownModelError(
            f"{params.arch}: recurrent layers without their state sizes",
            hint="the header/config must give ssm.conv_kernel, ssm.inner_size, ssm.state_size "
                 "(GGUF {arch}.ssm.* or kda.head_dim, config linear_conv_kernel_dim/linear_*_head_dim/"
                 "linear_num_*_heads)")
    if hybrid and not own_rows and params.ssm_n_group == 0 and state_kind(params) != "Mamba":
        # only Mamba-1 (Jamba) has no groups: its conv rows are (d_conv - 1) x d_inner (mainline n_embd_r)
        raise UnknownModelError(f"{params.arch}: recurrent layers without ssm.group_count (gated delta-net "
                                "k-heads / Mamba-2 groups); only gated delta-net, KDA and Mamba hybrids are sized")
    if params.compress_ratios or params.arch == "deepseek4":
        if len(params.compress_ratios) < params.n_layer:
            raise UnknownModelError("deepseek4: attention.compress_ratios is missing or shorter than block_count")
        if cfg.engine == "mainline" and params.n_swa <= 0:
            raise UnknownModelError("deepseek4: attention.sliding_window is missing (mainline's raw K cache holds "
                                    "the window plus one ubatch; the loader requires the key)")
        bad = sorted({r for r in params.compress_ratios if r not in (0, DSV4_CSA_RATIO, DSV4_HCA_RATIO)})
        if bad:
            raise UnknownModelError(f"deepseek4: compress ratio(s) {bad} not in the engine's (0, 4, 128)")
    # DeepSeek-V4 needs no pattern: every trunk layer slides (set_swa_pattern(0), src/models/deepseek4.cpp:66)
    if (params.n_swa and not params.swa_layers and params.swa_period <= 0 and cfg.engine == "mainline"
            and not params.compress_ratios):
        raise UnknownModelError(f"{params.arch}: sliding window {params.n_swa} without a layer pattern",
                                hint="needs attention.sliding_window_pattern (or a known per-architecture period)")


def _ik_layer(params: ModelParams, il: int, cfg: CacheConfig, kv: int | None = None) -> LayerCache:
    """ik ``llama_kv_cache_init`` / ``llama_model::cache_size`` for layer ``il`` (no ``--swa-compress``) at
    ``kv`` cells (default: the padded context)."""
    kv = cfg.kv_size if kv is None else kv
    if params.is_recurrent(il):
        # s = F32 [n_embd_v_s, slots], slots = min(max(1, n_seq_max), kv_size) (llama_qwen3next_state_slots)
        slots = min(max(1, cfg.n_seq), kv)
        return LayerCache(il, "recurrent", 0, state_bytes=4 * n_embd_v_s(params) * slots)
    if params.arch in MLA_ARCHS and params.kv_lora_rank and cfg.mla:
        width = params.kv_lora_rank + params.n_rot
        if cfg.flash_attn:
            k, v = _row(cfg.type_k, width) * kv, 0
        else:
            k = _row(cfg.type_k if cfg.mla == 1 else cfg.type_v, width) * kv
            v = _row(cfg.type_v, params.kv_lora_rank * kv) if cfg.mla == 1 else 0    # kv^T, 1-D
        index = 0
        is_mtp_tail = params.arch in MTP_TAIL_CACHE_ARCHS and il >= params.n_loaded_layers
        if (params.arch == "glm-dsa" and params.indexer_head_size and not is_mtp_tail
                and (il <= 1 or il % 4 == 2)):
            # cache_kr_l: [indexer_head_size, kv_size] in idx_type_k on "full" indexer layers
            # (indexer_is_full[il] = il <= 1 || il % 4 == 2, src/llama-hparams.cpp:1918; src/llama.cpp:1433)
            index = _row(cfg.idx_type_k, params.indexer_head_size) * kv
        return LayerCache(il, "mla", kv, k_bytes=k, v_bytes=v, index_bytes=index)
    if params.compress_ratios:
        # DeepSeek-V4: K-only raw cache plus compressed caches (llama_model::cache_size, src/llama-model.cpp)
        head = params.layer_head_dim(il)
        n_stream = max(1, cfg.n_seq)
        k = _row(cfg.type_k, head) * params.head_count_kv(il) * kv
        ratio = params.compress_ratios[il]
        index = 0
        if ratio == DSV4_CSA_RATIO:
            csa = -(-max(1, -(-kv // DSV4_CSA_RATIO)) // DSV4_CACHE_PAD) * DSV4_CACHE_PAD
            index += _row(cfg.type_k, head) * csa * n_stream
            index += _row(cfg.idx_type_k, params.indexer_head_size) * csa * n_stream
            index += 2 * head * 2 * DSV4_CSA_RATIO * n_stream * 4 * 2
            index += 2 * params.indexer_head_size * 2 * DSV4_CSA_RATIO * n_stream * 4 * 2
        elif ratio == DSV4_HCA_RATIO:
            hca = -(-max(1, -(-kv // DSV4_HCA_RATIO)) // DSV4_CACHE_PAD) * DSV4_CACHE_PAD
            index += _row(cfg.type_k, head) * hca * n_stream
            index += head * DSV4_HCA_RATIO * n_stream * 4 * 2
        return LayerCache(il, "dsv4", kv, k_bytes=k, index_bytes=index)
    head_k = params.layer_head_dim(il)
    head_v = head_k if (params.head_dim_swa and params.is_swa(il)) else (params.head_dim_v or params.head_dim)
    n_kv = params.head_count_kv(il)
    if params.arch in MLA_ARCHS and params.kv_lora_rank and n_kv == 1:
        # -mla 0 on a file in the converter's MLA layout (one KV head of the latent): ik's loader turns it back
        # into per-head attention, n_head_kv = n_gqa() = n_head heads of key/value_length_mla
        # (src/llama-hparams.cpp:1087-1104 deepseek2, :1946-1961 glm-dsa @8337e4cd3, "Adjusted mainline
        # llama.cpp MLA tensors"); the planner's head widths already are the *_mla ones
        n_kv = params.n_head
    k = _row(cfg.type_k, head_k) * n_kv * kv          # [n_embd_head_k, n_head_kv * kv_size]: per-head rows
    v = _row(cfg.type_v, head_v * n_kv) * kv          # n_embd_v_gqa per cell (hybrid: no state tail)
    return LayerCache(il, "swa" if params.is_swa(il) else "full", kv, k_bytes=k, v_bytes=v)


def ik_cache_size(params: ModelParams, il: int, cfg: CacheConfig, kv_size: int) -> int:
    """ik ``llama_model::cache_size`` (src/llama-model.cpp:2463-2532 @8337e4cd3): the per-layer cache estimate its
    layer-size table ("Layer N: weights, KV, total, compute") and greedy device fill use, at ``kv_size`` = ``-c``
    as given. It is the allocation rule of every layer below ``n_layer``, without what ``llama_kv_cache_init``
    skips: layers that reuse an earlier layer's KV (gemma-4 ``shared_kv_layers``) and NextN/MTP blocks count as
    attention layers, and an MLA layer's DSA indexer keys are left out (tests/fixtures/kv_kinds_ik: the tables of
    the gemma-4, Qwen3.5-MoE and DeepSeek-V4 runs)."""
    if not 0 <= il < params.n_layer:
        return 0
    c = _ik_layer(params, il, cfg, kv_size)
    return c.total_bytes - (c.index_bytes if c.kind == "mla" else 0)


# mainline DeepSeek-V4 compressor states (src/llama-kv-cache-dsv4.cpp:1313-1328 @0c1e57098): per compressed layer
# two F32 tensors (kv, score) of [n_embd_state, state_size, n_stream * (1 + n_rs_seq)]; (ratio, state_size,
# n_embd_state) with the widths as multiples of the head (CSA, HCA) or of the indexer head (lightning indexer)
DSV4_MAINLINE_STATES = (("csa", DSV4_CSA_RATIO, 2 * DSV4_CSA_RATIO, 2, "head"),
                        ("hca", DSV4_HCA_RATIO, DSV4_HCA_RATIO, 1, "head"),
                        ("lid", DSV4_CSA_RATIO, 2 * DSV4_CSA_RATIO, 2, "indexer"))


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def _mainline_swa_cells(params: ModelParams, cfg: CacheConfig, kv: int, unified: bool) -> int:
    """``llama_kv_cache_iswa``: ``size_swa = GGML_PAD(min(size_base, n_swa * (unified ? n_seq_max : 1) + n_ubatch),
    256)`` cells per stream (src/llama-kv-cache-iswa.cpp:73 @0c1e57098), ``size_base`` = ``kv``; ``--swa-full``
    keeps ``size_base``."""
    if cfg.swa_full:
        return kv
    return _pad(min(kv, params.n_swa * (cfg.n_seq if unified else 1) + cfg.ubatch), 256)


def _mainline_dsv4_layer(params: ModelParams, il: int, cfg: CacheConfig) -> LayerCache:
    """mainline ``llama_kv_cache_dsv4::llama_kv_cache_dsv4`` (src/llama-kv-cache-dsv4.cpp:1210-1335 @0c1e57098).

    Every cache keeps one stream per sequence (``unified_raw = unified_compressed = false``, -kvu unused), over the
    per-sequence context ``n_ctx_seq`` (:attr:`CacheConfig.n_ctx_seq`: ``n_ctx`` with -kvu, else
    ``GGML_PAD(n_ctx / n_seq_max, 256)``, src/llama-context.cpp:290-300):

    * raw: a K-only (``dsv4_make_k_only``) ``llama_kv_cache_iswa`` in which every trunk layer slides
      (``set_swa_pattern(0)``, src/models/deepseek4.cpp:66), so ``n_swa + n_ubatch`` cells, padded to 256;
    * CSA layers (ratio 4): a K cache of ``GGML_PAD(ceil(n_ctx_seq / 4), 256)`` cells and the lightning-indexer K
      cache of the same cells ``indexer.key_length`` wide, both in the K type; HCA layers (ratio 128): a K cache
      of ``GGML_PAD(ceil(n_ctx_seq / 128), 256)`` cells;
    * compressor states, F32 (:data:`DSV4_MAINLINE_STATES`), ``n_rs_seq`` = 0 (no rollback snapshots).
    """
    n_stream = max(1, cfg.n_seq)
    ctx_seq = cfg.n_ctx_seq
    head = params.layer_head_dim(il)
    raw = _mainline_swa_cells(params, cfg, ctx_seq, False)      # unified_raw = false (:1239)
    k = _row(cfg.type_k, head * params.head_count_kv(il)) * raw * n_stream
    ratio = params.compress_ratios[il]
    index = 0
    if ratio:
        cells = _pad(max(1, -(-ctx_seq // ratio)), 256)
        index += _row(cfg.type_k, head) * cells * n_stream
        if ratio == DSV4_CSA_RATIO:
            index += _row(cfg.type_k, params.indexer_head_size) * cells * n_stream
        for _name, state_ratio, state_size, mult, width in DSV4_MAINLINE_STATES:
            if state_ratio == ratio:
                n_embd_state = mult * (head if width == "head" else params.indexer_head_size)
                index += 2 * 4 * n_embd_state * state_size * n_stream
    return LayerCache(il, "dsv4", raw, k_bytes=k, index_bytes=index)


def _mainline_layer(params: ModelParams, il: int, cfg: CacheConfig) -> LayerCache:
    """llama.cpp ``llama_kv_cache`` / ``llama_kv_cache_iswa`` / ``llama_memory_recurrent`` for layer ``il``.

    ``llama_memory_recurrent`` (src/llama-memory-recurrent.cpp:101-103 @0c1e57098): F32 ``r`` [n_embd_r, n_rows]
    and ``s`` [n_embd_s, n_rows], n_rows = max(1, n_seq_max) x (1 + n_rs_seq), n_rs_seq = 0 without speculative
    decoding. A parallel hybrid layer (Falcon-H1) has both that state and an attention cache.  Attention caches:
    ``cfg.n_stream`` streams of ``cfg.n_ctx_seq`` cells (-np without -kvu: one per sequence)."""
    kv, ns = cfg.n_ctx_seq, cfg.n_stream
    if params.is_recurrent(il):
        r, s = n_embd_r_s(params)
        state = 4 * (r + s) * max(1, cfg.n_seq)
        if not params.recurrent_attn:
            return LayerCache(il, "recurrent", 0, state_bytes=state)
        attn = _mainline_attention(params, il, cfg)
        return LayerCache(il, "full+recurrent", attn.cells, k_bytes=attn.k_bytes, v_bytes=attn.v_bytes,
                          state_bytes=state)
    if params.compress_ratios:
        return _mainline_dsv4_layer(params, il, cfg)
    if params.kv_lora_rank and not params.mla_legacy:
        # MLA GGUFs (is_mla(): key_length_mla given, whatever the architecture: deepseek2, glm-dsa, bailingmoe3,
        # kimi-linear ...): head_count_kv = 1, key_length = kv_lora_rank + n_rot; has_v = !is_mla
        index = 0
        if params.arch == "glm-dsa" and params.indexer_head_size:
            # llama_kv_cache_dsa (src/llama-kv-cache-dsa.cpp @035aa95b): a second llama_kv_cache for the
            # lightning indexer with n_head_kv = 1, n_embd_head_k = indexer_head_size, the K type, no V (MLA)
            index = _row(cfg.type_k, params.indexer_head_size) * kv * ns
        return LayerCache(il, "mla", kv, k_bytes=_row(cfg.type_k, params.kv_lora_rank + params.n_rot) * kv * ns,
                          index_bytes=index)
    return _mainline_attention(params, il, cfg)


def _mainline_attention(params: ModelParams, il: int, cfg: CacheConfig) -> LayerCache:
    """``llama_kv_cache`` / ``llama_kv_cache_iswa`` K and V of a (GQA or sliding-window) attention layer: ``cells``
    per stream, bytes of all ``cfg.n_stream`` streams."""
    cells, kind = cfg.n_ctx_seq, "full"
    if params.is_swa(il):
        kind, cells = "swa", _mainline_swa_cells(params, cfg, cells, cfg.unified)
    head_k = params.layer_head_dim(il)
    n_kv = params.head_count_kv(il)
    if n_kv == 0:       # a layer without attention (a Mamba-2 hybrid's MLP layer): filtered out of every cache
        return LayerCache(il, "none", 0)
    # without flash attention V is stored transposed and every layer's rows are n_embd_v_gqa_max() wide
    # (src/llama-kv-cache.cpp:210, [TAG_V_CACHE_VARIABLE] @0c1e57098): a model whose layers differ (gemma4's SWA and
    # full layers) pads the narrower ones
    v_width = (_n_embd_v_gqa(params, il) if cfg.flash_attn
               else max(_n_embd_v_gqa(params, j) for j in range(params.n_layer)))
    return LayerCache(il, kind, cells, k_bytes=_row(cfg.type_k, head_k * n_kv) * cells * cfg.n_stream,
                      v_bytes=_row(cfg.type_v, v_width) * cells * cfg.n_stream)


def _n_embd_v_gqa(params: ModelParams, il: int) -> int:
    """``llama_hparams::n_embd_v_gqa(il)``: the V head width (the SWA one on sliding layers) times the KV heads."""
    head_v = (params.layer_head_dim(il) if (params.head_dim_swa and params.is_swa(il))
              else (params.head_dim_v or params.head_dim))
    return head_v * params.head_count_kv(il)


@functools.lru_cache(maxsize=256)
def layer_caches(params: ModelParams, cfg: CacheConfig) -> tuple[LayerCache, ...]:
    """The cache of every layer that has one, in layer order (remembered per model and run flags: a plan asks
    for the same caches once per memory report and speed estimate).

    Raises:
        UnknownModelError: the layout needs a number the model does not give (named in the message).
    """
    _check_supported(params, cfg)
    fn = _ik_layer if cfg.engine == "ik" else _mainline_layer
    return tuple(fn(params, il, cfg) for il in cache_layers(params, cfg))


def total_cache_bytes(params: ModelParams, cfg: CacheConfig) -> int:
    return sum(c.total_bytes for c in layer_caches(params, cfg))


def attention_kind(params: ModelParams) -> str:
    """A short name for the model's attention/state layout (for listings)."""
    parts = []
    n_loaded = params.n_loaded_layers
    if (params.recurrent_layers and not params.recurrent_attn
            and all(params.recurrent_layers[:n_loaded])):           # mamba, mamba2, rwkv*: no attention at all
        return f"{state_kind(params) or 'recurrent'} state in all {n_loaded} layers, no attention"
    if params.compress_ratios or params.arch == "deepseek4":
        parts.append("CSA/HCA compressed MQA (DeepSeek-V4)")
    elif params.arch in MLA_ARCHS and params.kv_lora_rank:
        parts.append("MLA" + (" + DSA indexer" if params.indexer_head_size else ""))
    elif params.n_head_kv and params.n_head_kv < params.n_head:
        parts.append(f"GQA {params.n_head}/{params.n_head_kv}")
    else:
        parts.append("MHA")
    if params.n_swa:
        period = params.swa_period
        parts.append(f"SWA {params.n_swa}" + (f" {period - 1}:1" if period > 1 else ""))
    if params.recurrent_layers:
        n_rec = sum(params.recurrent_layers[:params.n_loaded_layers])
        kind = state_kind(params) or "delta-net"
        parts.append(f"{kind} {n_rec} of {params.n_loaded_layers} layers"
                     + (" (parallel to attention)" if params.recurrent_attn else ""))
    elif params.full_attn_interval:
        parts.append(f"delta-net {params.full_attn_interval - 1}:1")
    return ", ".join(parts)


def state_kind(params: ModelParams) -> str:
    """The recurrent state's name for an architecture with per-layer hybrid data (``state_kind`` in
    architectures.toml: "Mamba", "Mamba-2", "KDA"); "" for others."""
    return str(_architectures().get(params.arch, {}).get("state_kind", ""))


def bytes_by_layer(params: ModelParams, cfg: CacheConfig) -> tuple[int, ...]:
    """Cache bytes of every block, indexed by layer (0 for blocks without a cache, e.g. unloaded NextN)."""
    out = [0] * params.n_layer
    for c in layer_caches(params, cfg):
        out[c.layer] = c.total_bytes
    return tuple(out)
