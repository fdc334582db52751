"""Recipe text for people: the rules grouped by role and layer range with comments, as ubergarm writes them.

ubergarm's published recipes (e.g. the Kimi-K2-Instruct IQ2_KL recipe in ik_llama.cpp PR 612, the model cards of
ubergarm/*-GGUF on Hugging Face) are a bash variable with ``## Attention [0-60] (GPU)``-style group headings and
``#`` comments, one ``regex=type`` per line, joined for llama-quantize by ``grep -v '^#' | sed -Ez
's:\\n+:,:g;s:,$::;s:^,::'``.  :func:`styled_recipe` writes a :class:`planner.recipe.Recipe` that way.  The rules are
the recipe's own (the emitter makes them disjoint, so their order cannot change what a tensor gets); only their
order and the comments differ, and ``tests/test_recipe_style.py`` re-applies both through the llama-quantize
emulation to check that every tensor gets the same type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from planner.recipe import Recipe
from planner.regexes import compile_user_regex, search
from planner.tensors import TensorInfo

# (heading, role predicate) in the order ubergarm's recipes list them; the first match names a role's group
_GROUPS: tuple[tuple[str, str], ...] = (
    ("Attention", "attn"),
    ("Dense FFN", "ffn"),
    ("Shared Expert", "shexp"),
    ("Routed Experts", "exps"),
    ("Recurrent state", "ssm"),
    ("Token embedding and output", "global"),
    ("Other", "other"),
)
STYLES = ("plain", "ubergarm")


def _group_of(t: TensorInfo) -> str:
    role = t.role
    if t.layer is None:
        return "global"
    if role.endswith("_exps"):
        return "exps"
    if role.endswith("_shexp"):
        return "shexp"
    if role.startswith(("attn_", "indexer.")) or ".attn_" in role:
        return "attn"
    if role.startswith("ffn_"):
        return "ffn"
    if role.startswith(("ssm_", "time_mix", "channel_mix")):
        return "ssm"
    return "other"


def _ranges(layers: Sequence[int]) -> str:
    xs = sorted(set(layers))
    runs: list[list[int]] = []
    for x in xs:
        if runs and x == runs[-1][1] + 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def styled_recipe(recipe: Recipe, types: Mapping[str, str], devices: Mapping[str, str] | None = None) -> str:
    """The recipe's rules as an ubergarm-style block: ``## Group [layers] (devices)`` headings, a comment above a
    rule that covers only part of its group's layers, and the rule count on top.  ``types`` names the model's
    tensors (tensor -> type); ``devices`` (tensor -> device) adds where each group runs."""
    tensors = [TensorInfo(n, (1,), "f32") for n in types]
    matched: list[list[TensorInfo]] = []
    for rx, _ in recipe.rules:
        pat = compile_user_regex(rx, "recipe")
        matched.append([t for t in tensors if search(pat, t.name)])
    order = [key for _, key in _GROUPS]
    by_group: dict[str, list[int]] = {}
    for i, ts in enumerate(matched):
        keys = sorted({_group_of(t) for t in ts}, key=order.index) or ["other"]
        by_group.setdefault(keys[0], []).append(i)
    lines = [f"# {len(recipe.rules)} rules for llama-quantize {recipe.base_type} ({recipe.engine}); "
             "lines starting with # are comments"]
    for title, key in _GROUPS:
        idx = by_group.get(key)
        if not idx:
            continue
        ts = [t for i in idx for t in matched[i]]
        layers = [t.layer for t in ts if t.layer is not None]
        head = f"## {title}" + (f" [{_ranges(layers)}]" if layers else "")
        if devices:
            devs = sorted({devices[t.name] for t in ts if t.name in devices}, key=lambda d: (d == "CPU", d))
            if devs:
                head += f" ({', '.join(devs)})"
        lines += ["", head]
        full = set(layers)
        for i in sorted(idx, key=lambda i: (min((t.layer for t in matched[i] if t.layer is not None), default=-1),
                                            recipe.rules[i][0])):
            rx, ty = recipe.rules[i]
            own = {t.layer for t in matched[i] if t.layer is not None}
            roles = sorted({t.role for t in matched[i]})
            if own and own != full:
                lines.append(f"# {', '.join(roles)}: layers {_ranges(sorted(own))}")
            lines.append(f"{rx}={ty}")
    return "\n".join(lines) + "\n"


def carries_recipe(recipe: Recipe, argv: Sequence[str]) -> bool:
    """Whether ``argv`` is the llama-quantize command that takes ``recipe`` (its ``--custom-q`` argument, or a
    mainline ``--tensor-type`` item of it)."""
    items = {f"{rx}={ty}" for rx, ty in recipe.rules}
    return recipe.custom_q in argv or any(a in items for a in argv)


def styled_script(recipe: Recipe, types: Mapping[str, str], quantize_argv: Sequence[str],
                  devices: Mapping[str, str] | None = None) -> str:
    """The styled block as the shell lines ubergarm publishes: the block in a quoted here-document (no expansion),
    joined for the engine (ik: one comma-separated ``--custom-q``; mainline: one ``--tensor-type`` per rule), then
    the llama-quantize command of ``quantize_argv`` with the recipe argument(s) replaced by the variable.

    Every argument is :func:`planner.quoting.shell_quote`-d; the block is data in a quoted here-document whose end
    word appears on no line of it.

    Raises:
        ValueError: a rule or tensor name holds a line break or control character (no here-document line can).
    """
    from planner.quoting import shell_quote

    texts = [x for rx, ty in recipe.rules for x in (rx, ty)] + list(types) + list((devices or {}).values())
    bad = next((x for x in texts if not x.isprintable()), None)
    if bad is not None:
        # a line break or control character would split a rule (or end the here-document early)
        raise ValueError(f"recipe text {bad[:60]!r} is not one printable line")
    block = styled_recipe(recipe, types, devices).rstrip("\n")
    lines = block.split("\n")
    delim = "RECIPE"
    while delim in lines:           # the quoted here-document ends only at a line that is exactly its word
        delim += "_END"
    out = [f"custom=$(cat <<'{delim}'", block, delim, ")"]
    argv = list(quantize_argv)
    if recipe.engine == "mainline":
        out += ["args=()", "while IFS= read -r rule; do args+=(--tensor-type \"$rule\"); done < <(",
                "  printf '%s\\n' \"$custom\" | grep -v '^#' | grep -v '^[[:space:]]*$'", ")"]
        rest = [a for a in argv if a != "--tensor-type" and f"{a}" not in {f"{rx}={ty}" for rx, ty in recipe.rules}]
        cmd = [shell_quote(rest[0]), '"${args[@]}"', *(shell_quote(a) for a in rest[1:])]
    else:
        out += ["custom=$(", "  printf '%s\\n' \"$custom\" | grep -v '^#' | \\", "  sed -Ez 's:\\n+:,:g;s:,$::;s:^,::'", ")"]
        cmd = ['"$custom"' if a == recipe.custom_q else shell_quote(a) for a in argv]
    out.append(" ".join(cmd))
    return "\n".join(out) + "\n"


__all__ = ["STYLES", "carries_recipe", "styled_recipe", "styled_script"]
