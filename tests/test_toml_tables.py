"""planner.toml_tables reads a ``[group.name]`` file one table at a time; what it returns must be what tomllib
returns for the whole text (the reference here), for the shipped engine_graphs.toml and for texts its cut could
misread."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib import resources

import pytest

from planner.toml_tables import _cut, two_level_tables


def _plain(doc):
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in doc.items()}


def test_every_engine_graph_table_equals_the_whole_file_parse():
    text = resources.files("planner.data").joinpath("engine_graphs.toml").read_text("utf-8")
    assert _cut(text) is not None               # the shipped file is read table by table
    whole = tomllib.loads(text)
    lazy = two_level_tables(text)
    assert list(lazy) == list(whole)
    for group in whole:
        assert list(lazy[group]) == list(whole[group])
        assert all(name in lazy[group] for name in whole[group])
        assert "no-such-graph" not in lazy[group]
    assert _plain(lazy) == whole


TEXTS = [
    # plain two-level tables, a row at column 0 that is an array value
    '# c\n\n[a.x]\nk = 1\nrows = [\n["p", "q"],\n  ["r", 2],\n]\n[b.y]\ns = "t"\n[a.z]\nk = 2\n',
    'top = 1\n[a.x]\nk = 1\n',                          # a key before the first table
    '[a.x]\nk = 1\n[a.x.deeper]\nm = 2\n',              # a header of another depth
    '[a.x]\nk = 1\n[[a.arr]]\nm = 2\n[[a.arr]]\nm = 3\n',  # an array of tables
    '[a.x]\nk = 1\n["a".y]\nm = 2\n',                   # a header with a quoted key
    '[a.x]\nk = """\n[b.y]\n"""\n',                     # a header-like line inside a multi-line string
    '[a.x]\nv = [\n[1, 2],\n]\n',                       # a column-0 row that is not a string array
]


@pytest.mark.parametrize("text", TEXTS)
def test_result_equals_tomllib_of_the_whole_text(text):
    assert _plain(two_level_tables(text)) == tomllib.loads(text)


def test_only_plain_two_level_files_are_cut():
    assert [_cut(t) is not None for t in TEXTS] == [True] + [False] * (len(TEXTS) - 1)


def test_a_table_given_twice_is_the_tomllib_error():
    text = '[a.x]\nk = 1\n[a.x]\nk = 2\n'
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(text)
    with pytest.raises(tomllib.TOMLDecodeError):
        two_level_tables(text)
