"""Time and peak RSS of `inspect` (table and --json) and `footprint` on headers at the reader's limits.

Each header is a real fixture (tiny-a-bf16) plus one extreme part, written as a sparse file so the disk
holds only the header bytes: a 2^24-element u32 array, 2^20 empty strings under a tokenizer key, a
250 MiB string, 65,536 metadata pairs, 49,154 tensors over 4,096 layers, and 49,002 tensors with
distinct roles.  Each command runs in a fresh interpreter (``python3 -m planner``); the figures are
its wall time and ``ru_maxrss``.  Goal from the hostile-input issue: <= 2 s and <= 150 MB.

    python3 benchmarks/bench_hostile_headers.py [--commands inspect,inspect-json,footprint]
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import gguf_bytes  # noqa: E402

from planner.gguf_header import read_gguf  # noqa: E402
from planner.quants import catalogue, pad  # noqa: E402


def _s(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def _base():
    h = read_gguf(ROOT / "tests/fixtures/ik/tiny-a-bf16.gguf")
    items = [(e.key, e.vtype, list(e.value), e.elem_type) if e.elem_type is not None else (e.key, e.vtype, e.value)
             for e in h.kv]
    return items, [(t.name, t.shape, t.type_name) for t in h.tensors]


def _write(path: Path, items, tensors, extra: list, n_extra: int) -> None:
    """Header with ``extra`` (bytes, or an int = a hole of that many zero bytes) before the other pairs."""
    body = gguf_bytes(items, tensors, data=False)
    data = pad(len(body) + sum(x if isinstance(x, int) else len(x) for x in extra), 32) + sum(
        pad(catalogue().get(t).tensor_bytes(s), 32) for _, s, t in tensors)
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(items) + n_extra))
        for x in extra:
            if isinstance(x, int):
                f.seek(x, 1)
            else:
                f.write(x)
        f.write(body[24:])
        f.truncate(data)


def build(folder: Path) -> dict[str, Path]:
    items, tensors = _base()
    out = {}
    cases = {
        "u32 array 2^24": [_s(b"general.junk") + struct.pack("<iiQ", 9, 4, 1 << 24), 4 << 24],
        "string array 2^20": [_s(b"tokenizer.ggml.junk") + struct.pack("<iiQ", 9, 8, 1 << 20), 8 << 20],
        "string 250 MiB": [_s(b"general.junk") + struct.pack("<iQ", 8, 250 << 20), 250 << 20],
    }
    for name, extra in cases.items():
        out[name] = folder / (name.replace(" ", "_").replace("^", "") + ".gguf")
        _write(out[name], items, tensors, extra, 1)
    many = b"".join(_s(f"x.{i}".encode()) + struct.pack("<iI", 4, i) for i in range(65536 - len(items)))
    out["65,536 pairs"] = folder / "pairs.gguf"
    _write(out["65,536 pairs"], items, tensors, [many], 65536 - len(items))
    layers = 4096
    kv = [("general.architecture", 8, "llama"), ("llama.block_count", 4, layers), ("llama.embedding_length", 4, 64),
          ("llama.attention.head_count", 4, 2), ("llama.feed_forward_length", 4, 128)]
    roles = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "attn_norm", "ffn_norm",
             "x1", "x2", "x3"]
    big = [("token_embd.weight", (64, 100), "f16"), ("output.weight", (64, 100), "f16")] + [
        (f"blk.{i}.{r}.weight", (64,) if "norm" in r else (64, 64), "f32") for i in range(layers) for r in roles]
    out["49,154 tensors"] = folder / "tensors.gguf"
    _write(out["49,154 tensors"], kv, big, [], 0)
    kv1 = [kv[0], ("llama.block_count", 4, 1)] + kv[2:]
    distinct = [("token_embd.weight", (64, 100), "f16"), ("blk.0.attn_norm.weight", (64,), "f32")] + [
        (f"r{j}.weight", (64,), "f32") for j in range(49000)]
    out["49,002 distinct roles"] = folder / "roles.gguf"
    _write(out["49,002 distinct roles"], kv1, distinct, [], 0)
    return out


COMMANDS = {"inspect": ["inspect"], "inspect-json": ["inspect", "--json"],
            "footprint": ["footprint", "--base-type", "Q8_0", "--json"]}


def measure(args: list[str], timeout: float) -> tuple[float, float, int]:
    """Wall seconds, this child's own peak RSS in MB (os.wait4), and its exit code (-9: killed at timeout)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    t0 = time.perf_counter()
    pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "planner", *args], dict(os.environ),
                         file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)])
    os.close(devnull)
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() - t0 > timeout:
            os.kill(pid, 9)
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.02)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--commands", default="inspect-json,inspect,footprint")
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = build(Path(tmp))
        print(f"{'header':24} {'command':13} {'wall s':>7} {'max RSS MB':>11} rc")
        for label, path in files.items():
            for cmd in a.commands.split(","):
                wall, rss, rc = measure([*COMMANDS[cmd][:1], str(path), *COMMANDS[cmd][1:]], a.timeout)
                print(f"{label:24} {cmd:13} {wall:7.2f} {rss:11.0f} {rc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
