"""Cost functions and model facts against numbers computed by hand."""
from __future__ import annotations

import pathlib

import pytest

from wafercc.ir import (CostContext, DType, decode_bindings, layer_params, model_facts, parse_graph,
                        verify)

CASES = pathlib.Path(__file__).parent / "ir_cases"
HEAD = 'wafercc.ir 1\ngraph "t" {\n'


def graph(body: str):
    g = parse_graph(HEAD + body + "}\n")
    verify(g)
    return g


def cost(g, node_name, bindings, **dtypes):
    node = next(n for n in g.nodes if n.name == node_name)
    return g.node_cost(node, CostContext(bindings, **dtypes))


# --- matmul -----------------------------------------------------------------------

MATMUL = """  input %x : bf16[batch, seq, 64]
  weight %w : bf16[64, 128]
  weight %wt : bf16[128, 64]
  weight %b : bf16[128]
  %y : bf16[batch, seq, 128] = matmul(x=%x, w=%w) name="plain"
  %z : bf16[batch, seq, 128] = matmul(x=%x, w=%w, b=%b) name="bias"
  %t : bf16[batch, seq, 128] = matmul(x=%x, w=%wt) {"transpose_w": true} name="transposed"
  output %y
  output %z
  output %t
"""


def test_matmul_flops_and_bytes():
    g = graph(MATMUL)
    b = {"batch": 2, "seq": 3}                      # 6 rows, K=64, N=128
    c = cost(g, "plain", b)
    assert c.flops == 2 * 6 * 64 * 128 == 98304
    assert c.weight_bytes == 64 * 128 * 2 == 16384
    assert c.bytes_read == 6 * 64 * 2 + 16384 == 17152
    assert c.bytes_written == 6 * 128 * 2 == 1536
    assert c.kv_bytes_per_token == 0


def test_matmul_bias_adds_one_flop_per_output():
    g = graph(MATMUL)
    c = cost(g, "bias", {"batch": 2, "seq": 3})
    assert c.flops == 98304 + 6 * 128 == 99072
    assert c.weight_bytes == 16384 + 128 * 2 == 16640


def test_matmul_transposed_weight_same_cost():
    g = graph(MATMUL)
    b = {"batch": 1, "seq": 5}
    assert cost(g, "transposed", b) == cost(g, "plain", b)
    assert cost(g, "plain", b).flops == 2 * 5 * 64 * 128


def test_weight_and_act_dtype_overrides():
    g = graph(MATMUL)
    b = {"batch": 1, "seq": 1}
    c = cost(g, "plain", b, weight_dtype=DType.F8E4M3)
    assert c.weight_bytes == 64 * 128 == 8192             # half of bf16
    c4 = cost(g, "plain", b, weight_dtype=DType.F4E2M1)
    assert c4.weight_bytes == 64 * 128 // 2 == 4096
    c32 = cost(g, "plain", b, act_dtype=DType.F32)
    assert c32.bytes_read == 64 * 4 + 16384
    assert c32.bytes_written == 128 * 4
    assert c32.flops == 2 * 64 * 128


def test_act_dtype_override_leaves_integer_inputs_alone():
    g = graph("""  input %ids : i64[batch, seq]
  weight %t : bf16[100, 8]
  %h : bf16[batch, seq, 8] = embedding(ids=%ids, table=%t) name="e"
  output %h
""")
    c = cost(g, "e", {"batch": 1, "seq": 4}, act_dtype=DType.F8E4M3)
    assert c.flops == 0
    assert c.bytes_read == 4 * 8 + 100 * 8 * 2            # i64 ids + whole table
    assert c.bytes_written == 4 * 8 * 1                    # 32 fp8 outputs


def test_shared_weight_counted_once_per_node():
    g = graph("""  weight %w : f32[4, 4]
  %y : f32[4, 4] = elementwise(a=%w, b=%w) {"fn": "mul"} name="sq"
  output %y
""")
    c = cost(g, "sq", {})
    assert c.weight_bytes == 16 * 4
    assert c.flops == 16


# --- attention -----------------------------------------------------------------------

GQA = """  input %q : bf16[batch, seq, 256]
  input %k : bf16[batch, seq, 64]
  input %v : bf16[batch, seq, 64]
  kv %kc : bf16[batch, 2, context, 32]
  kv %vc : bf16[batch, 2, context, 32]
  %o : bf16[batch, seq, 256] = attention(q=%q, k=%k, v=%v, k_cache=%kc, v_cache=%vc) {"causal": true, "head_dim": 32, "num_heads": 8, "num_kv_heads": 2EXTRA} name="attn"
  output %o
"""


def test_attention_gqa_decode_bf16():
    g = graph(GQA.replace("EXTRA", ""))
    c = cost(g, "attn", decode_bindings(1000))
    # per token: K row 2 heads x 32 dims + V row 2 x 32, 2 bytes each
    assert c.kv_bytes_per_token == (2 * 32 + 2 * 32) * 2 == 256
    # 8 query heads x 1000 keys x (2*32 for QK + 2*32 for PV + 5 softmax)
    assert c.flops == 8 * 1000 * (4 * 32 + 5) == 1_064_000
    act_in = (256 + 64 + 64) * 2
    assert c.bytes_read == act_in + 256 * 1000
    assert c.bytes_written == 256 * 2 + 256                # output row + one new K/V row
    assert c.weight_bytes == 0


def test_attention_gqa_fp8_kv_override():
    g = graph(GQA.replace("EXTRA", ""))
    c = cost(g, "attn", decode_bindings(1000), kv_dtype=DType.F8E4M3)
    assert c.kv_bytes_per_token == 2 * 32 + 2 * 32 == 128
    assert c.bytes_read == (256 + 64 + 64) * 2 + 128 * 1000
    assert c.bytes_written == 256 * 2 + 128
    assert c.flops == 1_064_000                            # dtype does not change FLOPs


def test_attention_batch_scales_reads_not_kv_per_token():
    g = graph(GQA.replace("EXTRA", ""))
    c = cost(g, "attn", decode_bindings(1000, batch=4))
    assert c.kv_bytes_per_token == 256
    assert c.flops == 4 * 1_064_000
    assert c.bytes_read == 4 * (256 + 64 + 64) * 2 + 4 * 256 * 1000
    assert c.bytes_written == 4 * 256 * 2 + 4 * 256


def test_attention_sliding_window_caps_kv_read():
    g = graph(GQA.replace("EXTRA", ', "sliding_window": 128'))
    c = cost(g, "attn", decode_bindings(1000))
    assert c.kv_bytes_per_token == 256                     # the cache still grows per token
    assert c.bytes_read == (256 + 64 + 64) * 2 + 256 * 128
    assert c.flops == 8 * 128 * 133
    short = cost(g, "attn", decode_bindings(100))        # context shorter than the window
    assert short.bytes_read == (256 + 64 + 64) * 2 + 256 * 100
    assert short.flops == 8 * 100 * 133


def test_attention_cached_without_context_binding_uses_seq():
    g = graph(GQA.replace("EXTRA", ""))
    c = cost(g, "attn", {"batch": 1, "seq": 10})
    assert c.flops == 8 * 10 * 10 * 133
    assert c.bytes_read == 10 * (256 + 64 + 64) * 2 + 256 * 10


PREFILL = """  input %q : f32[batch, seq, 64]
  %o : f32[batch, seq, 64] = attention(q=%q, k=%q, v=%q) {"causal": CAUSAL, "head_dim": 16, "num_heads": 4, "num_kv_heads": 4EXTRA} name="attn"
  output %o
"""


@pytest.mark.parametrize("causal, window, pairs", [
    ("true", "", 1 + 2 + 3 + 4),                         # causal triangle
    ("true", ', "sliding_window": 2', 1 + 2 + 2 + 2),   # each query sees at most 2 keys
    ("false", "", 4 * 4),                                # full square
    ("false", ', "sliding_window": 3', 4 * 3),
])
def test_attention_prefill_pairs(causal, window, pairs):
    g = graph(PREFILL.replace("CAUSAL", causal).replace("EXTRA", window))
    c = cost(g, "attn", {"batch": 2, "seq": 4})
    assert c.flops == 2 * 4 * pairs * (4 * 16 + 5)
    assert c.kv_bytes_per_token == 0
    assert c.bytes_read == 3 * 2 * 4 * 64 * 4              # q, k, v (same value read per operand)


# --- moe --------------------------------------------------------------------------------

def test_moe_flops_count_top_k_experts_weight_bytes_count_all():
    g = parse_graph((CASES / "moe_gated.ir").read_text())
    c = cost(g, "mlp", {"batch": 1, "seq": 1})
    d, e, i, k = 32, 8, 64, 2
    expert = 3 * 2 * d * i + 4 * i + i                     # 3 matmuls, silu, gate multiply
    assert expert == 12608
    assert c.flops == 2 * d * e + 5 * e + k * (expert + d) == 25832
    # router + all 8 experts' gate/up/down, bf16
    assert c.weight_bytes == (32 * 8 + 3 * 8 * 32 * 64) * 2 == 98816
    assert c.bytes_read == 32 * 2 + 98816
    assert c.bytes_written == 32 * 2
    rows = cost(g, "mlp", {"batch": 3, "seq": 5})
    assert rows.flops == 15 * 25832
    assert rows.weight_bytes == 98816


def test_moe_top_k_changes_flops_not_weights():
    text = (CASES / "moe_gated.ir").read_text()
    g2 = parse_graph(text)
    g8 = parse_graph(text.replace('"top_k": 2', '"top_k": 8'))
    verify(g8)
    b = {"batch": 1, "seq": 1}
    c2, c8 = cost(g2, "mlp", b), cost(g8, "mlp", b)
    assert c8.flops - c2.flops == 6 * (12608 + 32)
    assert c8.weight_bytes == c2.weight_bytes


def test_moe_ungated_with_shared_expert():
    g = parse_graph((CASES / "moe_shared_ungated.ir").read_text())
    c = cost(g, "mlp", {"batch": 1, "seq": 2})
    d, e, i, k, si = 16, 4, 24, 1, 40
    expert = 2 * 2 * d * i + 8 * i                         # up + down, gelu, no gate multiply
    shared = 3 * 2 * d * si + 8 * si + si
    assert c.flops == 2 * (2 * d * e + 5 * e + k * (expert + d) + shared)
    assert c.weight_bytes == (16 * 4 + 2 * 4 * 16 * 24 + 3 * 16 * 40) * 4


# --- other ops ---------------------------------------------------------------------------

def test_elementwise_activation_softmax_norm_rotary_flops():
    g = graph("""  input %x : bf16[batch, seq, 64]
  weight %g : bf16[64]
  weight %b : bf16[64]
  %a : bf16[batch, seq, 64] = activation(x=%x) {"fn": "gelu"} name="gelu"
  %s : bf16[batch, seq, 64] = softmax(x=%a) name="softmax"
  %e : bf16[batch, seq, 64] = elementwise(a=%s, b=%x) {"fn": "add"} name="add"
  %r : bf16[batch, seq, 64] = norm(x=%e, scale=%g) {"eps": 1e-06, "kind": "rms"} name="rms"
  %l : bf16[batch, seq, 64] = norm(x=%r, scale=%g, bias=%b) {"eps": 1e-05, "kind": "layer"} name="ln"
  %p : bf16[batch, seq, 64] = rotary(x=%l) {"head_dim": 16, "num_heads": 4} name="rope"
  %h : bf16[batch, seq, 64] = rotary(x=%p) {"head_dim": 16, "num_heads": 4, "rotary_dim": 8} name="rope_half"
  %v : bf16[batch, seq, 4, 16] = layout(x=%h) {"kind": "reshape", "shape": ["batch", "seq", 4, 16]} name="view"
  output %v
""")
    b = {"batch": 1, "seq": 3}
    n = 3 * 64
    assert cost(g, "gelu", b).flops == 8 * n
    assert cost(g, "softmax", b).flops == 5 * n
    assert cost(g, "add", b).flops == n
    assert cost(g, "rms", b).flops == 4 * n
    assert cost(g, "ln", b).flops == 8 * n                 # 7 per element + 1 for the bias
    assert cost(g, "rope", b).flops == 3 * 3 * 4 * 16
    assert cost(g, "rope_half", b).flops == 3 * 3 * 4 * 8
    view = cost(g, "view", b)
    assert view.flops == 0
    assert view.bytes_read == view.bytes_written == n * 2
    assert cost(g, "ln", b).weight_bytes == 2 * 64 * 2


# --- model facts --------------------------------------------------------------------------

def _decoder():
    g = parse_graph((CASES / "decoder_layer.ir").read_text())
    verify(g)
    return g


# embed 256x64 (tied with lm_head), q 64x64, k/v 64x32, o 64x64, gate/up 64x128,
# down 128x64, three norm scales of 64
PARAMS = 256 * 64 + 64 * 64 + 2 * 64 * 32 + 64 * 64 + 2 * 64 * 128 + 128 * 64 + 3 * 64


def test_model_facts_params_count_tied_weight_once():
    f = model_facts(_decoder())
    assert PARAMS == 53440
    assert f.params == PARAMS
    assert f.weight_bytes == 2 * PARAMS
    assert f.layers == 1
    assert f.nodes == 19
    assert f.op_counts == {"activation": 1, "attention": 1, "elementwise": 3, "embedding": 1,
                           "matmul": 8, "norm": 3, "rotary": 2}
    assert f.name == "decoder_layer"


def test_model_facts_weight_dtype_override_halves_bytes():
    g = _decoder()
    assert model_facts(g, weight_dtype=DType.F8E4M3).weight_bytes == PARAMS
    assert model_facts(g, weight_dtype=DType.F4E2M1).weight_bytes == PARAMS // 2
    assert model_facts(g, weight_dtype=DType.F8E4M3).params == PARAMS


def test_model_facts_kv_and_decode_flops():
    g = _decoder()
    f = model_facts(g, context=100)
    assert f.kv_bytes_per_token == 2 * (2 * 16) * 2 == 128
    assert model_facts(g, kv_dtype=DType.F8E5M2).kv_bytes_per_token == 64
    matmuls = 2 * 64 * (64 + 32 + 32 + 64 + 128 + 128) + 2 * 128 * 64 + 2 * 64 * 256
    norms = 3 * 4 * 64
    rotary = 3 * 4 * 16 + 3 * 2 * 16
    attention = 4 * 100 * (4 * 16 + 5)
    elementwise = 64 + 128 + 64
    silu = 4 * 128
    assert f.decode_flops_per_token == matmuls + norms + rotary + attention + elementwise + silu == 135920
    # only the attention term depends on the context length
    assert model_facts(g, context=200).decode_flops_per_token - f.decode_flops_per_token == 4 * 100 * 69


def test_model_facts_tied_weight_minimal():
    g = parse_graph((CASES / "meta_layers.ir").read_text())
    f = model_facts(g)
    assert f.params == 2 * 16 * 16                         # w0 used twice, counted once
    assert f.layers == 2
    assert layer_params(g) == {0: 256, 1: 256}


def test_layer_params_split():
    lp = layer_params(_decoder())
    assert lp[None] == 256 * 64 + 64                       # embedding + final norm (lm_head tied)
    assert lp[0] == PARAMS - lp[None]
    assert sum(lp.values()) == PARAMS


def test_decode_bindings():
    assert decode_bindings(4096) == {"batch": 1, "seq": 1, "context": 4096}
    assert decode_bindings(10, batch=8) == {"batch": 8, "seq": 1, "context": 10}
