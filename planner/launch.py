"""Launch emitters and parser: llama-server flags from a Plan, a user's command back into a placement.

Flag spellings come from ``data/engines.toml``.  ``-ot`` regexes are compressed into layer ranges
and verified by re-applying them (first match wins, regex_search) to every tensor name: the
result must equal the plan.  Scripts are written through :func:`planner.fileout.write_new_file`.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from dataclasses import dataclass, field

from planner.engines import engine_profile, engines, server_parallel
from planner.errors import EmitterError, EngineFlagError, UsageError
from planner.memory import CPU, Placement, RunConfig
from planner.regexes import compile_user_regex, layers_regex, roles_regex, search
from planner.tensors import TensorMap

__all__ = ["engine_profile", "engines", "server_parallel"]   # re-exported from planner.engines


# ------------------------------------------------------------------------- regex compression

@dataclass(frozen=True, slots=True)
class OverrideRule:
    pattern: str
    device: str

    def text(self) -> str:
        return f"{self.pattern}={self.device}"


def default_devices(tmap: TensorMap, layer_device: Sequence[str], ngl_output_on_gpu: str | None) -> dict[str, str]:
    """Where each tensor goes without -ot: its layer's device; token_embd on CPU; a norm of the embedding with layer
    0 (roles.on_first_layer); output per -ngl."""
    from planner.roles import on_first_layer

    out = {}
    for t in tmap.tensors:
        if t.layer is not None:
            out[t.name] = layer_device[t.layer]
        elif t.role == "token_embd":
            out[t.name] = CPU
        elif on_first_layer(tmap, t.name) and layer_device:
            out[t.name] = layer_device[0]
        else:
            out[t.name] = ngl_output_on_gpu or CPU
    return out


def apply_overrides(names: Sequence[str], rules: Sequence[OverrideRule], defaults: Mapping[str, str]) -> dict[str, str]:
    """llama.cpp -ot semantics: regex_search, the first matching override wins."""
    compiled = [(compile_user_regex(r.pattern, "-ot"), r.device) for r in rules]
    out = {}
    for n in names:
        out[n] = next((dev for rx, dev in compiled if search(rx, n)), defaults[n])
    return out


def compress_overrides(tmap: TensorMap, devices: Mapping[str, str], defaults: Mapping[str, str]) -> list[OverrideRule]:
    """Short -ot rules moving exactly the tensors whose planned device differs from the default."""
    moved: dict[tuple[str, int], str] = {}
    others: list[OverrideRule] = []
    for t in tmap.tensors:
        dev = devices[t.name]
        if dev == defaults[t.name]:
            continue
        if t.layer is None:
            others.append(OverrideRule("^" + re.escape(t.name).replace(r"\_", "_"), dev))
        else:
            moved[(t.role, t.layer)] = dev
    # layers with the same set of moved roles to the same device share one rule
    per_layer: dict[int, dict[str, list[str]]] = {}
    for (role, layer), dev in moved.items():
        per_layer.setdefault(layer, {}).setdefault(dev, []).append(role)
    buckets: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for layer, by_dev in per_layer.items():
        for dev, roles in by_dev.items():
            buckets.setdefault((dev, tuple(sorted(roles))), []).append(layer)
    rules: list[OverrideRule] = []
    for (dev, role_set), layers in sorted(buckets.items(), key=lambda kv: (min(kv[1]), kv[0])):
        rules.append(OverrideRule(rf"blk\.{layers_regex(layers)}\.{roles_regex(role_set)}", dev))
    return rules + others


def verify_overrides(tmap: TensorMap, rules: Sequence[OverrideRule], defaults: Mapping[str, str],
                     devices: Mapping[str, str]) -> None:
    """Re-apply the rules to every tensor name; any difference from the plan is a bug, never emitted.

    Raises:
        EmitterError: the rules do not reproduce the plan.
    """
    got = apply_overrides([t.name for t in tmap.tensors], rules, defaults)
    bad = [n for n in got if got[n] != devices[n]]
    if bad:
        raise EmitterError(f"-ot rules do not reproduce the plan for {len(bad)} tensors, e.g. {bad[0]}: "
                           f"{got[bad[0]]} != {devices[bad[0]]}")


# ------------------------------------------------------------------------- launch command

@dataclass(frozen=True, slots=True)
class LaunchCommand:
    engine: str
    argv: tuple[str, ...]
    sweep_argv: tuple[str, ...]
    overrides: tuple[OverrideRule, ...]
    ngl: int
    tensor_split: tuple[float, ...] = ()
    n_cpu_moe: int | None = None
    split_note: str = ""       # how -ngl/-ts reproduce the plan's layer map under the engine's rule

    def shell(self, argv: Sequence[str] | None = None) -> str:
        from planner.quoting import shell_quote

        return " ".join(shell_quote(a) for a in (argv or self.argv))


def _num(x: float) -> str:
    """-ts values as short as they print: 30, 176885, 0.5."""
    return f"{x:.3f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def _ranges(layer_device: Sequence[str]) -> str:
    out: list[str] = []
    start = 0
    for i in range(1, len(layer_device) + 1):
        if i == len(layer_device) or layer_device[i] != layer_device[start]:
            out.append(f"{start}-{i - 1} {layer_device[start]}")
            start = i
    return ", ".join(out)


def _ncmoe_rules(n: int) -> list[OverrideRule]:
    # mainline -ncmoe N: blk.i.ffn_(up|down|gate|gate_up)_(ch|)exps = CPU for i < N (llama.cpp common/arg.cpp,
    # --n-cpu-moe, llm_ffn_exps_block_regex)
    return [OverrideRule(rf"blk\.{i}\.ffn_(up|down|gate|gate_up)_(ch|)exps", CPU) for i in range(n)]


def _gpu_names(layer_device: Sequence[str], devices: Mapping[str, str], gpus: Sequence[str] | None) -> list[str]:
    """The engine's GPU list: given, else CUDA0..CUDA<max used> (an unused GPU in between still counts in -ts)."""
    if gpus is not None:
        return list(gpus)
    used = {d for d in (*layer_device, *devices.values()) if d != CPU}
    idx = sorted(int(d[4:]) for d in used if d.startswith("CUDA") and d[4:].isdigit())
    return [f"CUDA{i}" for i in range(idx[-1] + 1)] if idx else sorted(used)


def engine_output_device(engine: str, layer_device: Sequence[str], out_dev: str) -> str:
    """Where the engine can put the output layer (output_norm, logits): ik/ik-2025 offload it only with every
    repeating layer (-ngl > n_layer), mainline always with the first offloaded layer (its -ngl counts the output
    first); in both cases on the last layer's device. Anything else takes an explicit -ot for output.weight."""
    gpu_layers = [d for d in layer_device if d != CPU]
    if not gpu_layers:
        return out_dev if engine == "mainline" else CPU
    if engine == "mainline":
        return layer_device[-1]
    return layer_device[-1] if (len(gpu_layers) == len(layer_device) and out_dev != CPU) else CPU


def build_launch(tmap: TensorMap, devices: Mapping[str, str], layer_device: Sequence[str], run: RunConfig,
                 model_path: str, *, host: str = "127.0.0.1", port: int = 8080,
                 server: str | None = None, types: Mapping[str, str] | None = None,
                 gpus: Sequence[str] | None = None, rpc: str | None = None,
                 output_device: str | None = None) -> LaunchCommand:
    """The llama-server (and llama-sweep-bench) command that reproduces a placement.

    ``-ngl``/``-ts`` come from :func:`planner.layer_split.flags_for_names`: values under which the engine profile's
    own layer rule (ik's greedy fill by layer size, mainline's and ik-2025's ``upper_bound``) puts every layer,
    and so its KV cache, on the planned device; the map is re-derived from the emitted values before anything
    is returned. ``types`` (the mix) sizes ik's layers; ``gpus`` is the engine's device list when it has GPUs the
    plan leaves empty.  On an RPC cluster ``devices``/``layer_device``
    carry the engine's own names (``RPC0[host:port]``), ``gpus`` is its device order (remote devices first) and
    ``rpc`` the ``--rpc`` value (:mod:`planner.rpc`). ``output_device``: a tied output's planned layer device
    (:attr:`planner.planning.Plan.output_device`).

    Raises:
        EmitterError: no -ngl/-ts reproduces the plan's layer map, or the -ot rules do not reproduce it.
    """
    from planner.engine_buffers import flags_for_names, map_for_flags, run_sizes

    prof = engine_profile(run.engine)
    gpu_list = _gpu_names(layer_device, devices, gpus)
    out_dev = devices.get("output.weight", output_device or CPU)     # a tied output: its layer's planned device
    ngl_out = engine_output_device(run.engine, layer_device, out_dev)
    sizes = run_sizes(run.engine, tmap, types, ctx=run.ctx, type_k=run.type_k, type_v=run.type_v,
                      ubatch=run.ubatch, batch=run.batch, flash_attn=run.flash_attn, amb=run.amb,
                      n_seq=run.n_parallel)
    ts: tuple[float, ...] = ()
    if gpu_list:
        flags = flags_for_names(run.engine, tmap, gpu_list, layer_device, ngl_out, sizes=sizes)
        if flags is None:
            raise EmitterError(f"no -ngl/-ts makes {run.engine} put the layers where the plan does "
                               f"({_ranges(layer_device)})")
        ngl = flags.n_gpu_layers
        if len(gpu_list) > 1 and flags.tensor_split is not None:
            ts = tuple(int(x) if x == int(x) else x for x in flags.tensor_split)   # JSON: 47, not 47.0
        again = map_for_flags(run.engine, tmap, gpu_list, [1] * len(gpu_list), n_gpu_layers=ngl,
                              tensor_split=ts or None, sizes=sizes)
        if again.layer_device != tuple(layer_device) or again.output_device != ngl_out:
            raise EmitterError(f"-ngl {ngl} -ts {ts} does not reproduce the plan's layer map under {run.engine}")
    else:
        ngl = 0
    split_note = ""
    if len(gpu_list) > 1 and ts:
        # a device the engine lists twice (ik over RPC, planner.rpc.offload_list) gets its layers at its first entry
        first = [g not in gpu_list[:i] for i, g in enumerate(gpu_list)]
        layers = [sum(1 for d in layer_device if d == g) if f else 0 for g, f in zip(gpu_list, first)]
        counts = [n + (1 if ngl_out == g and f else 0) for n, g, f in zip(layers, gpu_list, first)]
        unit = ("layers per GPU, the output layer counted" if list(ts) == counts else
                "layers per GPU" if list(ts) == layers else
                "MiB per GPU of ik's own layer sizes: weights + KV per layer, one compute buffer per GPU")
        if not all(first) or CPU in gpu_list:
            unit += "; one value per entry of the engine's device list, which repeats each RPC device"
            unit += " and has a CPU entry" if CPU in gpu_list else ""
        where = _ranges(layer_device).replace(" CUDA", " on CUDA").replace(" CPU", " on CPU")
        out = f", the output on {ngl_out}" if ngl_out != CPU else ""
        split_note = (f"-ngl {ngl} -ts {','.join(_num(x) for x in ts)} makes {run.engine} put layers {where}{out} "
                      f"as planned, re-derived with its own layer rule (-ts in {unit})")
    defaults = default_devices(tmap, layer_device, None if ngl_out == CPU else ngl_out)
    rules = compress_overrides(tmap, devices, defaults)
    n_cpu_moe = None
    if prof["n_cpu_moe"] and rules:
        cpu_layers = sorted({t.layer for t in tmap.tensors
                             if t.is_expert and t.layer is not None and devices[t.name] == CPU})
        n = len(cpu_layers)
        if cpu_layers == list(range(n)):
            alt = _ncmoe_rules(n)
            extra = [r for r in rules if not r.pattern.startswith("blk")]
            if apply_overrides([t.name for t in tmap.tensors], alt + extra, defaults) == dict(devices):
                n_cpu_moe, rules = n, extra
    check_rules = (_ncmoe_rules(n_cpu_moe) if n_cpu_moe else []) + list(rules)
    verify_overrides(tmap, check_rules, defaults, devices)
    args: list[str] = [prof["ctx"], str(run.ctx), prof["type_k"], run.type_k, prof["type_v"], run.type_v]
    args += list(prof["flash_attn"] if run.flash_attn else prof["no_flash_attn"])
    args += list(prof["extra"])
    args += [prof["ngl"], str(ngl)]
    if ts:
        args += [prof["tensor_split"], ",".join(_num(x) for x in ts)]
    if n_cpu_moe:
        args += [prof["n_cpu_moe"], str(n_cpu_moe)]
    for r in rules:
        args += [prof["override"], r.text()]
    args += [prof["ubatch"], str(run.ubatch), prof["batch"], str(run.batch)]
    if prof["amb"]:
        args += [prof["amb"], str(run.amb)]
    # -np always where the server's default is not a number of slots (mainline's auto: 4 unified), else when it
    # differs; -kvu where the run shares one cache (parse_server_command reads both back)
    if prof["parallel"] and run.n_parallel != prof["parallel_default"]:
        args += [prof["parallel"], str(run.n_parallel)]
    if run.kv_unified and prof["kv_unified"]:
        args.append(prof["kv_unified"])
    if run.swa_full and prof.get("swa_full"):
        args.append(prof["swa_full"])
    if run.load == "rtr" and prof["rtr"]:
        args.append(prof["rtr"])
    elif run.load in ("no-mmap", "rtr"):
        args.append(prof["no_mmap"])
    if run.threads:
        args += [prof["threads"], str(run.threads)]
    # what a parsed command carries beyond the defaults (check's "the plan's own command" keeps the user's)
    if run.threads_batch:
        args += [prof["threads_batch"], str(run.threads_batch)]
    if run.numa:
        args += [prof["numa"], run.numa]
    if run.mla != 3 and prof["mla"]:
        args += [prof["mla"], str(run.mla)]
    server_bin = server or prof["server"]
    model = ["-m", model_path] + (["--rpc", rpc] if rpc else [])
    mmproj: list[str] = []
    if run.mmproj:
        mmproj = [prof["mmproj"], run.mmproj] + ([] if run.mmproj_offload else [prof["no_mmproj_offload"]])
    cram = [prof["cache_ram"], str(run.cache_ram_mib)] if run.cache_ram_mib is not None and prof["cache_ram"] else []
    if run.ctx_checkpoints is not None and prof["ctx_checkpoints"]:
        cram = [prof["ctx_checkpoints"][0], str(run.ctx_checkpoints), *cram]
    argv = (server_bin, *model, *args, *mmproj, *cram, "--host", host, "--port", str(port))
    sweep = ("llama-sweep-bench", *model, *args)
    return LaunchCommand(run.engine, tuple(argv), tuple(sweep), tuple(rules), ngl, ts, n_cpu_moe, split_note)


# ------------------------------------------------------------------------- binary check

_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def known_flags(help_text: str) -> set[str]:
    """Flags a binary's --help mentions (both short and long spellings)."""
    return set(_FLAG.findall(help_text))


def check_flags(argv: Sequence[str], help_text: str) -> None:
    """Refuse any flag the binary does not list in its --help.

    Raises:
        EngineFlagError: naming the unknown flags.
    """
    known = known_flags(help_text)
    if "-ngl" not in known and "--gpu-layers" not in known:
        known |= set(engines()["help_gpu_only"])   # a CPU build's help omits the offload flags
    unknown = [a for a in argv[1:] if a.startswith("-") and _FLAG.fullmatch(a) and a not in known]
    if unknown:
        raise EngineFlagError(f"the binary does not know {', '.join(dict.fromkeys(unknown))}",
                              hint="choose the matching --engine profile (ik, ik-2025, mainline)")


def help_of_binary(path: str) -> str:
    try:
        res = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineFlagError(f"cannot run {path} --help: {exc}") from exc
    return res.stdout + res.stderr


# ------------------------------------------------------------------------- parse a user's command

@dataclass(frozen=True, slots=True)
class ParsedCommand:
    """A user's llama-server command line, reduced to what changes memory and speed."""

    model: str | None
    run: RunConfig
    ngl: int | None
    overrides: tuple[OverrideRule, ...]
    tensor_split: tuple[float, ...]
    n_cpu_moe: int | None
    cpu_moe: bool
    ignored: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())   # flags the engine rejects or reads differently
    rpc: tuple[str, ...] = field(default=())        # --rpc endpoints, in order (planner.cluster_plan.check_cluster)


def parse_server_command(argv: Sequence[str], engine: str = "ik") -> ParsedCommand:
    """Parse a llama-server command line (the binary name first or not).

    Raises:
        UsageError: a flag lacks its value or a number is malformed.
    """
    args = list(argv)
    if args and not args[0].startswith("-"):
        args = args[1:]
    vals: dict[str, str] = {}
    ot: list[OverrideRule] = []
    flags: set[str] = set()
    ignored: list[str] = []
    prof = engine_profile(engine)
    fa = bool(prof["flash_attn_default"])
    kvu = False
    value_flags = set(engines()["server_value_flags"])
    warnings: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in prof["removed"]:
            warnings.append(f"{a}: {prof['removed'][a]}")
        if a in ("-fa", "--flash-attn"):
            nxt = args[i + 1] if i + 1 < len(args) else ""
            if nxt in ("on", "off", "auto", "0", "1"):
                fa = nxt in ("on", "auto", "1")
                i += 2
            else:
                if prof["fa_takes_value"]:
                    warnings.append(f"bare {a}: {engine} expects a value (-fa on); it would take "
                                    f"{nxt or 'nothing'!r} as the value and fail")
                fa = True
                i += 1
            continue
        if a in ("-no-fa", "--no-flash-attn"):
            fa = False
            i += 1
            continue
        if a in ("-kvu", "--kv-unified", "-no-kvu", "--no-kv-unified"):
            kvu = a in ("-kvu", "--kv-unified")        # the last one given wins (common/arg.cpp:1724-1730)
        if a in value_flags:
            if i + 1 >= len(args):
                raise UsageError(f"{a} needs a value")
            v = args[i + 1]
            if a in ("-ot", "--override-tensor"):
                for item in v.split(","):
                    if "=" not in item:
                        raise UsageError(f"-ot item {item!r} is not regex=BUFFER")
                    pat, dev = item.split("=", 1)
                    ot.append(OverrideRule(pat, dev.upper() if dev.lower() == "cpu" else dev))
            else:
                vals[a] = v
            i += 2
            continue
        if a.startswith("-"):
            flags.add(a)
        else:
            ignored.append(a)
        i += 1

    def num(*names: str, default: Any = None, cast: Callable[[str], Any] = int) -> Any:
        for n in names:
            if n in vals:
                try:
                    return cast(vals[n])
                except ValueError:
                    raise UsageError(f"{n} expects a number, got {vals[n]!r}") from None
        return default

    threads = num("-t", "--threads")
    load = "rtr" if ("-rtr" in flags or "--run-time-repack" in flags) else (
        "no-mmap" if "--no-mmap" in flags else "mmap")
    if load == "mmap" and prof["cpu_override_disables_mmap"] and (
            ot or "-ncmoe" in vals or "--n-cpu-moe" in vals or "-cmoe" in flags or "--cpu-moe" in flags):
        load = "no-mmap"   # ik since 2026-03-26 (PR 1510, src/llama-load-tensors.cpp): a CPU override disables mmap
    ckpt = num(*prof["ctx_checkpoints"], default=None) if prof["ctx_checkpoints"] else None
    if ckpt is not None and ckpt < 0:
        raise UsageError(f"{prof['ctx_checkpoints'][0]} expects a number of checkpoints per slot (0: none), got {ckpt}")
    n_parallel, kv_unified, note = server_parallel(engine, num("-np", "--parallel"), kvu)
    if note:
        warnings.append(note)
    cram = num("-cram", "--cache-ram", default=None)
    if cram is not None and cram < -1:
        raise UsageError(f"-cram expects MiB (-1: no limit, 0: off), got {cram}")
    run = RunConfig(engine=engine, ctx=num("-c", "--ctx-size", default=0),
                    type_k=vals.get("-ctk", vals.get("--cache-type-k", "f16")),
                    type_v=vals.get("-ctv", vals.get("--cache-type-v", "f16")), flash_attn=fa,
                    ubatch=num("-ub", "--ubatch-size", default=512), batch=num("-b", "--batch-size", default=2048),
                    amb=num("-amb", "--attention-max-batch", default=256), load=load,
                    threads=threads if threads is not None and threads > 0 else None,
                    threads_batch=num("-tb", "--threads-batch", default=None), numa=vals.get("--numa"),
                    mmproj=vals.get("--mmproj", vals.get("-mm")),
                    mmproj_offload="--no-mmproj-offload" not in flags,
                    cache_ram_mib=cram, ctx_checkpoints=ckpt,
                    n_parallel=n_parallel, kv_unified=kv_unified, mla=num("-mla", "--mla-use", default=3),
                    swa_full=engine == "mainline" and "--swa-full" in flags)
    ts_raw = vals.get("-ts", vals.get("--tensor-split"))
    ts: tuple[float, ...] = ()
    if ts_raw:
        try:
            ts = tuple(float(x) for x in re.split(r"[,/]", ts_raw) if x)
        except ValueError:
            raise UsageError(f"-ts expects numbers, got {ts_raw!r}") from None
        if not all(math.isfinite(x) and x >= 0 for x in ts) or not any(x > 0 for x in ts):
            raise UsageError(f"-ts {ts_raw}: the split needs finite, non-negative proportions, at least one above 0")
    for names, lo, what in ((("-c", "--ctx-size"), 0, "0 (the model's context) or more"),
                            (("-ngl", "--gpu-layers", "--n-gpu-layers"), 0, "0 or more (999: all layers)"),
                            (("-ncmoe", "--n-cpu-moe"), 0, "0 or more"), (("-ub", "--ubatch-size"), 1, "1 or more"),
                            (("-b", "--batch-size"), 1, "1 or more"), (("-amb", "--attention-max-batch"), 0,
                                                                        "0 or more")):
        value = num(*names)
        if value is not None and not lo <= value <= (1 << 30):
            raise UsageError(f"{next(n for n in names if n in vals)} {value}: impossible value, allowed {what}")
    if threads is not None and threads <= 0:
        warnings.append(f"-t {threads}: the engine reads a value <= 0 as all hardware threads; "
                        "this check assumes the physical cores")
    known = value_flags | set(engines()["help_gpu_only"]) | set(engines()["server_switches"]) | set(prof["removed"])
    for flag in sorted(flags - known):
        warnings.append(f"{flag}: not a llama-server flag gguf-planner knows; it is ignored here and the engine "
                        "may reject it")
    return ParsedCommand(model=vals.get("-m", vals.get("--model")), run=run,
                         ngl=num("-ngl", "--gpu-layers", "--n-gpu-layers", default=None), overrides=tuple(ot),
                         tensor_split=ts, n_cpu_moe=num("-ncmoe", "--n-cpu-moe", default=None),
                         cpu_moe=("-cmoe" in flags or "--cpu-moe" in flags), ignored=tuple(ignored),
                         warnings=tuple(warnings), rpc=tuple(e for e in vals.get("--rpc", "").split(",") if e))


def placement_from_command(tmap: TensorMap, cmd: ParsedCommand, gpus: Sequence[str], *,
                           types: Mapping[str, str] | None = None,
                           gpu_free_bytes: Sequence[int] | None = None) -> Placement:
    """Apply -ngl, -ts, -ncmoe/-cmoe and -ot to every tensor, as the engine would.

    The layer map is the engine profile's own rule (:func:`planner.layer_split.map_for_flags`): ik's greedy
    fill needs the mix (``types``) for its layer sizes, and every rule the GPUs' free memory when ``-ts`` is absent
    (``gpu_free_bytes``; default: equal).
    """
    from planner.engine_buffers import map_for_flags, run_sizes

    run = cmd.run
    sizes = run_sizes(run.engine, tmap, types, ctx=run.ctx or tmap.params.n_ctx_train, type_k=run.type_k,
                      type_v=run.type_v, ubatch=run.ubatch, batch=run.batch, flash_attn=run.flash_attn,
                      amb=run.amb, n_seq=run.n_parallel) if gpus else None
    free = list(gpu_free_bytes) if gpu_free_bytes is not None else [24 << 30] * len(gpus)
    named = map_for_flags(run.engine, tmap, list(gpus), free, n_gpu_layers=cmd.ngl,
                          tensor_split=cmd.tensor_split or None, sizes=sizes)
    layer_device = list(named.layer_device)
    out_dev = None if named.output_device == CPU else named.output_device
    defaults = default_devices(tmap, layer_device, out_dev)
    rules = list(cmd.overrides)
    exps_layers = sorted({t.layer for t in tmap.tensors if t.is_expert and t.layer is not None})
    if cmd.cpu_moe:
        rules.append(OverrideRule(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps", CPU))
    elif cmd.n_cpu_moe:
        k = min(cmd.n_cpu_moe, len(exps_layers))
        chosen = exps_layers[:k] if cmd.run.engine == "mainline" else exps_layers[len(exps_layers) - k:]
        rules += [OverrideRule(rf"blk\.{i}\.ffn_(up|down|gate|gate_up)_(ch|)exps", CPU) for i in chosen]
    devices = apply_overrides([t.name for t in tmap.tensors], rules, defaults)
    for name, dev in devices.items():
        if dev != CPU and dev not in gpus:
            raise UsageError(f"-ot sends {name} to {dev}, but this machine has "
                             f"{', '.join(gpus) or 'no GPU'}")
    return Placement(devices, tuple(layer_device), tuple(gpus) + (CPU,), output_device=named.output_device)


def export_script(launch: LaunchCommand, *, model_path: str, port: int, comments: Sequence[str]) -> str:
    """A bash script that runs the launch command; MODEL, PORT and LLAMA_SERVER are overridable.

    Every value is rendered by :func:`planner.quoting.shell_quote`; ``comments`` are complete ``#`` lines from
    :func:`planner.quoting.comment_line`, or plain text, which is quoted onto a line of its own.
    """
    from planner.quoting import comment_line, shell_quote

    argv = list(launch.argv)
    mi = argv.index("-m") + 1
    pi = argv.index("--port") + 1
    fixed = [shell_quote(a) for a in argv[1:]]
    fixed[mi - 1] = '"$MODEL"'
    fixed[pi - 1] = '"$PORT"'
    # complete lines from comment_line pass as they are; any other text is one quoted value of its own line
    rendered = [c if c.startswith("# ") and c.isprintable() else comment_line("{}", c) for c in comments]
    lines = ["#!/usr/bin/env bash",
             comment_line("Generated by gguf-planner. Predictions below are estimates unless marked exact."),
             *rendered,
             "set -euo pipefail", "",
             f"default_model={shell_quote(model_path)}",
             'MODEL="${GGUF_PLANNER_MODEL:-$default_model}"',
             f'PORT="${{PORT:-{shell_quote(int(port))}}}"',
             f'LLAMA_SERVER="${{LLAMA_SERVER:-{shell_quote(argv[0])}}}"', "",
             'exec "$LLAMA_SERVER" \\']
    from planner.scripts import pair_flags

    chunks = pair_flags(fixed)
    for j, c in enumerate(chunks):
        lines.append(f"    {c}" + (" \\" if j < len(chunks) - 1 else ""))
    return "\n".join(lines) + "\n"
