"""``check`` proposes the fix: the smallest change to a user's llama-server command that makes it fit, or a
faster command when the GPUs have room the command leaves unused, and the plan's own command for comparison.

Every candidate is a modified command line judged by :func:`planner.check.check_command`, the same function
(flags parsed by :mod:`planner.launch`, layers mapped by the engine's own rule in :mod:`planner.layer_split`,
memory by :mod:`planner.memory`, speed by :mod:`planner.speed`) that judged the user's command; nothing is
proposed that this check does not pass.

"Smallest" is defined on what the user keeps: a change of *where weights live* (routed experts moved by ``-ot``
rules to a GPU with room or to the CPU, ``-ts``, the command's own ``-ncmoe``, or ``-ngl``) that fits with the
highest predicted TG, then the fewest expert bytes moved between the GPUs and the CPU, is the fix
(:data:`SMALLEST`). Changes that give something up (a shorter ``-c``, a quantized KV cache ``-ctk/-ctv q8_0``, one
server slot ``-np 1`` where the command runs several)
are listed as alternatives with what they cost, never chosen for the user.

Which layers' experts move: the last ones on the device first. The speed model has no position term (only bytes
and hand-offs count), but ik_llama.cpp PR 2262 (commit da2293ded, 2026-08-06) measured CPU experts in the last
layers against the first (``-ncmoe 22``, Qwen3.6-35B-A3B Q8_0, one RTX 3090): about 10 % faster PP, TG within
1-2 %, and made ``-ncmoe`` pick the last layers on one GPU. Experts brought back to a GPU are the first CPU ones,
which keeps the CPU experts last.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from planner.devices import CPU
from planner.regexes import layers_regex, roles_regex
from planner.tensors import TensorMap
from planner.units import GIB

if TYPE_CHECKING:
    from planner.check import CheckResult
    from planner.hardware import Hardware
    from planner.memory import MemoryReport, Placement

SMALLEST = ("the change of where weights live (routed experts moved by -ot rules to a GPU with room or to the CPU, "
            "-ts in proportion to the GPUs' memory, the command's own -ncmoe, or -ngl) that fits with the highest "
            "predicted TG, then the fewest expert bytes moved between the GPUs and the CPU; a shorter -c, a "
            "quantized KV cache or fewer server slots gives something up and is only listed")
FASTER_MIN_GAIN = 0.02   # a fitting command gets a faster suggestion when predicted TG or PP gains at least 2 %
OT_FLAGS = ("-ot", "--override-tensor")
NGL_FLAGS = ("-ngl", "--gpu-layers", "--n-gpu-layers")
CTX_FLAGS = ("-c", "--ctx-size")


@dataclass(frozen=True, slots=True)
class FixOption:
    """One modified command, checked like the user's: what changed, whether it fits, its predicted speed."""

    kind: str                      # experts-to-cpu | ngl | ctx | kv | experts-to-gpu | plan
    change: str                    # the change in words, with the flag text
    argv: tuple[str, ...]
    command: str
    fits: bool
    tg_tps: float
    pp_tps: float
    moved_bytes: int = 0           # weight bytes this change moves between a GPU and the CPU
    free_bytes: dict[str, int] = field(default_factory=dict)   # per device after the change (negative: over)
    cost: str = ""                 # what the change gives up, when anything


@dataclass(frozen=True, slots=True)
class FixProposal:
    """Why a change is proposed, the proposed change, the other checked options and the plan's own command."""

    reason: str
    smallest: str                  # how "smallest" is defined
    fix: FixOption | None          # None: no single change of this kind makes the command fit
    alternatives: tuple[FixOption, ...] = ()
    plan: FixOption | None = None  # `place` for the same mix and machine, checked the same way
    plan_note: str = ""


# ------------------------------------------------------------------------------------------------ argv editing

def set_flag(argv: Sequence[str], names: Sequence[str], value: str) -> list[str]:
    """The command with flag ``names[0]`` (or the spelling already used) set to ``value``."""
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        if a in names:
            out[i + 1] = value
            return out
    return out + [names[0], value]


def prepend_override(argv: Sequence[str], rule: str) -> list[str]:
    """The command with ``-ot rule`` placed before every other ``-ot`` (the first matching override wins)."""
    out = list(argv)
    for i, a in enumerate(out):
        if a in OT_FLAGS:
            return out[:i] + ["-ot", rule] + out[i:]
    return out + ["-ot", rule]


def _shell(argv: Sequence[str]) -> str:
    from planner.quoting import shell_quote

    return " ".join(shell_quote(a) for a in argv)


# ------------------------------------------------------------------------------------------------ experts

def expert_layers(tmap: TensorMap, placement: Placement, device: str) -> list[int]:
    """Layers whose routed experts all sit on ``device`` (ascending)."""
    by_layer: dict[int, set[str]] = {}
    for t in tmap.tensors:
        if t.is_expert and t.layer is not None and tmap.is_loaded(t):
            by_layer.setdefault(t.layer, set()).add(placement.device_of(t.name))
    return sorted(layer for layer, devs in by_layer.items() if devs == {device})


def expert_rule(tmap: TensorMap, layers: Sequence[int], device: str) -> str:
    """One ``-ot`` item sending the routed experts of ``layers`` to ``device`` (the launch emitter's form)."""
    roles = sorted({t.role for t in tmap.tensors if t.is_expert and t.layer in set(layers)})
    return rf"blk\.{layers_regex(layers)}\.{roles_regex(roles)}={device}"


def expert_bytes(tmap: TensorMap, types: Mapping[str, str], layers: Sequence[int]) -> int:
    """Stored bytes of the routed experts of ``layers`` under the mix."""
    from planner.memory import tensor_bytes

    want = set(layers)
    return sum(tensor_bytes(t, types.get(t.name, t.dtype)) for t in tmap.tensors
               if t.is_expert and t.layer in want and tmap.is_loaded(t))


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The largest k in [lo, hi] with ok(k), ok monotone decreasing in k (None if ok(lo) fails)."""
    if hi < lo or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _smallest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The smallest k in [lo, hi] with ok(k), ok monotone increasing in k (None if ok(hi) fails)."""
    if hi < lo or not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


# ------------------------------------------------------------------------------------------------ the search

class _Judge:
    """Checks modified commands exactly as ``check`` checks the user's (memory only while searching)."""

    def __init__(self, tmap: TensorMap, types: Mapping[str, str], hw: Hardware, engine: str,
                 run_overrides: Mapping[str, Any] | None) -> None:
        self.tmap, self.types, self.hw, self.engine, self.over = tmap, types, hw, engine, run_overrides
        self._mem: dict[tuple[str, ...], MemoryReport] = {}
        self.original: Placement | None = None

    def memory(self, argv: Sequence[str]) -> MemoryReport:
        from planner.check import command_fits

        key = tuple(argv)
        if key not in self._mem:
            self._mem[key] = command_fits(self.tmap, self.types, argv, self.hw, engine=self.engine,
                                          run_overrides=self.over)
        return self._mem[key]

    def fits(self, argv: Sequence[str]) -> bool:
        return self.memory(argv).fits

    def full(self, argv: Sequence[str]) -> CheckResult:
        from planner.check import check_command

        return check_command(self.tmap, self.types, argv, self.hw, engine=self.engine, run_overrides=self.over)

    def option(self, kind: str, change: str, argv: Sequence[str], *, moved: int | None = None,
               cost: str = "") -> FixOption:
        r = self.full(argv)
        if moved is None:
            moved = self.moved_bytes(argv)
        return FixOption(kind, change, tuple(argv), _shell(argv), r.memory.fits, r.speed.tg_tps, r.speed.pp_tps,
                         moved, {d.device: d.free_bytes for d in r.memory.devices}, cost)

    def moved_bytes(self, argv: Sequence[str]) -> int:
        """Routed-expert bytes whose device changes between the GPUs and the CPU against the original command."""
        from planner.check import command_placement
        from planner.memory import tensor_bytes

        assert self.original is not None
        _, _, new = command_placement(self.tmap, self.types, argv, self.hw, engine=self.engine,
                                      run_overrides=self.over)
        return sum(tensor_bytes(t, self.types.get(t.name, t.dtype)) for t in self.tmap.tensors
                   if t.is_expert and self.tmap.is_loaded(t)
                   and (self.original.device_of(t.name) == CPU) != (new.device_of(t.name) == CPU))


def _experts_off(judge: _Judge, argv: list[str], placement: Placement, over: Sequence[str]) -> FixOption | None:
    """Move the last expert layers of each over-budget GPU to the CPU, as few as fit (one -ot rule)."""
    tmap = judge.tmap
    moved: list[int] = []
    for gpu in over:
        layers = expert_layers(tmap, placement, gpu)[::-1]          # the last layers first (ik PR 2262)

        def with_k(k: int, layers: list[int] = layers, done: tuple[int, ...] = tuple(moved)) -> list[str]:
            return prepend_override(argv, expert_rule(tmap, sorted([*done, *layers[:k]]), CPU))

        def gpu_fits(k: int, gpu: str = gpu) -> bool:
            return judge.memory(with_k(k)).device(gpu).fits

        k = _smallest(1, len(layers), gpu_fits)
        if k is None:
            return None
        moved += layers[:k]
    fixed = prepend_override(argv, expert_rule(tmap, sorted(moved), CPU))
    if not judge.fits(fixed):
        return None
    rule = expert_rule(tmap, sorted(moved), CPU)
    return judge.option("experts-to-cpu",
                        f"move the routed experts of {len(moved)} layer{'s' if len(moved) > 1 else ''} to the CPU: "
                        f"-ot '{rule}' (before the other -ot rules)", fixed)


def _experts_across(judge: _Judge, argv: list[str], placement: Placement, over: str,
                    to: str) -> FixOption | None:
    """Move as few of the over-budget GPU's last expert layers as make it fit, as many of them as ``to`` (a GPU with
    room) holds and the rest to the CPU, the CPU ones last (two -ot rules at most)."""
    tmap = judge.tmap
    layers = expert_layers(tmap, placement, over)[::-1]

    def with_k(k: int, n_gpu: int) -> list[str]:
        off = layers[:k]
        cpu, gpu = sorted(off[:k - n_gpu]), sorted(off[k - n_gpu:])
        out = list(argv)
        if cpu:
            out = prepend_override(out, expert_rule(tmap, cpu, CPU))
        if gpu:
            out = prepend_override(out, expert_rule(tmap, gpu, to))
        return out

    k = _smallest(1, len(layers), lambda n: judge.memory(with_k(n, 0)).device(over).fits)
    if k is None:
        return None
    n_gpu = _largest(1, k, lambda n: judge.memory(with_k(k, n)).device(to).fits
                     and judge.memory(with_k(k, n)).device(over).fits)
    if n_gpu is None or not judge.fits(with_k(k, n_gpu)):
        return None
    off = layers[:k]
    cpu, gpu = sorted(off[:k - n_gpu]), sorted(off[k - n_gpu:])
    what = " ".join(f"-ot '{expert_rule(tmap, ls, dev)}'" for ls, dev in ((gpu, to), (cpu, CPU)) if ls)
    return judge.option("experts-to-gpu", f"move the routed experts of {k} layer{'s' if k > 1 else ''} off {over}: "
                        f"{len(gpu)} to {to}, {len(cpu)} to the CPU: {what} (before the other -ot rules)",
                        with_k(k, n_gpu))


def _rebalanced_ts(judge: _Judge, argv: list[str], gpus: Sequence[str]) -> FixOption | None:
    """-ts in proportion to each GPU's memory (the engine's own layer rule maps it), plus the fewest expert layers
    to the CPU if that alone does not fit."""

    budgets = [judge.hw.gpus[i].free_bytes or judge.hw.gpus[i].total_bytes for i in range(len(gpus))]
    ts = ",".join(str(round(b / GIB)) for b in budgets)
    new = set_flag(argv, ("-ts", "--tensor-split"), ts)
    if new == list(argv):
        return None
    if judge.fits(new):
        return judge.option("ts", f"-ts {ts} (layers in proportion to each GPU's memory, mapped by the engine's own "
                            "layer rule)", new)
    return _and_experts_off(judge, new, "ts", f"-ts {ts}")


def _all_layers(judge: _Judge, argv: list[str]) -> FixOption | None:
    """Every layer offloaded (-ngl n_layer+1: attention and KV on the GPUs) and the fewest expert layers to the CPU
    that make it fit: the layout the planner itself uses for MoE models."""

    n = judge.tmap.params.n_layer + 1
    new = set_flag(argv, NGL_FLAGS, str(n))
    if judge.fits(new):
        return judge.option("ngl", f"-ngl {n}", new)
    return _and_experts_off(judge, new, "ngl", f"-ngl {n}")


def _and_experts_off(judge: _Judge, new: list[str], kind: str, change: str) -> FixOption | None:
    """``new`` (an edited command that does not fit yet) plus the fewest expert layers off its full GPUs; None when
    the CPU itself is over or no such move fits."""
    from planner.check import command_placement

    _, _, placement = command_placement(judge.tmap, judge.types, new, judge.hw, engine=judge.engine,
                                        run_overrides=judge.over)
    over = [d.device for d in judge.memory(new).devices if not d.fits]
    if CPU in over:
        return None
    opt = _experts_off(judge, new, placement, over)
    if opt is None:
        return None
    return FixOption(kind, f"{change} and {opt.change}", opt.argv, opt.command, opt.fits, opt.tg_tps, opt.pp_tps,
                     opt.moved_bytes, opt.free_bytes)


NCMOE_FLAGS = ("-ncmoe", "--n-cpu-moe")


def _ncmoe(judge: _Judge, argv: list[str], n_now: int, *, more: bool) -> FixOption | None:
    """The command's own -ncmoe knob: the smallest N above it that fits (``more``), or the smallest N below it that
    still fits (which layers the engine picks is its own rule: ik the last ones on one GPU, mainline the first)."""
    n_layer = judge.tmap.params.n_layer

    def with_n(n: int) -> list[str]:
        return set_flag(argv, NCMOE_FLAGS, str(n))

    n = (_smallest(n_now + 1, n_layer, lambda k: judge.fits(with_n(k))) if more
         else _smallest(0, n_now - 1, lambda k: judge.fits(with_n(k))))
    if n is None:
        return None
    return judge.option("ncmoe", f"-ncmoe {n} (was {n_now}: the engine keeps the routed experts of {n} layers on the "
                        "CPU)", with_n(n))


def _lower_ngl(judge: _Judge, argv: list[str], ngl_now: int) -> FixOption | None:
    k = _largest(0, ngl_now - 1, lambda n: judge.fits(set_flag(argv, NGL_FLAGS, str(n))))
    if k is None:
        return None
    return judge.option("ngl", f"-ngl {k} (all weights, attention and KV of {ngl_now - k} more of the first "
                        "layers on the CPU)", set_flag(argv, NGL_FLAGS, str(k)))


def _shorter_ctx(judge: _Judge, argv: list[str], ctx: int) -> FixOption | None:
    k = _largest(1, ctx // 256 - (1 if ctx % 256 == 0 else 0),
                 lambda n: judge.fits(set_flag(argv, CTX_FLAGS, str(n * 256))))
    if k is None:
        return None
    return judge.option("ctx", f"-c {k * 256}", set_flag(argv, CTX_FLAGS, str(k * 256)),
                        cost=f"context {ctx} -> {k * 256} tokens")


def _quantized_kv(judge: _Judge, argv: list[str], type_k: str, type_v: str) -> FixOption | None:
    if type_k == "q8_0" and type_v == "q8_0":
        return None
    new = set_flag(set_flag(argv, ("-ctk", "--cache-type-k"), "q8_0"), ("-ctv", "--cache-type-v"), "q8_0")
    if not judge.fits(new):
        return None
    return judge.option("kv", "-ctk q8_0 -ctv q8_0", new, cost=f"KV cache {type_k}/{type_v} -> q8_0/q8_0 "
                        "(half the bytes of f16; near-lossless, not free)")


def _experts_on(judge: _Judge, argv: list[str], placement: Placement, gpus: Sequence[str], *,
                fewest: bool = False) -> FixOption | None:
    """Bring the first CPU expert layers onto GPUs with room (one -ot rule per GPU): as many as still fit, or with
    ``fewest`` (the CPU is over budget) as few as make the CPU fit."""
    tmap = judge.tmap
    cpu_layers = expert_layers(tmap, placement, CPU)
    rules: list[str] = []
    taken: list[int] = []
    cur = list(argv)
    for gpu in gpus:
        left = [x for x in cpu_layers if x not in taken]

        def with_k(k: int, left: list[int] = left, gpu: str = gpu, base: tuple[str, ...] = tuple(cur)) -> list[str]:
            return prepend_override(base, expert_rule(tmap, left[:k], gpu))

        if fewest:
            k = _smallest(1, len(left), lambda n: judge.memory(with_k(n)).device(CPU).fits)
            if k is None:                   # not even all of them: take what this GPU holds, go on to the next
                def holds(n: int, g: str = gpu) -> bool:
                    return judge.memory(with_k(n)).device(g).fits

                k = _largest(1, len(left), holds)
        else:
            k = _largest(1, len(left), lambda n: judge.fits(with_k(n)))
        if k is None:
            continue
        cur = with_k(k)
        rules.append(expert_rule(tmap, left[:k], gpu))
        taken += left[:k]
        if fewest and judge.memory(cur).device(CPU).fits:
            break
    if not taken or not judge.fits(cur):
        return None
    what = " ".join(f"-ot '{r}'" for r in rules)
    return judge.option("experts-to-gpu", f"bring the routed experts of {len(taken)} CPU layer"
                        f"{'s' if len(taken) > 1 else ''} onto the GPU: {what}", cur)


def _raise_ngl(judge: _Judge, argv: list[str], ngl_now: int) -> FixOption | None:
    top = judge.tmap.params.n_layer + 1
    k = _largest(ngl_now + 1, top, lambda n: judge.fits(set_flag(argv, NGL_FLAGS, str(n))))
    if k is None:
        return None
    return judge.option("ngl", f"-ngl {k}", set_flag(argv, NGL_FLAGS, str(k)))


def _one_slot(judge: _Judge, argv: list[str], n_parallel: int) -> FixOption | None:
    """One server slot instead of several (mainline's default is 4 sharing a unified cache, engines.toml
    parallel_auto): the SWA cache, the recurrent state and the attention graph shrink with the slots."""
    if n_parallel <= 1:
        return None
    new = set_flag([a for a in argv if a not in ("-kvu", "--kv-unified")], ("-np", "--parallel"), "1")
    if not judge.fits(new):
        return None
    return judge.option("slots", "-np 1", new, cost=f"{n_parallel} server slots -> 1 (one request at a time)")


def propose_fix(tmap: TensorMap, types: Mapping[str, str], argv: Sequence[str], hw: Hardware, result: CheckResult,
                *, engine: str, run_overrides: Mapping[str, Any] | None = None,
                plan_command: Callable[[], tuple[Sequence[str], str]] | None = None) -> FixProposal | None:
    """The smallest change that makes ``argv`` fit (see the module docstring), or a faster command when it fits
    but leaves a GPU room for experts it keeps on the CPU (at least :data:`FASTER_MIN_GAIN` predicted gain);
    None when neither applies. ``plan_command()`` gives the plan's own command for the same mix and machine
    (argv and a note), which is checked the same way and reported beside it.
    """
    from planner.check import command_placement

    judge = _Judge(tmap, types, hw, engine, run_overrides)
    args = list(argv)
    parsed, run, placement = command_placement(tmap, types, args, hw, engine=engine, run_overrides=run_overrides)
    judge.original = placement
    mem = result.memory
    n_layer = tmap.params.n_layer
    ngl_now = min(parsed.ngl if parsed.ngl is not None else n_layer + 1, n_layer + 1)
    gpus = [d.device for d in mem.devices if d.device != CPU]
    options: list[FixOption] = []
    if not mem.fits:
        over = [d.device for d in mem.devices if not d.fits]
        reason = "does not fit: " + "; ".join(f"{d.device} over by {-d.free_bytes / GIB:.2f} GiB"
                                              for d in mem.devices if not d.fits)
        over_gpus = [g for g in over if g != CPU]
        if over_gpus:
            roomy = [g for g in gpus if g not in over and mem.device(g).free_bytes > 0]
            across = ([_experts_across(judge, args, placement, over_gpus[0], max(roomy, key=lambda g:
                                                                                  mem.device(g).free_bytes))]
                      if len(over_gpus) == 1 and roomy else [])
            ts = [_rebalanced_ts(judge, args, gpus)] if len(gpus) > 1 else []
            own = [_ncmoe(judge, args, parsed.n_cpu_moe, more=True)] if parsed.n_cpu_moe is not None else []
            for opt in (*own, *across, *ts, _experts_off(judge, args, placement, over_gpus),
                        _lower_ngl(judge, args, ngl_now), _all_layers(judge, args) if ngl_now <= n_layer else None):
                if opt is not None:
                    options.append(opt)
        elif CPU in over and gpus:
            opt = _experts_on(judge, args, placement, sorted(gpus, key=lambda g: -mem.device(g).free_bytes),
                              fewest=True)
            if opt is not None:
                options.append(opt)
        placement_fixes = sorted(options, key=lambda o: (-o.tg_tps, o.moved_bytes))
        others = [o for o in (_quantized_kv(judge, args, run.type_k, run.type_v), _one_slot(judge, args, run.n_parallel),
                              _shorter_ctx(judge, args, run.ctx)) if o is not None]
        fix = placement_fixes[0] if placement_fixes else None
        alternatives = tuple(placement_fixes[1:]) + tuple(others)
    else:
        room = sorted((g for g in gpus if mem.device(g).free_bytes > 0), key=lambda g: -mem.device(g).free_bytes)
        fewer = (_ncmoe(judge, args, parsed.n_cpu_moe, more=False)
                 if room and parsed.n_cpu_moe and not parsed.overrides else None)
        cands = [o for o in (fewer, _experts_on(judge, args, placement, room) if room else None,
                             _raise_ngl(judge, args, ngl_now) if room and ngl_now <= n_layer else None,
                             _all_layers(judge, args) if room and ngl_now <= n_layer else None)
                 if o is not None]
        gain = [o for o in cands if o.fits and (o.tg_tps >= result.speed.tg_tps * (1 + FASTER_MIN_GAIN)
                                                or o.pp_tps >= result.speed.pp_tps * (1 + FASTER_MIN_GAIN))]
        if not gain:
            return None
        gain.sort(key=lambda o: (-o.tg_tps, o.moved_bytes))
        fix, alternatives = gain[0], tuple(gain[1:])
        reason = ("fits, but slower than it could be: " + ", ".join(
            f"{g} has {mem.device(g).free_bytes / GIB:.2f} GiB free" for g in room)
            + f" while {len(expert_layers(tmap, placement, CPU))} layers' routed experts are on the CPU"
            + (f" and -ngl is {ngl_now} of {n_layer + 1}" if ngl_now <= n_layer else ""))
    plan_opt: FixOption | None = None
    plan_note = ""
    if plan_command is not None:
        plan_argv, plan_note = plan_command()
        if plan_argv:
            plan_opt = judge.option("plan", "the plan's own command for this mix and machine (place)",
                                    list(plan_argv))
    return FixProposal(reason, SMALLEST, fix, alternatives, plan_opt, plan_note)
