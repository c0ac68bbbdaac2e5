"""Pass manager and dead-code elimination on small textual IR."""
import pytest

from wafercc.ir import parse_graph, print_graph
from wafercc.passes import DeadCodeElimination, Pass, PassError, PassManager

IR = """wafercc.ir 1
graph "t" {
  input %x : f32[batch, seq, 8]
  weight %w1 : f32[8, 8]
  weight %w2 : f32[8, 4]
  %a : f32[batch, seq, 8] = matmul(x=%x, w=%w1) name="used"
  %b : f32[batch, seq, 4] = matmul(x=%x, w=%w2) name="dead"
  output %a
}
"""


def test_dce_removes_dead_node_and_its_weight():
    g = parse_graph(IR)
    pm = PassManager([DeadCodeElimination()])
    pm.run(g)
    text = print_graph(g)
    assert 'name="dead"' not in text and "%w2" not in text
    assert "used" in text and "%w1" in text
    assert g.meta["properties"] == ["no-dead-code"]
    assert [r.name for r in pm.records] == ["dce"]


def test_missing_requirement_is_reported():
    class NeedsLayers(Pass):
        name = "needs"
        requires = frozenset({"partitioned"})

        def run(self, graph):
            pass

    with pytest.raises(PassError, match="requires \\['partitioned'\\]"):
        PassManager([NeedsLayers()]).run(parse_graph(IR))


def test_dump_writes_one_file_per_pass(tmp_path):
    g = parse_graph(IR)
    PassManager([DeadCodeElimination()], dump_dir=str(tmp_path)).run(g)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["00-dce.ir"]
    assert parse_graph((tmp_path / "00-dce.ir").read_text()).nodes[0].name == "used"
