"""Cluster description: a main host plus ``rpc-server`` hosts, as one frozen :class:`Cluster`.

Two ways in, one dataclass out:

* :func:`load_cluster` reads a cluster TOML (``hwprofiles/clusters/*.toml``), strictly validated like the
  hardware profiles: unknown tables and keys, wrong types, out-of-range numbers are errors naming the file and
  the dotted key.  Each host's machine is a hardware profile (``probe --save`` run on that host writes one) or
  a description by hand with the same keys as the ``--vram/--ram/--gpu/--ram-bw/--cores`` flags.
* :func:`parse_rpc_host` reads the quick flag ``--rpc-host NAME=key:value,...`` (see its docstring).

What the engines allow is checked here, where the description enters, so emitters can trust it:

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
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.errors import PlannerError, ProfileError, UsageError
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


# --- the TOML format ---------------------------------------------------------------------------------------------

# table -> key -> (type, required).  Types as in hardware profiles, plus "bool" and "[num]".
_SCHEMA: Mapping[str, Mapping[str, tuple[str, bool]]] = {
    "cluster": {"description": ("str", False), "main": ("str", True)},
    "remote": {"name": ("str", True), "address": ("str", True), "port": ("int", False), "bind": ("str", False),
               "profile": ("str", False), "ram_gib": ("num", False), "vram_gib": ("[num]", False),
               "gpu": ("str", False), "ram_bw_gbs": ("num", False), "cores": ("int", False),
               "devices": ("[str]", False), "link": ("str|table", True), "cache": ("bool", False),
               "threads": ("int", False)},
    "link": {"preset": ("str", False), "bandwidth_gbs": ("num", False), "latency_us": ("num", False),
             "transport": ("str", False)},
}
_TYPE_WORDS = {"int": "an integer", "num": "a number", "str": "a string", "bool": "true or false",
               "[str]": "a list of strings", "[num]": "a list of numbers", "str|table": "a preset name or a table"}


class _Checker:
    """Strict reads from one parsed TOML file; every complaint names the file and the dotted key."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, message: str, hint: str = "") -> ProfileError:
        return ProfileError(message, path=self.path, key=key, hint=hint)

    def table(self, where: str, data: Any, schema: Mapping[str, tuple[str, bool]]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where, "must be a table")
        for key in data:
            if key not in schema:
                raise self.fail(f"{where}.{key}", "unknown key", hint="known keys: " + ", ".join(schema))
        out: dict[str, Any] = {}
        for key, (kind, required) in schema.items():
            dotted = f"{where}.{key}"
            if key not in data:
                if required:
                    raise self.fail(dotted, "missing required key")
                continue
            value = data[key]
            is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = {"int": isinstance(value, int) and not isinstance(value, bool), "num": is_num,
                  "str": isinstance(value, str), "bool": isinstance(value, bool),
                  "[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
                  "[num]": isinstance(value, list) and all(
                      isinstance(v, (int, float)) and not isinstance(v, bool) for v in value),
                  "str|table": isinstance(value, (str, dict))}[kind]
            if not ok:
                raise self.fail(dotted, f"must be {_TYPE_WORDS[kind]}, not {type(value).__name__} {value!r}")
            if kind == "num":
                if not math.isfinite(value):
                    raise self.fail(dotted, f"must be finite, not {value!r}")
                value = float(value)
            if kind == "[num]":
                if not all(math.isfinite(v) for v in value):
                    raise self.fail(dotted, f"must be finite numbers, not {value!r}")
                value = [float(v) for v in value]
            out[key] = value
        return out


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


def _link(value: Any, chk: _Checker, where: str) -> Link:
    if isinstance(value, str):
        try:
            return link_from_preset(value)
        except UsageError as exc:
            raise chk.fail(where, exc.message, hint=exc.hint) from exc
    row = chk.table(where, value, _SCHEMA["link"])
    base = None
    if "preset" in row:
        try:
            base = link_from_preset(row["preset"])
        except UsageError as exc:
            raise chk.fail(f"{where}.preset", exc.message, hint=exc.hint) from exc
    elif "bandwidth_gbs" not in row or "latency_us" not in row:
        raise chk.fail(where, "give preset, or bandwidth_gbs and latency_us (measure them: iperf3, ping)")
    bw = row.get("bandwidth_gbs", base.bandwidth_gbs if base else 0.0)
    lat = row.get("latency_us", base.latency_us if base else 0.0)
    transport = row.get("transport", base.transport if base else "tcp")
    _check_link(bw, lat, transport, lambda k, m: chk.fail(f"{where}.{k}", m))
    given = [k for k in ("bandwidth_gbs", "latency_us", "transport") if k in row]
    source = (base.source + "; " if base else "") + (f"{', '.join(given)} from the cluster file" if given else "")
    return Link(bandwidth_gbs=bw, latency_us=lat, transport=transport, preset=base.preset if base else None,
                source=source.strip("; "))


def _remote(raw: Any, i: int, chk: _Checker, base: Path) -> RemoteHost:
    where = f"remote[{i}]"
    r = chk.table(where, raw, _SCHEMA["remote"])

    def fail(key: str, message: str, hint: str = "") -> ProfileError:
        return chk.fail(f"{where}.{key}", message, hint)

    name = r["name"]
    if not _valid_name(name):
        raise fail("name", f"{name!r}: a host name is a letter then letters, digits, '_', '.', '-' "
                           f"(and not {MAIN!r}, the llama-server host)")
    why = check_address(r["address"])
    if why:
        raise fail("address", f"{r['address']!r}: {why}")
    port = r.get("port", DEFAULT_PORT)
    if not 1 <= port <= 65535:
        raise fail("port", f"{port} is not a TCP port (1-65535)")
    bind = r.get("bind", r["address"] if _is_ipv4(r["address"]) else None)
    if bind is None:
        raise fail("bind", f"address {r['address']!r} is a name: give bind = the IPv4 address rpc-server listens on")
    why = check_bind(bind)
    if why:
        raise fail("bind", f"{bind!r}: {why}")
    hw = _host_hardware(r, base, fail)
    devices = tuple(r.get("devices", default_devices(hw)))
    why = _check_devices(devices, hw)
    if why:
        raise fail("devices", why)
    threads = r.get("threads")
    if threads is not None and threads < 1:
        raise fail("threads", f"must be at least 1, not {threads}")
    return RemoteHost(name=name, address=r["address"], port=port, bind=bind, hardware=hw, devices=devices,
                      link=_link(r["link"], chk, f"{where}.link"), cache=r.get("cache", False), threads=threads)


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


def resolve_cluster_path(name_or_path: str) -> Path:
    """A cluster NAME (``hwprofiles/clusters/NAME.toml``) or a PATH.

    Raises:
        ProfileError: no such file (with the shipped names as a hint).
    """
    as_path = Path(name_or_path).expanduser()
    if "/" in name_or_path or name_or_path.endswith(".toml") or as_path.is_file():
        if not as_path.is_file():
            raise ProfileError("cluster file not found", path=name_or_path)
        return as_path
    candidate = CLUSTERS_DIR / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    names = sorted(p.stem for p in CLUSTERS_DIR.glob("*.toml") if _is_cluster_file(p))
    raise ProfileError(f"unknown cluster {name_or_path!r}", path=str(CLUSTERS_DIR),
                       hint="shipped clusters: " + (", ".join(names) or "none"))


def _is_cluster_file(path: Path) -> bool:
    try:
        return "cluster" in tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False


def load_cluster(name_or_path: str) -> Cluster:
    """Load a cluster TOML by NAME (``hwprofiles/clusters/NAME.toml``) or PATH, strictly validated.

    Format::

        [cluster]
        description = "..."
        main = "2xrtx3090-epyc9354-384g"     # hardware profile of the llama-server host (name or path)

        [[remote]]                           # one per rpc-server host, in --rpc order
        name = "box2"
        address = "192.168.1.20"             # what the main host connects to; rpc-server binds here too
        port = 50052                         # default 50052
        bind = "192.168.1.20"                # rpc-server -H; default: address (must be IPv4)
        profile = "box2.toml"                # that host's `probe --save`; or ram_gib/vram_gib/gpu/ram_bw_gbs/cores
        devices = ["CPU"]                    # exposed devices in order; default: every GPU, else the CPU
        link = "10gbe"                       # a preset of planner/data/network.toml, or a table:
        # link = { preset = "10gbe", latency_us = 40 } / { bandwidth_gbs = 1.1, latency_us = 30, transport = "tcp" }
        cache = true                         # rpc-server -c
        threads = 32                         # rpc-server -t

    Raises:
        ProfileError: missing file, bad TOML, unknown key, wrong type, bad address, unknown device...
    """
    path = resolve_cluster_path(name_or_path)
    chk = _Checker(str(path))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot read cluster file ({type(exc).__name__}: {exc})", path=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"not valid TOML: {exc}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ProfileError("not UTF-8 text", path=str(path)) from exc
    for key in data:
        if key not in ("cluster", "remote"):
            raise chk.fail(key, "unknown table", hint="known tables: [cluster], [[remote]]")
    if "cluster" not in data:
        raise chk.fail("cluster", "missing required table [cluster]")
    head = chk.table("cluster", data["cluster"], _SCHEMA["cluster"])
    raw_remotes = data.get("remote", [])
    if not isinstance(raw_remotes, list):
        raise chk.fail("remote", "must be an array of tables, written [[remote]]")
    if not raw_remotes:
        raise chk.fail("remote", "no [[remote]] host: a cluster needs at least one rpc-server host")
    if len(raw_remotes) > 16:
        raise chk.fail("remote", f"{len(raw_remotes)} hosts; at most 16 are supported")
    base = path.parent
    try:
        main = resolve_hardware(profile=_resolve_profile(head["main"], base))
    except PlannerError as exc:
        raise chk.fail("cluster.main", f"main host: {exc}") from exc
    remotes = tuple(_remote(raw, i, chk, base) for i, raw in enumerate(raw_remotes))
    _check_unique(remotes, chk.fail)
    return Cluster(name=path.stem, description=head.get("description", ""), main=main, remotes=remotes)


# --- the quick flag ----------------------------------------------------------------------------------------------

_BW = re.compile(r"(?P<num>\d+(\.\d*)?|\.\d+)\s*(?P<unit>gbit|gbps|gb/s|gbyte|mbit|mbps)", re.I)
_LAT = re.compile(r"(?P<num>\d+(\.\d*)?|\.\d+)\s*(?P<unit>us|ms)", re.I)
_FLAG_KEYS = ("addr", "port", "bind", "profile", "ram", "vram", "gpu", "ram-bw", "cores", "devices", "link", "bw",
              "lat", "threads")
_FLAG_WORDS = ("cache", "nocache", "rdma", "tcp")


def parse_bandwidth(text: str) -> float:
    """``"9.4gbit"``/``"9.4gbps"`` (Gbit/s), ``"1.1GB/s"``/``"1.1gbyte"`` (GB/s), ``"940mbit"`` → payload GB/s.

    Raises:
        UsageError: anything else.
    """
    m = _BW.fullmatch(text.strip())
    if not m:
        raise UsageError(f"bandwidth {text!r}: give a link preset ({', '.join(preset_names())}) or a measured "
                         f"payload rate like 9.4gbit or 1.1GB/s")
    num, unit = float(m.group("num")), m.group("unit").lower()
    return {"gbit": num / 8, "gbps": num / 8, "gb/s": num, "gbyte": num, "mbit": num / 8000,
            "mbps": num / 8000}[unit]


def parse_latency(text: str) -> float:
    """``"25us"`` or ``"0.05ms"`` → one-way microseconds.

    Raises:
        UsageError: anything else.
    """
    m = _LAT.fullmatch(text.strip())
    if not m:
        raise UsageError(f"latency {text!r}: give a one-way latency like 25us or 0.05ms")
    num = float(m.group("num"))
    return num * 1000 if m.group("unit").lower() == "ms" else num


def parse_rpc_host(text: str, *, base: Path | None = None) -> RemoteHost:
    """One remote host from ``--rpc-host NAME=item,item,...``.

    Items are ``key:value`` or a bare word:

    ========================  ===========================================================================
    ``addr:192.168.1.20``     address the main host connects to (default: NAME, which must then be one)
    ``port:50052``            rpc-server port (default 50052)
    ``bind:192.168.1.20``     rpc-server -H (default: addr when it is an IPv4 address)
    ``profile:NAME``          that host's hardware profile (``probe --save`` there)
    ``ram:256``               GiB of RAM; ``vram:24+24`` GiB per GPU; ``gpu:"RTX 3090"``; ``ram-bw:204.8``
                              GB/s; ``cores:32`` (the by-hand description, as ``--ram/--vram/...``)
    ``devices:CUDA0+CPU``     devices rpc-server exposes, in order (default: every GPU, else the CPU)
    ``link:10gbe``            a link preset; ``bw:`` is the same, or a measured rate ``bw:9.4gbit`` /
                              ``bw:1.1GB/s``; ``lat:25us`` one-way latency; ``rdma`` / ``tcp``
    ``cache`` / ``nocache``   rpc-server -c (default off)
    ``threads:32``            rpc-server -t
    ========================  ===========================================================================

    Example: ``--rpc-host box2=addr:192.168.1.20,ram:256,ram-bw:204.8,cores:32,bw:10gbe,cache``.

    Raises:
        UsageError: malformed item, unknown key, bad address or device, no machine, no link.
    """
    def fail(message: str, hint: str = "") -> UsageError:
        return UsageError(f"--rpc-host {text!r}: {message}", hint=hint)

    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise fail("give NAME=key:value,...", hint="e.g. box2=addr:192.168.1.20,ram:256,bw:10gbe")
    if not _valid_name(name):
        raise fail(f"host name {name!r}: a letter then letters, digits, '_', '.', '-' (and not {MAIN!r})")
    values: dict[str, str] = {}
    words: set[str] = set()
    for item in (p.strip() for p in rest.split(",")):
        if not item:
            raise fail("empty item")
        key, colon, value = item.partition(":")
        key = key.strip().lower()
        if not colon:
            if key not in _FLAG_WORDS:
                raise fail(f"{item!r} is not key:value or one of {', '.join(_FLAG_WORDS)}")
            words.add(key)
            continue
        if key not in _FLAG_KEYS:
            import difflib
            close = difflib.get_close_matches(key, _FLAG_KEYS, n=1)
            raise fail(f"unknown key {key!r}", hint=f"did you mean {close[0]!r}?" if close else
                       "keys: " + ", ".join(_FLAG_KEYS))
        if key in values:
            raise fail(f"{key} given twice")
        value = value.strip().strip('"').strip("'")
        if not value:
            raise fail(f"{key}: empty value")
        values[key] = value
    if {"cache", "nocache"} <= words or {"rdma", "tcp"} <= words:
        raise fail("contradictory words (cache and nocache, or rdma and tcp)")

    address = values.get("addr", name)
    why = check_address(address)
    if why:
        raise fail(f"address {address!r}: {why}")
    port = _int(values.get("port", str(DEFAULT_PORT)), "port", fail)
    if not 1 <= port <= 65535:
        raise fail(f"port {port} is not a TCP port (1-65535)")
    bind = values.get("bind", address if _is_ipv4(address) else "")
    if not bind:
        raise fail(f"{address!r} is a name: add bind:<IPv4 address rpc-server listens on>")
    why = check_bind(bind)
    if why:
        raise fail(f"bind {bind!r}: {why}")

    spec: dict[str, Any] = {}
    if "profile" in values:
        spec["profile"] = values["profile"]
    if "ram" in values:
        spec["ram_gib"] = _float(values["ram"], "ram", fail)
    if "vram" in values:
        spec["vram_gib"] = [_float(v, "vram", fail) for v in values["vram"].split("+")]
    if "gpu" in values:
        spec["gpu"] = values["gpu"]
    if "ram-bw" in values:
        spec["ram_bw_gbs"] = _float(values["ram-bw"], "ram-bw", fail)
    if "cores" in values:
        spec["cores"] = _int(values["cores"], "cores", fail)
    hw = _host_hardware(spec, base or Path.cwd(), lambda k, m, h="": fail(m, h))
    devices = tuple(values["devices"].split("+")) if "devices" in values else default_devices(hw)
    why = _check_devices(devices, hw)
    if why:
        raise fail(f"devices: {why}")

    link_text = values.get("link") or values.get("bw")
    if "link" in values and "bw" in values:
        raise fail("give link: or bw:, not both")
    if link_text is None:
        raise fail("no link: add bw:10gbe (a preset) or a measured bw:9.4gbit and lat:25us",
                   hint="presets: " + ", ".join(preset_names()))
    if link_text.lower() in preset_names():
        link = link_from_preset(link_text)
        bw, lat, transport, source = link.bandwidth_gbs, link.latency_us, link.transport, link.source
    else:
        bw = parse_bandwidth(link_text)
        if "lat" not in values:
            raise fail(f"bw:{link_text} is a measured rate: add lat:<one-way latency>, e.g. lat:25us")
        lat, transport, source = 0.0, "tcp", "bandwidth from --rpc-host"
        link = None
    if "lat" in values:
        lat = parse_latency(values["lat"])
        source += "; latency from --rpc-host"
    if "rdma" in words or "tcp" in words:
        transport = "rdma" if "rdma" in words else "tcp"
    _check_link(bw, lat, transport, lambda k, m: fail(m))
    threads = _int(values["threads"], "threads", fail) if "threads" in values else None
    if threads is not None and threads < 1:
        raise fail(f"threads {threads} must be at least 1")
    return RemoteHost(name=name, address=address, port=port, bind=bind, hardware=hw, devices=devices,
                      link=Link(bandwidth_gbs=bw, latency_us=lat, transport=transport,
                                preset=link.preset if link else None, source=source),
                      cache="cache" in words, threads=threads)


def _int(text: str, key: str, fail: Callable[[str], PlannerError]) -> int:
    if not re.fullmatch(r"\d{1,9}", text):
        raise fail(f"{key}: {text!r} is not a whole number")
    return int(text)


def _float(text: str, key: str, fail: Callable[[str], PlannerError]) -> float:
    if not re.fullmatch(r"\d+(\.\d*)?|\.\d+", text):
        raise fail(f"{key}: {text!r} is not a non-negative number")
    return float(text)


def cluster_from_flags(main: Hardware, hosts: Sequence[str], *, base: Path | None = None) -> Cluster:
    """A :class:`Cluster` from the main host's hardware and ``--rpc-host`` values, in order.

    Raises:
        UsageError: see :func:`parse_rpc_host`; two hosts with one name or endpoint.
    """
    remotes = tuple(parse_rpc_host(h, base=base) for h in hosts)
    if not remotes:
        raise UsageError("no --rpc-host given")

    def fail(key: str, message: str) -> UsageError:
        return UsageError(f"--rpc-host: {message}")
    _check_unique(remotes, fail)
    return Cluster(name="flags", description="described by --rpc-host", main=main, remotes=remotes)
