"""Cluster descriptions: the shipped cluster profile, strict validation of the TOML, the --rpc-host flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.cluster import CLUSTERS_DIR, DEFAULT_PORT, check_address, check_bind, link_from_preset
from planner.cluster_flags import cluster_from_flags, parse_bandwidth, parse_latency, parse_rpc_host
from planner.cluster_toml import load_cluster
from planner.errors import ProfileError, UsageError, exit_code_for
from planner.hardware import GIB, load_profile

SHIPPED = "2x3090-384g+epyc-256g-10gbe"

# Ethernet framing at MTU 1500 with TCP timestamps: 1448 payload bytes of 1538 on the wire (IEEE 802.3 preamble
# 8 + header 14 + FCS 4 + inter-frame gap 12; IPv4 20; TCP 20 + 12 options), computed here independently.
TCP_SHARE = 1448 / (1500 + 8 + 14 + 4 + 12)


def test_shipped_cluster_two_boxes_over_10gbe():
    c = load_cluster(SHIPPED)
    assert c.main.vram_total_bytes == 48 * GIB and c.main.ram_total_bytes == 384 * GIB
    (box2,) = c.remotes
    assert (box2.name, box2.address, box2.port, box2.bind) == ("box2", "192.168.10.2", 50052, "192.168.10.2")
    assert box2.hardware.gpus == () and box2.hardware.ram_total_bytes == 256 * GIB
    assert box2.hardware.ram_bw_gbs == pytest.approx(8 * 3200 * 8 / 1000)   # 8 channels DDR4-3200
    assert box2.devices == ("CPU",) and box2.cache and box2.threads == 32
    assert box2.link.bandwidth_gbs == pytest.approx(10 / 8 * TCP_SHARE, rel=1e-4)
    assert box2.link.transport == "tcp" and "assumed" in box2.link.source
    (dev,) = c.remote_devices
    assert (dev.name, dev.server_index, dev.global_index, dev.budget_bytes) == ("box2/CPU", 0, 0, 256 * GIB)
    assert c.host_of("box2/CPU") == "box2" and c.host_of("CUDA1") == "main" and c.host_of("CPU") == "main"


def test_host_profiles_live_outside_the_shipped_profile_list():
    # hwprofiles/clusters/** must not change what `profiles` lists (the glob is not recursive)
    from planner.hardware import profile_names
    assert not any("epyc7532" in n or "10gbe" in n for n in profile_names())
    load_profile(CLUSTERS_DIR / "hosts" / "epyc7532-256g.toml")


def test_link_presets_follow_line_rate_and_framing():
    assert link_from_preset("1gbe").bandwidth_gbs == pytest.approx(0.941 / 8, rel=1e-3)   # iperf3's 941 Mbit/s
    assert link_from_preset("2.5GbE").bandwidth_gbs == pytest.approx(2.5 / 8 * TCP_SHARE, rel=1e-4)
    rdma = link_from_preset("rdma-25gbe")
    assert rdma.transport == "rdma" and rdma.latency_us < 5
    with pytest.raises(UsageError, match="did you mean '10gbe'"):
        link_from_preset("10gb")


def _write(tmp_path: Path, remote: str, head: str = 'main = "rtx3090ti-9950x-96g"') -> Path:
    p = tmp_path / "c.toml"
    p.write_text(f"[cluster]\n{head}\n\n[[remote]]\n{remote}\n", encoding="utf-8")
    return p


GOOD = 'name = "b"\naddress = "10.0.0.2"\nram_gib = 128\nlink = "10gbe"'


def test_a_minimal_cluster_by_hand(tmp_path):
    c = load_cluster(str(_write(tmp_path, GOOD)))
    (h,) = c.remotes
    assert h.port == DEFAULT_PORT and h.bind == "10.0.0.2" and h.devices == ("CPU",) and not h.cache
    assert h.hardware.gpus == () and h.hardware.ram_total_bytes == 128 * GIB   # by hand: a CPU box


def test_link_table_overrides_a_preset(tmp_path):
    c = load_cluster(str(_write(tmp_path, GOOD.replace('link = "10gbe"',
                                                       'link = { preset = "10gbe", latency_us = 40 }'))))
    link = c.remotes[0].link
    assert link.latency_us == 40 and link.bandwidth_gbs == pytest.approx(10 / 8 * TCP_SHARE, rel=1e-4)
    assert "latency_us from the cluster file" in link.source


@pytest.mark.parametrize("edit, key, message", [
    # unknown key in a host
    (GOOD + "\nram = 5", "remote[0].ram", "unknown key"),
    # IPv6: the RPC client splits the endpoint at the first ':'
    (GOOD.replace("10.0.0.2", "fe80::1"), "remote[0].address", "IPv6"),
    # not an address at all
    (GOOD.replace("10.0.0.2", "10.0.0.999"), "remote[0].address", "IPv4"),
    # a DNS name needs an explicit IPv4 bind (rpc-server binds with inet_addr)
    (GOOD.replace("10.0.0.2", "box2.lan"), "remote[0].bind", "IPv4"),
    (GOOD + '\nbind = "box2.lan"', "remote[0].bind", "inet_addr"),
    (GOOD + "\nport = 70000", "remote[0].port", "TCP port"),
    (GOOD + "\nport = true", "remote[0].port", "integer"),
    (GOOD + '\ndevices = ["CUDA0"]', "remote[0].devices", "0 GPU"),
    (GOOD.replace("ram_gib = 128", 'ram_gib = 128\nvram_gib = [24]\ngpu = "RTX 3090"')
     + '\ndevices = ["CPU", "CUDA0"]', "remote[0].devices", "CPU must come last"),
    (GOOD + '\ndevices = ["GPU0"]', "remote[0].devices", "not CPU or CUDA"),
    (GOOD.replace('link = "10gbe"', 'link = "ethernet"'), "remote[0].link", "unknown link"),
    (GOOD.replace('link = "10gbe"', "link = { bandwidth_gbs = 1.1 }"), "remote[0].link", "latency_us"),
    (GOOD.replace('link = "10gbe"', 'link = { preset = "1gbe", transport = "udp" }'), "remote[0].link.transport",
     "not one of"),
    (GOOD.replace('link = "10gbe"', "link = { bandwidth_gbs = -1.0, latency_us = 3 }"),
     "remote[0].link.bandwidth", "not a link bandwidth"),
    (GOOD.replace('\nlink = "10gbe"', ""), "remote[0].link", "missing"),
    (GOOD.replace("ram_gib = 128", "cores = 8"), "remote[0].profile", "no machine"),
    (GOOD.replace("ram_gib = 128", "ram_gib = -4"), "remote[0].ram_gib", "positive"),
    (GOOD.replace('name = "b"', 'name = "main"'), "remote[0].name", "llama-server host"),
    (GOOD.replace('name = "b"', 'name = "a b"'), "remote[0].name", "host name"),
    (GOOD + "\nthreads = 0", "remote[0].threads", "at least 1"),
])
def test_bad_cluster_names_file_and_key(tmp_path, edit, key, message):
    path = _write(tmp_path, edit)
    with pytest.raises(ProfileError, match=message) as info:
        load_cluster(str(path))
    assert info.value.key == key and info.value.path == str(path)
    assert exit_code_for(info.value) == 2


def test_cluster_level_errors(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[cluster]\nmain = "rtx3090ti-9950x-96g"\n', encoding="utf-8")
    with pytest.raises(ProfileError, match="no \\[\\[remote\\]\\]"):
        load_cluster(str(p))
    p.write_text('[cluster]\nmain = "nonesuch"\n[[remote]]\n' + GOOD, encoding="utf-8")
    with pytest.raises(ProfileError, match="main host") as info:
        load_cluster(str(p))
    assert info.value.key == "cluster.main"
    p.write_text('[cluster]\nmain = "rtx3090ti-9950x-96g"\n[[remote]]\n' + GOOD + "\n[[remote]]\n"
                 + GOOD.replace('"b"', '"c"'), encoding="utf-8")
    with pytest.raises(ProfileError, match="endpoint 10.0.0.2:50052 used twice"):
        load_cluster(str(p))
    p.write_text('[clusters]\nmain = "x"\n', encoding="utf-8")
    with pytest.raises(ProfileError, match="unknown table"):
        load_cluster(str(p))
    p.write_text('[cluster\n', encoding="utf-8")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_cluster(str(p))
    with pytest.raises(ProfileError, match="unknown cluster"):
        load_cluster("no-such-cluster")


def test_profile_reference_relative_to_the_cluster_file(tmp_path):
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "b.toml").write_text(
        (CLUSTERS_DIR / "hosts" / "epyc7532-256g.toml").read_text(encoding="utf-8"), encoding="utf-8")
    c = load_cluster(str(_write(tmp_path, GOOD.replace("ram_gib = 128", 'profile = "hosts/b.toml"'))))
    assert c.remotes[0].hardware.physical_cores == 32


# --- the flag ----------------------------------------------------------------------------------------------------

def test_rpc_host_flag_quick_case():
    h = parse_rpc_host("box2=addr:192.168.1.20,ram:256,ram-bw:204.8,cores:32,bw:10gbe,cache,threads:32")
    assert (h.name, h.endpoint, h.bind, h.devices, h.cache, h.threads) == (
        "box2", "192.168.1.20:50052", "192.168.1.20", ("CPU",), True, 32)
    assert h.hardware.ram_total_bytes == 256 * GIB and h.hardware.ram_bw_gbs == 204.8
    assert h.link.bandwidth_gbs == pytest.approx(10 / 8 * TCP_SHARE, rel=1e-4)


def test_rpc_host_flag_measured_link_and_gpus():
    h = parse_rpc_host('gpu2=addr:10.1.1.2,port:50100,ram:128,vram:24+24,gpu:"RTX 3090",bw:9.4gbit,lat:30us,'
                       'devices:CUDA0+CUDA1+CPU,rdma')
    assert h.port == 50100 and h.devices == ("CUDA0", "CUDA1", "CPU")
    assert [g.total_bytes for g in h.hardware.gpus] == [24 * GIB, 24 * GIB]
    assert (h.link.bandwidth_gbs, h.link.latency_us, h.link.transport) == (pytest.approx(9.4 / 8), 30.0, "rdma")


def test_rpc_host_name_is_the_address_by_default():
    h = parse_rpc_host("10.0.0.7=ram:64,link:1gbe")
    assert h.address == "10.0.0.7" and h.bind == "10.0.0.7"


@pytest.mark.parametrize("text, message", [
    ("box2", "NAME=key:value"),
    ("box2=addr:10.0.0.2,ram:256", "no link"),
    ("box2=addr:10.0.0.2,bw:10gbe", "no machine"),
    ("box2=addr:10.0.0.2,ram:256,bw:9.4gbit", "add lat"),
    ("box2=addr:10.0.0.2,ram:256,bw:fast", "preset"),
    ("box2=addr:10.0.0.2,ram:256,bw:10gbe,lat:soon", "one-way latency"),
    ("box2=addr:10.0.0.2,ram:256,bw:10gbe,colour:red", "unknown key"),
    ("box2=addr:10.0.0.2,ram:256,bw:10gbe,rm -rf /", "key:value"),
    ("box2=addr:10.0.0.2,ram:256,bw:10gbe,,cache", "empty item"),
    ("box2=addr:10.0.0.2,ram:256,ram:128,bw:10gbe", "given twice"),
    ("box2=addr:10.0.0.2,ram:-5,bw:10gbe", "non-negative number"),
    ("box2=addr:10.0.0.2,ram:256,bw:10gbe,port:0", "TCP port"),
    ("box2=addr:box2.lan,ram:256,bw:10gbe", "bind"),
    ("box2=addr:10.0.0.2,ram:256,bw:10gbe,devices:CUDA0", "0 GPU"),
    ("box2=addr:10.0.0.2,ram:256,bw:10gbe,cache,nocache", "contradictory"),
    ("box2=addr:10.0.0.2;reboot,ram:256,bw:10gbe", "address"),
    ("main=addr:10.0.0.2,ram:256,bw:10gbe", "host name"),
])
def test_rpc_host_flag_rejects(text, message):
    with pytest.raises(UsageError, match=message) as info:
        parse_rpc_host(text)
    assert exit_code_for(info.value) == 2 and "\n" not in str(info.value)


def test_cluster_from_flags_rejects_duplicates():
    main = load_profile("rtx3090ti-9950x-96g")
    c = cluster_from_flags(main, ["a=addr:10.0.0.2,ram:64,bw:1gbe", "b=addr:10.0.0.3,ram:64,bw:1gbe"])
    assert [d.name for d in c.remote_devices] == ["a/CPU", "b/CPU"]
    assert [d.global_index for d in c.remote_devices] == [0, 1]
    with pytest.raises(UsageError, match="twice"):
        cluster_from_flags(main, ["a=addr:10.0.0.2,ram:64,bw:1gbe", "a=addr:10.0.0.3,ram:64,bw:1gbe"])


@pytest.mark.parametrize("text, ok", [("192.168.1.2", True), ("box2.lan", True), ("box-2", True),
                                      ("::1", False), ("[::1]", False), ("1.2.3", False), ("a_b", False),
                                      ("-box", False), ("10.0.0.2:50052", False)])
def test_check_address(text, ok):
    assert (check_address(text) is None) is ok


def test_check_bind():
    assert check_bind("0.0.0.0") is None and check_bind("10.0.0.2") is None
    assert check_bind("localhost") and check_bind("255.255.255.255")


def test_units():
    assert parse_bandwidth("9.4gbit") == pytest.approx(1.175) and parse_bandwidth("1.1GB/s") == 1.1
    assert parse_bandwidth("940mbit") == pytest.approx(0.1175)
    assert parse_latency("25us") == 25 and parse_latency("0.05ms") == pytest.approx(50)
