"""Emitters for RPC clusters: the ``rpc-server`` command per host, the main command's ``--rpc``, the engines'
own names of remote devices (for ``-ot``, ``-dev`` and the ``-ts`` order), scripts, and the security warning.

Engine facts, each from the source at the named commit:

* Binary and flags.  mainline (ggml-org/llama.cpp 0c1e57098 ``tools/rpc/CMakeLists.txt``, ``rpc-server.cpp``
  ``rpc_server_params_parse``): target ``ggml-rpc-server``; ``-H/--host`` (default 127.0.0.1), ``-p/--port``
  (default 50052), ``-d/--device dev1,dev2`` (names as ``ggml_backend_dev_by_name``: ``CUDA0``, ``CPU``),
  ``-c/--cache``, ``-t/--threads``.  ik (ikawrakow/ik_llama.cpp 8337e4cd ``examples/rpc/CMakeLists.txt``,
  ``rpc-server.cpp``): target ``rpc-server``; ``-H``, ``-p``, ``-d/-dev/--device``, ``-c``, ``-t`` and
  ``-cpu`` (without it a ``CPU`` entry in ``-d`` is rejected as "unknown device", and with GPUs present the CPU
  is not exposed).
* Device order.  Both engines put RPC devices before local GPUs "to minimize network transfers" (mainline
  ``src/llama.cpp`` ``llama_prepare_model_devices``; ik ``src/llama.cpp`` ``llama_model_load_from_file``), in
  ``--rpc`` order and, per server, in the server's device order.  ``-ts`` proportions follow that order.
* Names.  The buffer type of a remote device is ``RPC<i>[<endpoint>]`` with ``i`` its index on that server and
  ``<endpoint>`` the ``--rpc`` item verbatim (mainline ``ggml_backend_rpc_buffer_type``; ik
  ``create_rpc_name``); ``-ot`` matches buffer type names in both engines (mainline ``common/arg.cpp``
  ``parse_tensor_buffer_overrides``; ik ``common/common.cpp`` ``parse_buft_overrides``).  ``-dev`` takes
  device names: mainline ``RPC<n>`` numbered across all servers (``ggml_backend_rpc_add_server``), ik the
  buffer type name again.  ik's ``-dev`` help shows ``RPC[192.168.0.1:8080]``, which its own loader does not
  match (it looks up ``RPC0[...]``); we never emit that form.
* Security.  Both servers print "Never expose the RPC server to an open network!" when ``-H`` is not
  127.0.0.1; the protocol has no authentication or encryption and lets a client allocate, read and write
  memory and run graphs on the host (``tools/rpc/README.md``: "fragile and insecure").
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from planner.cluster import MAIN, Cluster, RemoteHost
from planner.errors import UsageError

RPC_SERVER = {"ik": "rpc-server", "ik-2025": "rpc-server", "mainline": "ggml-rpc-server"}


def _engine(engine: str) -> str:
    if engine not in RPC_SERVER:
        raise UsageError(f"unknown engine {engine!r}", hint="one of " + ", ".join(RPC_SERVER))
    return engine


@dataclass(frozen=True, slots=True)
class EngineDevice:
    """A device as the engine sees it, in the engine's own device order."""

    name: str          # planner name: "box2/CPU", "CUDA0"
    host: str          # "main" or the remote host's name
    order: int         # position in the engine's device list (the -ts position)
    buft: str          # what -ot names: "RPC0[192.168.10.2:50052]", "CUDA0"
    dev: str           # what -dev names: mainline "RPC0", ik "RPC0[192.168.10.2:50052]", local "CUDA0"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """What a plan keeps of one rpc-server host: enough for its command, the ``--rpc`` item and the engine's
    names of its devices (the plan JSON stores it; :func:`spec_from_json` validates it back)."""

    name: str
    address: str
    port: int
    bind: str
    devices: tuple[str, ...]
    cache: bool
    threads: int | None
    n_gpus: int

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


def server_spec(host: RemoteHost) -> ServerSpec:
    return ServerSpec(host.name, host.address, host.port, host.bind, host.devices, host.cache, host.threads,
                      len(host.hardware.gpus))


def spec_from_json(value: object, where: str) -> ServerSpec:
    """A :class:`ServerSpec` from a plan JSON, checked like a cluster file (the JSON is untrusted input).

    Raises:
        UsageError: a missing or malformed field, an address rpc-server cannot use, a device it cannot have.
    """
    from planner.cluster import check_address, check_bind

    def bad(msg: str) -> UsageError:
        return UsageError(f"{where}: {msg}")
    if not isinstance(value, dict):
        raise bad("not an object")
    try:
        name, address, bind = str(value["name"]), str(value["address"]), str(value["bind"])
        port, n_gpus = value["port"], value["n_gpus"]
        devices, cache, threads = value["devices"], value["cache"], value["threads"]
    except KeyError as exc:
        raise bad(f"missing {exc}") from None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
        raise bad(f"host name {name!r}")
    for what, why in (("address", check_address(address)), ("bind", check_bind(bind))):
        if why:
            raise bad(f"{what}: {why}")
    if not (isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535):
        raise bad(f"port {port!r}")
    if not (isinstance(n_gpus, int) and not isinstance(n_gpus, bool) and 0 <= n_gpus <= 64):
        raise bad(f"n_gpus {n_gpus!r}")
    if not (isinstance(devices, list) and devices and all(
            isinstance(d, str) and (d == "CPU" or re.fullmatch(r"CUDA(0|[1-9][0-9]?)", d)) for d in devices)):
        raise bad(f"devices {devices!r}")
    if not isinstance(cache, bool) or not (threads is None or (isinstance(threads, int) and threads >= 1)):
        raise bad("cache/threads")
    return ServerSpec(name, address, port, bind, tuple(devices), cache, threads, n_gpus)


def engine_devices_of(specs: Sequence[ServerSpec], main_gpus: int, engine: str) -> tuple[EngineDevice, ...]:
    """Remote devices (``--rpc`` order, server order) then the main host's GPUs, as the engine orders them."""
    engine = _engine(engine)
    out: list[EngineDevice] = []
    for spec in specs:
        for k, local in enumerate(spec.devices):
            buft = f"RPC{k}[{spec.endpoint}]"
            dev = f"RPC{len(out)}" if engine == "mainline" else buft
            out.append(EngineDevice(f"{spec.name}/{local}", spec.name, len(out), buft, dev))
    for i in range(main_gpus):
        out.append(EngineDevice(f"CUDA{i}", MAIN, len(out), f"CUDA{i}", f"CUDA{i}"))
    return tuple(out)


# llama_get_device_memory's answer for the CPU entry of a CPU-only build (ik src/llama.cpp 8337e4cd line 549:
# ``return 1;`` when no GPU backend is compiled in); below the 1 GiB margin, so the entry's share of free memory is 0
CPU_ENTRY_FREE_BYTES = 1


def offload_list(devs: Sequence[EngineDevice], engine: str) -> tuple[str, ...]:
    """The engine's offload device list (``model->devices``) in buffer-type names: what ``-ts`` positions, the
    default split by free memory and ik's greedy fill run over. An entry may repeat a device; a ``CPU`` entry is
    the main host's CPU buffer type (layers the rule puts there stay on the CPU).

    ik 8337e4cd (``src/llama.cpp`` ``llama_load_model_from_file``, lines 7750-7830): ``model->rpc_servers`` is set
    before ``llama_get_device_count`` (lines 434-449: the local count — CUDA devices, or 1 in a CPU-only build —
    plus the RPC servers), so the list of "every buffer-type name" it appends after the RPC names holds the local
    devices (``CPU`` in a CPU-only build, ``llama_default_buffer_type_offload`` lines 452-477) and every RPC
    device again: RPC…, local…, RPC…  (the harness logs print that list: "using device" five times for two
    rpc-servers on a CPU-only main host). ik-2025 (17a5a809, lines 4200-4230) set ``rpc_servers`` after counting:
    RPC…, local…, each once. mainline (0c1e57098 ``llama_prepare_model_devices``): RPC…, GPUs…, no CPU entry.
    A main host without GPUs is taken as a CPU-only build.
    """
    engine = _engine(engine)
    remote = [d.buft for d in devs if d.host != MAIN]
    local = [d.buft for d in devs if d.host == MAIN]
    if engine == "mainline":
        return (*remote, *local)
    if not remote:
        return tuple(local)
    local = local or ["CPU"]
    return (*remote, *local, *remote) if engine == "ik" else (*remote, *local)


def engine_devices(cluster: Cluster, engine: str) -> tuple[EngineDevice, ...]:
    """Remote devices (``--rpc`` order, server order) then the main host's GPUs, as the engine orders them."""
    return engine_devices_of([server_spec(h) for h in cluster.remotes], len(cluster.main.gpus), engine)


def ot_target(device: str, cluster: Cluster, engine: str) -> str:
    """The right-hand side of ``-ot REGEX=TARGET`` for a planner device (``CPU`` stays ``CPU``).

    Raises:
        UsageError: the device is not in the cluster.
    """
    if device == "CPU":
        return "CPU"
    for d in engine_devices(cluster, engine):
        if d.name == device:
            return d.buft
    raise UsageError(f"device {device!r} is not in cluster {cluster.name!r}")


def tensor_split(layers_per_device: dict[str, int], cluster: Cluster, engine: str) -> tuple[int, ...]:
    """``-ts`` values over the engine's offload list (:func:`offload_list`; 0 for a device without layers, for a
    device's second entry and for ik's CPU entry)."""
    devs = engine_devices(cluster, engine)
    name = {d.buft: d.name for d in devs}
    order = offload_list(devs, engine)
    return tuple(layers_per_device.get(name[b], 0) if b in name and b not in order[:i] else 0
                 for i, b in enumerate(order))


def rpc_servers_arg(cluster: Cluster) -> str:
    """The ``--rpc`` value: ``addr:port,addr:port`` in the cluster's order (both engines)."""
    return ",".join(h.endpoint for h in cluster.remotes)


def rpc_server_argv(host: RemoteHost, engine: str, *, binary: str | None = None) -> tuple[str, ...]:
    """The ``rpc-server`` command for one host: bind address, port, devices, cache, threads."""
    return server_argv(server_spec(host), engine, binary=binary)


def server_argv(host: ServerSpec, engine: str, *, binary: str | None = None) -> tuple[str, ...]:
    """:func:`rpc_server_argv` from a :class:`ServerSpec`."""
    engine = _engine(engine)
    argv = [binary or RPC_SERVER[engine], "-H", host.bind, "-p", str(host.port)]
    if host.devices != (tuple(f"CUDA{i}" for i in range(host.n_gpus)) or ("CPU",)):
        argv += ["-d", ",".join(host.devices)]
    if engine != "mainline" and "CPU" in host.devices and host.n_gpus:
        argv.append("-cpu")     # ik exposes the CPU beside GPUs only with -cpu
    if host.cache:
        argv.append("-c")
    if host.threads:
        argv += ["-t", str(host.threads)]
    return tuple(argv)


def security_warning(cluster: Cluster) -> tuple[str, ...]:
    """What to tell the user before they start any rpc-server."""
    lines = ["rpc-server has no authentication and no encryption: anyone who can reach its port can read and "
             "write that host's memory and run code-like graphs on it. Run it only on a private network, bound "
             "to that network's address, with the port firewalled to the main host; never on a public "
             "interface."]
    for h in cluster.remotes:
        if h.bind == "0.0.0.0":
            lines.append(f"{h.name}: binds 0.0.0.0 (every interface, including any public one): give the "
                         f"private address instead")
        elif h.bind.startswith("127."):
            lines.append(f"{h.name}: binds {h.bind}, which the main host cannot reach unless it is the same "
                         f"machine")
    return tuple(lines)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` with control characters (newlines included) turned into spaces."""
    return _CONTROL.sub(" ", str(text))


def comment(text: str) -> str:
    """One shell comment line: control characters (newlines included) become spaces, so text from a plan or
    a profile can never end the comment and become a command."""
    return "# " + _CONTROL.sub(" ", str(text))


def rpc_server_script(host: RemoteHost | ServerSpec, engine: str, *, comments: Sequence[str] = ()) -> str:
    """A bash script to run on ``host``: its rpc-server, RPC_SERVER overridable, everything shell-quoted."""
    spec = server_spec(host) if isinstance(host, RemoteHost) else host
    argv = server_argv(spec, engine)
    fixed = " ".join(shlex.quote(a) for a in argv[1:])
    lines = ["#!/usr/bin/env bash",
             comment(f"Generated by gguf-planner: run on host {host.name} ({host.address}) before the main "
                     f"llama-server."),
             *(comment(w) for w in security_warning_for(host)),
             *(comment(c) for c in comments),
             "set -euo pipefail", "",
             f'RPC_SERVER="${{RPC_SERVER:-{shlex.quote(argv[0])}}}"',
             f'exec "$RPC_SERVER" {fixed}']
    return "\n".join(lines) + "\n"


def security_warning_for(host: RemoteHost | ServerSpec) -> tuple[str, ...]:
    return (f"WARNING: rpc-server is unauthenticated. It listens on {host.bind}:{host.port}; keep that port "
            f"reachable only from the main host (e.g. a firewall rule allowing only its address).",)
