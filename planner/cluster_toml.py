"""Cluster TOML files (``hwprofiles/clusters/*.toml``, or a path): found by name, read and strictly validated with
the hardware profiles' checker (:mod:`planner.tomlcheck`) into a :class:`planner.cluster.Cluster`."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner.cluster import (CLUSTERS_DIR, DEFAULT_PORT, MAIN, Cluster, Link, RemoteHost, _check_devices, _check_link,
                             _check_unique, _host_hardware, _is_ipv4, _resolve_profile, _valid_name, check_address,
                             check_bind, default_devices, link_from_preset)
from planner.errors import PlannerError, ProfileError, UsageError
from planner.hardware import resolve_hardware
from planner.tomlcheck import TomlChecker, find_toml_file, read_toml_file

# table -> key -> (kind, required); kinds: planner.tomlcheck.TYPE_WORDS.
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


def _link(value: Any, chk: TomlChecker, where: str) -> Link:
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


def _remote(raw: Any, i: int, chk: TomlChecker, base: Path) -> RemoteHost:
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


def resolve_cluster_path(name_or_path: str) -> Path:
    """A cluster NAME (``hwprofiles/clusters/NAME.toml``) or a PATH.

    Raises:
        ProfileError: no such file (with the shipped names as a hint).
    """
    found = find_toml_file(name_or_path, CLUSTERS_DIR, "cluster file")
    if isinstance(found, Path):
        return found
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
    chk = TomlChecker(path)
    data = read_toml_file(path, "cluster file")
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
