"""Recipe emitter: a plan's per-tensor types as a short, first-match-safe --custom-q / --tensor-type.

Rules are built per (role, type) over layer ranges, made disjoint so rule order cannot matter, and
verified by re-applying them through the llama-quantize emulation (planner.quantize) to every tensor:
the result must equal the plan, or nothing is emitted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.errors import EmitterError
from planner.quants import catalogue
from planner.regexes import layers_regex
from planner.tensors import TensorMap


@dataclass(frozen=True, slots=True)
class Recipe:
    engine: str
    base_type: str
    rules: tuple[tuple[str, str], ...]        # (regex, type) in order
    custom_q: str                             # ik: the --custom-q argument; mainline: space-joined --tensor-type items

    def quantize_argv(self, src: str, dst: str, *, imatrix: str | None = None, threads: int | None = None,
                      binary: str = "llama-quantize") -> list[str]:
        argv = [binary]
        if self.engine == "mainline":
            for rx, ty in self.rules:
                argv += ["--tensor-type", f"{rx}={ty}"]
        else:
            argv += ["--custom-q", self.custom_q]
        if imatrix:
            argv += ["--imatrix", imatrix]
        argv += [src, dst, self.base_type]
        if threads:
            argv.append(str(threads))
        return argv

    def quantize_command(self, src: str, dst: str, *, imatrix: str | None = None, threads: int | None = None) -> str:
        """The llama-quantize command line, shell-quoted."""
        from planner.quoting import shell_quote

        return " ".join(shell_quote(a) for a in self.quantize_argv(src, dst, imatrix=imatrix, threads=threads))


def _role_rx(roles: Sequence[str]) -> str:
    roles = sorted(set(roles))
    if len(roles) == 1:
        return re.escape(roles[0]).replace(r"\_", "_")
    def esc(text: str) -> str:       # a role such as nextn.eh_proj: its "." is literal
        return re.escape(text).replace(r"\_", "_")

    # factor a common prefix such as attn_ or ffn_
    prefix = roles[0].split("_")[0] + "_"
    if all(r.startswith(prefix) for r in roles):
        return esc(prefix) + "(" + "|".join(esc(r[len(prefix):]) for r in roles) + ")"
    return "(" + "|".join(esc(r) for r in roles) + ")"


def _signatures(tmap: TensorMap, types: Mapping[str, str], engine: str
                ) -> tuple[dict[tuple, list[str]], list[tuple[str, str]]]:
    """Roles grouped by their whole (type, layers) assignment (each group is one rule per type) and the global
    tensors (one rule each): what :func:`build_recipe` emits."""
    from planner.quantize import QuantizeSpec, is_quantizable

    spec0 = QuantizeSpec(base_type="Q8_0", engine=engine)   # an ftype both engines know
    by_role: dict[str, dict[str, list[int]]] = {}            # (role) -> {type: [layers]}
    globals_: list[tuple[str, str]] = []
    for t in tmap.tensors:
        if not is_quantizable(t, spec0):
            continue
        ty = types[t.name]
        if t.layer is None:
            globals_.append((t.name, ty))
        else:
            by_role.setdefault(t.role, {}).setdefault(ty, []).append(t.layer)
    # roles whose whole-layer-set assignment is identical are merged into one rule
    signature: dict[tuple, list[str]] = {}
    for role, per_type in by_role.items():
        sig = tuple(sorted((ty, tuple(sorted(ls))) for ty, ls in per_type.items()))
        signature.setdefault(sig, []).append(role)
    return signature, globals_


def rule_count(tmap: TensorMap, types: Mapping[str, str], engine: str = "ik") -> int:
    """How many rules :func:`build_recipe` writes for ``types`` (without building and verifying it)."""
    signature, globals_ = _signatures(tmap, types, engine)
    return sum(len(sig) for sig in signature) + len(globals_)


def build_recipe(tmap: TensorMap, types: Mapping[str, str], *, engine: str = "ik",
                 base_type: str | None = None, has_imatrix: bool = False,
                 ignore_imatrix_rules: bool = False) -> Recipe:
    """Compress ``types`` (tensor -> stored type) into rules and verify them by re-application.

    Raises:
        EmitterError: the compressed recipe would not reproduce the plan (never emitted).
    """
    signature, globals_ = _signatures(tmap, types, engine)
    rules: list[tuple[str, str]] = []
    all_layers = tuple(sorted({t.layer for t in tmap.tensors if t.layer is not None}))
    all_roles = {t.role for t in tmap.tensors if t.layer is not None}
    for sig, roles in sorted(signature.items(), key=lambda kv: sorted(kv[1])):
        role_rx = _role_rx(roles)
        for ty, layers in sorted(sig, key=lambda x: (x[1][0], x[0])):
            # ".*" would also match a nested role of the same name (blk.N.indexer.attn_q_b for attn_q_b): then
            # the layer number is spelled out
            nested = any(r2 != r and r2.endswith("." + r) for r in roles for r2 in all_roles)
            lx = (r"[0-9]+" if nested else r".*") if tuple(layers) == all_layers else layers_regex(layers)
            rules.append((rf"blk\.{lx}\.{role_rx}\.weight", ty))
    for name, ty in globals_:
        rules.append(("^" + re.escape(name).replace(r"\_", "_"), ty))
    if base_type is None:
        base_type = _base_for(types, tmap, engine)
    sep = "," if engine != "mainline" else " "
    recipe = Recipe(engine, base_type, tuple(rules), sep.join(f"{rx}={ty}" for rx, ty in rules))
    verify_recipe(tmap, types, recipe, has_imatrix=has_imatrix, ignore_imatrix_rules=ignore_imatrix_rules)
    return recipe


def _base_for(types: Mapping[str, str], tmap: TensorMap, engine: str) -> str:
    """The named ftype whose default type carries most of the plan's bytes (sets general.file_type)."""
    from planner.quantize import ftype_names, get_ftype

    def ftype_for_type(type_name: str, eng: str) -> str | None:
        for n in ftype_names(eng):
            ft = get_ftype(n, eng)
            # every quantizable tensor has a rule, so the ftype only sets general.file_type: prefer the plain
            # name (Q4_K_M over Q4_K_S/L) for what the file reports
            if ft.default_type == type_name and not n.endswith(("_S", "_L")):
                return ft.name
        return None

    weight: Counter[str] = Counter()
    for t in tmap.tensors:
        ty = catalogue().get(types[t.name])
        if ty.is_quantized:
            weight[ty.name] += ty.tensor_bytes(t.shape)
    for name, _ in weight.most_common():
        ft = ftype_for_type(name, engine)
        if ft:
            return ft
    return "Q8_0"


def verify_recipe(tmap: TensorMap, types: Mapping[str, str], recipe: Recipe, *, has_imatrix: bool = False,
                  ignore_imatrix_rules: bool = False) -> None:
    from planner.quantize import QuantizeSpec, Rule, quantize

    spec = QuantizeSpec(base_type=recipe.base_type, engine=recipe.engine, has_imatrix=has_imatrix,
                        ignore_imatrix_rules=ignore_imatrix_rules and recipe.engine == "ik",
                        custom_q=tuple(Rule(rx, ty, i) for i, (rx, ty) in enumerate(recipe.rules)))
    fp = quantize(tmap, spec)
    got = {r.name: r.type_name for r in fp.tensors}
    bad = [n for n in got if got[n] != types.get(n, got[n])]
    if bad:
        raise EmitterError(f"recipe does not reproduce the plan for {len(bad)} tensors, e.g. {bad[0]}: "
                           f"{got[bad[0]]} != {types[bad[0]]}")
