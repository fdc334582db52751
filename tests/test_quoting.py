"""Untrusted text in scripts and file names: bash itself checks that every value comes back unchanged."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.quoting import comment_line, safe_filename, shell_quote

HOSTILE = [
    "Qwen3-235B-A22B", "", "a b", "it's", "$(touch PWNED)", "`id`", "${HOME}", "a\nrm -rf ~", "a\r\nb", "x;y|z&",
    "*", "~root", "-rf", "Mödel ✓", "tab\there", "back\\slash", "'\"'", "=x", "!history", "\x1b[31m",
]


def _bash(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, timeout=10)


@pytest.mark.parametrize("value", HOSTILE)
def test_bash_reads_back_the_exact_value(value, tmp_path):
    # printf '%s' <word> prints the word bash parsed
    r = _bash(f"cd {shell_quote(str(tmp_path))} && printf '%s' {shell_quote(value)}")
    assert r.returncode == 0 and r.stdout == value.encode("utf-8")
    assert "\n" not in shell_quote(value) and "\r" not in shell_quote(value)
    assert list(tmp_path.iterdir()) == []          # nothing was executed


@pytest.mark.parametrize("value", HOSTILE)
def test_a_comment_never_ends_early(value, tmp_path):
    script = "\n".join([comment_line("model: {} ({}), context {}", value, value, value), "echo ok"])
    r = _bash(f"cd {shell_quote(str(tmp_path))}\n{script}")
    assert r.stdout == b"ok\n" and list(tmp_path.iterdir()) == []


def test_nul_cannot_be_quoted():
    with pytest.raises(ValueError):
        shell_quote("a\x00b")


def test_comment_template_must_be_one_line():
    with pytest.raises(ValueError):
        comment_line("a\nb {}", "x")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30))
def test_any_text_round_trips_through_bash(value):
    r = _bash(f"printf '%s' {shell_quote(value)}")
    assert r.stdout == value.encode("utf-8")


@pytest.mark.parametrize("name, expected", [
    ("Qwen3-235B-A22B", "Qwen3-235B-A22B"),
    ("../../etc/passwd", "etc-passwd"),
    ("/abs/path/model", "abs-path-model"),
    ("a\nb", "a-b"),
    ("..", "model"),
    ("", "model"),
    ("-rf", "rf"),
    ("Mödel v2.5", "M-del-v2.5"),
])
def test_safe_filename(name, expected):
    assert safe_filename(name) == expected
    assert "/" not in safe_filename(name) and not safe_filename(name).startswith((".", "-"))
