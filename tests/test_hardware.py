"""Hardware stage: probe against faked /proc, /sys, psutil and NVML; profiles; overrides; the two commands."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from click.testing import CliRunner

from planner import hardware as hwmod
from planner.cli import main
from planner.errors import OutputExistsError, ProfileError, UsageError, exit_code_for
from planner.hardware import (DEFAULT_PROFILE, GIB, GPU, Hardware, h2d_gbs, load_profile, lookup_gpu, match_gpu,
                              parse_vram, probe, ram_bw_gbs, resolve_hardware, save_profile)

SHIPPED = {
    # name: (GPU count, VRAM GiB, RAM GiB, RAM GB/s, physical cores, logical cores, NUMA nodes)
    "rtx3090ti-9950x-96g": (1, 24, 96, 102.4, 16, 32, 1),
    "rtx4090-7950x-192g": (1, 24, 192, 76.8, 16, 32, 1),
    "2xrtx3090-epyc9354-384g": (2, 48, 384, 460.8, 32, 64, 1),
    "rtx5090-tr7980x-256g": (1, 32, 256, 166.4, 64, 128, 1),
    "rtxa6000-tr7985wx-512g": (1, 48, 512, 307.2, 64, 128, 1),
    "cpu-epyc9654-768g": (0, 0, 768, 460.8, 96, 192, 1),
    "rtx4070tis-5800x-64g": (1, 16, 64, 51.2, 8, 16, 1),
    "cpu-2xgold6248-384g": (0, 0, 384, 281.568, 40, 80, 2),
}


# --- fakes -------------------------------------------------------------------------------------------------------

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD Ryzen 9 9950X 16-Core Processor
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512vl avx512_vnni avx512_bf16 avx512vbmi sha_ni

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD Ryzen 9 9950X 16-Core Processor
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512vl avx512_vnni avx512_bf16 avx512vbmi sha_ni

processor\t: 2
vendor_id\t: AuthenticAMD
model name\t: AMD Ryzen 9 9950X 16-Core Processor
physical id\t: 0
core id\t\t: 1
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512vl avx512_vnni avx512_bf16 avx512vbmi sha_ni
"""

ARM_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""

MEMINFO = """\
MemTotal:       98304000 kB
MemFree:        90000000 kB
MemAvailable:   95000000 kB
HugePages_Total:      16
HugePages_Free:       12
Hugepagesize:       2048 kB
"""


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_root(tmp_path: Path, *, cgroup: str | None = None, cpuinfo: str = X86_CPUINFO) -> Path:
    root = tmp_path / "root"
    write(root, "proc/cpuinfo", cpuinfo)
    write(root, "proc/meminfo", MEMINFO)
    write(root, "sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    write(root, "sys/kernel/mm/transparent_hugepage/defrag", "always [defer] defer+madvise madvise never\n")
    node = "sys/devices/system/node"
    write(root, f"{node}/online", "0-1\n")  # not a node directory: must be skipped
    write(root, f"{node}/node1/meminfo", "Node 1 MemTotal:       49152000 kB\nNode 1 MemFree:  100 kB\n")
    write(root, f"{node}/node1/cpulist", "8-15,24-31\n")
    write(root, f"{node}/node0/meminfo", "Node 0 MemTotal:       49152000 kB\nNode 0 MemFree:  100 kB\n")
    write(root, f"{node}/node0/cpulist", "0-7,16-23\n")
    cg = "sys/fs/cgroup"
    if cgroup == "v2":
        write(root, f"{cg}/memory.max", "68719476736\n")
        write(root, f"{cg}/cpu.max", "800000 100000\n")
    elif cgroup == "v2-max":
        write(root, f"{cg}/memory.max", "max\n")
        write(root, f"{cg}/cpu.max", "max 100000\n")
    elif cgroup == "v2-nested":  # the leaf is tighter than its parent; the tightest along the path applies
        write(root, "proc/self/cgroup", "0::/user.slice/app\n")
        write(root, f"{cg}/user.slice/memory.max", "34359738368\n")
        write(root, f"{cg}/user.slice/app/memory.max", "17179869184\n")
        write(root, f"{cg}/user.slice/app/cpu.max", "150000 100000\n")
    elif cgroup == "v1":
        write(root, f"{cg}/memory/memory.limit_in_bytes", "34359738368\n")
        write(root, f"{cg}/cpu/cpu.cfs_quota_us", "250000\n")
        write(root, f"{cg}/cpu/cpu.cfs_period_us", "100000\n")
    elif cgroup == "v1-unlimited":
        write(root, f"{cg}/memory/memory.limit_in_bytes", "9223372036854771712\n")
        write(root, f"{cg}/cpu/cpu.cfs_quota_us", "-1\n")
        write(root, f"{cg}/cpu/cpu.cfs_period_us", "100000\n")
    return root


def fake_system(*, total=100 * GIB, available=90 * GIB, swap=8 * GIB, physical=16, logical=32,
                disk_free=500 * GIB, fail: str = ""):
    """The psutil seam."""
    def maybe_fail(name, value):
        if name == fail:
            raise OSError(f"{name} broke")
        return value

    n_logical = logical
    return SimpleNamespace(
        virtual_memory=lambda: maybe_fail("virtual_memory", SimpleNamespace(total=total, available=available)),
        swap_memory=lambda: maybe_fail("swap_memory", SimpleNamespace(total=swap)),
        cpu_count=lambda logical=True: n_logical if logical else physical,
        disk_usage=lambda path: maybe_fail("disk_usage", SimpleNamespace(free=disk_free)),
    )


class FakeNVMLError(Exception):
    """Like pynvml.NVMLError: str() is the driver's message."""


class FakeNVML:
    """Answers like NVML on a two-RTX-3090 box (GPU 1 in an x8 slot, its name as bytes like old pynvml)."""

    NVML_CLOCK_MEM = 2

    def __init__(self, cards=None, fail: dict | None = None):
        self.cards = cards if cards is not None else [
            dict(name="NVIDIA GeForce RTX 3090", total=25769803776, free=25393360896, gen=4, width=16, cc=(8, 6),
                 bus=384, clock=9751),
            dict(name=b"NVIDIA GeForce RTX 3090", total=25769803776, free=24696061952, gen=4, width=8, cc=(8, 6),
                 bus=384, clock=9751),
        ]
        self.fail = fail or {}  # function name -> set of card indexes (or "all") that raise
        self.calls: list[str] = []

    def _maybe_fail(self, fn, index=None):
        self.calls.append(fn)
        rule = self.fail.get(fn)
        if rule == "all" or (rule is not None and index in rule):
            raise FakeNVMLError(f"{fn}: Not Supported")

    def nvmlInit(self):
        self._maybe_fail("nvmlInit")

    def nvmlShutdown(self):
        self.calls.append("nvmlShutdown")

    def nvmlDeviceGetCount(self):
        self._maybe_fail("nvmlDeviceGetCount")
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, i):
        self._maybe_fail("nvmlDeviceGetHandleByIndex", i)
        return i

    def nvmlDeviceGetName(self, h):
        self._maybe_fail("nvmlDeviceGetName", h)
        return self.cards[h]["name"]

    def nvmlDeviceGetMemoryInfo(self, h):
        self._maybe_fail("nvmlDeviceGetMemoryInfo", h)
        c = self.cards[h]
        return SimpleNamespace(total=c["total"], free=c["free"], used=c["total"] - c["free"])

    def nvmlDeviceGetCudaComputeCapability(self, h):
        self._maybe_fail("nvmlDeviceGetCudaComputeCapability", h)
        return self.cards[h]["cc"]

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        self._maybe_fail("nvmlDeviceGetMaxPcieLinkGeneration", h)
        return self.cards[h]["gen"]

    def nvmlDeviceGetMaxPcieLinkWidth(self, h):
        self._maybe_fail("nvmlDeviceGetMaxPcieLinkWidth", h)
        return self.cards[h]["width"]

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h):
        self._maybe_fail("nvmlDeviceGetCurrPcieLinkGeneration", h)
        return 1  # idle links train down: only a fallback

    def nvmlDeviceGetCurrPcieLinkWidth(self, h):
        self._maybe_fail("nvmlDeviceGetCurrPcieLinkWidth", h)
        return self.cards[h]["width"]

    def nvmlDeviceGetMemoryBusWidth(self, h):
        self._maybe_fail("nvmlDeviceGetMemoryBusWidth", h)
        return self.cards[h]["bus"]

    def nvmlDeviceGetMaxClockInfo(self, h, clock_type):
        self._maybe_fail("nvmlDeviceGetMaxClockInfo", h)
        assert clock_type == self.NVML_CLOCK_MEM
        return self.cards[h]["clock"]


# --- the probe ---------------------------------------------------------------------------------------------------

def test_probe_two_rtx3090_box_reads_every_figure(tmp_path):
    root = make_root(tmp_path, cgroup="v2")
    nvml = FakeNVML()
    hw = probe(root, nvml=nvml, disk_path=tmp_path / "models" / "missing.gguf", system=fake_system())

    assert [g.index for g in hw.gpus] == [0, 1]
    g0, g1 = hw.gpus
    assert g0.name == g1.name == "NVIDIA GeForce RTX 3090"  # bytes from old pynvml decoded
    assert g0.total_bytes == 25769803776 and g0.free_bytes == 25393360896
    assert g1.free_bytes == 24696061952
    assert g0.mem_bw_gbs == 936.0  # spec table row "RTX 3090", not the 3090 Ti's 1008
    assert (g0.pcie_gen, g0.pcie_width, g1.pcie_width) == (4, 16, 8)
    assert g0.h2d_gbs == 25.21 and g1.h2d_gbs == 12.6  # 31.5 and 15.75 GB/s links * 0.8
    assert g0.compute_capability == "8.6" and g0.source == "probed"
    assert hw.source_of("gpus[1].mem_bw_gbs") == "probed"
    assert nvml.calls[-1] == "nvmlShutdown"
    assert "nvmlDeviceGetCurrPcieLinkGeneration" not in nvml.calls  # max link preferred over the idle link

    assert hw.ram_total_bytes == 100 * GIB and hw.ram_available_bytes == 90 * GIB
    assert hw.ram_limit_bytes == 64 * GIB and hw.usable_ram_bytes == 64 * GIB
    assert hw.cpu_quota_cores == 8.0 and hw.threads_default == 8  # 16 physical cores capped by cpu.max
    assert hw.cpu_model == "AMD Ryzen 9 9950X 16-Core Processor"
    assert hw.cpu_flags == ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")
    assert (hw.physical_cores, hw.logical_cores) == (16, 32)
    assert [(n.id, n.mem_total_bytes, n.cpus) for n in hw.numa_nodes] == [
        (0, 49152000 * 1024, "0-7,16-23"), (1, 49152000 * 1024, "8-15,24-31")]
    assert (hw.thp_enabled, hw.thp_defrag) == ("madvise", "defer")
    assert hw.hugepages_free == 12 and hw.swap_total_bytes == 8 * GIB
    assert hw.disk_free_bytes == 500 * GIB  # the nearest existing folder of a not-yet-downloaded model
    assert hw.name == "probed"

    # RAM bandwidth is never probed: the default profile's 2 x DDR5-6400
    assert (hw.ram_bw_gbs, hw.ram_channels, hw.ram_mts) == (102.4, 2, 6400)
    assert hw.source_of("ram_bw_gbs") == "default" and hw.source_of("ram_total_bytes") == "probed"
    assert any("RAM bandwidth cannot be probed" in n for n in hw.notes)


@pytest.mark.parametrize("cgroup, limit, quota", [
    ("v2", 64 * GIB, 8.0),
    ("v2-max", None, None),  # "max" = no limit
    ("v2-nested", 16 * GIB, 1.5),  # the tightest cgroup along /proc/self/cgroup's path
    ("v1", 32 * GIB, 2.5),  # memory.limit_in_bytes, cfs_quota_us / cfs_period_us
    ("v1-unlimited", None, None),  # LONG_MAX page-rounded and quota -1 mean no limit
    (None, None, None),  # no cgroup files at all
])
def test_probe_cgroup_limits(tmp_path, cgroup, limit, quota):
    hw = probe(make_root(tmp_path, cgroup=cgroup), nvml=FakeNVML(cards=[]), system=fake_system())
    assert hw.ram_limit_bytes == limit
    assert hw.cpu_quota_cores == quota
    assert hw.usable_ram_bytes == min(100 * GIB, limit or 100 * GIB)
    assert hw.threads_default == (16 if quota is None else int(quota))


def test_probe_without_pynvml_is_cpu_only_with_reason(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    hw = probe(make_root(tmp_path), system=fake_system())
    assert hw.gpus == ()
    assert hw.notes[0].startswith("NVML unavailable: ")
    assert "ImportError" in hw.notes[0] or "ModuleNotFoundError" in hw.notes[0]
    assert "planning for the CPU only" in hw.notes[0]
    assert hw.ram_total_bytes == 100 * GIB  # the rest is still probed


@pytest.mark.parametrize("failing, why", [
    ("nvmlInit", "nvmlInit failed"),  # no driver loaded
    ("nvmlDeviceGetCount", "nvmlDeviceGetCount failed"),
])
def test_probe_failing_nvml_is_cpu_only_with_reason(tmp_path, failing, why):
    nvml = FakeNVML(fail={failing: "all"})
    hw = probe(make_root(tmp_path), nvml=nvml, system=fake_system())
    assert hw.gpus == ()
    assert any(why in n and f"{failing}: Not Supported" in n and "CPU only" in n for n in hw.notes)


def test_probe_skips_an_unreadable_gpu_and_degrades_optional_figures(tmp_path):
    nvml = FakeNVML(fail={"nvmlDeviceGetMemoryInfo": {1},  # GPU 1 is lost
                          "nvmlDeviceGetMaxPcieLinkGeneration": {0},  # falls back to the current link
                          "nvmlDeviceGetCudaComputeCapability": {0}})
    hw = probe(make_root(tmp_path), nvml=nvml, system=fake_system())
    assert len(hw.gpus) == 1 and hw.gpus[0].index == 0
    assert hw.gpus[0].pcie_gen == 1 and hw.gpus[0].h2d_gbs == h2d_gbs(1, 16) == 3.2
    assert hw.gpus[0].compute_capability is None
    assert any(n.startswith("GPU 1: NVML failed") and "left out" in n for n in hw.notes)


def test_probe_gpu_bandwidth_fallbacks(tmp_path):
    cards = [
        # not in the table: NVML bus width x max memory clock x 2 = 384/8 * 9751 * 2 / 1000
        dict(name="NVIDIA Mystery Card", total=24 * GIB, free=24 * GIB, gen=4, width=16, cc=(8, 6), bus=384,
             clock=9751),
        # a laptop part shares the desktop name but not its bandwidth: the table is not trusted
        dict(name="NVIDIA GeForce RTX 4090 Laptop GPU", total=16 * GIB, free=16 * GIB, gen=4, width=16, cc=(8, 9),
             bus=256, clock=9000),
        # nothing known: the default profile's card, labelled "default"
        dict(name="NVIDIA Unknown", total=8 * GIB, free=8 * GIB, gen=None, width=None, cc=(7, 5), bus=None,
             clock=None),
    ]
    nvml = FakeNVML(cards=cards, fail={"nvmlDeviceGetMemoryBusWidth": {2}, "nvmlDeviceGetMaxClockInfo": {2},
                                       "nvmlDeviceGetMaxPcieLinkGeneration": {2},
                                       "nvmlDeviceGetCurrPcieLinkGeneration": {2}})
    hw = probe(make_root(tmp_path), nvml=nvml, system=fake_system())
    assert hw.gpus[0].mem_bw_gbs == 936.1
    assert hw.gpus[1].mem_bw_gbs == 576.0
    assert hw.gpus[2].mem_bw_gbs == 1008.0 and hw.source_of("gpus[2].mem_bw_gbs") == "default"
    assert hw.gpus[2].pcie_gen is None and hw.gpus[2].h2d_gbs == 25.21
    assert hw.source_of("gpus[2].h2d_gbs") == "default" and hw.source_of("gpus[0].h2d_gbs") == "probed"


def test_probe_arm_and_failed_reads_degrade(tmp_path):
    root = make_root(tmp_path, cpuinfo=ARM_CPUINFO)
    (root / "sys/kernel/mm/transparent_hugepage/enabled").unlink()  # kernel without THP
    system = fake_system(physical=None, logical=4, fail="virtual_memory")  # psutil gives no physical count on some ARM
    hw = probe(root, nvml=FakeNVML(cards=[]), system=system, disk_path=tmp_path)
    assert hw.cpu_flags == ("neon", "asimddp")  # aarch64 calls NEON "asimd"
    assert hw.cpu_model.startswith("unknown ")
    assert (hw.physical_cores, hw.logical_cores) == (4, 4)
    assert hw.ram_total_bytes == 98304000 * 1024 and hw.ram_available_bytes == 95000000 * 1024  # /proc/meminfo
    assert hw.thp_enabled is None and hw.thp_defrag == "defer"
    assert any("virtual_memory broke" in n for n in hw.notes)
    assert any("CPU model not found" in n for n in hw.notes)


def test_probe_empty_root_never_raises(tmp_path):
    hw = probe(tmp_path, nvml=FakeNVML(cards=[]), system=fake_system())
    assert hw.numa_nodes == () and hw.thp_enabled is None and hw.hugepages_free is None
    assert hw.ram_limit_bytes is None and hw.cpu_flags == ()


# --- GPU table ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("nvml_name, total_gib, row", [
    ("NVIDIA GeForce RTX 3090 Ti", 24, "RTX 3090 Ti"),  # the longer row wins over "RTX 3090"
    ("NVIDIA GeForce RTX 3090", 24, "RTX 3090"),
    ("NVIDIA GeForce RTX 4070 Ti SUPER", 16, "RTX 4070 Ti Super"),
    ("NVIDIA A100-SXM4-80GB", 80, "A100 SXM4 80GB"),  # dashes, word order differs from the PCIe card
    ("NVIDIA A100 80GB PCIe", 80, "A100 PCIe 80GB"),
    ("NVIDIA H100 80GB HBM3", 79.6, "H100 80GB HBM3"),  # 81559 MiB visible
    ("NVIDIA RTX 6000 Ada Generation", 48, "RTX 6000 Ada"),
    ("NVIDIA RTX A6000", 45, "RTX A6000"),  # ECC on hides some memory
    ("NVIDIA A10", 24, "A10"),  # not A100
    ("NVIDIA L4", 24, "L4"),  # not L40S
    ("Tesla P40", 24, "P40"),
    ("NVIDIA GeForce RTX 4060 Ti", 8, None),  # the 8 GB twin: size check rejects the 16 GB row
    ("NVIDIA GeForce RTX 4090 Laptop GPU", 16, None),
])
def test_match_gpu(nvml_name, total_gib, row):
    spec = match_gpu(nvml_name, int(total_gib * GIB))
    assert (spec.name if spec else None) == row


def test_gpu_table_rows_are_sane():
    rows = hwmod.gpu_table()
    assert len({frozenset(hwmod._name_words(r.name)) for r in rows}) == len(rows)
    for r in rows:
        assert r.mem_bw_gbs > 0 and r.memory_bytes > 0 and r.source_url.startswith("https://")
        assert r.pcie_gen in hwmod.PCIE_LANE and r.pcie_width in (8, 16)
    spec = lookup_gpu("rtx 3090")
    assert (spec.memory_bytes, spec.mem_bw_gbs, spec.pcie_gen, spec.pcie_width) == (24 * GIB, 936.0, 4, 16)


@pytest.mark.parametrize("typed, row", [("3090", "RTX 3090"), ("3090ti", "RTX 3090 Ti"), ("RTX 4090", "RTX 4090"),
                                        ("a6000", "RTX A6000"), ("NVIDIA GeForce RTX 5090", "RTX 5090")])
def test_lookup_gpu(typed, row):
    assert lookup_gpu(typed).name == row


def test_lookup_gpu_unknown_and_ambiguous():
    with pytest.raises(UsageError, match="unknown GPU model 'RTX 9999'"):
        lookup_gpu("RTX 9999")
    with pytest.raises(UsageError, match="ambiguous.*A100 SXM4 80GB"):
        lookup_gpu("A100")


def test_bandwidth_arithmetic():
    assert h2d_gbs(4, 16) == 25.21  # 16 GT/s * 128/130 / 8 * 16 lanes = 31.51 GB/s, * 0.8
    assert h2d_gbs(3, 16) == 12.6
    assert h2d_gbs(5, 16) == 50.41
    assert h2d_gbs(2, 16) == 6.4  # 8b/10b
    assert ram_bw_gbs(2, 6400) == 102.4
    assert ram_bw_gbs(12, 2933) == 281.568


# --- profiles ----------------------------------------------------------------------------------------------------

def test_shipped_profiles_are_exactly_the_eight():
    assert hwmod.profile_names() == sorted(SHIPPED)
    assert DEFAULT_PROFILE in SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_profile_loads(name):
    n_gpus, vram, ram, bw, phys, logical, nodes = SHIPPED[name]
    hw = load_profile(name)
    assert hw.name == name
    assert len(hw.gpus) == n_gpus and hw.vram_total_bytes == vram * GIB
    assert hw.ram_total_bytes == ram * GIB and hw.ram_bw_gbs == bw
    assert (hw.physical_cores, hw.logical_cores) == (phys, logical)
    assert len(hw.numa_nodes) == nodes and sum(n.mem_total_bytes for n in hw.numa_nodes) == ram * GIB
    assert all(src == "profile" for src in hw.sources.values())
    assert hw.ram_channels * hw.ram_mts * 8 / 1000 == pytest.approx(bw)  # bandwidth is channels x MT/s
    for g in hw.gpus:
        spec = match_gpu(g.name, g.total_bytes)
        assert spec is not None and spec.mem_bw_gbs == g.mem_bw_gbs  # profile and spec table agree
        assert g.h2d_gbs == h2d_gbs(g.pcie_gen, g.pcie_width)
    text = (hwmod.PROFILES / f"{name}.toml").read_text()
    assert re.search(r"# .*https://www\.(amd|intel)\.com/", text), "CPU spec must be cited"
    if n_gpus:
        assert "https://www.nvidia.com/" in text, "GPU spec must be cited"


def test_seed_profile_figures():
    hw = load_profile(DEFAULT_PROFILE)
    (g,) = hw.gpus
    assert (g.name, g.total_bytes, g.mem_bw_gbs, g.pcie_gen, g.pcie_width, g.compute_capability) == (
        "NVIDIA GeForce RTX 3090 Ti", 24 * GIB, 1008.0, 4, 16, "8.6")
    assert (hw.ram_channels, hw.ram_mts, hw.ram_bw_gbs) == (2, 6400, 102.4)
    assert hw.cpu_flags == ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")
    assert hw.thp_enabled == "always"
    gold = load_profile("cpu-2xgold6248-384g")
    assert [n.cpus for n in gold.numa_nodes] == ["0-19,40-59", "20-39,60-79"]
    assert "avx512_bf16" not in gold.cpu_flags  # Cascade Lake has VNNI, not BF16


GOOD = """\
[cpu]
model = "Test CPU"
physical_cores = 8
logical_cores = 16

[memory]
total_gib = 64
channels = 2
mts = 3200

[[gpu]]
name = "NVIDIA GeForce RTX 3090"
memory_gib = 24
"""


@pytest.mark.parametrize("edit, key, message", [
    (("total_gib = 64", "total_gib = -64"), "memory.total_gib", "negative size"),
    (("memory_gib = 24", "memory_gib = -1"), "gpu[0].memory_gib", "negative size"),
    (("mts = 3200", "mts = 3200\nspeed = 1"), "memory.speed", "unknown key"),
    (("logical_cores = 16", "logical_cores = 16\ncores = 8"), "cpu.cores", "unknown key"),
    (("[cpu]", "[disk]\nfree_gib = 1\n\n[cpu]"), "disk", "unknown table"),
    (("physical_cores = 8", 'physical_cores = "8"'), "cpu.physical_cores", "must be an integer, not str"),
    (("physical_cores = 8", "physical_cores = true"), "cpu.physical_cores", "must be an integer, not bool"),
    (("total_gib = 64", 'total_gib = "64"'), "memory.total_gib", "must be a number"),
    (("model = \"Test CPU\"\n", ""), "cpu.model", "missing required key"),
    (("channels = 2\n", ""), "memory.bandwidth_gbs", "give bandwidth_gbs, or channels and mts"),
    (("logical_cores = 16", "logical_cores = 4"), "cpu.logical_cores", "fewer than physical_cores"),
    (("logical_cores = 16", 'logical_cores = 16\nflags = ["avx3"]'), "cpu.flags", "'avx3' is not one of"),
    (("mts = 3200", 'mts = 3200\n[os]\nthp_enabled = "on"'), "os.thp_enabled", "'on' is not one of"),
    (("memory_gib = 24", "memory_gib = 24\npcie_gen = 7"), "gpu[0].pcie_gen", "7 is not one of"),
    (('name = "NVIDIA GeForce RTX 3090"', 'name = "Homebrew GPU"'), "gpu[0].mem_bw_gbs", "not in gpus.csv"),
    (("physical_cores = 8", "physical_cores = 0"), "cpu.physical_cores", "must be positive"),
])
def test_bad_profile_names_file_and_key(tmp_path, edit, key, message):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(*edit))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    err = info.value
    assert err.key == key and err.path == str(path)
    assert message in str(err) and str(path) in str(err) and repr(key) in str(err)
    assert exit_code_for(err) == 2


def test_good_profile_uses_the_gpu_table_when_bandwidth_is_left_out(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(GOOD)
    hw = load_profile(path)
    assert hw.name == "mine" and hw.gpus[0].mem_bw_gbs == 936.0 and hw.ram_bw_gbs == 51.2
    assert hw.gpus[0].h2d_gbs == 25.21 and hw.gpus[0].pcie_gen is None  # link not given: gen4 x16 assumed


def test_broken_toml_and_unknown_name(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[cpu\n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(path)
    with pytest.raises(ProfileError, match="did you mean 'rtx3090ti-9950x-96g'"):
        load_profile("rtx3090ti-9950x")
    with pytest.raises(ProfileError, match="profile file not found"):
        load_profile(tmp_path / "absent.toml")


def test_save_load_round_trip_of_a_probed_machine(tmp_path):
    hw = probe(make_root(tmp_path, cgroup="v1"), nvml=FakeNVML(), system=fake_system(total=25276063744))
    path = save_profile(hw, tmp_path / "box.toml")
    back = load_profile(path)
    for f in ("ram_total_bytes", "ram_limit_bytes", "swap_total_bytes", "ram_bw_gbs", "ram_channels", "ram_mts",
              "cpu_model", "physical_cores", "logical_cores", "cpu_quota_cores", "cpu_flags", "numa_nodes",
              "thp_enabled", "thp_defrag", "hugepages_free"):
        assert getattr(back, f) == getattr(hw, f), f
    assert back.ram_total_bytes == 25276063744  # not a whole GiB, still exact
    # free VRAM is a moment, not a machine: left out; everything else about the cards survives
    assert back.gpus == tuple(replace(g, free_bytes=None, source="profile") for g in hw.gpus)
    assert back.ram_available_bytes is None and back.disk_free_bytes is None
    assert not list(tmp_path.glob(".box.toml.*"))  # no temp file left behind


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_profile_round_trips_exactly(tmp_path, name):
    hw = load_profile(name)
    back = load_profile(save_profile(hw, tmp_path / f"{name}.toml"))
    assert back == hw


def test_save_refuses_to_overwrite_without_force(tmp_path):
    hw = load_profile(DEFAULT_PROFILE)
    path = tmp_path / "x.toml"
    path.write_text("keep me")
    with pytest.raises(OutputExistsError) as info:
        save_profile(hw, path)
    assert exit_code_for(info.value) == 3
    assert path.read_text() == "keep me"
    save_profile(hw, path, force=True)
    assert load_profile(path).ram_total_bytes == 96 * GIB


# --- overrides ---------------------------------------------------------------------------------------------------

def _probed(tmp_path):
    hw = probe(make_root(tmp_path, cgroup="v2"), nvml=FakeNVML(), system=fake_system())
    return lambda **kw: hw


def _no_probe(**kw):
    raise AssertionError("the probe must not run when the machine is described by hand")


def test_no_flags_means_the_probe(tmp_path):
    probed = _probed(tmp_path)()
    assert resolve_hardware(probe_fn=lambda **kw: probed) == probed


def test_user_flags_beat_the_probe(tmp_path):
    hw = resolve_hardware(cores=8, ram_bw=80.5, probe_fn=_probed(tmp_path))
    assert (hw.physical_cores, hw.logical_cores) == (8, 16)  # keeps the probed SMT ratio
    assert hw.ram_bw_gbs == 80.5 and hw.source_of("ram_bw_gbs") == "user"
    assert hw.source_of("physical_cores") == "user" and hw.source_of("ram_total_bytes") == "probed"
    assert hw.ram_total_bytes == 100 * GIB and len(hw.gpus) == 2
    assert not any("RAM bandwidth cannot be probed" in n for n in hw.notes)


def test_user_flags_beat_the_profile():
    hw = resolve_hardware(profile="cpu-2xgold6248-384g", ram=100, cores=20, probe_fn=_no_probe)
    assert hw.ram_total_bytes == 100 * GIB and hw.source_of("ram_total_bytes") == "user"
    assert [n.mem_total_bytes for n in hw.numa_nodes] == [50 * GIB, 50 * GIB]
    assert (hw.physical_cores, hw.logical_cores) == (20, 40)
    assert hw.ram_bw_gbs == 281.568 and hw.source_of("ram_bw_gbs") == "profile"
    assert hw.name == "cpu-2xgold6248-384g"

    two = resolve_hardware(profile=DEFAULT_PROFILE, vram=[48, 48], probe_fn=_no_probe)
    assert [g.total_bytes for g in two.gpus] == [48 * GIB, 48 * GIB]
    assert [g.index for g in two.gpus] == [0, 1]
    assert two.gpus[1].mem_bw_gbs == 1008.0 and two.source_of("gpus[1].mem_bw_gbs") == "profile"
    assert two.source_of("gpus[1].total_bytes") == "user"


def test_vram_or_ram_without_profile_describes_a_machine_by_hand():
    hw = resolve_hardware(vram=[24], ram=64, probe_fn=_no_probe)
    assert hw.name == "manual"
    assert hw.ram_total_bytes == 64 * GIB and hw.source_of("ram_total_bytes") == "user"
    assert hw.gpus[0].total_bytes == 24 * GIB and hw.gpus[0].source == "user"
    # everything else is the default profile's, and says so
    assert hw.gpus[0].mem_bw_gbs == 1008.0 and hw.source_of("gpus[0].mem_bw_gbs") == "default"
    assert hw.gpus[0].h2d_gbs == 25.21 and hw.source_of("gpus[0].h2d_gbs") == "default"
    assert (hw.physical_cores, hw.ram_bw_gbs, hw.thp_enabled) == (16, 102.4, "always")
    assert hw.source_of("physical_cores") == hw.source_of("thp_enabled") == "default"
    assert hw.numa_nodes[0].mem_total_bytes == 64 * GIB
    assert any(DEFAULT_PROFILE in n for n in hw.notes)

    ram_only = resolve_hardware(ram=128, probe_fn=_no_probe)
    assert ram_only.gpus[0].source == "default" and ram_only.vram_total_bytes == 24 * GIB


def test_disk_free_is_measured_here_even_with_a_profile(tmp_path):
    hw = resolve_hardware(profile=DEFAULT_PROFILE, disk_path=tmp_path / "not-yet.gguf", probe_fn=_no_probe)
    # tmp_path's disk, give or take other writes meanwhile
    assert abs(hw.disk_free_bytes - psutil.disk_usage(str(tmp_path)).free) < GIB
    assert hw.source_of("disk_free_bytes") == "probed" and hw.source_of("ram_total_bytes") == "profile"
    seen = {}
    probed = resolve_hardware(disk_path="/models/x.gguf", probe_fn=lambda **kw: seen.update(kw) or
                              replace(load_profile(DEFAULT_PROFILE), name="probed"))
    assert seen == {"disk_path": "/models/x.gguf"} and probed.disk_free_bytes is None  # the probe's job


@pytest.mark.parametrize("vram", [[0], [0.0], []])
def test_vram_zero_is_cpu_only(vram):
    hw = resolve_hardware(vram=vram, probe_fn=_no_probe)
    assert hw.gpus == () and hw.source_of("gpus") == "user"


def test_gpu_flag_sets_model_figures():
    hw = resolve_hardware(vram=[24, 24], gpu="RTX 4090", probe_fn=_no_probe)
    assert [g.name for g in hw.gpus] == ["RTX 4090", "RTX 4090"]
    assert hw.gpus[1].mem_bw_gbs == 1008.0 and hw.source_of("gpus[1].mem_bw_gbs") == "user"
    assert hw.gpus[1].compute_capability is None  # not the default 3090 Ti's 8.6

    cpu_box = lambda **kw: replace(load_profile("cpu-epyc9654-768g"), name="probed")  # noqa: E731
    added = resolve_hardware(gpu="5090", probe_fn=cpu_box)
    (g,) = added.gpus
    assert (g.name, g.total_bytes, g.mem_bw_gbs, g.pcie_gen, g.h2d_gbs) == ("RTX 5090", 32 * GIB, 1792.0, 5, 50.41)


@pytest.mark.parametrize("text, expected", [
    ("24", [24.0]),
    ("24,24", [24.0, 24.0]),
    (" 24 , 11.5 ", [24.0, 11.5]),
    (".5", [0.5]),
    ("0", [0.0]),  # CPU only
])
def test_parse_vram(text, expected):
    assert parse_vram(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "24,,24", "-8", "24,-1", "nan", "inf", "1e3", "24GB", "24,0", "0x10"])
def test_parse_vram_rejects_junk(text):
    with pytest.raises(UsageError) as info:
        parse_vram(text)
    assert exit_code_for(info.value) == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(ram=0), "--ram"), (dict(ram=-5), "--ram"), (dict(ram=float("nan")), "--ram"),
    (dict(cores=0), "--cores"), (dict(ram_bw=-1.0), "--ram-bw"), (dict(vram=[-24]), "--vram"),
    (dict(gpu="RTX 9999"), "unknown GPU model"),
])
def test_resolve_rejects_bad_flags(kwargs, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve_hardware(probe_fn=_no_probe, **kwargs)


def test_hardware_model_details():
    hw = load_profile(DEFAULT_PROFILE)
    with pytest.raises(TypeError):
        hw.sources["ram_total_bytes"] = "user"
    with pytest.raises(KeyError):
        hw.source_of("no_such_field")
    assert hw.source_of("gpus[0].pcie_gen") == "profile"  # falls back to the card's source
    limited = replace(hw, ram_limit_bytes=10 * GIB, cpu_quota_cores=2.5)
    assert limited.usable_ram_bytes == 10 * GIB and limited.threads_default == 2
    assert isinstance(hw.gpus[0], GPU) and isinstance(hw, Hardware)
    assert hash(hw) == hash(load_profile(DEFAULT_PROFILE))


# --- CLI ---------------------------------------------------------------------------------------------------------

def _real_thp() -> str | None:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not path.exists():
        return None
    m = re.search(r"\[(\w+)\]", path.read_text())
    return m.group(1) if m else None


def test_cli_probe_json_on_this_machine():
    result = CliRunner().invoke(main, ["probe", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["logical_cores"] == psutil.cpu_count(logical=True) == os.cpu_count()
    assert data["physical_cores"] == (psutil.cpu_count(logical=False) or data["physical_cores"])
    assert data["thp_enabled"] == _real_thp()
    assert data["ram_total_bytes"] == psutil.virtual_memory().total
    assert data["sources"]["ram_bw_gbs"] == "default" and data["sources"]["logical_cores"] == "probed"
    assert data["name"] == "probed" and data["threads_default"] >= 1
    if not data["gpus"]:
        assert any(n.startswith("NVML unavailable") or "CPU only" in n for n in data["notes"])


def test_cli_probe_table():
    result = CliRunner().invoke(main, ["probe", "--profile", "2xrtx3090-epyc9354-384g", "--ram-bw", "400"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Hardware: 2xrtx3090-epyc9354-384g" in out
    assert re.search(r"RAM bandwidth\s*│\s*400 GB/s \(12 channels x 4800 MT/s\)\s*│\s*user", out)
    assert re.search(r"memory bandwidth\s*│\s*936 GB/s\s*│\s*profile", out)
    assert "25.21 GB/s (PCIe 4.0 x16, estimate)" in out


def test_cli_probe_by_hand_json():
    result = CliRunner().invoke(main, ["probe", "--json", "--vram", "24,24", "--ram", "128", "--gpu", "RTX 3090"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [g["total_bytes"] for g in data["gpus"]] == [24 * GIB, 24 * GIB]
    assert [g["mem_bw_gbs"] for g in data["gpus"]] == [936.0, 936.0]
    assert data["ram_total_bytes"] == 128 * GIB and data["physical_cores"] == 16
    assert data["sources"]["physical_cores"] == "default" and data["sources"]["gpus[0].mem_bw_gbs"] == "user"


def test_cli_probe_errors_are_one_line_with_exit_codes(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(main, ["probe", "--vram", "lots"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --vram 'lots'") and bad.stderr.count("\n") == 1
    missing = runner.invoke(main, ["probe", "--profile", "nope"])
    assert missing.exit_code == 2 and "unknown hardware profile 'nope'" in missing.stderr
    broken = tmp_path / "b.toml"
    broken.write_text(GOOD.replace("total_gib = 64", "total_gib = -1"))
    neg = runner.invoke(main, ["probe", "--profile", str(broken)])
    assert neg.exit_code == 2 and "'memory.total_gib'" in neg.stderr and str(broken) in neg.stderr


def test_cli_probe_save_and_force(tmp_path):
    runner = CliRunner()
    target = tmp_path / "mybox.toml"
    args = ["probe", "--profile", "rtx4090-7950x-192g", "--save", str(target)]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "saved profile" in first.stderr and "saved profile" not in first.stdout
    assert load_profile(target).ram_bw_gbs == 76.8
    again = runner.invoke(main, args)
    assert again.exit_code == 3 and "already exists" in again.stderr
    forced = runner.invoke(main, args + ["--force", "--ram", "96"])
    assert forced.exit_code == 0 and load_profile(target).ram_total_bytes == 96 * GIB


def test_cli_profiles_lists_all_eight():
    result = CliRunner().invoke(main, ["profiles"])
    assert result.exit_code == 0, result.output
    for name in SHIPPED:
        assert name in result.stdout
    data = json.loads(CliRunner().invoke(main, ["profiles", "--json"]).stdout)
    assert [p["name"] for p in data] == sorted(SHIPPED)
    seed = next(p for p in data if p["name"] == DEFAULT_PROFILE)
    assert (seed["vram_bytes"], seed["ram_bytes"], seed["ram_bw_gbs"]) == (24 * GIB, 96 * GIB, 102.4)
    assert seed["gpus"] == ["NVIDIA GeForce RTX 3090 Ti"]
