import os
import random
import re
import stat
import subprocess
from pathlib import Path

import pytest

from planner.errors import EngineFlagError, OutputExistsError, UsageError
from planner.fileout import write_new_file
from planner.launch import (
    OverrideRule,
    apply_overrides,
    build_launch,
    check_flags,
    export_script,
    layers_regex,
    parse_server_command,
    placement_from_command,
)
from planner.memory import CPU, RunConfig
from planner.tensors import builtin

IK_HELP = (Path(__file__).parent / "fixtures/ik/help/llama-server-help.txt").read_text()
SEED_CMD = [l.strip() for l in (Path(__file__).parents[1] / "examples/seed-command.sh").read_text().splitlines()
            if l.strip() and not l.startswith("#")]
SEED_ARGV = [tok for line in SEED_CMD for tok in line.split()]


@pytest.mark.parametrize("layers,expect", [
    (range(12, 94), r"(1[2-9]|[2-8][0-9]|9[0-3])"),     # the seed's three -ot ranges in one group
    (range(0, 12), r"([0-9]|1[0-1])"),
    ([7], "7"),
    ([3, 5, 9], "(3|5|9)"),                               # non-contiguous
])
def test_layers_regex(layers, expect):
    assert layers_regex(layers) == expect


def test_layers_regex_exact_membership_fuzz():
    rnd = random.Random(7)
    for _ in range(300):
        s = sorted(rnd.sample(range(0, 260), rnd.randint(1, 40)))
        rx = re.compile("^" + layers_regex(s) + "$")
        for x in range(0, 300):
            assert bool(rx.match(str(x))) == (x in s), (s, x)


def _seed_devices(tm):
    dev = {}
    for t in tm.tensors:
        if t.name == "token_embd.weight":
            dev[t.name] = CPU
        elif t.is_expert and t.layer >= 12:
            dev[t.name] = CPU
        else:
            dev[t.name] = "CUDA0"
    return dev


def test_launch_ik_reapplies_to_plan_and_uses_one_regex():
    tm = builtin("qwen3-235b-a22b")
    dev = _seed_devices(tm)
    lc = build_launch(tm, dev, tuple(["CUDA0"] * 94), RunConfig(threads=16), "/m/x.gguf")
    assert [r.text() for r in lc.overrides] == [r"blk\.(1[2-9]|[2-8][0-9]|9[0-3])\.ffn_(down|gate|up)_exps=CPU"]
    assert lc.ngl == 95                     # > n_layer so output.weight is offloaded too
    assert "-fmoe" not in lc.argv and ["-fa", "on"] == list(lc.argv[lc.argv.index("-fa"):lc.argv.index("-fa") + 2])
    check_flags(lc.argv, IK_HELP)          # every flag exists in current ik --help
    parsed = parse_server_command(lc.argv)
    back = placement_from_command(tm, parsed, ["CUDA0"])
    assert dict(back.tensor_device) == dev


def test_fmoe_is_caught_by_current_ik_help():
    tm = builtin("qwen3-235b-a22b")
    lc = build_launch(tm, _seed_devices(tm), tuple(["CUDA0"] * 94), RunConfig(engine="ik-2025"), "x.gguf")
    assert "-fmoe" in lc.argv
    with pytest.raises(EngineFlagError, match="-fmoe"):
        check_flags(lc.argv, IK_HELP)


def test_mainline_uses_n_cpu_moe_for_first_layers():
    tm = builtin("qwen3-30b-a3b")
    dev = {t.name: (CPU if (t.is_expert and t.layer < 20) or t.role == "token_embd" else "CUDA0")
           for t in tm.tensors}
    lc = build_launch(tm, dev, tuple(["CUDA0"] * 48), RunConfig(engine="mainline", load="mmap"), "x.gguf")
    assert lc.n_cpu_moe == 20 and "-ot" not in lc.argv
    assert lc.argv[lc.argv.index("--fit") + 1] == "off"


def test_override_first_match_wins_and_output_anchor():
    names = ["blk.0.attn_output.weight", "output.weight"]
    got = apply_overrides(names, [OverrideRule("^output\\.weight", CPU)], {n: "CUDA0" for n in names})
    assert got == {"blk.0.attn_output.weight": "CUDA0", "output.weight": CPU}


def test_parse_seed_command():
    p = parse_server_command(SEED_ARGV, engine="ik-2025")
    assert p.model.endswith("mix-IQ3_K-00001-of-00003.gguf")
    assert (p.run.ctx, p.run.type_k, p.run.type_v, p.run.amb, p.run.load, p.ngl) == (32768, "q8_0", "q8_0", 512, "rtr", 99)
    assert p.run.flash_attn and len(p.overrides) == 3 and p.run.threads == 16
    with pytest.raises(UsageError, match="-c needs a value"):
        parse_server_command(["llama-server", "-c"])


def test_seed_placement_from_command_moves_ffn_norms_too():
    tm = builtin("qwen3-235b-a22b")
    pl = placement_from_command(tm, parse_server_command(SEED_ARGV, engine="ik-2025"), ["CUDA0"])
    assert pl.device_of("blk.11.ffn_up_exps.weight") == "CUDA0"
    assert pl.device_of("blk.12.ffn_up_exps.weight") == CPU
    assert pl.device_of("blk.12.ffn_norm.weight") == CPU      # the card's `ffn.*` regex matches norms as well
    assert pl.device_of("output.weight") == "CUDA0"            # -ngl 99 > 94 layers
    assert pl.device_of("token_embd.weight") == CPU


def test_export_script_keeps_hostile_path_literal(tmp_path):
    tm = builtin("qwen3-30b-a3b")
    dev = {t.name: (CPU if t.is_expert or t.role == "token_embd" else "CUDA0") for t in tm.tensors}
    evil = "/models/my model's \"quant\" $(touch PWNED) `id`.gguf"
    lc = build_launch(tm, dev, tuple(["CUDA0"] * 48), RunConfig(), evil, port=8081)
    text = export_script(lc, model_path=evil, port=8081, comments=["test"])
    script = tmp_path / "run.sh"
    write_new_file(script, text, mode=0o755)
    assert os.stat(script).st_mode & stat.S_IXUSR
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    stub = tmp_path / "stub.sh"
    stub.write_text('#!/usr/bin/env bash\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    stub.chmod(0o755)
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "LLAMA_SERVER": str(stub)})
    args = res.stdout.splitlines()
    assert res.returncode == 0, res.stderr
    assert args[args.index("-m") + 1] == evil
    assert args[args.index("--port") + 1] == "8081"
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(OutputExistsError):
        write_new_file(script, "x")
    assert script.read_text() == text            # nothing lost
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "LLAMA_SERVER": str(stub), "GGUF_PLANNER_MODEL": "/other.gguf",
                              "PORT": "9"})
    a2 = res.stdout.splitlines()
    assert a2[a2.index("-m") + 1] == "/other.gguf" and a2[a2.index("--port") + 1] == "9"


# Flash attention's default when a command does not say: ik on (common/common.h:422 `flash_attn = true` @8337e4cd),
# mainline auto = on where supported (common/common.h:501 @0c1e57098), ik as of the seed card off (bare -fa switch).
@pytest.mark.parametrize("engine, default", [("ik", True), ("mainline", True), ("ik-2025", False)])
def test_flash_attention_default_of_a_command_that_does_not_say(engine, default):
    assert parse_server_command(["llama-server", "-m", "x.gguf", "-c", "4096"], engine=engine).run.flash_attn is default


@pytest.mark.parametrize("engine", ["ik", "mainline", "ik-2025"])
@pytest.mark.parametrize("flash_attn", [True, False])
def test_an_emitted_command_runs_with_the_flash_attention_it_was_planned_with(engine, flash_attn):
    """A plan without flash attention (``check`` of a user's ``-fa off`` command plans its own command with the
    user's settings) must say so where the engine's default is on; before, the command left -fa out and ik or
    mainline ran it with flash attention and another compute buffer (DeepSeek-V4-Flash on ik, 80 GiB: the plan's
    own command then re-checked 0.15 GiB over on CUDA0)."""
    tm = builtin("qwen3-30b-a3b")
    dev = {t.name: (CPU if (t.is_expert and t.layer < 20) or t.role == "token_embd" else "CUDA0")
           for t in tm.tensors}
    run = RunConfig(engine=engine, ctx=8192, flash_attn=flash_attn, type_k="f16", type_v="f16", load="no-mmap")
    lc = build_launch(tm, dev, tuple(["CUDA0"] * 48), run, "x.gguf")
    back = parse_server_command(lc.argv, engine=engine).run
    assert back.flash_attn is flash_attn, lc.argv
    assert (back.ctx, back.type_k, back.type_v, back.load) == (8192, "f16", "f16", "no-mmap")
    if engine == "ik":
        check_flags(lc.argv, IK_HELP)


@pytest.mark.parametrize("engine", ["ik", "mainline"])
def test_a_commands_threads_batch_numa_and_mla_survive_into_the_plans_own_command(engine):
    """``check`` plans "the plan's own command" with the user's run settings; -tb, --numa and ik's -mla change
    speed (and -mla the KV cache), so the emitted command carries them: a command parsed, re-emitted and parsed
    again keeps them (before, all three were dropped and the engine ran its defaults: -tb = -t, no NUMA mode,
    -mla 3)."""
    tm = builtin("qwen3-30b-a3b")
    dev = {t.name: (CPU if (t.is_expert and t.layer < 20) or t.role == "token_embd" else "CUDA0")
           for t in tm.tensors}
    user = ["llama-server", "-m", "x.gguf", "-c", "8192", "-t", "12", "-tb", "24", "--numa", "distribute",
            "--no-mmap"] + (["-mla", "2"] if engine == "ik" else [])
    run = parse_server_command(user, engine=engine).run
    lc = build_launch(tm, dev, tuple(["CUDA0"] * 48), run, "x.gguf")
    back = parse_server_command(lc.argv, engine=engine).run
    assert (back.threads, back.threads_batch, back.numa, back.mla) == (12, 24, "distribute", 2 if engine == "ik" else 3)
    if engine == "ik":
        check_flags(lc.argv, IK_HELP)


# llama-server's slots without -np: mainline -1 = auto (common/arg.cpp:1403 @0c1e57098), resolved by the server to
# 4 slots and a unified KV cache whatever -kvu/-no-kvu says (tools/server/server.cpp:156-160); ik 1
# (common/common.h:300 @8337e4cd), no -kvu (its cache is one buffer of -c cells).
@pytest.mark.parametrize("engine, extra, expect", [
    ("mainline", [], (4, True)), ("mainline", ["-no-kvu"], (4, True)), ("mainline", ["-np", "-1"], (4, True)),
    ("mainline", ["-np", "1"], (1, False)), ("mainline", ["-np", "3"], (3, False)),
    ("mainline", ["--parallel", "3", "--kv-unified"], (3, True)), ("mainline", ["-np", "2", "-kvu", "-no-kvu"], (2, False)),
    ("ik", [], (1, False)), ("ik", ["-np", "4"], (4, False)), ("ik-2025", [], (1, False))])
def test_server_slots_and_unified_cache_of_a_command(engine, extra, expect):
    cmd = parse_server_command(["llama-server", "-m", "x.gguf", "-c", "8192", *extra], engine=engine)
    assert (cmd.run.n_parallel, cmd.run.kv_unified) == expect
    auto = engine == "mainline" and (not {"-np", "--parallel"} & set(extra) or "-1" in extra)
    assert any("4 slots sharing one unified KV cache" in w for w in cmd.warnings) is auto, cmd.warnings


def test_slots_the_engine_refuses():
    with pytest.raises(UsageError):
        parse_server_command(["llama-server", "-m", "x.gguf", "-np", "0"], engine="mainline")
    with pytest.raises(UsageError):
        parse_server_command(["llama-server", "-m", "x.gguf", "-np", "-1"], engine="ik")
    assert any(w.startswith("-kvu: not an ik flag") for w in
               parse_server_command(["llama-server", "-m", "x.gguf", "-kvu"], engine="ik").warnings)


@pytest.mark.parametrize("engine, n_parallel, kv_unified", [
    ("mainline", 1, False), ("mainline", 4, True), ("mainline", 2, False), ("ik", 1, False), ("ik", 3, False),
    ("ik-2025", 2, False)])
def test_the_emitted_command_runs_the_planned_slots(engine, n_parallel, kv_unified):
    """A plan is for ``n_parallel`` slots; mainline's server without -np runs 4 unified ones (above), so its
    command says -np always, and -kvu where the run shares one cache; ik's only where it differs from its 1.
    Parse -> emit -> parse keeps both (before: a mainline plan emitted no -np and ran 4 unified slots)."""
    tm = builtin("qwen3-30b-a3b")
    dev = {t.name: (CPU if (t.is_expert and t.layer < 20) or t.role == "token_embd" else "CUDA0")
           for t in tm.tensors}
    run = RunConfig(engine=engine, ctx=8192, load="no-mmap", n_parallel=n_parallel, kv_unified=kv_unified)
    lc = build_launch(tm, dev, tuple(["CUDA0"] * 48), run, "x.gguf")
    back = parse_server_command(lc.argv, engine=engine)
    assert (back.run.n_parallel, back.run.kv_unified) == (n_parallel, kv_unified), lc.argv
    assert ("-np" in lc.argv) is (engine == "mainline" or n_parallel != 1)
    assert ("-kvu" in lc.argv) is kv_unified
    assert not back.warnings
    again = build_launch(tm, dev, tuple(["CUDA0"] * 48), back.run, "x.gguf")
    assert again.argv == lc.argv
    if engine == "ik":
        check_flags(lc.argv, IK_HELP)
