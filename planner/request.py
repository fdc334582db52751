"""What a user asks of the planner besides the model and the machine: :class:`PlanRequest`."""

from __future__ import annotations

from dataclasses import dataclass, field

from planner.runconfig import RunConfig

OBJECTIVES = ("balanced", "quality", "speed")
GRANULARITIES = ("layer", "role", "band")


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """Everything the planner needs besides the model and the machine."""

    run: RunConfig = field(default_factory=RunConfig)
    objective: str = "balanced"          # quality | speed | balanced (placement: internal, types fixed)
    min_tg: float | None = None
    min_pp: float | None = None
    max_size_bytes: int | None = None
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    fixed: tuple[tuple[str, str], ...] = ()   # (regex, type) pinned by the user
    has_imatrix: bool = True
    work_limit: float = 2.0              # CP-SAT deterministic time per solve (see planner.solver.Objective)
    relative_gap: float = 0.0            # a quality or speed plan's solve may stop this close to its bound
                                         # (0: prove optimality; --pareto's inner points: the quality step's gap)
    quality_slack_pct: float = 0.5       # balanced: PPL ratio may exceed the best-quality plan's by this %
    granularity: str = "layer"           # layer | role | band: how many distinct types a role may get
    ctx_max: bool = False                # search the largest context that fits (run.ctx is then ignored)
    kv_auto: bool = False                # q8_0 KV cache, or q4_0 when q8_0 does not fit
    pareto: int = 0                      # > 1: that many non-dominated plans instead of one
    imatrix: str | None = None           # imatrix file (.dat or GGUF): sharpens the quality model
    ignore_imatrix_rules: bool = False   # ik llama-quantize --ignore-imatrix-rules: imatrix-only types without one
    floors: bool = True                  # keep output/token_embd/attn_v at the engines' own floors (planner.lowbit)
    max_rules: int | None = None         # merge type groups until the recipe has at most this many (planner.simplify)
    load_auto: bool = False              # run.load is the engine default, not the user's: choose it by speed
    ub_auto: bool = False                # -ub/-b not given: choose -ub (UBATCH_CHOICES) within the memory budget


@dataclass(frozen=True, slots=True)
class EmitOptions:
    """How the emitted commands name things: the GGUF path they load, the binary whose flags to check."""

    model_path: str | None = None        # default: next to the source (``-planned.gguf``) or the file given
    check_binary: str | None = None      # refuse launch flags this llama-server binary does not list
