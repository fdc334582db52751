"""The quick cluster flag ``--rpc-host NAME=key:value,...``: one remote host per value (:func:`parse_rpc_host`), and
a :class:`planner.cluster.Cluster` of them over the main host's hardware (:func:`cluster_from_flags`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from planner.cluster import (DEFAULT_PORT, MAIN, Cluster, Link, RemoteHost, _check_devices, _check_link, _check_unique,
                             _host_hardware, _is_ipv4, _valid_name, check_address, check_bind, default_devices,
                             link_from_preset, preset_names)
from planner.errors import PlannerError, UsageError
from planner.hardware import Hardware

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
