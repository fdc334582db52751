"""Planning on a cluster: remote devices as budgets, every layer's device chosen in the same CP-SAT model as the
quant types, the per-host view, the main command and one script per host.

The layer layout follows the engines: CPU layers first (``-ngl``), then the device list, in which remote devices
come first (ik ``src/llama.cpp`` ``llama_model_load_from_file``, mainline ``src/llama.cpp``
``llama_prepare_model_devices``, both "to minimize network transfers"), then the main host's GPUs; each device's
layers are one contiguous range, possibly empty, chosen by the solver (:class:`planner.solver.LayerHomes`).  A
remote layer keeps all its tensors (attention, KV, experts) on its device, so a token crosses a remote host's
link a fixed number of times whatever the number of layers there: that cost is paid once per device that holds
layers (:func:`link_terms`), and zero remote layers is one of the solutions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from typing import TYPE_CHECKING

from planner.cluster import MAIN, Cluster
from planner.memory import CPU, GIB, MemoryReport, Placement, RunConfig
from planner.device_speed import DeviceSpeed, device_speeds

if TYPE_CHECKING:
    from planner.check import CheckResult
    from planner.speed import SpeedEstimate
    from planner.documents import PlanDocument
    from planner.errors import InfeasibleBudgetError
    from planner.groups import Budget
    from planner.launch import LaunchCommand, ParsedCommand
    from planner.network import NetworkCost
    from planner.planning import Plan
    from planner.rpc import ServerSpec
    from planner.quality import QualityModel
    from planner.request import PlanRequest
    from planner.tensors import TensorMap


def is_gpu_device(name: str) -> bool:
    """``CUDA0`` and ``box2/CUDA1`` are GPUs; ``CPU`` and ``box2/CPU`` are not."""
    return name.rsplit("/", 1)[-1].startswith("CUDA")


def cluster_speeds(cluster: Cluster, cfg: RunConfig) -> dict[str, DeviceSpeed]:
    """Effective bandwidth and compute of every device of the cluster, under planner names.

    The main host's as :func:`planner.device_speed.device_speeds`; each remote host's from its own hardware with its
    rpc-server ``-t`` (or its physical cores) as the CPU thread count.
    """
    out = dict(device_speeds(cluster.main, cfg))
    for host in cluster.remotes:
        local = device_speeds(host.hardware, replace(cfg, threads=host.threads or host.hardware.physical_cores))
        for dev in host.devices:
            sp = local[dev]
            out[f"{host.name}/{dev}"] = replace(sp, name=f"{host.name}/{dev}", h2d_gbs=0.0)
    return out


def cluster_budgets(cluster: Cluster) -> tuple[tuple[str, ...], dict[str, int], dict[str, str]]:
    """(devices in engine order with the main CPU last, bytes per device, labels).

    Remote devices first (``--rpc`` order), then the main host's GPUs, then its CPU: the order of ``-ts``.
    A GPU's budget is its total memory, a CPU's its usable RAM (reserves are subtracted by the memory model).
    """
    devs: list[str] = []
    sizes: dict[str, int] = {}
    labels: dict[str, str] = {}
    for d in cluster.remote_devices:
        host = cluster.host(d.host)
        devs.append(d.name)
        sizes[d.name] = d.budget_bytes
        labels[d.name] = (host.hardware.cpu_model if d.local == "CPU"
                          else host.hardware.gpus[int(d.local[4:])].name) + f" on {host.name}"
    for g in cluster.main.gpus:
        name = f"CUDA{g.index}"
        devs.append(name)
        sizes[name] = int(g.free_bytes if g.free_bytes is not None else g.total_bytes)
        labels[name] = g.name
    devs.append(CPU)
    sizes[CPU] = int(cluster.main.usable_ram_bytes)
    labels[CPU] = cluster.main.cpu_model
    return tuple(devs), sizes, labels


def cluster_speed(tmap: TensorMap, types: Mapping[str, str], placement: Placement, cluster: Cluster,
                  cfg: RunConfig, speeds: Mapping[str, DeviceSpeed], depths: Sequence[int] | None = None
                  ) -> SpeedEstimate:
    """The speed estimate of a placement on a cluster: every device at its own speed, the links per pass
    (at ``depths`` when given, else the estimate's own)."""
    from planner.network import network_cost, pass_cost
    from planner.speed import estimate_speed

    def net(n_tokens: int, depth: int) -> float:
        return pass_cost(tmap, placement, cluster, cfg, n_tokens=n_tokens, depth=depth).seconds

    notes = network_cost(tmap, types, placement, cluster, cfg).assumptions
    if depths is not None:
        return estimate_speed(tmap, types, placement, cluster.main, cfg, speeds=speeds, network=net, notes=notes,
                              depths=depths)
    return estimate_speed(tmap, types, placement, cluster.main, cfg, speeds=speeds, network=net, notes=notes)


@dataclass(frozen=True, slots=True)
class HostMemory:
    """One host's share of a plan: its devices' totals and budgets (bytes)."""

    host: str
    devices: tuple[str, ...]
    total_bytes: int
    budget_bytes: int
    weights_bytes: int
    kv_bytes: int
    fits: bool


def host_memory(report: MemoryReport, cluster: Cluster) -> tuple[HostMemory, ...]:
    """Per-host totals of a memory report (main first, then the remotes in ``--rpc`` order)."""
    out = []
    for host in (MAIN, *(h.name for h in cluster.remotes)):
        devs = [d for d in report.devices if cluster.host_of(d.device) == host]
        out.append(HostMemory(host=host, devices=tuple(d.device for d in devs),
                              total_bytes=sum(d.total_bytes for d in devs),
                              budget_bytes=sum(d.budget_bytes for d in devs),
                              weights_bytes=sum(d.term("weights") for d in devs),
                              kv_bytes=sum(d.term("kv_cache") for d in devs),
                              fits=all(d.fits for d in devs)))
    return tuple(out)


def second_box_option(exc: InfeasibleBudgetError, tmap: TensorMap | None = None,
                      request: PlanRequest | None = None) -> str:
    """The option a one-box "does not fit" offers: a second machine over RPC with at least the shortfall, plus
    that machine's OS reserve and, given the model and request, its compute buffer and one more layer (layers
    move whole, with their KV) — a lower bound, said so: the cluster plan then decides whether it fits and how
    many layers it takes."""
    from planner.memory import compute_buffer_bytes, kv_bytes_per_layer
    from planner.runconfig import RunConfig

    short = sum(exc.shortfall_bytes.values())
    cfg = request.run if request is not None else RunConfig()
    extra = cfg.os_reserve_bytes
    if short and tmap is not None and request is not None:
        from planner.groups import smallest_weights
        from planner.context_search import resolve_ctx

        cfg = resolve_ctx(tmap, cfg)          # --ctx not given: the default the plan would have used
        extra += compute_buffer_bytes(tmap, cfg, holds_layers=True, holds_output=False, is_gpu=False)
        extra += smallest_weights(tmap, None, request) // max(1, tmap.params.n_layer) + kv_bytes_per_layer(
            tmap.params, cfg)
    need = math.ceil((short + extra) / GIB) if short else None
    ram = f"ram:{need}" if need else "ram:GIB"
    return (f"a second machine over llama.cpp RPC: --rpc-host NAME=addr:IP,{ram},bw:10gbe (a lower bound on its "
            f"RAM: the shortfall at the smallest types, its OS reserve, compute buffer and one layer; or --cluster "
            f"FILE; see docs/rpc.md)")


def fmt_gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if math.isfinite(n) else "?"


# --- planning ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """A plan on a cluster: the verified plan (planner device names), its per-host view, the network terms and
    what to run on each host."""

    plan: Plan
    cluster: Cluster
    remote_layers: dict[str, int]
    hosts: tuple[HostMemory, ...]
    network: NetworkCost
    launch: LaunchCommand
    servers: dict[str, tuple[str, ...]]     # host -> rpc-server argv
    warnings: tuple[str, ...]


def _engine_names(cluster: Cluster, engine: str) -> dict[str, str]:
    from planner.rpc import engine_devices
    names = {d.name: d.buft for d in engine_devices(cluster, engine)}
    names[CPU] = CPU
    return names


def link_terms(tmap: TensorMap, cluster: Cluster, cfg: RunConfig, order: Sequence[str]
               ) -> tuple[dict[str, float], dict[str, float], tuple[tuple[tuple[str, ...], float, float], ...]]:
    """The network as the solver's once-per-device terms: for each remote device, what one token (and one
    ubatch) costs on the links when that device holds layers (:func:`planner.network.pass_cost` of a layout with
    one layer there); for each host with several devices, the change per used device beyond the first (a copy
    inside one rpc-server replaces leaving and entering the host).  With the layers contiguous and every remote
    layer's tensors on its device, the network time of any layout is the sum of these terms (tested)."""
    from planner.memory import Placement
    from planner.network import pass_cost

    n = tmap.params.n_layer
    ub = min(cfg.ubatch, cfg.batch)

    def cost(devs: Sequence[str]) -> tuple[float, float]:
        layers = tuple(devs) + (CPU,) * (n - len(devs))
        placement = Placement({t.name: (layers[t.layer] if t.layer is not None else CPU) for t in tmap.tensors},
                              layers, tuple(order))
        return (pass_cost(tmap, placement, cluster, cfg, n_tokens=1, depth=0).seconds,
                pass_cost(tmap, placement, cluster, cfg, n_tokens=ub, depth=0).seconds)

    remote = [d for d in order if "/" in d]
    one = {d: cost([d]) for d in remote}
    shared = []
    for host in cluster.remotes:
        devs = [d for d in remote if cluster.host_of(d) == host.name]
        if len(devs) >= 2 and n >= 2:
            both = cost(devs[:2])
            shared.append((tuple(devs), both[0] - one[devs[0]][0] - one[devs[1]][0],
                           both[1] - one[devs[0]][1] - one[devs[1]][1]))
    return {d: c[0] for d, c in one.items()}, {d: c[1] for d, c in one.items()}, tuple(shared)


def start_layouts(tmap: TensorMap, cluster: Cluster, budget: Budget, cfg: RunConfig, request: PlanRequest
                  ) -> list[tuple[str, ...]]:
    """Warm starts for the solver (not the answer): the remote devices take their share of the cluster's usable
    memory in whole layers (what llama.cpp's default split does, proportional to free memory), capped by what
    fits at the smallest types, then half and none of that; the main host's layers split over its GPUs."""
    from planner.groups import Budget as B, layer_split, smallest_weights
    from planner.memory import kv_bytes_per_layer

    n = tmap.params.n_layer
    local = B(tuple(d for d in budget.devices if "/" not in d),
              {d: budget.bytes[d] for d in budget.devices if "/" not in d})
    reserve = {d: (cfg.gpu_margin_bytes if is_gpu_device(d) else cfg.os_reserve_bytes) for d in budget.devices}
    usable = {d: max(0, budget.bytes[d] - reserve[d]) for d in budget.devices}
    total = sum(usable.values()) or 1
    per_layer = smallest_weights(tmap, None, request) / max(1, n) + kv_bytes_per_layer(tmap.params, cfg)
    full: dict[str, int] = {}
    left = n
    for d in cluster.remote_devices:
        k = max(0, min(round(n * usable[d.name] / total), int(usable[d.name] // max(1.0, per_layer)), left))
        full[d.name] = k
        left -= k
    out = []
    for frac in (1.0, 0.5, 0.0):
        counts = {d: round(k * frac) for d, k in full.items()}
        rest = n - sum(counts.values())
        loc = layer_split(rest, local)
        cpu = tuple(d for d in loc if d == CPU)         # CPU layers come first (-ngl), then the device list
        layout = cpu + tuple(d for d, k in counts.items() for _ in range(k)) + loc[len(cpu):]
        if layout not in out:
            out.append(layout)
    return out


def layer_order(devs: Sequence[str]) -> tuple[str, ...]:
    """The layers' devices in the engines' order: CPU layers first (``-ngl``), then the device list (remote
    devices first, ``llama_prepare_model_devices`` / ``llama_model_load_from_file``), then the main host's GPUs."""
    return (CPU,) + tuple(d for d in devs if d != CPU)


def plan_cluster(tmap: TensorMap, cluster: Cluster, request: PlanRequest, quality: QualityModel | None, *,
                 model_path: str = "model.gguf") -> ClusterPlan:
    """Types, placement and every layer's device for ``tmap`` on ``cluster`` in one CP-SAT model: remote devices
    are budgets like local ones, each device's layers a contiguous range in the engines' order (possibly none),
    a remote device's link crossings charged per token and per ubatch when it holds layers; the result carries
    the main command and one rpc-server command per host.

    Raises:
        InfeasibleBudgetError: the model does not fit the cluster (shortfall per device).
    """
    from planner.errors import InfeasibleBudgetError
    from planner.groups import Budget
    from planner.launch import build_launch
    from planner.network import network_cost
    from planner.planning import _assemble, solve_layered
    from planner.rpc import engine_devices, offload_list, rpc_server_argv, rpc_servers_arg, security_warning

    cfg = request.run
    devs, sizes, labels = cluster_budgets(cluster)
    budget = Budget(devs, sizes, labels)
    speeds = cluster_speeds(cluster, cfg)

    def speed_of(types: Mapping[str, str], placement: Placement, run: RunConfig) -> SpeedEstimate:
        # the plan's own run configuration (its -ub and load mode), with the devices' speeds of the request's
        return cluster_speed(tmap, types, placement, cluster, run, speeds)

    # as on one box, a layer's attention goes to the main host's CPU only when the GPUs cannot take every layer
    # (the -ngl < n_layer case): the layered model without the CPU as a home first, then with it
    orders = [layer_order(devs)[1:], layer_order(devs)] if cluster.main.gpus else [layer_order(devs)]
    for i, order in enumerate(orders):
        hold_s, hold_pp_s, shared = link_terms(tmap, cluster, cfg, order)
        try:
            layer_device, sol, groups = solve_layered(
                tmap, cluster.main, budget, request, quality, order, speeds=speeds, hold_s=hold_s,
                hold_pp_s=hold_pp_s, shared=shared, start=start_layouts(tmap, cluster, budget, cfg, request))
            break
        except InfeasibleBudgetError:
            if i == len(orders) - 1:
                raise
    plan = _assemble(tmap, cluster.main, budget, request, layer_device, sol, groups, fixed_types=None,
                     quality=quality, speed_of=speed_of)
    counts = {d.name: sum(1 for x in plan.layer_device if x == d.name) for d in cluster.remote_devices}
    net = network_cost(tmap, plan.types, plan.placement, cluster, plan.run)
    names = _engine_names(cluster, cfg.engine)
    engine_order = list(offload_list(engine_devices(cluster, cfg.engine), cfg.engine))
    launch = build_launch(tmap, {k: names[v] for k, v in plan.devices.items()},
                          [names[d] for d in plan.layer_device], plan.run, model_path, gpus=engine_order,
                          rpc=rpc_servers_arg(cluster), types=plan.types,
                          output_device=None if plan.output_device is None else names[plan.output_device])
    servers = {h.name: rpc_server_argv(h, cfg.engine) for h in cluster.remotes}
    return ClusterPlan(plan=plan, cluster=cluster, remote_layers=counts, hosts=host_memory(plan.memory, cluster),
                       network=net, launch=launch, servers=servers, warnings=security_warning(cluster))


# --- documents and scripts ---------------------------------------------------------------------------------------

CLUSTER_FORMAT = "gguf-planner/cluster-plan-v1"


@dataclass(frozen=True, slots=True)
class ServerCommand:
    host: str
    address: str
    argv: tuple[str, ...]
    command: str


@dataclass(frozen=True, slots=True)
class ClusterDocument:
    """A cluster plan and what it emits: the plan document (recipe, quantize, main launch command), the
    per-host memory, the network terms, one rpc-server command per host and the security warnings."""

    format: str
    document: PlanDocument                 # recipe, quantize command, the main launch command with --rpc
    cluster: str
    remote_layers: dict[str, int]
    hosts: tuple[HostMemory, ...]
    network_tg_ms: float
    network_tg_ms_ctx: float
    network_pp_ms: float
    load_cold_s: float
    load_warm_s: float | None
    load_notes: tuple[str, ...]
    servers: tuple[ServerCommand, ...]
    warnings: tuple[str, ...]
    engine: str
    specs: tuple[ServerSpec, ...]          # what export needs to write the rpc-server scripts again
    main_gpus: int


def cluster_document(tmap: TensorMap, cp: ClusterPlan, *, model_path: str, source_path: str | None = None,
                     imatrix: str | None = None, has_imatrix: bool = False,
                     ignore_imatrix_rules: bool = False) -> ClusterDocument:
    """The emitted commands of a cluster plan: recipe and quantize command as for one box, the main
    ``llama-server`` with ``--rpc`` and the engine's remote device names, and each host's ``rpc-server``."""
    import shlex

    from planner.documents import PLAN_FORMAT, PlanDocument, recipe_and_workflow
    from planner.rpc import server_spec

    # the recipe under the plan's imatrix rules (an assumed imatrix allows the low-bit types the solver may pick)
    recipe, qcmd, wf, note = recipe_and_workflow(tmap, cp.plan, model_path=model_path, source_path=source_path,
                                                 imatrix=imatrix, has_imatrix=has_imatrix,
                                                 ignore_imatrix_rules=ignore_imatrix_rules)
    doc = PlanDocument(PLAN_FORMAT, cp.plan, recipe, qcmd, cp.launch, cp.launch.shell(),
                       cp.launch.shell(cp.launch.sweep_argv), wf, note, len(recipe.rules))
    servers = tuple(ServerCommand(h.name, h.address, cp.servers[h.name],
                                  " ".join(shlex.quote(a) for a in cp.servers[h.name])) for h in cp.cluster.remotes)
    load = cp.network.load
    return ClusterDocument(CLUSTER_FORMAT, doc, cp.cluster.name, dict(cp.remote_layers), cp.hosts,
                           cp.network.tg_s * 1e3, cp.network.tg_s_ctx * 1e3, cp.network.pp_s * 1e3,
                           load.cold_s, load.warm_s, load.notes, servers, cp.warnings, cp.plan.run.engine,
                           tuple(server_spec(h) for h in cp.cluster.remotes), len(cp.cluster.main.gpus))


def write_cluster_scripts(cd: ClusterDocument, folder: str, *, force: bool = False) -> list[str]:
    """``main.sh`` (llama-server, MODEL/PORT/LLAMA_SERVER overridable) and ``<host>.sh`` per rpc-server host,
    all shell-quoted (comments included), written atomically; nothing is overwritten without ``force``.

    Raises:
        OutputExistsError: a script exists and ``force`` is false (nothing is written then).
    """
    return write_scripts(cd.document.launch, cd.specs, cd.engine, cd.remote_layers, cd.cluster, folder, force=force)


def write_scripts(launch: LaunchCommand, specs: Sequence[ServerSpec], engine: str, remote_layers: Mapping[str, int],
                  cluster_name: str, folder: str, *, force: bool = False) -> list[str]:
    """The scripts of :func:`write_cluster_scripts` from their parts (``export`` rebuilds them from a plan JSON)."""
    from pathlib import Path

    from planner.errors import OutputExistsError
    from planner.fileout import write_new_file
    from planner.launch import export_script
    from planner.rpc import one_line, rpc_server_script

    out = Path(folder)
    argv = launch.argv
    main_comments = [one_line(f"main host of cluster {cluster_name}: start every rpc-server first "
                              f"({', '.join(s.name + '.sh' for s in specs)})"),
                     "rpc-server has no authentication and no encryption: keep every rpc-server port reachable "
                     "only from this host"]
    files = {"main.sh": export_script(launch, model_path=argv[argv.index("-m") + 1],
                                      port=int(argv[argv.index("--port") + 1]), comments=main_comments)}
    for spec in specs:
        files[f"{spec.name}.sh"] = rpc_server_script(spec, engine, comments=[
            f"{n} layers on {dev}" for dev, n in remote_layers.items() if dev.split("/", 1)[0] == spec.name])
    existing = [n for n in files if (out / n).exists()]
    if existing and not force:
        raise OutputExistsError(str(out / existing[0]))
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write_new_file(out / name, text, force=force, mode=0o755)
    return [str(out / n) for n in files]


def export_cluster_json(path: str, folder: str, *, force: bool = False, model_path: str | None = None,
                        port: int | None = None) -> list[str]:
    """``export`` for a cluster plan JSON: the main script rebuilt from the saved plan (its ``-ot``/``-ts``
    verified again), one rpc-server script per saved host (every field validated: the JSON is untrusted).

    Raises:
        UsageError: not a cluster plan, a malformed host, a device the saved hosts do not have.
        OutputExistsError: a script exists and ``force`` is false.
    """
    from planner.documents import read_plan_file, saved_plan
    from planner.errors import UsageError
    from planner.launch import build_launch
    from planner.rpc import engine_devices_of, offload_list, spec_from_json

    doc = read_plan_file(path)
    if not isinstance(doc, dict) or doc.get("format") != CLUSTER_FORMAT:
        raise UsageError(f"{path} is not a cluster plan ({CLUSTER_FORMAT})")
    raw_specs = doc.get("specs")
    if not isinstance(raw_specs, list) or not raw_specs or len(raw_specs) > 16:
        raise UsageError(f"{path}: specs must list 1 to 16 rpc-server hosts")
    specs = tuple(spec_from_json(v, f"{path}: specs[{i}]") for i, v in enumerate(raw_specs))
    main_gpus, engine, layers = doc.get("main_gpus"), doc.get("engine"), doc.get("remote_layers")
    if not (isinstance(main_gpus, int) and 0 <= main_gpus <= 64) or engine not in ("ik", "ik-2025", "mainline"):
        raise UsageError(f"{path}: main_gpus/engine malformed")
    if not isinstance(layers, dict) or not all(isinstance(v, int) for v in layers.values()):
        raise UsageError(f"{path}: remote_layers malformed")
    inner = doc.get("document")
    if not isinstance(inner, dict):
        raise UsageError(f"{path}: no plan document")
    saved = saved_plan(inner, path)
    devs = engine_devices_of(specs, main_gpus, engine)
    names = {d.name: d.buft for d in devs}
    names[CPU] = CPU
    unknown = sorted({*saved.devices.values(), *saved.layer_device} - set(names))
    if unknown:
        raise UsageError(f"{path}: devices {', '.join(unknown)} are not among the saved hosts' devices")
    argv = inner.get("launch", {}).get("argv", []) if isinstance(inner.get("launch"), dict) else []
    saved_port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 8080
    launch = build_launch(saved.tmap, {k: names[v] for k, v in saved.devices.items()},
                          [names[d] for d in saved.layer_device], saved.run,
                          model_path or saved.model_path or f"{saved.tmap.name}.gguf", port=port or saved_port,
                          gpus=list(offload_list(devs, engine)), rpc=",".join(s.endpoint for s in specs),
                          types=saved.types)
    return write_scripts(launch, specs, engine, layers, str(doc.get("cluster", "cluster")), folder, force=force)


# --- checking a user's command ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClusterCommand:
    """A command with ``--rpc`` read on a cluster: its placement under planner names, the engine's device order
    (planner names) and the engine's buffer names (``RPC0[host:port]``, ``CUDA0``) -> planner names."""

    placement: Placement
    devices: tuple[str, ...]
    log_names: dict[str, str]


def command_on_cluster(tmap: TensorMap, types: Mapping[str, str], parsed: ParsedCommand, cluster: Cluster,
                       run: RunConfig) -> ClusterCommand:
    """Where the engine puts every tensor for a command with ``--rpc`` on ``cluster`` (remote devices first,
    ``-ot ...=RPC<i>[addr:port]``, the engine's own layer rule with each rpc-server's reported memory).

    Raises:
        UsageError: the command's ``--rpc`` endpoints are not the cluster's (in the same order), or an ``-ot``
            names a device the cluster does not have.
    """
    from planner.errors import UsageError
    from planner.launch import placement_from_command
    from planner.rpc import CPU_ENTRY_FREE_BYTES, engine_devices, offload_list

    want = [h.endpoint for h in cluster.remotes]
    if list(parsed.rpc) != want:
        raise UsageError(f"the command's --rpc {','.join(parsed.rpc) or '(none)'} is not the cluster's "
                         f"{','.join(want)}", hint="the order matters: it numbers the RPC devices")
    devs = engine_devices(cluster, run.engine)
    _, budgets, _ = cluster_budgets(cluster)
    # the rule runs over the engine's offload list (ik: each RPC device twice, a CPU entry on a CPU-only main host);
    # rpc-server reports its device's memory as free (ik: the host's RAM for its CPU), the default split's input
    free = {d.buft: budgets[d.name] for d in devs}
    free[CPU] = CPU_ENTRY_FREE_BYTES
    order = offload_list(devs, run.engine)
    engine_placement = placement_from_command(tmap, parsed, list(order), types=types,
                                              gpu_free_bytes=[free[b] for b in order])
    back = {d.buft: d.name for d in devs}
    back[CPU] = CPU
    out = engine_placement.output_device
    placement = Placement({k: back[v] for k, v in engine_placement.tensor_device.items()},
                          tuple(back[d] for d in engine_placement.layer_device),
                          tuple(d.name for d in devs) + (CPU,),
                          output_device=None if out is None else back[out])   # a tied output's duplicate goes there
    return ClusterCommand(placement, tuple(d.name for d in devs), {d.buft: d.name for d in devs})


def check_cluster(tmap: TensorMap, types: Mapping[str, str], parsed: ParsedCommand, cluster: Cluster,
                  run: RunConfig, warnings: Sequence[str] = ()) -> CheckResult:
    """``check`` for a command with ``--rpc``: the engine's device order and names (remote devices first,
    ``-ot ...=RPC<i>[addr:port]``), each remote device's budget from the cluster description, its speed, and
    the network terms.

    Raises:
        UsageError: the command's ``--rpc`` endpoints are not the cluster's (in the same order), or an ``-ot``
            names a device the cluster does not have.
    """
    from planner.check import CheckResult
    from planner.memory import memory_report, mix_bytes

    placement = command_on_cluster(tmap, types, parsed, cluster, run).placement
    _, budgets, _ = cluster_budgets(cluster)
    mem = memory_report(tmap, types, placement, budgets, run)
    spd = cluster_speed(tmap, types, placement, cluster, run, cluster_speeds(cluster, run))
    notes = list(warnings)
    notes += [f"{h.host}: {fmt_gib(h.total_bytes)} of {fmt_gib(h.budget_bytes)}" for h in host_memory(mem, cluster)]
    return CheckResult(model=tmap.name, run=run, memory=mem, speed=spd, quality=None,
                       total_bytes=sum(mix_bytes(tmap, types).values()),
                       weights_by_device={d.device: d.term("weights") for d in mem.devices},
                       problems=tuple(mem.problems()), warnings=tuple(notes))
