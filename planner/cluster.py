"""Cluster description: a main host plus ``rpc-server`` hosts, as one frozen :class:`Cluster`.

Two ways in, one dataclass out:

* :func:`planner.cluster_toml.load_cluster` reads a cluster TOML (``hwprofiles/clusters/*.toml``), strictly
  validated like the hardware profiles (the same :mod:`planner.tomlcheck` checker).  Each host's machine is a
  hardware profile (``probe --save`` run on that host writes one) or a description by hand with the same keys as
  the ``--vram/--ram/--gpu/--ram-bw/--cores`` flags.
* :func:`planner.cluster_flags.parse_rpc_host` reads the quick flag ``--rpc-host NAME=key:value,...``.

This module holds the dataclasses and the checks both share, so emitters can trust what enters:

* ``rpc-server -H`` binds with ``inet_addr`` (an IPv4 literal only), and the client resolves the ``--rpc``
  endpoint with ``gethostbyname`` after splitting at the first ``:`` (IPv4 or a DNS name, no IPv6):
  ggml-org/llama.cpp 0c1e57098 ``ggml/src/ggml-rpc/transport.cpp`` (``create_server_socket``,
  ``socket_connect``) and ``ggml-rpc.cpp`` ``parse_endpoint``; ik_llama.cpp 8337e4cd ``ggml/src/ggml-rpc.cpp``
  (same functions).
* The devices one ``rpc-server`` exposes, in order: its GPUs (``CUDA0``...), and the CPU only when no GPU is
  selected or when asked (mainline ``-d CUDA0,CPU``; ik ``-cpu``): ``tools/rpc/rpc-server.cpp``
  ``get_devices`` (mainline 0c1e57098) and ``examples/rpc/rpc-server.cpp`` ``get_devices`` (ik 8337e4cd).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.errors import PlannerError, UsageError
from planner.hardware import PROFILES, Hardware, resolve_hardware
from planner.tables import read_toml

CLUSTERS_DIR = Path(str(PROFILES)) / "clusters"   # package data: a real folder in a checkout and in an installed wheel
MAIN = "main"                     # the host that runs llama-server; never a remote name
DEFAULT_PORT = 50052              # rpc-server's default port (both engines' rpc_server_params)
TRANSPORTS = ("tcp", "rdma")
_HOST_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")
_DNS_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_DEVICE = re.compile(r"CPU|CUDA(0|[1-9][0-9]?)")


def network_table() -> dict[str, Any]:
    """``planner/data/network.toml``: link presets and protocol constants, each with its source."""
    return read_toml("network.toml")


# --- the data model ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Link:
    """The path between the main host and one remote host, the same in both directions."""

    bandwidth_gbs: float   # payload GB/s (1e9 bytes/s) one way, after protocol overhead
    latency_us: float      # one-way latency of a small message between the two processes
    transport: str         # "tcp" | "rdma"
    preset: str | None     # the network.toml preset it came from, if any
    source: str            # what the figures rest on (preset and its measured/assumed note, or "user")

    @property
    def bandwidth_bytes_s(self) -> float:
        return self.bandwidth_gbs * 1e9

    @property
    def latency_s(self) -> float:
        return self.latency_us * 1e-6


@dataclass(frozen=True, slots=True)
class RemoteHost:
    """One ``rpc-server`` host: its machine, the devices its server exposes, and the link to it."""

    name: str
    address: str                 # what the main host connects to (IPv4 or DNS name)
    port: int
    bind: str                    # rpc-server -H (IPv4 literal)
    hardware: Hardware
    devices: tuple[str, ...]     # exposed devices in server order: "CUDA<i>" then "CPU"
    link: Link
    cache: bool                  # rpc-server -c (local tensor cache)
    threads: int | None          # rpc-server -t (threads of its CPU device)

    @property
    def endpoint(self) -> str:
        """The ``--rpc`` item: ``address:port``, verbatim in the engines' device and buffer names."""
        return f"{self.address}:{self.port}"

    def device_bytes(self, local: str) -> int:
        """Memory of one exposed device: a GPU's total, or the host's usable RAM for the CPU."""
        if local == "CPU":
            return self.hardware.usable_ram_bytes
        index = int(local[len("CUDA"):])
        return self.hardware.gpus[index].total_bytes


@dataclass(frozen=True, slots=True)
class RemoteDevice:
    """A device of a remote host as the planner names it: ``"<host>/<local>"``, e.g. ``"box2/CPU"``."""

    host: str
    local: str          # "CPU" | "CUDA<i>" on that host
    server_index: int   # position in that rpc-server's device list (the N in the engines' "RPC<N>[addr:port]")
    global_index: int   # position among all RPC devices, in --rpc order (mainline's device name "RPC<N>")
    name: str           # planner device name
    budget_bytes: int


@dataclass(frozen=True, slots=True)
class Cluster:
    """A main host (runs llama-server) and the rpc-server hosts it uses, in ``--rpc`` order."""

    name: str
    description: str
    main: Hardware
    remotes: tuple[RemoteHost, ...]
    notes: tuple[str, ...] = ()
    remote_devices: tuple[RemoteDevice, ...] = field(init=False)

    def __post_init__(self) -> None:
        devs: list[RemoteDevice] = []
        for host in self.remotes:
            for k, local in enumerate(host.devices):
                devs.append(RemoteDevice(host=host.name, local=local, server_index=k, global_index=len(devs),
                                         name=f"{host.name}/{local}", budget_bytes=host.device_bytes(local)))
        object.__setattr__(self, "remote_devices", tuple(devs))

    def host(self, name: str) -> RemoteHost:
        for h in self.remotes:
            if h.name == name:
                return h
        raise KeyError(name)

    def host_of(self, device: str) -> str:
        """``"main"`` for the main host's devices (``CUDA0``, ``CPU``), else the remote host's name."""
        if "/" in device:
            return device.split("/", 1)[0]
        return MAIN

    def link_to(self, host: str) -> Link | None:
        return None if host == MAIN else self.host(host).link


# --- links -------------------------------------------------------------------------------------------------------

def preset_names() -> tuple[str, ...]:
    return tuple(network_table()["links"])


def link_from_preset(name: str) -> Link:
    """A :class:`Link` from a ``network.toml`` preset (``"10gbe"``, ``"rdma-25gbe"``...).

    Raises:
        UsageError: unknown preset (with the known names).
    """
    table = network_table()
    key = name.strip().lower()
    row = table["links"].get(key)
    if row is None:
        import difflib
        close = difflib.get_close_matches(key, preset_names(), n=3, cutoff=0.5)
        hint = ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else \
            "known links: " + ", ".join(preset_names())
        raise UsageError(f"unknown link {name!r}", hint=hint)
    eff = table["rdma"]["efficiency"] if row["transport"] == "rdma" else table["tcp"]["efficiency"]
    bw = row["line_gbit"] / 8 * eff
    return Link(bandwidth_gbs=round(bw, 6), latency_us=float(row["latency_us"]), transport=row["transport"],
                preset=key, source=f"preset {key}: {row['line_gbit']:g} Gbit/s x {eff} payload share "
                                   f"(measured for TCP); latency {row['latency_source']}")


def _check_link(bw: float, lat: float, transport: str, fail: Callable[[str, str], PlannerError]) -> None:
    if not (math.isfinite(bw) and 0 < bw <= 1000):
        raise fail("bandwidth", f"{bw!r} GB/s is not a link bandwidth (0 < GB/s <= 1000)")
    if not (math.isfinite(lat) and 0 <= lat <= 1e6):
        raise fail("latency", f"{lat!r} us is not a latency (0 to 1e6 us)")
    if transport not in TRANSPORTS:
        raise fail("transport", f"{transport!r} is not one of {', '.join(TRANSPORTS)}")


# --- addresses and devices -----------------------------------------------------------------------------------------

def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _valid_name(name: str) -> bool:
    """A host's name in the plan: a letter then [A-Za-z0-9_.-], or an IPv4 address; never ``main``."""
    return name != MAIN and (bool(_HOST_NAME.fullmatch(name)) or _is_ipv4(name))


def check_address(text: str) -> str | None:
    """None if ``text`` can be an ``--rpc`` host (IPv4 literal or DNS name), else why not."""
    if ":" in text or "[" in text:
        return "IPv6 and host:port are not accepted: the RPC client splits the endpoint at the first ':'"
    if _is_ipv4(text):
        return None
    if re.fullmatch(r"[0-9.]+", text):
        return "not a valid IPv4 address"
    if not _DNS_NAME.fullmatch(text):
        return "not an IPv4 address or a DNS name"
    return None


def check_bind(text: str) -> str | None:
    """None if ``text`` can be ``rpc-server -H`` (an IPv4 literal: the server binds with inet_addr)."""
    if not _is_ipv4(text):
        return "rpc-server binds with inet_addr: give an IPv4 address (no host names, no IPv6)"
    if text == "255.255.255.255":
        return "255.255.255.255 is INADDR_NONE to inet_addr"
    return None


def default_devices(hw: Hardware) -> tuple[str, ...]:
    """What rpc-server exposes without ``-d``: every GPU, or the CPU when there is none."""
    return tuple(f"CUDA{g.index}" for g in hw.gpus) or ("CPU",)


def _check_devices(devices: Sequence[str], hw: Hardware) -> str | None:
    seen: set[str] = set()
    for d in devices:
        if not _DEVICE.fullmatch(d):
            return f"{d!r} is not CPU or CUDA<i>"
        if d in seen:
            return f"{d} listed twice"
        seen.add(d)
        if d != "CPU" and int(d[4:]) >= len(hw.gpus):
            return f"{d}: the host has {len(hw.gpus)} GPU(s)"
    if not devices:
        return "no devices"
    if "CPU" in devices and devices[-1] != "CPU":
        return "CPU must come last (rpc-server lists GPUs first)"
    return None


# --- a host's machine, and what the hosts of one cluster must not share ----------------------------------------

def _resolve_profile(ref: str, base: Path) -> str:
    """A host's ``profile`` reference: a path relative to the cluster file if one exists there, else the name
    of a shipped hardware profile (``hwprofiles/NAME.toml``), left for ``load_profile`` to resolve."""
    candidate = (base / ref).expanduser()
    if ("/" in ref or ref.endswith(".toml")) and candidate.is_file():
        return str(candidate)
    return ref


def _host_hardware(spec: Mapping[str, Any], base: Path, fail: Callable[..., PlannerError]) -> Hardware:
    """Hardware of one host from ``profile`` and/or the by-hand keys (the flags' rules: user > profile)."""
    # A remote host is never probed (this machine is not that host): a profile, or at least its RAM by hand;
    # figures not given then come from the default profile and are labelled "default".
    if "profile" not in spec and "ram_gib" not in spec:
        raise fail("profile", "no machine: give profile = \"NAME\" (probe --save on that host writes one) "
                              "or ram_gib (and vram_gib, gpu, ram_bw_gbs, cores)")
    for k in ("ram_gib", "ram_bw_gbs"):
        if k in spec and spec[k] <= 0:
            raise fail(k, f"must be positive, not {spec[k]!r}")
    if "cores" in spec and spec["cores"] < 1:
        raise fail("cores", f"must be at least 1, not {spec['cores']!r}")
    if "vram_gib" in spec and any(v < 0 for v in spec["vram_gib"]):
        raise fail("vram_gib", f"negative size in {spec['vram_gib']!r}")
    profile = _resolve_profile(spec["profile"], base) if "profile" in spec else None
    vram = spec.get("vram_gib")
    if profile is None and vram is None and "gpu" not in spec:
        vram = [0.0]   # by hand with no GPU named: a CPU box, not the default profile's GPU
    try:
        return resolve_hardware(profile=profile, vram=vram, ram=spec.get("ram_gib"),
                                cores=spec.get("cores"), gpu=spec.get("gpu"), ram_bw=spec.get("ram_bw_gbs"))
    except PlannerError as exc:
        raise fail("profile" if "profile" in spec else "ram_gib", f"host machine: {exc}") from exc


def _check_unique(remotes: Sequence[RemoteHost], fail: Callable[[str, str], PlannerError]) -> None:
    names: set[str] = set()
    endpoints: set[str] = set()
    for i, h in enumerate(remotes):
        if h.name in names:
            raise fail(f"remote[{i}].name", f"host {h.name!r} defined twice")
        if h.endpoint in endpoints:
            raise fail(f"remote[{i}].port", f"endpoint {h.endpoint} used twice (one rpc-server per address:port)")
        names.add(h.name)
        endpoints.add(h.endpoint)
