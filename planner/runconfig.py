"""How the model will be run: the llama-server flags that change memory and speed (:class:`RunConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from planner.constants import constants
from planner.engines import quant_engine
from planner.units import GIB, MIB

_MEM = constants()["memory"]
DEFAULT_GPU_MARGIN_BYTES = int(_MEM["gpu_margin_mib"]) * MIB
DEFAULT_OS_RESERVE_BYTES = int(_MEM["os_reserve_gib"] * GIB)


DEFAULT_UBATCH = 512     # llama.cpp / ik common.h n_ubatch default
DEFAULT_BATCH = 2048     # common.h n_batch default
# -ub values the planner chooses among (powers of two; ik's published sweeps use 512-4096)
UBATCH_CHOICES = (512, 1024, 2048, 4096)


def batch_sizes(ubatch: int | None, batch: int | None) -> tuple[int, int]:
    """(-ub, -b) from the flags given (None: not given), keeping b >= ub.

    llama.cpp caps the micro-batch at the batch (``src/llama-context.cpp``: ``n_ubatch = min(n_batch,
    n_ubatch)``; ik ``src/llama.cpp`` llama_new_context_with_model likewise), so a plan with b < ub would not run
    the -ub it predicts.

    Raises:
        UsageError: both given and b < ub, or a value not positive.
    """
    from planner.errors import UsageError

    for name, v in (("--ub", ubatch), ("--batch", batch)):
        if v is not None and v <= 0:
            raise UsageError(f"{name} must be positive, got {v}")
    if ubatch is not None and batch is not None and batch < ubatch:
        raise UsageError(f"--batch {batch} is smaller than --ub {ubatch}",
                         hint="llama.cpp caps -ub at -b (n_ubatch = min(n_batch, n_ubatch)); give -b >= -ub")
    ub = ubatch if ubatch is not None else min(DEFAULT_UBATCH, batch if batch is not None else DEFAULT_UBATCH)
    b = batch if batch is not None else max(DEFAULT_BATCH, ub)
    return ub, b


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How the model will be run: the flags that change memory and speed."""

    engine: str = "ik"                 # ik | ik-2025 | mainline (flag spellings differ)
    ctx: int = 32768
    type_k: str = "q8_0"
    type_v: str = "q8_0"
    flash_attn: bool = True
    ubatch: int = DEFAULT_UBATCH
    batch: int = DEFAULT_BATCH
    amb: int = 512                     # -amb MiB (ik)
    load: str = "rtr"                  # mmap | no-mmap | rtr
    n_parallel: int = 1                # -np: sequences (server slots)
    threads: int | None = None
    gpu_margin_bytes: int = DEFAULT_GPU_MARGIN_BYTES   # per-GPU safety margin (data/speed_constants.toml)
    os_reserve_bytes: int = DEFAULT_OS_RESERVE_BYTES   # RAM left to the OS and the server (estimate, same file)
    # speed-only flags of a user's command (a plan never chooses them, so they stay out of the plan JSON; the
    # command check plans for comparison carries them): -tb and --numa
    threads_batch: int | None = field(default=None, metadata={"json": False})
    numa: str | None = field(default=None, metadata={"json": False})
    # --mmproj FILE: a vision/audio projector loaded beside the model (planner/mmproj.py); its weight bytes come
    # from its header; --no-mmproj-offload keeps it on the CPU.  Written to the plan JSON only when used.
    mmproj: str | None = field(default=None, metadata={"json": "omit_default"})
    mmproj_bytes: int = field(default=0, metadata={"json": "omit_default"})
    mmproj_offload: bool = field(default=True, metadata={"json": "omit_default"})
    # its compute buffer for the warmup image (an estimate, planner/mmproj.py) on the projector's device, and the
    # f32 input image on the CPU
    mmproj_compute_bytes: int = field(default=0, metadata={"json": "omit_default"})
    mmproj_input_bytes: int = field(default=0, metadata={"json": "omit_default"})
    # ik -mla (common/common.h @8337e4cd3: mla_attn = 3): the MLA cache layout (planner/kv_cache.py) and which
    # MLA tensors ik derives at load (planner/engine_buffers.py ik_mla_derived)
    mla: int = field(default=3, metadata={"json": "omit_default"})
    # mainline --swa-full (common/arg.cpp @0c1e57098): the sliding-window layers' cache holds the whole context
    # (llama_kv_cache_iswa keeps size_base, src/llama-kv-cache-iswa.cpp:73); ik has no such flag
    swa_full: bool = field(default=False, metadata={"json": "omit_default"})
    # mainline -kvu (common/arg.cpp:1724 @0c1e57098): the -np sequences share one cache of -c cells instead of one
    # stream of -c / -np cells each (src/llama-context.cpp:290-300, llama-kv-cache.cpp:84); the SWA cache and the
    # attention graph follow (planner/kv_cache.py, planner/compute_buffers.py).  llama-server without -np runs 4
    # slots unified (engines.toml parallel_auto).  ik's cache is always one shared buffer: ignored there.
    kv_unified: bool = field(default=False, metadata={"json": "omit_default"})
    # llama-server's prompt cache in RAM, -cram MiB (None: the engine's default, engines.toml cache_ram_default_mib;
    # -1 no limit, 0 off): planner/prompt_cache.py sizes it to the RAM a plan leaves
    cache_ram_mib: int | None = field(default=None, metadata={"json": "omit_default"})
    # llama-server's context checkpoints per slot, -ctxcp (mainline) / -ctx-ckpt (ik) N (None: the engine's default,
    # engines.toml ctx_checkpoints_default): planner/prompt_cache.py caps it where the default would outgrow the RAM
    ctx_checkpoints: int | None = field(default=None, metadata={"json": "omit_default"})

    @property
    def qengine(self) -> str:
        """The quant engine (type catalogue, llama-quantize rules) of this engine profile."""
        return quant_engine(self.engine)

    @property
    def kv_size(self) -> int:
        """Cells allocated: n_ctx padded (ik: 256 with FA, 32 without; mainline: always 256)."""
        p = 256 if (self.flash_attn or self.engine == "mainline") else 32
        return (self.ctx + p - 1) // p * p
