"""The numbers an engine graph's tensor sizes are products of (:class:`GraphShape`, the tokens, widths and cache
cells of one worst-case ubatch), for :mod:`planner.engine_graph`'s templates (``data/engine_graphs.toml``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from planner.quants import catalogue
from planner.tensors import ModelParams

UNQUANTIZED = frozenset({"f32", "f16", "bf16"})


@dataclass(frozen=True, slots=True)
class GraphShape:
    """The numbers the graph's sizes are products of (see engine_graphs.toml)."""

    T: int
    n_embd: int
    q: int
    kv: int
    n_kv: int
    n_expert: int
    n_used: int
    ff: int
    n_vocab: int
    n_head: int
    mask: int          # bytes per mask element: 2 (f16, flash attention) or 4
    vidx: int          # V-cache row indices per token: 1, or kv without flash attention (transposed V)
    qa: int = 0        # MLA (deepseek2): q_lora_rank, kv_lora_rank, kv_lora_rank + rope, n_head x (nope + v),
    kvl: int = 0       # the rope width, n_head x v, the dense FFN and the shared expert's widths
    kvp: int = 0
    kvb: int = 0
    rope: int = 0
    vo: int = 0
    nff: int = 0
    sh: int = 0
    rk: int = 0        # Hadamard rotation of a quantized K cache: the matrix width (0 = none)
    rotv: bool = False  # ... of a quantized V cache (64 x 64)
    tm: int = 0        # the KQ mask's rows: T padded to GGML_KQ_MASK_PAD (ik 16, ggml.h:2485; mainline unpadded)
    hc: int = 0        # ik MLA: heads per -amb chunk, the chunks, qk_nope and v head widths, their sum, nope + rope
    nit: int = 1
    nope: int = 0
    hv: int = 0
    npv: int = 0
    qk: int = 0
    kvq: bool = False  # ik MLA: a cache type other than f16 (its rope part is cast to f16 before the repeat)
    n_kvs: int = 0     # the sliding-window cache's cells (gpt-oss: its SWA layers' mask and cache; 0 = no SWA)
    wscale: bool = False  # the routed weights scaled (expert_weights_scale neither 0 nor 1: a SCALE node)
    ns: int = 1        # recurrent layers (gated delta-net): the reserve ubatch's sequences (n_seq_max), conv
    cch: int = 0       # channels (d_inner + 2 n_group d_state), conv input columns (T + (d_conv - 1) ns), the
    tc: int = 0        # conv and SSM state rows (n_embd_r, n_embd_s), the key width (n_group d_state), the value
    nr: int = 0        # heads (dt_rank) and the value head width (d_inner / dt_rank)
    rss: int = 0
    kd: int = 0
    dtr: int = 0
    dsv: int = 0
    dc: int = 0        # the conv kernel (d_conv)
    ds: int = 0        # the SSM state width (d_state; Mamba-1's B and C rows)
    dtw: int = 0       # dt's width out of ssm_x: Mamba-1's dt_rank, PLaMo-2's max(64, n_embd / 16) (plamo2.cpp dt_dim)
    nx: int = 0        # recurrent states copied as extra (n_rs - n_seqs: a template's reserve_seqs below -np)
    tq: int = 0        # RWKV (:func:`_rwkv`): tokens per sequence (n_seq_tokens), wkv heads (n_embd / head size),
    wh: int = 0        # the time mix's low-rank widths: token-shift mix, decay, in-context learning rate, value
    lmix: int = 0      # residual mix, gate (ModelParams.mix_rank, decay_rank, iclr_rank, vres_rank, gate_rank);
    ldec: int = 0      # its token-shift and wkv state rows are nr and rss above (n_embd_r, n_embd_s)
    lic: int = 0
    lvr: int = 0
    lgt: int = 0
    lkv: int = 0       # the time mix's key/value width (rwkv6qwen2: head_count_kv heads of the wkv head size)
    ih: int = 0        # DSA lightning indexer: head width, heads, keys kept per query (min(n_kv, top_k))
    nih: int = 0
    itk: int = 0
    mla: int = 3       # ik MLA: -mla (0: plain attention over decompressed K and V; 1, 2, 3)
    amb: int = 0       # ik: -amb MiB (0: none)
    kr: int = 0        # bytes of one cell of a layer's K and V cache (ggml_row_size of n_head_kv x head width in the
    vr: int = 0        # cache type): a cache view of n_kv cells is n_kv x kr bytes (llama-kv-cache.cpp get_k/get_v)
    # a window layer's own widths where its heads differ from the full layers' (gemma-4: key_length_swa and a
    # per-layer head_count_kv): (q, kv, kr, vr, vpad, rk) of the first sliding-window layer; () = the same
    swa_dims: tuple[int, ...] = ()
    vpad: int = 0      # a transposed V cache's row (n_embd_v_gqa_max) where the layer's V is narrower: its V padded
    #                    to it before the store (mainline llama-kv-cache.cpp:1405-1409, [TAG_V_CACHE_VARIABLE])
    hcm: int = 0       # DeepSeek-V4 (:func:`_dsv4`): hyper-connection streams, their mix width, the grouped output
    hmix: int = 0      # LoRA's width, the head width; cells of the raw, CSA and HCA caches; the reserve plan's blocks
    ol: int = 0        # per ratio (4, 128), rows read of 4-blocks (n4 = 4 nb4), state rows, persisted rows and state
    hd: int = 0        # reads per ratio (a K-cache row's bytes: kr above, n_head_kv = 1)
    nraw: int = 0
    ncsa: int = 0
    nhca: int = 0
    nb4: int = 0
    nb128: int = 0
    n4: int = 0
    sr4: int = 0
    sr128: int = 0
    pe4: int = 0
    pe128: int = 0
    rd4: int = 0
    rd128: int = 0
    nst: int = 1       # DeepSeek-V4: cache streams (one per sequence; the keys concatenated over all of them)
    nwin: int = 0      # ik DeepSeek-V4 (:func:`_dsv4`): the raw keys' attention window, the reserve plan's blocks per
    cb4: int = 0       # ratio (4, 128) and their state reads, the mask index's width
    cb128: int = 0
    rdi4: int = 0
    rdi128: int = 0
    mti: int = 0

    @classmethod
    def of(cls, p: ModelParams, tokens: int, n_kv: int, flash_attn: bool, type_k: str = "f16",
           type_v: str = "f16", mask_pad: int = 1, amb: int = 0, n_kv_swa: int = 0, n_seqs: int = 1,
           mla: int = 3) -> GraphShape:
        rk = _rot_k(type_k, p.head_dim)
        # (a model without attention heads, mamba/rwkv: head_dim 0, no cache to rotate)
        rotv = type_v.lower() not in UNQUANTIZED and (p.head_dim_v or p.head_dim or 1) % 64 == 0
        nope = p.qk_nope_head_dim or p.head_dim - p.n_rot
        hv = p.head_dim_v or p.head_dim
        hc = p.n_head
        kv_f32_mib = p.n_head * (nope + hv) * n_kv * 4 // (1 << 20)     # ik build_deepseek2.cpp:924-939 (-amb)
        if amb > 0 and kv_f32_mib > amb:
            hc = 1
            for niter in range(2, p.n_head):
                if p.n_head % niter == 0 and kv_f32_mib // niter <= amb:
                    hc = p.n_head // niter
                    break
        if _kq_chunked(p.n_head, tokens, n_kv, amb, flash_attn, mla):
            # KQ in chunks of heads (build_deepseek2.cpp:1130-1136): n_step = ceil(kq MiB / amb), capped at n_head
            n_step = min(-(-(n_kv * tokens * p.n_head * 4 // (1 << 20)) // amb), p.n_head)
            hc = -(-p.n_head // n_step)
        fields: dict[str, Any] = dict(T=tokens, n_embd=p.n_embd, q=p.n_head * p.head_dim, kv=p.n_head_kv * p.head_dim, n_kv=n_kv,
                   n_expert=p.n_expert, n_used=p.n_expert_used, ff=p.n_ff_exp, n_vocab=p.n_vocab, n_head=p.n_head,
                   mask=2 if flash_attn else 4, vidx=1 if flash_attn else p.n_head_kv * (p.head_dim_v or p.head_dim),
                   rk=rk, rotv=rotv, qa=p.q_lora_rank, kvl=p.kv_lora_rank, kvp=p.kv_lora_rank + p.n_rot,
                   kvb=p.n_head * ((p.qk_nope_head_dim or p.head_dim - p.n_rot) + (p.head_dim_v or p.head_dim)),
                   rope=p.n_rot, vo=p.n_head * (p.head_dim_v or p.head_dim), nff=p.n_ff,
                   sh=p.n_ff_shexp or p.n_ff_exp * p.n_shared_exp, tm=-(-tokens // mask_pad) * mask_pad,
                   hc=hc, nit=p.n_head // hc if hc else 1, nope=nope, hv=hv, npv=nope + hv, qk=nope + p.n_rot,
                   kvq=type_k.lower() != "f16", n_kvs=n_kv_swa,
                   wscale=p.expert_weights_scale not in (0.0, 1.0), ih=p.indexer_head_size, nih=p.indexer_n_head,
                   itk=min(n_kv, p.indexer_top_k), mla=mla, amb=amb)
        fields.update(_recurrent(p, tokens, n_seqs))
        fields.update(_short_conv(p, tokens, n_seqs))
        fields.update(_rwkv(p, tokens, n_seqs))
        fields.update(_cache_rows(p, type_k, type_v, flash_attn))
        fields.update(_dsv4(p, tokens, n_kv, n_seqs))
        return cls(**fields)

    def window(self) -> GraphShape:
        """The shape a sliding-window layer's rows are sized by in a template with ``window = true``: the window
        cache's cells as ``n_kv`` and the window layers' own widths (:attr:`swa_dims`)."""
        if not self.swa_dims:
            return replace(self, n_kv=self.n_kvs or self.n_kv)
        q, kv, kr, vr, vpad, rk = self.swa_dims
        return replace(self, n_kv=self.n_kvs or self.n_kv, q=q, kv=kv, kr=kr, vr=vr, vpad=vpad, rk=rk, swa_dims=())

    @property
    def rks(self) -> int:
        """:attr:`rk` of the window cache (its own K rotation input, sized by the window layers' head width)."""
        return self.swa_dims[5] if self.swa_dims else self.rk


    def _mla_paths(self) -> dict[str, bool]:
        """ik build_deepseek2.cpp's attention paths at 8337e4cd3 (the -mla value, flash attention, pp_opt =
        ``n_tokens >= 128 && mla_attn > 1``, 1293): "mfa" the per-chunk decompression (mla > 1, flash attention,
        pp_opt: 903), "mc" the latent-space paths (the other mla > 0 cases: 1017), "mcfa" their flash attention
        (mla 1 or 3: 1034), "mcno" KQ and softmax, "mtr" the transposed latent copied out of the K cache (mla > 1,
        1082), "mv1" the transposed V cache of -mla 1 without flash attention (869), "m0" -mla 0 (1222)."""
        fa = self.mask == 2
        pp = self.T >= 128 and self.mla > 1
        mfa = self.mla > 1 and fa and pp
        mc = self.mla >= 1 and not mfa
        mcfa = mc and fa and self.mla in (1, 3)
        chunk = mc and not mcfa and _kq_chunked(self.n_head, self.T, self.n_kv, self.amb, fa, self.mla)
        return {"mla": self.mla >= 1, "m0": self.mla == 0, "mfa": mfa, "mc": mc, "mcfa": mcfa,
                "mcno": mc and not mcfa, "mtr": mc and not mcfa and self.mla > 1,
                "mv1": self.mla == 1 and not fa, "ppo": pp, "nppo": not pp, "chunk": chunk, "nochunk": not chunk}

    def has(self, flag: str) -> bool:
        """Whether a row with this flag is in the graph ("a|b": either)."""
        if "|" in flag:
            return any(self.has(f) for f in flag.split("|"))
        known = {"fa": self.mask == 2, "nofa": self.mask != 2, "rotk": self.rk > 0, "rotv": self.rotv,
                 "norotv": not self.rotv,
                 "kvq": self.kvq, "wscale": self.wscale, "vpad": self.vpad > 0,
                 "lgqa": 0 < self.lkv < self.n_embd,      # rwkv6qwen2's grouped key/value, repeated per head
                 "lidk": self.itk < self.ncsa, "nolidk": self.itk >= self.ncsa,
                 "mti": self.mti < self.nwin + self.ncsa, "nomti": self.mti >= self.nwin + self.ncsa}
        if flag in known:
            return known[flag]
        return self._mla_paths().get(flag, True)

    def drawn(self) -> bool:
        """Whether the ik DeepSeek template draws this shape: not -mla 0 without flash attention
        (llm_build_kv's KQ path), not the latent paths without flash attention on a quantized K cache (its
        transposed copy), not KQ chunks of unequal heads (-amb chunks that do not divide n_head)."""
        paths = self._mla_paths()
        if paths["m0"] and self.mask != 2:
            return False
        if paths["mcno"]:
            return not self.kvq and (not paths["chunk"] or self.n_head % self.hc == 0)
        return True

    def size(self, expr: str, k1: int = 1) -> int:
        """Bytes of a row's expression (products, summed by "+"); ``k1``: the -amb chunk's number, from 1 (rows
        flagged "iter")."""
        if expr.startswith("rows:"):   # a strided view of the first W of each R-wide row: (T-1) R + W elements
            w, r = (self.size(x) for x in expr[5:].split(","))
            return ((self.T - 1) * r + w) * 4
        if "+" in expr or "-" in expr:    # a sum of products, "-" subtracting the term it starts
            return sum(-self.size(x[1:], k1) if x[0] == "-" else self.size(x.lstrip("+"), k1)
                       for x in re.findall(r"[+-]?[^+-]+", expr))
        if expr == "topk":         # a view of the first n_used of n_expert sorted ids per token (its nbytes)
            return ((self.T - 1) * self.n_expert + self.n_used) * 4
        out = 1
        for f in expr.split("*"):
            out *= int(f) if f.isdigit() else k1 if f == "k1" else int(getattr(self, f))
        return out


def _kq_chunked(n_head: int, tokens: int, n_kv: int, amb: int, flash_attn: bool, mla: int) -> bool:
    """ik's latent-space attention without flash attention computes KQ in chunks of heads when it exceeds -amb
    MiB (build_deepseek2.cpp:1097-1150: ``kq_size = n_kv x n_tokens x n_head x 4`` bytes in whole MiB)."""
    mfa = flash_attn and mla > 1 and tokens >= 128
    return mla >= 1 and not mfa and not (flash_attn and mla in (1, 3)) and amb > 0 and (
        n_kv * tokens * n_head * 4 // (1 << 20) > amb)


def _rot_k(type_k: str, head: int) -> int:
    """The K rotation's width of a cache of this head width (0: none): a quantized K cache and a head divisible by
    64, the largest power of two dividing it (mainline llama-kv-cache.cpp:321-325, 1450-1458)."""
    if type_k.lower() in UNQUANTIZED or not head or head % 64:     # head 0 (mamba/rwkv): 0 % 64 would loop
        return 0
    rk = 64
    while head % (rk * 2) == 0:
        rk *= 2
    return rk


def _cache_rows(p: ModelParams, type_k: str, type_v: str, flash_attn: bool) -> dict[str, Any]:
    """:attr:`GraphShape.kr`/``vr`` of the full layers and, where the window layers' heads differ (a per-layer
    head_count_kv or key_length_swa), their :attr:`GraphShape.swa_dims`."""
    cat = catalogue()

    def dims(il: int) -> tuple[int, int, int, int]:
        hk = p.layer_head_dim(il)
        nkv = p.head_count_kv(il)
        return (p.n_head * hk, nkv * hk, cat.get(type_k).row_bytes(nkv * hk), cat.get(type_v).row_bytes(nkv * hv(il)))

    def hv(il: int) -> int:
        return p.layer_head_dim(il) if (p.head_dim_swa and p.is_swa(il)) else (p.head_dim_v or p.head_dim)

    if p.kv_lora_rank or not p.n_head_kv:
        return {}
    layers = [il for il in range(p.n_loaded_layers) if p.head_count_kv(il)]
    full = next((il for il in layers if not p.is_swa(il)), 0)
    q, kv, kr, vr = dims(full)
    out: dict[str, Any] = {"kr": kr, "vr": vr}
    win = next((il for il in layers if p.is_swa(il)), None)
    if win is not None and (p.head_dim_swa or p.n_head_kv_layers):
        # the full layers' own widths too (the header's head_count_kv / key_length are not theirs alone); a
        # transposed V cache's row indices are n_embd_v_gqa_max per token for both caches (mainline
        # llama-kv-cache.cpp:1430-1445)
        vmax = max(p.head_count_kv(il) * hv(il) for il in layers)

        def pad(il: int) -> int:
            return vmax if not flash_attn and p.head_count_kv(il) * hv(il) < vmax else 0

        out.update(q=q, kv=kv, vidx=1 if flash_attn else vmax, vpad=pad(full),
                   swa_dims=(*dims(win), pad(win), _rot_k(type_k, p.layer_head_dim(win))))
    return out


def _recurrent(p: ModelParams, tokens: int, n_seqs: int) -> dict[str, int]:
    """The gated delta-net sizes of :class:`GraphShape` (mainline qwen35moe.cpp build_layer_attn_linear and
    llama-hparams.cpp n_embd_r/n_embd_s at 0c1e57098); zeros for a model without recurrent layers."""
    if not (p.ssm_d_inner and p.ssm_dt_rank and p.ssm_d_conv):
        return {}
    cch = p.ssm_d_inner + 2 * p.ssm_n_group * p.ssm_d_state
    dsv = p.ssm_d_inner // p.ssm_dt_rank
    return {"ns": n_seqs, "cch": cch, "tc": tokens + (p.ssm_d_conv - 1) * n_seqs, "nr": (p.ssm_d_conv - 1) * cch,
            "rss": p.ssm_d_state * p.ssm_d_inner, "kd": p.ssm_n_group * p.ssm_d_state, "dtr": p.ssm_dt_rank,
            "dsv": dsv, "dc": p.ssm_d_conv, "ds": p.ssm_d_state,
            "dtw": max(64, p.n_embd // 16) if p.arch == "plamo2" else p.ssm_dt_rank}


def _short_conv(p: ModelParams, tokens: int, n_seqs: int) -> dict[str, int]:
    """LFM2's gated short convolution (a conv state of ``state_r`` = (l_cache - 1) n_embd rows, no SSM state:
    llama-hparams.cpp:214-217 at 0c1e57098): its n_embd channels, conv rows, kernel and the conv input's columns
    ``T + (l_cache - 1) n_seqs`` (mainline lfm2.cpp:173-198); nothing for other models."""
    if not (p.state_r and not p.state_s and not p.ssm_d_inner and p.n_embd):
        return {}
    d_conv = p.state_r // p.n_embd
    return {"ns": n_seqs, "cch": p.n_embd, "nr": p.state_r, "dc": d_conv + 1, "tc": tokens + d_conv * n_seqs}


def _rwkv(p: ModelParams, tokens: int, n_seqs: int) -> dict[str, int]:
    """RWKV's sizes of :class:`GraphShape` (mainline rwkv6-base.cpp, rwkv7-base.cpp and
    llm_graph_context::build_rwkv_token_shift_load/store, llama-graph.cpp:3592-3633 @0c1e57098): the reserve
    ubatch's sequences and tokens per sequence, the token-shift rows (n_embd_r, token_shift_count x n_embd) and
    the wkv state (n_embd_s, n_embd x head size) per sequence, n_embd / head size heads, the low-rank widths;
    nothing for other models."""
    if not (p.wkv_head_size and p.state_r and p.state_s):
        return {}
    ns = max(1, n_seqs)
    return {"ns": ns, "tq": tokens // ns, "nr": p.state_r, "rss": p.state_s, "wh": p.n_embd // p.wkv_head_size,
            "lmix": p.mix_rank, "ldec": p.decay_rank, "lic": p.iclr_rank, "lvr": p.vres_rank, "lgt": p.gate_rank,
            "lkv": p.n_head_kv * p.wkv_head_size if p.n_head_kv else p.n_embd}


def _dsv4(p: ModelParams, tokens: int, n_kv: int, n_seqs: int) -> dict[str, int]:
    """DeepSeek-V4's sizes of :class:`GraphShape` (mainline 0c1e57098 and ik 8337e4cd3); nothing for other models.
    ``n_kv``: the context per sequence (mainline), the cache's cells (ik).  mainline's caches per stream (one per
    sequence, planner/kv_cache.py _mainline_dsv4_layer): the raw cache ``GGML_PAD(n_swa + T, 256)`` cells, the compressed ones ``GGML_PAD(ceil(n_kv / ratio), 256)``; the
    reserve plan (src/llama-kv-cache-dsv4.cpp:842-880): ``n_blocks = T / ratio + n_seqs``, state reads ``2 ratio
    n_blocks`` (CSA, overlapping) or ``ratio n_blocks`` (HCA), persisted rows ``min(T, state_size n_stream)``
    with state_size 2 x 4 (CSA and indexer) and 128 (HCA, 1313-1329); the indexer keeps ``min(n_csa, top_k)``."""
    if not (p.compress_ratios and p.hc_mult):
        return {}

    def pad(x: int) -> int:
        return -(-x // 256) * 256

    ns = max(1, n_seqs)
    ncsa = pad(max(1, -(-n_kv // 4)))
    nb4, nb128 = tokens // 4 + ns, tokens // 128 + ns
    # ik (src/graphs/build_deepseek4.cpp, src/llama-dsv4.cpp @8337e4cd3): n_kv is the raw cache's n_ctx cells (one
    # cache for every sequence), read through the window of 256 ceil((max(256, T) + n_swa) / 256) cells
    # (1076-1089); the reserve plan has ceil(T / ratio) blocks of its one sequence (dsv4_build_reserve_comp_plan,
    # 492-525), the compressed caches pad(ceil(n_ctx / ratio), 256) cells per stream; flash attention indexes a CSA
    # mask pad(n_swa + index_topk, 256) wide (592-600)
    cb4, cb128 = -(-tokens // 4), -(-tokens // 128)
    win = 256 * -(-(max(256, tokens) + p.n_swa) // 256)
    return {"hcm": p.hc_mult, "hmix": (2 + p.hc_mult) * p.hc_mult, "ol": p.o_groups * p.o_lora_rank,
            "hd": p.head_dim,
            "nraw": pad(min(n_kv, p.n_swa + tokens)), "ncsa": ncsa, "nhca": pad(max(1, -(-n_kv // 128))),
            "nb4": nb4, "nb128": nb128, "n4": 4 * nb4, "sr4": 8 * ns, "sr128": 128 * ns,
            "pe4": min(tokens, 8 * ns), "pe128": min(tokens, 128 * ns), "rd4": 8 * nb4, "rd128": 128 * nb128,
            "itk": min(ncsa, p.indexer_top_k), "nst": ns,
            "nwin": min(max(256, pad(n_kv)), win), "cb4": cb4, "cb128": cb128, "rdi4": 8 * cb4, "rdi128": 128 * cb128,
            "mti": pad(p.n_swa + p.indexer_top_k)}
