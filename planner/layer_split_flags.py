"""The inverse of the engines' layer rule: ``-ngl``/``-ts`` under which an engine puts every layer (and so its KV
cache) and the output where a plan wants them, each candidate re-derived with :func:`planner.layer_split.layer_split`
before it is returned."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from planner.errors import UsageError
from planner.layer_split import MIB, LayerSizes, LayerSplit, SplitRequest, layer_split

@dataclass(frozen=True, slots=True)
class SplitFlags:
    """``-ngl``/``-ts`` that make the engine reproduce a wanted layer→device map, re-derived with its own rule."""

    n_gpu_layers: int
    tensor_split: tuple[float, ...] | None
    split: LayerSplit


def _ts_text(x: float) -> float:
    """-ts values are printed with up to 3 decimals; the engine parses them with stof."""
    return float(f"{x:.3f}")


def flags_for(engine: str, req: SplitRequest, layer_device: Sequence[int | None], output_device: int | None,
              sizes: LayerSizes | None = None) -> SplitFlags | None:
    """Find ``-ngl`` and ``-ts`` under which ``engine`` puts every layer and the output where the plan wants them.

    The wanted map must be expressible: CPU layers first, then contiguous runs on devices in increasing device
    order, the output on the last GPU layer's device or on the CPU (then every repeating layer's device is as
    wanted only when ``-ngl <= n_layer``). ``req`` supplies the devices and split mode; its ``n_gpu_layers`` and
    ``tensor_split`` are replaced. Candidates, simplest first: the per-device layer counts (the output counted
    as a layer; exact for the ``upper_bound`` rules of mainline and ik-2025), the counts of repeating layers only,
    then for ik's greedy fill the
    per-device loads (``max_compute`` plus the layer sizes) in whole MiB, to 0.001 MiB, and small nudges of them.
    Every candidate is re-derived with the engine's own rule and
    the first exact reproduction is returned; None when no candidate reproduces the map (the caller then needs
    explicit per-tensor overrides).
    """
    n = req.n_layer
    want = tuple(layer_device)
    if len(want) != n:
        raise UsageError(f"wanted map covers {len(want)} layers, the model has {n}")
    gpu_layers = [il for il in range(n) if want[il] is not None]
    n_cpu = n - len(gpu_layers)
    if gpu_layers and gpu_layers != list(range(n_cpu, n)):
        return None                                         # CPU layers must come first
    seq = [want[il] for il in gpu_layers] + ([output_device] if output_device is not None else [])
    if any(b is not None and a is not None and b < a for a, b in zip(seq, seq[1:])):
        return None                                         # devices must be visited in increasing order
    if output_device is not None and gpu_layers and output_device != want[n - 1]:
        return None
    n_dev = len(req.devices)
    if engine == "mainline":
        if output_device is None and gpu_layers:
            return None                                     # mainline offloads the output before any layer
        ngl = len(gpu_layers) + (1 if output_device is not None else 0)
    else:
        if output_device is not None and len(gpu_layers) != n:
            return None                                     # ik offloads the output only with every layer
        ngl = n + 1 if output_device is not None else len(gpu_layers)
    counts = [0.0] * n_dev
    for d in seq:
        if d is not None:
            counts[d] += 1
    candidates: list[tuple[float, ...] | None] = [tuple(counts)]      # simplest first: layer counts
    if output_device is not None:
        no_out = list(counts)
        no_out[output_device] -= 1
        candidates.append(tuple(no_out))                                # repeating layers only
    if engine == "ik":
        if sizes is None:
            raise UsageError("the ik rule needs the per-layer sizes (ik_layer_sizes)")
        loads = [float(sizes.max_compute)] * n_dev
        for il in gpu_layers:
            loads[want[il]] += sizes.total(il)                       # type: ignore[index]
        if output_device is not None:
            loads[output_device] += sizes.total(n)
        base = [x / MIB for x in loads]
        candidates.append(tuple(float(round(x)) for x in base))     # per-device loads in whole MiB
        candidates.append(tuple(_ts_text(x) for x in base))
        for nudge in (0.001, 0.01, 0.1, -0.001, -0.01, -0.1):
            candidates.append(tuple(_ts_text(x * (1 + nudge)) if i < n_dev - 1 else _ts_text(x)
                                    for i, x in enumerate(base)))
    used = sorted({d for d in seq if d is not None})
    if len(used) <= 1:
        candidates.insert(0, None if n_dev <= 1 else tuple(1.0 if i == (used[0] if used else 0) else 0.0
                                                           for i in range(n_dev)))
    from dataclasses import replace

    for ts in candidates:
        trial = replace(req, n_gpu_layers=ngl, tensor_split=ts)
        got = layer_split(engine, trial, sizes)
        if got.layer_device == want and got.output_device == output_device:
            return SplitFlags(ngl, ts, got)
    return None
