"""Hypothesis strategies for hostile defect maps: spec strings and defect-map JSON files.

``defect_specs()`` builds spec strings from the grammar (wafercc/target/defects.py): known and
unknown kinds, parameters by name and by position, rates at and past their edges, huge counts and
sizes, non-finite numbers, stray separators, many terms.  ``defect_docs()`` builds the JSON document
of a defect file (docs/targets.md): entries of the wrong shape or type, out-of-range and negative
coordinates, unknown keys and frames, bad wafer indices, and whole-wafer maps (every core or every
die dead).  A whole-wafer map is a marker (``ALL_CORES``, ``ALL_DIES``) that ``render_defect_file``
expands for a given target, so a draw stays small.

    from fuzz.defect_strategies import defect_specs, defect_docs, render_defect_file
"""
from __future__ import annotations

import json

from hypothesis import strategies as st

ALL_CORES = "\x00all-cores\x00"
ALL_DIES = "\x00all-dies\x00"
FILE = "defects.json"                        # the name a spec's file: term refers to

KINDS = ["random", "clustered", "dies", "links", "none", "default", "file", "bogus", "RANDOM", ""]
PARAMS = {"random": ["rate", "seed"], "clustered": ["rate", "size", "count", "seed"], "dies": ["count", "seed"],
          "links": ["rate", "seed"]}
NUMBER_TEXT = ["0", "1", "-1", "0.01", "0.5", "0.999999", "1.0", "1%", "50%", "100%", "-5%", "1e308", "1e-308",
               "inf", "-inf", "nan", "2147483648", "9" * 30, "9" * 5000, "0x10", "1_000", "", " ", "١", "1e3",
               "84", "85", "100000"]


_VALID_VALUES = {"rate": ["0", "0.001", "0.01", "0.05", "0.3", "0.9", "0.999", "1%", "99.9%"],
                 "size": ["1", "4", "8", "64", "10000", "1000000"], "count": ["0", "1", "3", "84", "1000", "100000"],
                 "seed": ["0", "1", "2147483647", "99999999999"]}


@st.composite
def _valid_term(draw) -> str:
    """A term the grammar accepts, with values from everyday to whole-wafer (rate 0.999, 84 dies)."""
    kind = draw(st.sampled_from(sorted(PARAMS)), label="kind")
    names = draw(st.lists(st.sampled_from(PARAMS[kind]), min_size=1, max_size=3, unique=True), label="params")
    if kind == "dies":
        names = ["count", *(n for n in names if n != "count")]
    elif "rate" not in names and not (kind == "clustered" and "count" in names):
        names = ["rate", *names]
    values = [_VALID_VALUES[n][draw(st.integers(0, len(_VALID_VALUES[n]) - 1))] for n in names]
    if kind == "dies":
        values[0] = draw(st.sampled_from(["0", "1", "2", "12", "84"]))
    return f"{kind}:" + ",".join(f"{n}={v}" for n, v in zip(names, values))


@st.composite
def _term(draw) -> str:
    if draw(st.booleans(), label="valid term"):
        return draw(_valid_term())
    kind = draw(st.sampled_from(KINDS), label="kind")
    if kind == "file":
        return "file:" + draw(st.sampled_from([FILE, FILE, "", "/nonexistent.json", "/dev/null", "/etc/passwd", "."]))
    if kind in ("none", "default") and draw(st.booleans()):
        return kind
    names = PARAMS.get(kind, ["rate", "x"])
    args = []
    for i in range(draw(st.integers(0, 4), label="args")):
        value = draw(st.one_of(st.sampled_from(NUMBER_TEXT), st.floats().map(repr), st.integers().map(str),
                               st.text(max_size=4)), label="value")
        if i == 0 and draw(st.booleans(), label="positional"):
            args.append(value)
        else:
            args.append(f"{draw(st.sampled_from(names + ['x', '']))}={value}")
    sep = draw(st.sampled_from([",", ",", ", ", ",,", ";"]), label="arg separator")
    return f"{kind}:{sep.join(args)}" if args or draw(st.booleans()) else kind


@st.composite
def defect_specs(draw) -> str:
    """A spec string: one to twenty terms joined by '+' (sometimes by stray separators)."""
    terms = draw(st.lists(_term(), min_size=1, max_size=draw(st.sampled_from([1, 2, 3, 20]))), label="terms")
    joiner = draw(st.sampled_from(["+", "+", "+", " + ", "++", "+ +"]), label="joiner")
    return joiner.join(terms)


# ---- defect-map files ----
_COORD = st.one_of(st.integers(-3, 1200), st.sampled_from([-1, 0, 2 ** 31, 2 ** 63 - 1, -2 ** 63, 10 ** 30]))
_JUNK = st.sampled_from([None, True, 1.5, "3", [], {}, [1], [1, 2, 3, 4], "E", float("nan")])


def _cores():
    pairs = st.lists(st.lists(_COORD, min_size=2, max_size=2), max_size=8)
    # a whole-wafer map is ~900,000 entries (seconds to write and read): one draw in eight
    return st.one_of(pairs, pairs, pairs, pairs, pairs,
                     st.lists(st.one_of(st.lists(_COORD, min_size=0, max_size=4), _JUNK), max_size=4),
                     st.just(ALL_CORES), _JUNK)


def _dies():
    return st.one_of(st.lists(st.lists(st.integers(-2, 14), min_size=2, max_size=2), max_size=6),
                     st.just(ALL_DIES), _JUNK)


def _links():
    link = st.tuples(_COORD, _COORD, st.sampled_from(["N", "E", "S", "W", "X", "", 1, None])).map(list)
    return st.one_of(st.lists(link, max_size=8), st.lists(st.lists(_COORD, max_size=4), max_size=3), _JUNK)


def _entry():
    return st.one_of(
        st.fixed_dictionaries({}, optional={"dead_cores": _cores(), "dead_dies": _dies(), "dead_links": _links()}),
        st.dictionaries(st.sampled_from(["dead_cores", "dead_core", "zz"]), _cores(), max_size=2), _JUNK)


@st.composite
def defect_docs(draw) -> dict:
    """The JSON document of a defect-map file (Python objects; markers expanded when written)."""
    doc = {"version": draw(st.sampled_from([1, 1, 1, 0, 2, "1", None, 1.0, True]), label="version")}
    if draw(st.booleans(), label="frame"):
        doc["frame"] = draw(st.sampled_from(["usable", "fabric", "Fabric", "", 3]))
    if draw(st.booleans(), label="all"):
        doc["all"] = draw(_entry())
    if draw(st.booleans(), label="wafers"):
        doc["wafers"] = draw(st.one_of(
            st.dictionaries(st.sampled_from(["0", "1", "3", "-1", "x", "", "00", "99999999999999999999", "١"]),
                            _entry(), max_size=3), _JUNK), label="wafer entries")
    if draw(st.integers(0, 9), label="unknown key") == 0:
        doc[draw(st.sampled_from(["zz", "Version", "dead_cores"]))] = 1
    return doc


def _expand(value, target):
    if value == ALL_CORES:
        return [[r, c] for r in range(target.usable_rows) for c in range(target.usable_cols)]
    if value == ALL_DIES:
        return [[r, c] for r in range(target.dies.rows) for c in range(target.dies.columns)]
    if isinstance(value, dict):
        return {k: _expand(v, target) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, target) for v in value]
    return value


def render_defect_file(doc, target) -> str:
    """The file text of ``doc`` for ``target`` (whole-wafer markers expanded; NaN written as NaN)."""
    return json.dumps(_expand(doc, target))
