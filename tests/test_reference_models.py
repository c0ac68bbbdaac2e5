"""Every reference model lowers from its public config; its facts match the golden file
and its parameter count matches the published one within 1 %.

The golden file is regenerated only on purpose, and its diff reviewed:
    python tests/golden/regenerate_reference_facts.py
"""
import json
import pathlib

import pytest

from wafercc.ir import model_facts
from wafercc.models_registry import all_models

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "reference_facts.json").read_text())
PUBLIC = {m.key: m for m in all_models()}


def test_golden_covers_every_reference_model():
    assert sorted(GOLDEN) == sorted(PUBLIC)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_reference_model(key, reference_graph):
    graph = reference_graph(key)
    facts = model_facts(graph)
    want = GOLDEN[key]
    got = {k: getattr(facts, k) for k in want}
    assert got == want
    public = PUBLIC[key].public_params
    assert abs(facts.params - public) / public < 0.01, (facts.params, public)
