"""File-driven IR cases (FileCheck style).

tests/ir_cases/*.ir          valid graphs: parse, verify, print back identically
                             (comment lines stripped), JSON round-trip.
tests/ir_cases/invalid/*.ir  first line ``# error: <substring>``: parse + verify
                             must raise IRError whose message contains it.
"""
from __future__ import annotations

import json
import pathlib

import pytest

from wafercc.errors import IRError, IRParseError, IRVerificationError
from wafercc.ir import from_json, parse_graph, print_graph, to_dict, to_json, verify

CASES = pathlib.Path(__file__).parent / "ir_cases"
VALID = sorted(CASES.glob("*.ir"))
INVALID = sorted((CASES / "invalid").glob("*.ir"))


def _strip_comments(text: str) -> str:
    return "".join(l for l in text.splitlines(keepends=True) if not l.lstrip().startswith("#"))


def test_case_counts():
    assert len(VALID) >= 20
    assert len(INVALID) >= 40


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_case_parses_verifies_and_prints_identically(path):
    text = path.read_text()
    g = parse_graph(text)
    verify(g)
    printed = print_graph(g)
    assert printed == _strip_comments(text)
    # print -> parse -> print is the identity
    assert print_graph(parse_graph(printed)) == printed


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_case_json_round_trip(path):
    g = parse_graph(path.read_text())
    js = to_json(g)
    g2 = from_json(js)
    verify(g2)
    assert to_json(g2) == js
    assert to_dict(g2) == to_dict(g)
    assert print_graph(g2) == print_graph(g)
    # the JSON form is plain JSON with the documented schema tag
    assert json.loads(js)["schema"] == "wafercc.ir/1"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_case_reports_expected_error(path):
    text = path.read_text()
    first = text.splitlines()[0]
    assert first.startswith("# error: "), f"{path.name}: first line must be '# error: <substring>'"
    expected = first[len("# error: "):].strip()
    assert expected
    with pytest.raises(IRError) as info:
        verify(parse_graph(text))
    assert isinstance(info.value, (IRParseError, IRVerificationError))
    assert expected in str(info.value), f"{path.name}: {info.value}"


@pytest.mark.parametrize("path", [p for p in INVALID], ids=lambda p: p.stem)
def test_invalid_case_message_is_one_line(path):
    with pytest.raises(IRError) as info:
        verify(parse_graph(path.read_text()))
    assert "\n" not in str(info.value)


def test_parse_error_reports_line_number():
    text = (CASES / "invalid" / "unknown_dtype.ir").read_text()
    with pytest.raises(IRParseError, match=r"^line 4: unknown dtype 'f99'"):
        parse_graph(text)


def test_verification_error_lists_all_problems():
    text = (CASES / "invalid" / "cycle.ir").read_text().replace("  output %b\n", "")
    with pytest.raises(IRVerificationError) as info:
        verify(parse_graph(text))
    problems = info.value.problems
    assert any("graph has no outputs" in p for p in problems)
    assert any(p.startswith("cycle through nodes") for p in problems)
    assert "(and 1 more)" in str(info.value)
    assert str(info.value).startswith("graph 'bad': ")
