"""Standing fuzz harness: mutated GGUF headers through inspect / footprint / place / plan, in-process.

Every case starts from a real fixture (``tests/fixtures/ik`` and, when present, ``/work/shared/fixtures/ik``
or ``--fixtures DIR``), applies a short list of mutations and runs the four commands through the CLI's
own entry point in a forked child (so a hang can be killed and each case's peak RSS measured).  Outcomes:

- ``ok``: exit 0 (or exit 2 from `place`/`plan` when the model does not fit: also a typed answer);
- ``typed``: a ``PlannerError`` or a click usage error: exit 2..7, one line;
- ``internal``: anything else (exit 70 for a user): these are the bugs;
- ``hang``: a command ran past ``--limit`` seconds and was killed.

Mutations (each a JSON-able op, so a failing case is saved as its fixture name plus ops, never as a file):
byte flips, truncation, huge counts and lengths, hostile hyperparameters (zero, negative, NaN/inf, huge,
wrong value types), renamed/dropped/duplicated tensors, unknown type ids, bad shapes, and split
mismatches (split.no/count/tensors.count, a missing or swapped shard).

    python3 benchmarks/fuzz_headers.py --cases 2000 [--seed 1] [--limit 10] [--save failures.jsonl]
    python3 benchmarks/fuzz_headers.py --replay failures.jsonl

Prints counts per outcome and per mutation kind, the slowest cases and the peak RSS of a child.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIXTURE_DIRS = (ROOT / "tests" / "fixtures" / "ik", Path("/work/shared/fixtures/ik"))
HW = ("--vram", "8", "--ram", "16")

# ----------------------------------------------------------------------------------------- GGUF model
# An independent writer (struct only; layout of ggml gguf.cpp), so the harness does not test the reader
# with itself.

_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


@dataclass
class Model:
    version: int
    kv: list[list[Any]]          # [key, vtype, value, elem_type]
    tensors: list[list[Any]]     # [name, shape(list), type_id]
    alignment: int = 32
    byte_ops: list[list[Any]] = field(default_factory=list)
    size_delta: int = 0


def _s(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def _val(vtype: int, value: Any, elem: int | None) -> bytes:
    if vtype == STR:
        return _s(value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass"))
    if vtype == ARR:
        if isinstance(value, dict):      # a declared-but-absent array: {"count": n} with no bytes behind it
            return struct.pack("<iQ", elem, value["count"])
        return struct.pack("<iQ", elem, len(value)) + b"".join(_val(elem, v, None) for v in value)
    fmt = _FMT.get(vtype)
    if fmt is None:
        return b""
    try:
        return struct.pack("<" + fmt, value)
    except struct.error:
        return struct.pack("<" + fmt, 0)


def _nbytes(type_id: int, shape: list[int]) -> int:
    from planner.quants import catalogue

    try:
        return catalogue().by_id(type_id).tensor_bytes(shape)
    except Exception:  # noqa: BLE001 - unknown id or bad row: the reader must say so, the writer guesses 0
        return 0


def _pad(n: int, a: int) -> int:
    return (n + a - 1) // a * a if a > 0 else n


def encode(m: Model) -> tuple[bytes, int]:
    """Header bytes and the file size the header implies (before ``size_delta``)."""
    out = [b"GGUF", struct.pack("<IQQ", m.version, len(m.tensors), len(m.kv))]
    for key, vtype, value, elem in m.kv:
        out.append(_s(key.encode("utf-8", "surrogatepass")) + struct.pack("<i", vtype) + _val(vtype, value, elem))
    running = 0
    for name, shape, type_id in m.tensors:
        nb = _nbytes(type_id, shape)
        out.append(_s(name.encode("utf-8", "surrogatepass")) + struct.pack("<I", len(shape))
                   + b"".join(struct.pack("<q", max(min(d, 2**63 - 1), -2**63)) for d in shape)
                   + struct.pack("<iQ", type_id, running))
        running += _pad(nb, m.alignment)
    head = bytearray(b"".join(out))
    size = _pad(len(head), m.alignment) + running
    for op in m.byte_ops:
        kind = op[0]
        if kind == "set" and op[1] < len(head):
            data = bytes.fromhex(op[2])
            head[op[1]:op[1] + len(data)] = data
        elif kind == "truncate":
            del head[op[1]:]
            size = op[1]
    return bytes(head), max(0, size + m.size_delta)


def load_model_file(path: Path) -> Model:
    from planner.gguf_header import read_gguf

    h = read_gguf(path, check_size=False) if "-of-" not in path.name else None
    if h is None:
        from planner.gguf_header import LocalFile, parse_gguf

        with LocalFile(path) as src:
            h = parse_gguf(src, check_size=False)
    kv = [[e.key, e.vtype, list(e.value) if isinstance(e.value, tuple) else e.value, e.elem_type] for e in h.kv]
    tensors = [[t.name, list(t.shape), t.type_id] for t in h.tensors]
    return Model(h.shards[0].version, kv, tensors, h.alignment)


# ----------------------------------------------------------------------------------------- mutations

HOSTILE_INTS = (0, 1, 2, 3, 7, 64, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 4_000_000_000,
                2**40, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -1, -2, -2**31, -2**63)
HOSTILE_FLOATS = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45, 1e38, -1.0, 3.4e38)
HYPER_KEYS = ("block_count", "embedding_length", "feed_forward_length", "expert_feed_forward_length",
              "expert_count", "expert_used_count", "attention.head_count", "attention.head_count_kv",
              "attention.key_length", "attention.value_length", "context_length", "vocab_size",
              "leading_dense_block_count", "expert_shared_count", "nextn_predict_layers",
              "attention.kv_lora_rank", "attention.q_lora_rank", "rope.dimension_count",
              "attention.key_length_mla", "attention.value_length_mla")
FLOAT_KEYS = ("attention.layer_norm_rms_epsilon", "rope.freq_base", "expert_weights_scale",
              "rope.scaling.factor")
INT_TYPES = (U8, I8, U16, I16, U32, I32, U64, I64)


def _int_for(vtype: int, value: int) -> int:
    fmt = _FMT[vtype]
    bits = struct.calcsize(fmt) * 8
    signed = fmt.islower()
    value %= 1 << bits
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _set_kv(m: Model, key: str, vtype: int, value: Any, elem: int | None = None) -> None:
    for row in m.kv:
        if row[0] == key:
            row[1:] = [vtype, value, elem]
            return
    m.kv.append([key, vtype, value, elem])


def _arch(m: Model) -> str:
    return next((str(v) for k, _, v, _ in m.kv if k == "general.architecture"), "qwen3moe")


def apply(m: Model, ops: list[list[Any]]) -> Model:
    """Apply structured ops to ``m`` in place (byte ops are kept for :func:`encode`)."""
    for op in ops:
        kind = op[0]
        if kind == "kv":
            _set_kv(m, op[1], op[2], op[3], op[4] if len(op) > 4 else None)
        elif kind == "del_kv":
            m.kv = [r for r in m.kv if r[0] != op[1]]
        elif kind == "rename":
            if op[1] < len(m.tensors):
                m.tensors[op[1]][0] = op[2]
        elif kind == "drop":
            m.tensors = [t for i, t in enumerate(m.tensors) if i not in set(op[1])]
        elif kind == "dup":
            if op[1] < len(m.tensors):
                m.tensors.append(list(m.tensors[op[1]]))
        elif kind == "shape":
            if op[1] < len(m.tensors):
                m.tensors[op[1]][1] = op[2]
        elif kind == "type":
            if op[1] < len(m.tensors):
                m.tensors[op[1]][2] = op[2]
        elif kind == "version":
            m.version = op[1]
        elif kind == "size":
            m.size_delta = op[1]
        elif kind in ("set", "truncate"):
            m.byte_ops.append(op)
    return m


def _current(m: Model, key: str) -> Any:
    return next((v for k, _, v, _ in m.kv if k == key), None)


def _plausible(rng: random.Random, m: Model) -> list[Any]:
    """A hyperparameter nudged to a value a validator may accept: the deep stages see odd but legal models."""
    arch = _arch(m)
    suffix = rng.choice(HYPER_KEYS)
    key = f"{arch}.{suffix}"
    cur = _current(m, key)
    base = cur if isinstance(cur, int) and not isinstance(cur, bool) else rng.choice((1, 2, 4, 64))
    n_layer = _current(m, f"{arch}.block_count") or 3
    n_exp = _current(m, f"{arch}.expert_count") or 4
    choices = {
        "expert_used_count": list(range(0, n_exp + 2)),
        "leading_dense_block_count": list(range(0, n_layer + 1)),
        "nextn_predict_layers": list(range(0, n_layer + 1)),
        "context_length": [0, 1, 255, 256, 4096, 1 << 20, 2**32 - 1],
        "attention.head_count_kv": [1, 2, 4, base],
        "attention.head_count": [1, 2, 4, 8, base],
    }.get(suffix, [max(0, base - 1), base + 1, base * 2, max(1, base // 2), 1])
    return ["kv", key, U32, rng.choice(choices)]


def _hyper(rng: random.Random, m: Model) -> list[list[Any]]:
    arch = _arch(m)
    ops = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        r = rng.random()
        if r < 0.45:
            ops.append(_plausible(rng, m))
            continue
        r = rng.random()
        if r < 0.6:
            key = f"{arch}.{rng.choice(HYPER_KEYS)}"
            vtype = rng.choice((U32, U32, U32, I32, U64, I64, U8, I16))
            ops.append(["kv", key, vtype, _int_for(vtype, rng.choice(HOSTILE_INTS))])
        elif r < 0.75:
            key = f"{arch}.{rng.choice(FLOAT_KEYS)}"
            ops.append(["kv", key, rng.choice((F32, F64)), rng.choice(HOSTILE_FLOATS)])
        elif r < 0.85:   # wrong value type for a number the planner reads
            key = f"{arch}.{rng.choice(HYPER_KEYS)}"
            choice = rng.choice(("str", "f32", "bool", "arr", "arr0", "arrstr"))
            ops.append({"str": ["kv", key, STR, rng.choice(("", "12", "nan", "x" * 100))],
                        "f32": ["kv", key, F32, rng.choice(HOSTILE_FLOATS + (2.5, 64.0))],
                        "bool": ["kv", key, BOOL, True],
                        "arr": ["kv", key, ARR, [rng.choice((0, 1, 4, 2**32 - 1)) for _ in range(rng.randint(1, 8))],
                                U32],
                        "arr0": ["kv", key, ARR, [], U32],
                        "arrstr": ["kv", key, ARR, ["1", "2"], STR]}[choice])
        elif r < 0.92:
            ops.append(["kv", "general.architecture", STR,
                        rng.choice(("", "llama", "qwen3", "deepseek2", "glm4moe", "bert", "x" * 300, "qwen3moe\n"))])
        else:
            ops.append(["del_kv", f"{arch}.{rng.choice(HYPER_KEYS + ('embedding_length', 'attention.head_count'))}"])
    return ops


def _names(rng: random.Random, m: Model) -> list[list[Any]]:
    n = len(m.tensors)
    r = rng.random()
    if r < 0.2:   # legal-looking names: an unknown role, a role moved to another layer, swapped layers
        i = rng.randrange(n)
        old = m.tensors[i][0]
        parts = old.split(".")
        if old.startswith("blk.") and len(parts) >= 4:
            choice = rng.random()
            if choice < 0.4:
                parts[2] = rng.choice(("attn_foo", "ffn_gate_exps", "ffn_down_shexp", "attn_q_norm", "nextn"))
            else:
                parts[1] = str(rng.randrange(max(1, int(_current(m, f"{_arch(m)}.block_count") or 3))))
            return [["rename", i, ".".join(parts)]]
        return [["rename", i, rng.choice(("output.weight", "output_norm.weight", "token_embd.weight",
                                          "rope_freqs.weight", "x.weight", "token_embd", "output", "token_embd.bias",
                                          "output.weight.x", "output.weightx", "blk.0.attn_k.weight.x"))]]
    if r < 0.45:
        i = rng.randrange(n)
        old = m.tensors[i][0]
        new_layer = rng.choice(("-1", "99", "4294967296", "007", "1e3", "", "+1", "18446744073709551616"))
        new = old.replace(old.split(".")[1], new_layer, 1) if old.startswith("blk.") else f"blk.{new_layer}.{old}"
        return [["rename", i, new]]
    if r < 0.55:
        i = rng.randrange(n)
        return [["rename", i, rng.choice(("", "x" * 64, "x" * 63, "blk.0", ".weight", "blk..weight",
                                          "blk.0.attn_q.weight\nrm -rf ~", "token_embd.weight"))]]
    if r < 0.75:
        k = rng.choice((n, n - 1, rng.randint(1, n)))
        return [["drop", sorted(rng.sample(range(n), k))]]
    if r < 0.78:
        return [["dup", rng.randrange(n)]]
    if r < 0.82:   # a copy under a name that extends another one (regex rules without '$' match both)
        i = rng.randrange(n)
        return [["dup", i], ["rename", n, m.tensors[i][0] + rng.choice(("x", "2", ".x", "_exps", "-1"))]]
    if r < 0.92:
        i = rng.randrange(n)
        return [["shape", i, [rng.choice((0, -1, 1, 2**31, 2**62, 2**63 - 1, 32, 256))
                              for _ in range(rng.randint(1, 5))]]]
    i = rng.randrange(n)
    return [["type", i, rng.choice((-1, 4, 5, 31, 39, 40, 1000, 2**31 - 1, 12, 14, 30))]]


def _bytes(rng: random.Random, head: bytes) -> list[list[Any]]:
    r = rng.random()
    if r < 0.5:
        return [["set", rng.randrange(len(head)), os.urandom(1).hex() if False else
                 bytes([rng.randrange(256)]).hex()] for _ in range(rng.randint(1, 8))]
    if r < 0.7:
        return [["truncate", rng.randrange(len(head))]]
    # a huge count or length at a u64 field: pick an 8-byte window at a random offset
    off = rng.randrange(max(1, len(head) - 8))
    return [["set", off, struct.pack("<Q", rng.choice((2**24, 2**24 + 1, 2**32, 2**62, 2**63, 2**64 - 1,
                                                       250 << 20, 1 << 28))).hex()]]


def _sizes(rng: random.Random) -> list[list[Any]]:
    return [["size", rng.choice((-1, 1, -32, 4096, -(1 << 20)))]]


def _split(rng: random.Random, n_shards: int) -> list[Any]:
    """Ops on a split set: ["shard", k, ops] / ["missing", k] / ["swap", a, b]."""
    r = rng.random()
    k = rng.randrange(n_shards)
    if r < 0.4:
        key = rng.choice(("split.no", "split.count", "split.tensors.count"))
        vt = rng.choice((U16, U16, I32, U32, STR, F32))
        value = "1" if vt == STR else (float(rng.choice((0, 1, 2, 3, 5))) if vt == F32
                                       else _int_for(vt, rng.choice((0, 1, 2, 3, 4, 38, 39, 40, 65535, -1))))
        return [["shard", k, [["kv", key, vt, value]]]]
    if r < 0.5:
        return [["shard", k, [["del_kv", rng.choice(("split.no", "split.count", "split.tensors.count"))]]]]
    if r < 0.65:
        return [["missing", k]] if k else [["missing", 1]]
    if r < 0.75:
        a, b = rng.sample(range(n_shards), 2)
        return [["swap", a, b]]
    if r < 0.85:
        return [["shard", k, [["dup", 0]]]]
    return [["shard", k, _bytes(rng, b"x" * 2000)]]


KINDS = ("bytes", "bytes", "truncate", "hyper", "hyper", "hyper", "names", "names", "sizes", "version", "split",
         "split")


def make_case(rng: random.Random, fixtures: dict[str, list[Model]]) -> dict[str, Any]:
    names = sorted(fixtures)
    kind = rng.choice(KINDS)
    split_sets = [n for n in names if len(fixtures[n]) > 1]
    if kind == "split" and split_sets:
        fx = rng.choice(split_sets)
        return {"fixture": fx, "kind": kind, "ops": _split(rng, len(fixtures[fx]))
                + ([["shard", 0, _hyper(rng, fixtures[fx][0])]] if rng.random() < 0.3 else [])}
    fx = rng.choice([n for n in names if len(fixtures[n]) == 1] or names)
    m = fixtures[fx][0]
    if kind == "bytes" or (kind == "split" and not split_sets):
        head, _ = encode(m)
        ops = _bytes(rng, head)
        kind = "bytes"
    elif kind == "truncate":
        head, _ = encode(m)
        ops = [["truncate", rng.randrange(len(head) + 1)]]
    elif kind == "hyper":
        ops = _hyper(rng, m)
    elif kind == "names":
        ops = _names(rng, m) + (_hyper(rng, m) if rng.random() < 0.2 else [])
    elif kind == "sizes":
        ops = _sizes(rng)
    else:
        ops = [["version", rng.choice((0, 1, 4, 2**31, 2**32 - 1, 0x03000000))]]
    return {"fixture": fx, "kind": kind, "ops": ops}


def materialise(case: dict[str, Any], fixtures: dict[str, list[Model]], workdir: Path) -> Path:
    """Write the case's file(s) (header + sparse data region) under ``workdir``; return MODEL's path."""
    import copy

    shards = [copy.deepcopy(m) for m in fixtures[case["fixture"]]]
    missing: set[int] = set()
    for op in case["ops"]:
        if op[0] == "shard":
            apply(shards[op[1]], op[2])
        elif op[0] == "missing":
            missing.add(op[1])
        elif op[0] == "swap":
            shards[op[1]], shards[op[2]] = shards[op[2]], shards[op[1]]
        else:
            apply(shards[0], [op])
    n = len(shards)
    base = case["fixture"].replace("/", "_")
    paths = []
    for i, m in enumerate(shards):
        name = f"{base}-{i + 1:05d}-of-{n:05d}.gguf" if n > 1 else f"{base}.gguf"
        path = workdir / name
        paths.append(path)
        if i in missing:
            continue
        head, size = encode(m)
        with open(path, "wb") as f:
            f.write(head)
            f.truncate(max(size, len(head)) if not any(o[0] == "truncate" for o in m.byte_ops) else len(head))
    return paths[0]


# ----------------------------------------------------------------------------------------- running

def commands(path: Path, quantized: bool) -> list[list[str]]:
    """The four commands; a quantized source skips `footprint` (it refuses requantizing by design) and
    `place` keeps the file's own types."""
    p = str(path)
    if quantized:
        return [["inspect", p], ["place", p, *HW], ["plan", p, *HW]]
    return [["inspect", p], ["footprint", p, "--base-type", "Q8_0"],
            ["place", p, "--base-type", "Q8_0", *HW], ["plan", p, *HW]]


def run_one(args: list[str]) -> tuple[str, str]:
    """(outcome, detail) of one CLI invocation in this process."""
    import click

    from planner.cli import main
    from planner.errors import PlannerError, exit_code_for

    try:
        main(list(args), standalone_mode=False)
        return "ok", ""
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        return ("ok" if code in (0, 2) else "typed" if 2 <= code <= 7 else "internal"), f"exit {code}"
    except PlannerError as exc:
        return "typed", f"{type(exc).__name__} exit {exit_code_for(exc)}: {str(exc)[:200]}"
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort) as exc:
        return "typed", f"click {type(exc).__name__}: {str(exc)[:200]}"
    except BaseException as exc:  # noqa: BLE001 - this is what the harness looks for
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(tb)
                      if "/planner/" in f.filename), "?")
        return "internal", f"{type(exc).__name__} at {where}: {str(exc)[:200]}"


def child(case: dict[str, Any], fixtures: dict[str, list[Model]], wfd: int, workdir: Path, all_cmds: bool) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.environ["GGUF_PLANNER_DEBUG"] = "1"   # typed errors raise, so the harness sees the exception
    path = materialise(case, fixtures, workdir)
    for i, args in enumerate(commands(path, "bf16" not in case["fixture"])):
        os.write(wfd, (json.dumps({"start": i, "cmd": args[0]}) + "\n").encode())
        t = time.monotonic()
        outcome, detail = run_one(args)
        os.write(wfd, (json.dumps({"done": i, "cmd": args[0], "outcome": outcome, "detail": detail,
                                   "s": round(time.monotonic() - t, 3)}) + "\n").encode())
        # the same loader runs first in every command: a load error in inspect ends the case
        if i == 0 and outcome != "ok" and not all_cmds:
            break
    os._exit(0)


def run_case(case, fixtures, limit: float, all_cmds: bool) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            child(case, fixtures, w, workdir, all_cmds)
        finally:
            os._exit(0)
    os.close(w)
    results: list[dict[str, Any]] = []
    buf = b""
    started = time.monotonic()
    hang = None
    while True:
        ready, _, _ = select.select([r], [], [], 0.2)
        if ready:
            data = os.read(r, 65536)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "start" in msg:
                    started = time.monotonic()
                    current = msg["cmd"]
                else:
                    results.append(msg)
        if time.monotonic() - started > limit:
            hang = current if "current" in dir() else "?"
            os.kill(pid, signal.SIGKILL)
            break
    os.close(r)
    _, status, usage = os.wait4(pid, 0)
    shutil.rmtree(workdir, ignore_errors=True)
    out = {"results": results, "maxrss_kb": usage.ru_maxrss, "hang": hang}
    if hang is None and os.WIFSIGNALED(status):
        out["results"].append({"cmd": "?", "outcome": "internal", "detail": f"killed by signal {os.WTERMSIG(status)}"})
    return out


def load_fixtures(dirs: list[Path]) -> dict[str, list[Model]]:
    out: dict[str, list[Model]] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.gguf")):
            out.setdefault(p.stem, [load_model_file(p)])
        for first in sorted(d.glob("split/*-00001-of-*.gguf")):
            stem = first.name.split("-00001-of-")[0]
            shards = sorted(first.parent.glob(f"{stem}-*-of-*.gguf"))
            out.setdefault(f"split:{stem}", [load_model_file(s) for s in shards])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=float, default=10.0, help="seconds per command before it counts as a hang")
    ap.add_argument("--fixtures", action="append", type=Path, help="extra fixture folder (repeatable)")
    ap.add_argument("--save", type=Path, help="append failing cases (internal/hang) as JSON lines")
    ap.add_argument("--replay", type=Path, help="run the cases of a JSON-lines file instead of random ones")
    ap.add_argument("--all-commands", action="store_true", help="run all four commands even after a load error")
    ap.add_argument("--progress", type=int, default=1000, help="print a progress line every N cases")
    args = ap.parse_args()

    # load everything the commands import once, so every forked child shares it
    import importlib
    import pkgutil

    import planner

    for mod in pkgutil.walk_packages(planner.__path__, prefix="planner.", onerror=lambda name: None):
        if mod.name.split(".")[-1].startswith("_"):
            continue
        try:
            importlib.import_module(mod.name)
        except Exception:  # noqa: BLE001 - a module that fails to import fails in the cases too
            pass
    try:
        import rich.console  # noqa: F401
        import rich.table  # noqa: F401
    except ImportError:
        pass
    try:
        from ortools.sat.python import cp_model  # noqa: F401
    except ImportError:
        pass

    fixtures = load_fixtures(list(FIXTURE_DIRS) + list(args.fixtures or []))
    if args.replay:
        cases = [json.loads(line) for line in args.replay.read_text().splitlines() if line.strip()]
    else:
        rng = random.Random(args.seed)
        cases = [make_case(rng, fixtures) for _ in range(args.cases)]
    outcomes: Counter[str] = Counter()
    per_kind: Counter[tuple[str, str]] = Counter()
    per_cmd: Counter[tuple[str, str]] = Counter()
    cmd_seconds: Counter[str] = Counter()
    internal_sigs: Counter[str] = Counter()
    peak = 0
    slowest: list[tuple[float, str, str]] = []
    t0 = time.monotonic()
    for n, case in enumerate(cases, 1):
        res = run_case(case, fixtures, args.limit, args.all_commands)
        peak = max(peak, res["maxrss_kb"])
        worst = "ok"
        for r in res["results"]:
            per_cmd[(r["cmd"], r["outcome"])] += 1
            cmd_seconds[r["cmd"]] += r.get("s", 0.0)
            if r["outcome"] == "internal":
                worst = "internal"
                internal_sigs[r["detail"].split(":")[0] + ": " + r["detail"].split(": ", 2)[-1][:80]] += 1
            elif r["outcome"] == "typed" and worst == "ok":
                worst = "typed"
            slowest.append((r.get("s", 0.0), r["cmd"], json.dumps(case)[:160]))
        if res["hang"]:
            worst = "hang"
            per_cmd[(res["hang"], "hang")] += 1
        outcomes[worst] += 1
        per_kind[(case.get("kind", "?"), worst)] += 1
        if worst in ("internal", "hang") and args.save:
            with open(args.save, "a") as f:
                f.write(json.dumps({**case, "outcome": worst,
                                    "detail": [r["detail"] for r in res["results"] if r["outcome"] == "internal"]})
                        + "\n")
        slowest = sorted(slowest, reverse=True)[:5]
        if args.progress and n % args.progress == 0:
            print(f"[{n}/{len(cases)}] {dict(outcomes)} peak {peak / 1024:.0f} MB "
                  f"{time.monotonic() - t0:.0f} s", flush=True)
    print(f"cases {len(cases)} in {time.monotonic() - t0:.0f} s: " +
          ", ".join(f"{k} {outcomes[k]}" for k in ("ok", "typed", "internal", "hang")))
    print(f"peak RSS of a case (forked child, includes the preloaded modules): {peak / 1024:.0f} MB")
    print("per command:", ", ".join(f"{c}/{o} {v}" for (c, o), v in sorted(per_cmd.items())))
    print("seconds in each command:", ", ".join(f"{c} {v:.0f}" for c, v in sorted(cmd_seconds.items())))
    print("per mutation kind:", ", ".join(f"{k}/{o} {v}" for (k, o), v in sorted(per_kind.items())))
    for sig, v in internal_sigs.most_common(20):
        print(f"  internal x{v}: {sig}")
    for s, cmd, case in slowest:
        print(f"  slowest {s:.2f} s {cmd}: {case}")
    return 1 if outcomes["internal"] or outcomes["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
