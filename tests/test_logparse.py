"""Engine output parsers against real logs (sources in tests/fixtures/logs/README.md)."""

from pathlib import Path

import pytest

from planner.errors import LogFormatError, exit_code_for
from planner.logparse import (find_command, parse_llama_bench, parse_load_log, parse_log, parse_perplexity,
                              parse_sweep_tables, read_log)

LOGS = Path(__file__).parent / "fixtures" / "logs"


def text(name: str) -> str:
    return read_log(LOGS / name)


def test_seed_rig_load_log_and_table():
    # ubergarm's seed-rig run in ik PR 370: buffers and the table as printed
    lg = parse_log(text("ik-seed-pr370-ubergarm.log"))
    ld = lg.load
    assert ld.engine == "ik" and "before 2025-05" in ld.spelling
    assert ld.weights_mib == {"CPU": round(89709.28 + 630.59, 2), "CUDA0": 19053.73}   # CPU + CUDA_Host (token_embd)
    assert ld.kv_mib == {"CUDA0": 3196.05} and ld.kv_total_mib == 3196.00
    assert (ld.type_k, ld.type_v, ld.kv_k_mib, ld.kv_v_mib) == ("q8_0", "q8_0", 1598.0, 1598.0)
    assert ld.compute_mib == {"CUDA0": 312.75, "CPU": 128.01}
    assert (ld.n_ctx, ld.n_batch, ld.n_ubatch, ld.flash_attn) == (32768, 2048, 512, True)
    assert ld.offloaded_layers == (95, 95) and ld.graph_splits == 330
    (sw,) = lg.sweeps
    assert len(sw.rows) == 64 and (sw.n_kv_max, sw.n_ubatch, sw.n_threads, sw.n_gpu_layers) == (32768, 512, 16, 99)
    assert (sw.rows[0].s_pp_tps, sw.rows[0].s_tg_tps) == (142.16, 10.76)                # published_dev #289
    assert (sw.rows[-1].n_kv, sw.rows[-1].s_pp_tps, sw.rows[-1].s_tg_tps) == (32256, 122.48, 8.95)


def test_two_gpu_ik_log_with_command():
    lg = parse_log(text("ik-2gpu-q6k-pr370-aessedai.log"))
    assert lg.load.weights_mib == {"CPU": round(151361.25 + 486.86, 2), "CUDA0": 15922.41, "CUDA1": 16297.68}
    assert lg.load.kv_mib == {"CUDA0": 816.02, "CUDA1": 782.02}
    assert lg.command[0] == "llama-sweep-bench" and lg.command[lg.command.index("-t") + 1] == "48"
    ots = [lg.command[i + 1] for i, a in enumerate(lg.command) if a == "-ot"]
    assert ots[0] == r"blk\.(0|1|2|3|4|5|6)\.ffn.*=CUDA0" and len(ots) == 4       # shell quotes removed


def test_ik_current_spelling_rpc_layers():
    ld = parse_load_log(text("ik-rpc2-ts1-1.log"))
    assert ld.engine == "ik" and "2025-05+" in ld.spelling
    devs = [b.device for b in ld.buffers if b.kind == "weights"]
    assert devs == ["RPC0[127.0.0.1:50152]", "RPC0[127.0.0.1:50153]", "CPU"]
    assert ld.weights_mib["RPC0[127.0.0.1:50152]"] == 98.87 and ld.kv_mib["RPC0[127.0.0.1:50153]"] == 10.75
    # the engine's own "Setting default device in layer N to D": layers 0-50 on 0, 51-94 (output) on 1
    assert dict(ld.layer_device)[50] == 0 and dict(ld.layer_device)[51] == 1 and len(ld.layer_device) == 95
    assert ld.compute_mib["RPC0[127.0.0.1:50152]"] == 5.53                      # printed twice, one buffer


def test_mainline_current_spelling():
    ld = parse_load_log(text("mainline-rpc2-ts1-1.log"))                         # timestamps + "I " prefix
    assert ld.engine == "mainline"
    assert ld.weights_mib == {"CPU": 0.5, "RPC0[127.0.0.1:50162]": 348.96, "RPC0[127.0.0.1:50163]": 334.92}
    assert ld.kv_mib == {"RPC0[127.0.0.1:50162]": 12.0, "RPC0[127.0.0.1:50163]": 11.5}
    assert (ld.kv_total_mib, ld.type_k) == (23.5, "f16")
    assert ld.compute_mib == {"RPC0[127.0.0.1:50162]": 11.04, "RPC0[127.0.0.1:50163]": 11.05, "CPU": 7.05}


def test_mainline_split_gguf_maps_one_buffer_per_shard():
    ld = parse_load_log(text("mainline-load-pr370-aessedai.log"))
    assert ld.weights_mib["CPU"] == round(46604.38 + 47377.52 * 2 + 42166.10, 2)   # the two equal shards both count


def test_old_shared_spelling_is_not_attributed():
    ld = parse_load_log(text("mainline-load-issue7119.log"))
    assert ld.engine == "unknown" and ld.kv_mib == {"CPU": 256.0}               # CUDA_Host KV lives in RAM
    assert ld.compute_mib == {"CUDA0": 1260.5, "CPU": 12.01} and ld.graph_splits == 356


def test_sweep_tables():
    (cpu,) = parse_sweep_tables(text("ik-sweep-pr602-q4_0-cpu.md"))
    assert len(cpu.rows) == 9 and cpu.n_ubatch is None and cpu.ubatch == 512
    (t,) = parse_sweep_tables(text("ik-sweep-pr1454-timings.txt"))
    assert (t.n_kv_max, t.n_ubatch, t.n_threads) == (67584, 2048, 1) and t.rows[-1].n_kv == 26624


@pytest.mark.parametrize("edit", [
    ("|    3.602 |   142.16 |", "|    3.602 |   162.16 |"),     # rate does not match the time
    ("|   512 |    128 |  32256 |", "|   512 |    128 |  32x56 |"),   # row does not parse
])
def test_corrupted_sweep_rows_are_errors(edit):
    bad = text("ik-seed-pr370-ubergarm.log").replace(*edit)
    with pytest.raises(LogFormatError):
        parse_log(bad)


def test_llama_bench():
    b = parse_llama_bench(text("mainline-llama-bench-pr12922.md"))
    assert [(r.test, r.tps, r.tps_std, r.n_prompt, r.n_gen) for r in b.rows] == [
        ("pp4096", 62.50, 0.09, 4096, 0), ("tg4096", 9.51, 0.19, 0, 4096)]
    assert b.rows[0].column("type_k") == "q8_0" and b.rows[0].column("threads") == "4"
    g = parse_llama_bench(text("mainline-llama-bench-geerlingguy43.md"))
    assert (g.rows[-1].n_prompt, g.rows[-1].n_gen, g.rows[-1].tps) == (4096, 128, 9752.17)


def test_perplexity_final_estimate_and_kld():
    r = parse_perplexity(text("ik-perplexity-pr262.txt"))
    assert (r.ppl, r.ppl_err, r.kld_mean) == (3.4184, 0.01902, None)
    k = parse_perplexity(text("ik-kld-pr817.txt"))
    assert (k.kld_mean, k.kld_err, k.kld_median, k.kld_p99, k.kld_max) == (0.017475, 0.000763, 0.004062,
                                                                           0.221226, 11.152802)
    m = parse_perplexity(text("mainline-kld-pr19661.txt"))
    assert (m.ppl, m.ppl_err, m.ppl_base, m.ppl_ratio, m.ppl_ratio_err) == (15.919427, 0.295934, 13.505476,
                                                                            1.178739, 0.010983)


def test_command_with_continuations_and_wrappers():
    cmd = find_command(text("ik-command-pr370-ubergarm.log"))
    assert cmd[0] == "llama-sweep-bench" and cmd[-2:] == ("--threads", "16")
    assert "blk.1[2-9].ffn.*=CPU" in cmd           # unquoted in the shell: bash drops the backslashes, as here
    k = find_command(text("ik-sweep-kimi-pr612.md"))                             # behind numactl
    assert k[0] == "llama-sweep-bench" and k[k.index("--numa") + 1] == "numactl"


@pytest.mark.parametrize("data", [b"GGUF\x03\x00\x00\x00" + b"\x00" * 64,          # a GGUF file, not a log
                                  "hello world\n", "| a | b |\n|---|---|\n| 1 | 2 |\n"])
def test_foreign_input_is_one_line_error(data):
    with pytest.raises(LogFormatError) as e:
        parse_log(data, "x.log")
    assert "\n" not in str(e.value) and exit_code_for(e.value) == 4


def test_perplexity_absent_is_an_error():
    with pytest.raises(LogFormatError):
        parse_perplexity(text("ik-sweep-pr602-q4_0-cpu.md"))
