"""Low-bit candidates and the engines' own type floors, as data (``data/candidates.toml``, ``ftype_rules.toml``).

* :func:`candidate_names`: the types the joint planner may offer for one engine; the imatrix-only types (iq1_s,
  iq1_m, iq1_kt, iq2_kt, iq2_xxs ...) exactly when an imatrix is declared, since llama-quantize refuses them
  otherwise (ik ``src/llama-quantize.cpp`` ``llama_model_quantize_internal`` @ 8337e4cd, lines 1692-1704).
* :func:`floors`: the lowest type llama-quantize's own ``llama_tensor_get_type`` gives ``output.weight``,
  ``token_embd.weight`` and the attention value path for a mix of the given mean bpw (the ``[[floors]]`` tables
  of ``ftype_rules.toml``, which cite the source lines), and :func:`respects_floor` to check a type against one.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from planner.quants import catalogue

DATA = Path(__file__).parent / "data"
FLOOR_ROLES = ("output", "token_embd", "attn_v")


@functools.cache
def _candidates() -> dict:
    return tomllib.loads((DATA / "candidates.toml").read_text())


def _imatrix_only(engine: str) -> frozenset[str]:
    rules = tomllib.loads((DATA / "ftype_rules.toml").read_text())[engine]
    return frozenset(rules["imatrix_types"])


def candidate_names(engine: str, *, has_imatrix: bool, on_cpu: bool = True) -> tuple[str, ...]:
    """Candidate type names, best quality first; imatrix-only types (and their repacks) only with an imatrix."""
    sec = _candidates()[engine]
    out = list(sec["types"])
    if has_imatrix:
        out += sec["imatrix_types"]
    blocked = set() if has_imatrix else _imatrix_only(engine)
    if on_cpu:
        out += [t for t in sec["repacked"] if t not in blocked]
    return tuple(dict.fromkeys(t for t in out if has_imatrix or t not in blocked))


@dataclass(frozen=True, slots=True)
class FloorClass:
    engine: str
    name: str
    max_bpw: float                    # inf for the last class
    floors: Mapping[str, str]         # role -> lowest type the engine gives it ("tied_output": a tied token_embd)


@functools.cache
def floor_classes(engine: str) -> tuple[FloorClass, ...]:
    """The ``[[floors]]`` classes of one engine, in order, each bounded by its ftypes' largest default bpw."""
    from planner.quantize import get_ftype  # noqa: PLC0415  (quantize imports this module's data only)

    cat = catalogue()
    out = []
    for f in tomllib.loads((DATA / "ftype_rules.toml").read_text())["floors"]:
        if f["engine"] != engine:
            continue
        bounds = [cat.get(get_ftype(name, engine).default_type).bpw for name in f["ftypes"]]
        roles = {r: cat.get(f[r], engine=engine).name for r in (*FLOOR_ROLES, "tied_output") if r in f}
        out.append(FloorClass(engine, f["class"], max(bounds) if bounds else float("inf"), roles))
    return tuple(out)


def floors(engine: str, mix_bpw: float, *, n_expert: int = 1, tied: bool = False) -> FloorClass:
    """The floor class for a mix whose quantized block weights average ``mix_bpw`` bits per weight.

    The attn_v floor is the MoE rule (n_expert >= 4); for dense models it is dropped, since the engines' dense
    rules depend on the ftype and GQA in ways a bpw class cannot express.  ``tied``: the model has no
    ``output.weight``, so ``token_embd`` is also the output matrix and both engines quantize it by the output's
    rule (ik ``!qs.has_output``, mainline ``has_tied_embeddings``): its floor is the class's ``tied_output``
    (the output's floor where the engine has no separate value), never below its own token_embd floor.
    """
    for c in floor_classes(engine):
        if mix_bpw <= c.max_bpw + 1e-9:
            roles = {k: v for k, v in c.floors.items() if k != "tied_output"}
            if n_expert < 4:
                roles.pop("attn_v", None)
            if tied and "output" in c.floors:
                want = c.floors.get("tied_output", c.floors["output"])
                own = roles.get("token_embd")
                roles["token_embd"] = want if own is None or respects_floor(want, own) else own
            return FloorClass(c.engine, c.name, c.max_bpw, roles)
    raise AssertionError("the last floor class is unbounded")


def floor_role(name: str) -> str | None:
    """Which floor a tensor name falls under (None: no floor)."""
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    if name.endswith((".attn_v.weight", ".attn_qkv.weight", ".attn_kv_b.weight")):
        return "attn_v"
    return None


def floors_for_budget(engine: str, weight_budget_bytes: int, n_weights: int, *, n_expert: int = 1,
                      tied: bool = False) -> FloorClass:
    """The floor class for the densest mix a weight budget allows (8 * budget / weights bits per weight).

    Floors rise with the class, so a plan that ends up below the budget's bpw still respects the floors of its
    own class.
    """
    bpw = 8.0 * weight_budget_bytes / max(1, n_weights)
    return floors(engine, bpw, n_expert=n_expert, tied=tied)


def filter_candidates(name: str, candidates: list[str], floor: FloorClass) -> list[str]:
    """``candidates`` without the types below ``floor`` for tensor ``name`` (unchanged when no floor applies or
    when nothing would be left)."""
    role = floor_role(name)
    ft = floor.floors.get(role) if role else None
    if ft is None:
        return candidates
    kept = [c for c in candidates if respects_floor(c, ft)]
    return kept or candidates


def respects_floor(type_name: str, floor_type: str) -> bool:
    """Whether ``type_name`` has at least the bits per weight of ``floor_type``."""
    cat = catalogue()
    return cat.get(type_name).bpw >= cat.get(floor_type).bpw - 1e-9


__all__ = ["FloorClass", "candidate_names", "filter_candidates", "floor_classes", "floor_role", "floors",
           "floors_for_budget", "respects_floor"]
