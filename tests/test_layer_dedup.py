"""Exporting each distinct layer once and replicating it gives the same IR as a full export."""
import pytest

from wafercc.frontend.hf_config import from_config
from wafercc.frontend.layer_dedup import ReplicationError, plan_layers, replicate, LayerPlan
from wafercc.ir import parse_graph, print_graph


def _body(g):
    return [line for line in print_graph(g).splitlines() if not line.strip().startswith("meta ")]


@pytest.mark.parametrize("model,layers,exported", [
    ("llama-3.2-1b", 3, [0]),
    ("gpt-oss-120b", 4, [0, 1]),      # alternating sliding-window and full attention
    ("qwen3-235b-a22b", 2, [0]),      # mixture of experts
])
def test_dedup_matches_full_export(model, layers, exported):
    fast = from_config(model, layers=layers)
    full = from_config(model, layers=layers, dedup_layers=False)
    assert fast.meta["layer_dedup"]["exported_layers"] == exported
    assert "layer_dedup" not in full.meta
    assert _body(fast) == _body(full)


def test_no_plan_when_every_layer_differs():
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 5)])

    assert plan_layers(Net(), 2) is None
    assert plan_layers(Net(), 3) is None  # no stack of that length


def test_layers_handing_on_two_values_are_not_replicated():
    g = parse_graph("""wafercc.ir 1
graph "two" {
  input %ids : i64[batch, seq]
  weight %emb : f32[16, 4]
  weight %w0 : f32[4, 4]
  %x : f32[batch, seq, 4] = embedding(ids=%ids, table=%emb) name="x"
  %l.0.a : f32[batch, seq, 4] = matmul(x=%x, w=%w0) layer=0 name="l.0.a"
  %l.0.b : f32[batch, seq, 4] = activation(x=%l.0.a) {"fn": "relu"} layer=0 name="l.0.b"
  %out : f32[batch, seq, 4] = elementwise(a=%l.0.a, b=%l.0.b) {"fn": "add"} name="out"
  output %out
}
""")
    with pytest.raises(ReplicationError, match="more than one value"):
        replicate(g, LayerPlan("l", [0], [0, 0, 0]))
