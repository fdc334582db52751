"""Launch emitters and parser: llama-server flags from a Plan, a user's command back into a placement.

Flag spellings come from ``data/engines.toml``.  ``-ot`` regexes are compressed into layer ranges
and verified by re-applying them (first match wins, regex_search) to every tensor name: the
result must equal the plan.  Scripts are written through :func:`planner.fileout.write_new_file`.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from dataclasses import dataclass, field

from planner.engines import engine_profile, engines
from planner.errors import EmitterError, EngineFlagError, UsageError
from planner.memory import CPU, Placement, RunConfig
from planner.regexes import compile_user_regex, layers_regex, roles_regex, search
from planner.tensors import TensorMap

__all__ = ["engine_profile", "engines"]   # re-exported from planner.engines for older imports


# ------------------------------------------------------------------------- regex compression

@dataclass(frozen=True, slots=True)
class OverrideRule:
    pattern: str
    device: str

    def text(self) -> str:
        return f"{self.pattern}={self.device}"


def default_devices(tmap: TensorMap, layer_device: Sequence[str], ngl_output_on_gpu: str | None) -> dict[str, str]:
    """Where each tensor goes without -ot: its layer's device; token_embd on CPU; output per -ngl."""
    out = {}
    for t in tmap.tensors:
        if t.layer is not None:
            out[t.name] = layer_device[t.layer]
        elif t.role == "token_embd":
            out[t.name] = CPU
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
    tensor_split: tuple[int, ...] = ()
    n_cpu_moe: int | None = None

    def shell(self, argv: Sequence[str] | None = None) -> str:
        return " ".join(shlex.quote(a) for a in (argv or self.argv))


def _ncmoe_rules(n: int) -> list[OverrideRule]:
    # mainline -ncmoe N: blk.i.ffn_(up|down|gate|gate_up)_(ch|)exps = CPU for i < N (llama.cpp common/arg.cpp,
    # --n-cpu-moe, llm_ffn_exps_block_regex)
    return [OverrideRule(rf"blk\.{i}\.ffn_(up|down|gate|gate_up)_(ch|)exps", CPU) for i in range(n)]


def build_launch(tmap: TensorMap, devices: Mapping[str, str], layer_device: Sequence[str], run: RunConfig,
                 model_path: str, *, host: str = "127.0.0.1", port: int = 8080,
                 server: str | None = None) -> LaunchCommand:
    """The llama-server (and llama-sweep-bench) command that reproduces a placement."""
    prof = engine_profile(run.engine)
    n_layer = tmap.params.n_layer
    gpus = sorted({d for d in layer_device if d != CPU})
    n_gpu_layers = sum(1 for d in layer_device if d != CPU)
    out_dev = devices.get("output.weight", devices.get("token_embd.weight", CPU))
    ngl = n_gpu_layers + 1 if (n_gpu_layers == n_layer and out_dev != CPU) else n_gpu_layers
    ngl_out = (gpus[-1] if gpus else None) if ngl > n_layer else None
    defaults = default_devices(tmap, layer_device, ngl_out)
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
    if run.flash_attn:
        args += list(prof["flash_attn"])
    args += list(prof["extra"])
    args += [prof["ngl"], str(ngl)]
    ts: tuple[int, ...] = ()
    if len(gpus) > 1:
        ts = tuple(sum(1 for d in layer_device if d == g) for g in gpus)
        args += [prof["tensor_split"], ",".join(map(str, ts))]
    if n_cpu_moe:
        args += [prof["n_cpu_moe"], str(n_cpu_moe)]
    for r in rules:
        args += [prof["override"], r.text()]
    args += [prof["ubatch"], str(run.ubatch), prof["batch"], str(run.batch)]
    if prof["amb"]:
        args += [prof["amb"], str(run.amb)]
    if run.load == "rtr" and prof["rtr"]:
        args.append(prof["rtr"])
    elif run.load in ("no-mmap", "rtr"):
        args.append(prof["no_mmap"])
    if run.threads:
        args += [prof["threads"], str(run.threads)]
    server_bin = server or prof["server"]
    model = ["-m", model_path]
    argv = (server_bin, *model, *args, "--host", host, "--port", str(port))
    sweep = ("llama-sweep-bench", *model, *args)
    return LaunchCommand(run.engine, tuple(argv), tuple(sweep), tuple(rules), ngl, ts, n_cpu_moe)


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
    fa = True if engine != "ik-2025" else False
    prof = engine_profile(engine)
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

    load = "rtr" if ("-rtr" in flags or "--run-time-repack" in flags) else (
        "no-mmap" if "--no-mmap" in flags else "mmap")
    if load == "mmap" and engine != "mainline" and (ot or "-ncmoe" in vals or "--n-cpu-moe" in vals
                                                    or "-cmoe" in flags or "--cpu-moe" in flags):
        load = "no-mmap"   # ik since 2026-03-26 (PR 1510, src/llama-load-tensors.cpp): a CPU override disables mmap
    run = RunConfig(engine=engine, ctx=num("-c", "--ctx-size", default=0),
                    type_k=vals.get("-ctk", vals.get("--cache-type-k", "f16")),
                    type_v=vals.get("-ctv", vals.get("--cache-type-v", "f16")), flash_attn=fa,
                    ubatch=num("-ub", "--ubatch-size", default=512), batch=num("-b", "--batch-size", default=2048),
                    amb=num("-amb", "--attention-max-batch", default=256), load=load,
                    threads=num("-t", "--threads", default=None))
    ts_raw = vals.get("-ts", vals.get("--tensor-split"))
    ts: tuple[float, ...] = ()
    if ts_raw:
        try:
            ts = tuple(float(x) for x in re.split(r"[,/]", ts_raw) if x)
        except ValueError:
            raise UsageError(f"-ts expects numbers, got {ts_raw!r}") from None
    return ParsedCommand(model=vals.get("-m", vals.get("--model")), run=run,
                         ngl=num("-ngl", "--gpu-layers", "--n-gpu-layers", default=None), overrides=tuple(ot),
                         tensor_split=ts, n_cpu_moe=num("-ncmoe", "--n-cpu-moe", default=None),
                         cpu_moe=("-cmoe" in flags or "--cpu-moe" in flags), ignored=tuple(ignored),
                         warnings=tuple(warnings))


def placement_from_command(tmap: TensorMap, cmd: ParsedCommand, gpus: Sequence[str]) -> Placement:
    """Apply -ngl, -ts, -ncmoe/-cmoe and -ot to every tensor, as the engine would."""
    n = tmap.params.n_layer
    ngl = n + 1 if cmd.ngl is None else cmd.ngl     # ik: unset -> 999 when a GPU is present
    if not gpus:
        ngl = 0
    n_gpu_layers = min(ngl, n)
    start = n - n_gpu_layers
    layer_device = [CPU] * n
    if gpus and n_gpu_layers:
        weights = list(cmd.tensor_split[:len(gpus)]) or [1.0] * len(gpus)
        weights += [0.0] * (len(gpus) - len(weights))
        total = sum(weights) or 1.0
        cum = []
        acc = 0.0
        for w in weights:
            acc += w / total
            cum.append(acc)
        for il in range(start, n):
            frac = (il - start) / n_gpu_layers
            gi = next((k for k, c in enumerate(cum) if frac < c), len(gpus) - 1)
            layer_device[il] = gpus[gi]
    out_dev = (layer_device[-1] if layer_device[-1] != CPU else gpus[-1]) if (gpus and ngl > n) else None
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
    return Placement(devices, tuple(layer_device), tuple(gpus) + (CPU,))


def export_script(launch: LaunchCommand, *, model_path: str, port: int, comments: Sequence[str]) -> str:
    """A bash script that runs the launch command; MODEL, PORT and LLAMA_SERVER are overridable.

    Rendered by :mod:`planner.scripts`, the one script renderer (comments and arguments quoted there).
    """
    from planner.scripts import command_lines, script

    argv = list(launch.argv)
    mi = argv.index("-m") + 1
    pi = argv.index("--port") + 1
    argv[0], argv[mi], argv[pi] = '"$LLAMA_SERVER"', '"$MODEL"', '"$PORT"'
    body = [f"default_model={shlex.quote(model_path)}",
            'MODEL="${GGUF_PLANNER_MODEL:-$default_model}"',
            f'PORT="${{PORT:-{port}}}"',
            f'LLAMA_SERVER="${{LLAMA_SERVER:-{shlex.quote(launch.argv[0])}}}"', "",
            *command_lines(argv, raw=(0, mi, pi), prefix="exec ")]
    return script(comments, body)
