"""Launch emitters and parser: llama-server flags from a Plan, a user's command back into a placement.

Flag spellings come from ``data/engines.toml``.  ``-ot`` regexes are compressed into layer ranges
and verified by re-applying them (first match wins, regex_search) to every tensor name: the
result must equal the plan.  Scripts are written through :func:`write_new_file`.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import EngineFlagError, OutputExistsError, UsageError
from planner.memory import CPU, Placement, RunConfig
from planner.tensors import TensorMap

DATA = Path(__file__).parent / "data"


@functools.cache
def engines() -> dict:
    return tomllib.loads((DATA / "engines.toml").read_text())


def engine_profile(name: str) -> dict:
    try:
        prof = engines()[name]
        if not isinstance(prof, dict):
            raise KeyError(name)
        return prof
    except KeyError:
        raise UsageError(f"unknown engine {name!r}", hint=f"choose one of {', '.join(engines())}") from None


# ------------------------------------------------------------------------- regex compression

def _range_regex(lo: int, hi: int) -> list[str]:
    """Regex alternatives matching exactly the decimal integers lo..hi (no leading zeros)."""
    if lo > hi:
        return []
    slo, shi = str(lo), str(hi)
    if len(slo) < len(shi):
        # split at the first power of ten above lo
        edge = 10 ** len(slo) - 1
        return _range_regex(lo, edge) + _range_regex(edge + 1, hi)
    if lo == hi:
        return [slo]
    # same length: longest common prefix, then digit ranges
    i = 0
    while slo[i] == shi[i]:
        i += 1
    prefix = slo[:i]
    rest = len(slo) - i - 1
    if slo[i + 1:] == "0" * rest and shi[i + 1:] == "9" * rest:
        d = slo[i] if slo[i] == shi[i] else f"[{slo[i]}-{shi[i]}]"
        return [prefix + d + "[0-9]" * rest]
    out: list[str] = []
    lo_tail_full = slo[i + 1:] == "0" * rest
    hi_tail_full = shi[i + 1:] == "9" * rest
    a, b = int(slo[i]), int(shi[i])
    if not lo_tail_full:
        out += [prefix + slo[i] + x for x in _suffix_from(slo[i + 1:])]
        a += 1
    if not hi_tail_full:
        b_hi = b - 1
    else:
        b_hi = b
    if a <= b_hi:
        d = str(a) if a == b_hi else f"[{a}-{b_hi}]"
        out.append(prefix + d + "[0-9]" * rest)
    if not hi_tail_full:
        out += [prefix + shi[i] + x for x in _suffix_to(shi[i + 1:])]
    return out


def _digits(a: int, b: int) -> str:
    return str(a) if a == b else f"[{a}-{b}]"


def _suffix_from(s: str) -> list[str]:
    """Patterns for all digit strings of len(s) that are >= s."""
    if not s:
        return [""]
    d, rest = int(s[0]), s[1:]
    if rest == "0" * len(rest):
        return [_digits(d, 9) + "[0-9]" * len(rest)]
    out = [s[0] + x for x in _suffix_from(rest)]
    if d < 9:
        out.append(_digits(d + 1, 9) + "[0-9]" * len(rest))
    return out


def _suffix_to(s: str) -> list[str]:
    """Patterns for all digit strings of len(s) that are <= s."""
    if not s:
        return [""]
    d, rest = int(s[0]), s[1:]
    if rest == "9" * len(rest):
        return [_digits(0, d) + "[0-9]" * len(rest)]
    out = []
    if d > 0:
        out.append(_digits(0, d - 1) + "[0-9]" * len(rest))
    out += [s[0] + x for x in _suffix_to(rest)]
    return out


def layers_regex(layers: Sequence[int]) -> str:
    """A regex group matching exactly these layer numbers, e.g. ``(1[2-9]|[2-8][0-9]|9[0-3])``."""
    xs = sorted(set(layers))
    runs: list[tuple[int, int]] = []
    for x in xs:
        if runs and x == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], x)
        else:
            runs.append((x, x))
    alts = [a for lo, hi in runs for a in _range_regex(lo, hi)]
    return alts[0] if len(alts) == 1 else "(" + "|".join(alts) + ")"


def _roles_regex(roles: Sequence[str]) -> str:
    roles = sorted(set(roles))
    m = [re.fullmatch(r"ffn_(\w+?)_exps", r) for r in roles]
    if len(roles) > 1 and all(m):
        return "ffn_(" + "|".join(x.group(1) for x in m) + ")_exps"
    if len(roles) == 1:
        return roles[0]
    return "(" + "|".join(roles) + ")"


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
    compiled = [(re.compile(r.pattern), r.device) for r in rules]
    out = {}
    for n in names:
        out[n] = next((dev for rx, dev in compiled if rx.search(n)), defaults[n])
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
    rules = []
    for (dev, roles), layers in sorted(buckets.items(), key=lambda kv: (min(kv[1]), kv[0])):
        rules.append(OverrideRule(rf"blk\.{layers_regex(layers)}\.{_roles_regex(roles)}", dev))
    return rules + others


def verify_overrides(tmap: TensorMap, rules: Sequence[OverrideRule], defaults: Mapping[str, str],
                     devices: Mapping[str, str]) -> None:
    """Re-apply the rules to every tensor name; any difference from the plan is a bug, never emitted."""
    got = apply_overrides([t.name for t in tmap.tensors], rules, defaults)
    bad = [n for n in got if got[n] != devices[n]]
    if bad:
        raise AssertionError(f"-ot rules do not reproduce the plan for {len(bad)} tensors, e.g. {bad[0]}: "
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
    # mainline -ncmoe N: blk.i.ffn_(up|down|gate|gate_up)_(ch|)exps = CPU for i < N (facts §4b)
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
        cpu_layers = sorted({t.layer for t in tmap.tensors if t.is_expert and devices[t.name] == CPU})
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


_VALUE_FLAGS = {"-m", "--model", "-c", "--ctx-size", "-ctk", "--cache-type-k", "-ctv", "--cache-type-v",
                "-ub", "--ubatch-size", "-b", "--batch-size", "-amb", "--attention-max-batch", "-ngl",
                "--gpu-layers", "--n-gpu-layers", "-ot", "--override-tensor", "-ts", "--tensor-split",
                "-ncmoe", "--n-cpu-moe", "-t", "--threads", "--host", "--port", "--alias", "-a", "-np",
                "--parallel", "-tb", "--threads-batch", "-mg", "--main-gpu", "-sm", "--split-mode",
                "--fit", "-fit", "--numa", "-mla", "--mla-use", "-ser", "--fit-margin"}


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
        if a in _VALUE_FLAGS:
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

    def num(*names: str, default=None, cast=int):
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
        load = "no-mmap"   # ik since 2026-03-26: any CPU override disables the mmap buffer (facts §4a)
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
    exps_layers = sorted({t.layer for t in tmap.tensors if t.is_expert})
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


# ------------------------------------------------------------------------- files

def write_new_file(path: Path, content: str | bytes, *, force: bool = False, mode: int | None = None) -> None:
    """Write atomically (temp file + rename); refuse to overwrite unless ``force``.

    Raises:
        OutputExistsError: the file exists and ``force`` is false.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(str(path))
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_script(launch: LaunchCommand, *, model_path: str, port: int, comments: Sequence[str]) -> str:
    """A bash script that runs the launch command; MODEL, PORT and LLAMA_SERVER are overridable."""
    argv = list(launch.argv)
    mi = argv.index("-m") + 1
    pi = argv.index("--port") + 1
    fixed = [shlex.quote(a) for a in argv[1:]]
    fixed[mi - 1] = '"$MODEL"'
    fixed[pi - 1] = '"$PORT"'
    lines = ["#!/usr/bin/env bash", "# Generated by gguf-planner. Predictions below are estimates unless marked exact.",
             *[f"# {c}" for c in comments],
             "set -euo pipefail", "",
             f"default_model={shlex.quote(model_path)}",
             'MODEL="${GGUF_PLANNER_MODEL:-$default_model}"',
             f'PORT="${{PORT:-{port}}}"',
             f'LLAMA_SERVER="${{LLAMA_SERVER:-{shlex.quote(argv[0])}}}"', "",
             'exec "$LLAMA_SERVER" \\']
    chunks: list[str] = []
    i = 0
    while i < len(fixed):
        if fixed[i].startswith("-") and i + 1 < len(fixed) and not fixed[i + 1].startswith("-"):
            chunks.append(f"{fixed[i]} {fixed[i + 1]}")
            i += 2
        else:
            chunks.append(fixed[i])
            i += 1
    for j, c in enumerate(chunks):
        lines.append(f"    {c}" + (" \\" if j < len(chunks) - 1 else ""))
    return "\n".join(lines) + "\n"
