"""How the model will be run: the llama-server flags that change memory and speed (:class:`RunConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from planner.constants import constants
from planner.engines import quant_engine
from planner.units import GIB, MIB

_MEM = constants()["memory"]
DEFAULT_GPU_MARGIN_BYTES = int(_MEM["gpu_margin_mib"]) * MIB
DEFAULT_OS_RESERVE_BYTES = int(_MEM["os_reserve_gib"] * GIB)


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How the model will be run: the flags that change memory and speed."""

    engine: str = "ik"                 # ik | ik-2025 | mainline (flag spellings differ)
    ctx: int = 32768
    type_k: str = "q8_0"
    type_v: str = "q8_0"
    flash_attn: bool = True
    ubatch: int = 512
    batch: int = 2048
    amb: int = 512                     # -amb MiB (ik)
    load: str = "rtr"                  # mmap | no-mmap | rtr
    n_parallel: int = 1
    threads: int | None = None
    gpu_margin_bytes: int = DEFAULT_GPU_MARGIN_BYTES   # per-GPU safety margin (data/speed_constants.toml)
    os_reserve_bytes: int = DEFAULT_OS_RESERVE_BYTES   # RAM left to the OS and the server (estimate, same file)

    @property
    def qengine(self) -> str:
        """The quant engine (type catalogue, llama-quantize rules) of this engine profile."""
        return quant_engine(self.engine)

    @property
    def kv_size(self) -> int:
        """Cells allocated: n_ctx padded (ik: 256 with FA, 32 without; mainline: always 256)."""
        p = 256 if (self.flash_attn or self.engine == "mainline") else 32
        return (self.ctx + p - 1) // p * p
