"""Hardware profiles: the shipped ``planner/data/hwprofiles/*.toml`` (package data, read with
:mod:`importlib.resources`) and user files, strictly validated against one schema; :func:`save_profile` writes the
same format back."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from planner.errors import OutputWriteError, ProfileError
from planner.units import GIB
from importlib import resources
from importlib.resources.abc import Traversable

from planner.fileout import write_new_file
from planner.tomlcheck import TomlChecker, find_toml_file, read_toml_file
from planner.hardware.gpus import GPU_TABLE, PCIE_LANE, PCIE_WIDTHS, h2d_gbs, match_gpu, ram_bw_gbs
from planner.hardware.model import (_HW_FIELDS, CPU_FLAGS, GPU, THP_DEFRAG_MODES, THP_ENABLED_MODES, Hardware, NumaNode,
                                    _exc, _gpu_sources, _sources, gib_to_bytes)

DEFAULT_PROFILE = "rtx3090ti-9950x-96g"
# the shipped profiles: package data, found the same way from a checkout, an editable, --user or wheel install
PROFILES: Traversable = resources.files("planner").joinpath("data", "hwprofiles")


# Schema: table → key → (type, required).  Types: int, num (int or float), str, [str] (list of strings).
_SCHEMA: Mapping[str, Mapping[str, tuple[str, bool]]] = {
    "profile": {"description": ("str", False)},
    "cpu": {"model": ("str", True), "physical_cores": ("int", True), "logical_cores": ("int", True),
            "flags": ("[str]", False), "quota_cores": ("num", False)},
    "memory": {"total_gib": ("num", True), "available_gib": ("num", False), "limit_gib": ("num", False),
               "swap_gib": ("num", False), "channels": ("int", False), "mts": ("int", False),
               "bandwidth_gbs": ("num", False), "hugepages_free": ("int", False)},
    "os": {"thp_enabled": ("str", False), "thp_defrag": ("str", False)},
    "numa": {"id": ("int", True), "memory_gib": ("num", True), "cpus": ("str", True)},
    "gpu": {"name": ("str", True), "memory_gib": ("num", True), "free_gib": ("num", False),
            "mem_bw_gbs": ("num", False), "pcie_gen": ("int", False), "pcie_width": ("int", False),
            "h2d_gbs": ("num", False), "compute_capability": ("str", False)},
}


_ARRAYS = ("numa", "gpu")  # [[numa]] and [[gpu]] are arrays of tables


_REQUIRED_TABLES = ("cpu", "memory")


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    """One line of ``gguf-planner profiles``."""

    name: str
    description: str
    gpus: tuple[str, ...]
    vram_bytes: int
    ram_bytes: int
    ram_bw_gbs: float
    physical_cores: int
    logical_cores: int
    path: str


def resolve_profile_path(name_or_path: str | os.PathLike[str]) -> Path | Traversable:
    """A profile NAME (a shipped ``planner/data/hwprofiles/NAME.toml``) or a PATH to a .toml file.

    Raises:
        ProfileError: no such profile (with the shipped names as a hint).
    """
    text = os.fspath(name_or_path)
    found = find_toml_file(text, PROFILES, "profile file")
    if found is not None:
        return found
    import difflib
    names = profile_names()
    close = difflib.get_close_matches(text, names, n=3, cutoff=0.4)
    hint = ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else \
        "shipped profiles: " + ", ".join(names)
    raise ProfileError(f"unknown hardware profile {text!r}", path=str(PROFILES), hint=hint)


def profile_names() -> list[str]:
    """Names of the shipped profiles, sorted."""
    return sorted(p.name[:-5] for p in PROFILES.iterdir() if p.name.endswith(".toml") and p.is_file())


def _load(path: Path | Traversable) -> tuple[Hardware, str]:
    """(Hardware, description) from one profile file, strictly validated."""
    chk = TomlChecker(path, nonnegative_gib=True)
    data = read_toml_file(path, "profile")
    for key in data:
        if key not in _SCHEMA and key != "calibration":
            raise chk.fail(key, "unknown table", hint="known tables: " + ", ".join(
                f"[[{t}]]" if t in _ARRAYS else f"[{t}]" for t in (*_SCHEMA, "calibration")))
    calibration = None
    if "calibration" in data:        # written by `gguf-planner calibrate --save` (planner.calibrate)
        from planner.calibrate import MachineCalibration

        try:
            calibration = MachineCalibration.from_table(data["calibration"])
        except ValueError as exc:
            raise chk.fail("calibration", str(exc)) from exc
    for key in _REQUIRED_TABLES:
        if key not in data:
            raise chk.fail(key, f"missing required table [{key}]")
    for key in _ARRAYS:
        if key in data and not isinstance(data[key], list):
            raise chk.fail(key, f"must be an array of tables, written [[{key}]]")

    meta = chk.table("profile", data.get("profile", {}), _SCHEMA["profile"])
    cpu = chk.table("cpu", data["cpu"], _SCHEMA["cpu"])
    chk.positive("cpu", cpu, "physical_cores", "logical_cores", "quota_cores")
    if cpu["logical_cores"] < cpu["physical_cores"]:
        raise chk.fail("cpu.logical_cores", f"{cpu['logical_cores']} is fewer than physical_cores "
                                            f"{cpu['physical_cores']}")
    for flag in cpu.get("flags", []):
        chk.choice("cpu.flags", flag, CPU_FLAGS)
    mem = chk.table("memory", data["memory"], _SCHEMA["memory"])
    chk.positive("memory", mem, "total_gib", "channels", "mts", "bandwidth_gbs")
    if "hugepages_free" in mem and mem["hugepages_free"] < 0:
        raise chk.fail("memory.hugepages_free", f"must not be negative, not {mem['hugepages_free']}")
    if "bandwidth_gbs" in mem:
        bandwidth = mem["bandwidth_gbs"]
    elif "channels" in mem and "mts" in mem:
        bandwidth = ram_bw_gbs(mem["channels"], mem["mts"])
    else:
        raise chk.fail("memory.bandwidth_gbs", "missing: give bandwidth_gbs, or channels and mts")
    osv = chk.table("os", data.get("os", {}), _SCHEMA["os"])
    if "thp_enabled" in osv:
        chk.choice("os.thp_enabled", osv["thp_enabled"], THP_ENABLED_MODES)
    if "thp_defrag" in osv:
        chk.choice("os.thp_defrag", osv["thp_defrag"], THP_DEFRAG_MODES)

    numa = []
    for i, raw in enumerate(data.get("numa", [])):
        node = chk.table(f"numa[{i}]", raw, _SCHEMA["numa"])
        if node["id"] < 0:
            raise chk.fail(f"numa[{i}].id", f"must not be negative, not {node['id']}")
        numa.append(NumaNode(id=node["id"], mem_total_bytes=gib_to_bytes(node["memory_gib"]), cpus=node["cpus"]))

    gpus = []
    for i, raw in enumerate(data.get("gpu", [])):
        where = f"gpu[{i}]"
        g = chk.table(where, raw, _SCHEMA["gpu"])
        chk.positive(where, g, "memory_gib", "mem_bw_gbs", "h2d_gbs")
        if "pcie_gen" in g:
            chk.choice(f"{where}.pcie_gen", g["pcie_gen"], tuple(PCIE_LANE))
        if "pcie_width" in g:
            chk.choice(f"{where}.pcie_width", g["pcie_width"], PCIE_WIDTHS)
        if "compute_capability" in g and not re.fullmatch(r"\d+\.\d+", g["compute_capability"]):
            raise chk.fail(f"{where}.compute_capability", f"{g['compute_capability']!r} is not like '8.6'")
        total = gib_to_bytes(g["memory_gib"])
        bw = g.get("mem_bw_gbs")
        if bw is None:
            spec = match_gpu(g["name"], total)
            if spec is None:
                raise chk.fail(f"{where}.mem_bw_gbs", f"missing, and {g['name']!r} is not in {GPU_TABLE.name}")
            bw = spec.mem_bw_gbs
        gen, width = g.get("pcie_gen"), g.get("pcie_width")
        h2d = g.get("h2d_gbs")
        if h2d is None:
            h2d = h2d_gbs(gen, width) if gen is not None and width is not None else h2d_gbs(4, 16)
        gpus.append(GPU(index=i, name=g["name"], total_bytes=total,
                        free_bytes=gib_to_bytes(g["free_gib"]) if "free_gib" in g else None,
                        mem_bw_gbs=float(bw), h2d_gbs=float(h2d), compute_capability=g.get("compute_capability"),
                        pcie_gen=gen, pcie_width=width, source="profile"))

    def opt_bytes(key: str) -> int | None:
        return gib_to_bytes(mem[key]) if key in mem else None

    src = {key: "profile" for key in _HW_FIELDS}
    for i in range(len(gpus)):
        src.update(_gpu_sources(i, "profile"))
    hw = Hardware(
        gpus=tuple(gpus), ram_total_bytes=gib_to_bytes(mem["total_gib"]),
        ram_available_bytes=opt_bytes("available_gib"),
        ram_limit_bytes=opt_bytes("limit_gib"), cpu_model=cpu["model"], physical_cores=cpu["physical_cores"],
        logical_cores=cpu["logical_cores"], cpu_quota_cores=cpu.get("quota_cores"),
        cpu_flags=tuple(f for f in CPU_FLAGS if f in cpu.get("flags", [])), ram_bw_gbs=float(bandwidth),
        ram_channels=mem.get("channels"), ram_mts=mem.get("mts"), numa_nodes=tuple(numa),
        thp_enabled=osv.get("thp_enabled"), thp_defrag=osv.get("thp_defrag"),
        hugepages_free=mem.get("hugepages_free"), swap_total_bytes=opt_bytes("swap_gib"), disk_free_bytes=None,
        sources=_sources(src), notes=(), name=Path(path.name).stem, calibration=calibration)
    return hw, meta.get("description", "")


def load_profile(name_or_path: str | os.PathLike[str]) -> Hardware:
    """Load a hardware profile by NAME (shipped ``planner/data/hwprofiles/NAME.toml``) or PATH.

    Raises:
        ProfileError: missing file, bad TOML, unknown key, wrong type, negative size... (names file and key).
    """
    return _load(resolve_profile_path(name_or_path))[0]


@lru_cache(maxsize=1)
def default_profile() -> Hardware:
    """The default profile (:data:`DEFAULT_PROFILE`), sources as loaded ("profile")."""
    return _load(PROFILES / f"{DEFAULT_PROFILE}.toml")[0]


def list_profiles() -> tuple[ProfileSummary, ...]:
    """Summaries of the shipped profiles, by name."""
    out = []
    for name in profile_names():
        path = PROFILES / f"{name}.toml"
        hw, description = _load(path)
        out.append(ProfileSummary(name=name, description=description, gpus=tuple(g.name for g in hw.gpus),
                                  vram_bytes=hw.vram_total_bytes, ram_bytes=hw.ram_total_bytes,
                                  ram_bw_gbs=hw.ram_bw_gbs, physical_cores=hw.physical_cores,
                                  logical_cores=hw.logical_cores, path=str(path)))
    return tuple(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _gib(n_bytes: int) -> float:
    return n_bytes / GIB  # exact in binary floating point for any size below 2**53 bytes


def profile_toml(hw: Hardware, description: str = "") -> str:
    """The profile text for ``hw``.  Moment-in-time figures (free VRAM, available RAM, free disk) are left out."""
    lines = ["# gguf-planner hardware profile.  Sizes in GiB (2**30 bytes), bandwidths in GB/s (1e9 bytes/s).",
             f"# Written from {hw.name!r}; figure sources: "
             + ", ".join(sorted(set(hw.sources.values()))) + "."]

    def table(header: str, pairs: Iterable[tuple[str, Any]]) -> None:
        lines.extend(["", header])
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in pairs if v is not None)

    table("[profile]", [("description", description or f"saved from {hw.name}")])
    table("[cpu]", [("model", hw.cpu_model), ("physical_cores", hw.physical_cores),
                    ("logical_cores", hw.logical_cores), ("flags", list(hw.cpu_flags)),
                    ("quota_cores", hw.cpu_quota_cores)])
    table("[memory]", [("total_gib", _gib(hw.ram_total_bytes)),
                       ("limit_gib", None if hw.ram_limit_bytes is None else _gib(hw.ram_limit_bytes)),
                       ("swap_gib", None if hw.swap_total_bytes is None else _gib(hw.swap_total_bytes)),
                       ("channels", hw.ram_channels), ("mts", hw.ram_mts), ("bandwidth_gbs", hw.ram_bw_gbs),
                       ("hugepages_free", hw.hugepages_free)])
    if hw.thp_enabled in THP_ENABLED_MODES or hw.thp_defrag in THP_DEFRAG_MODES:
        table("[os]", [("thp_enabled", hw.thp_enabled if hw.thp_enabled in THP_ENABLED_MODES else None),
                       ("thp_defrag", hw.thp_defrag if hw.thp_defrag in THP_DEFRAG_MODES else None)])
    for node in hw.numa_nodes:
        table("[[numa]]", [("id", node.id), ("memory_gib", _gib(node.mem_total_bytes)), ("cpus", node.cpus)])
    for g in hw.gpus:
        table("[[gpu]]", [("name", g.name), ("memory_gib", _gib(g.total_bytes)), ("mem_bw_gbs", float(g.mem_bw_gbs)),
                          ("pcie_gen", g.pcie_gen), ("pcie_width", g.pcie_width), ("h2d_gbs", float(g.h2d_gbs)),
                          ("compute_capability", g.compute_capability)])
    return "\n".join(lines) + "\n"


def save_profile(hw: Hardware, path: str | os.PathLike[str], force: bool = False, *, description: str = "") -> Path:
    """Write ``hw`` as a profile TOML (atomically, :func:`planner.fileout.write_new_file`); :func:`load_profile`
    reads it back.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false.
        ProfileError: the file cannot be written.
    """
    try:
        return write_new_file(path, profile_toml(hw, description), force=force)
    except OutputWriteError as exc:
        raise ProfileError(f"cannot write profile ({_exc(exc.__cause__ or exc)})", path=os.fspath(path)) from exc
