"""Architectures beyond the reference set lower from a config with no per-architecture code."""
import pytest
import torch
import transformers

from wafercc.errors import UnsupportedOpError
from wafercc.frontend.hf_config import from_config
from wafercc.ir import model_facts

BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, head_dim=16,
            pad_token_id=0, bos_token_id=1, eos_token_id=2)

DECODERS = {
    "mistral": dict(sliding_window=16), "qwen2": {}, "gemma": {}, "gemma2": dict(sliding_window=16), "gemma3_text": {},
    "olmo2": {}, "starcoder2": {}, "stablelm": {}, "granite": {}, "cohere": {}, "smollm3": {},
    "olmo": {},                                   # LayerNorm without affine: the exporter passes Expand(1)
    "nemotron": dict(partial_rotary_factor=0.5),  # LayerNorm1P: the scale is (1 + w)
    "phi": dict(partial_rotary_factor=0.5), "glm4": dict(partial_rotary_factor=0.5), "helium": {},
    # sinusoid positions (a registered buffer: resident, not a parameter) and max(scores, finfo.min)
    "xglm": dict(d_model=64, ffn_dim=128, num_layers=2, attention_heads=4),
    "qwen2_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=64),
}
ENCODERS = ["roberta", "distilbert", "electra"]


def _meta_params(cfg, cls):
    config = transformers.AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = cls.from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("model_type", sorted(DECODERS))
def test_decoder_lowers(model_type):
    cfg = dict(BASE, model_type=model_type, **DECODERS[model_type])
    g = from_config(cfg)
    facts = model_facts(g)
    assert facts.layers == 2
    attn = [n for n in g.nodes if n.op == "attention"]
    assert len(attn) == 2 and all(n.attrs["causal"] for n in attn)
    assert facts.params == _meta_params(cfg, transformers.AutoModelForCausalLM)
    if model_type == "mistral":
        assert all(n.attrs.get("sliding_window") == 16 for n in attn)
    if model_type == "gemma2":  # logit softcapping and alternating sliding windows
        assert all(n.attrs.get("softcap") == 50.0 for n in attn)
        assert [n.attrs.get("sliding_window", 0) for n in attn] == [16, 0]


@pytest.mark.parametrize("model_type", ENCODERS)
def test_encoder_lowers(model_type):
    cfg = dict(BASE, model_type=model_type)
    g = from_config(cfg)
    assert model_facts(g).layers == 2
    assert all(not n.attrs["causal"] for n in g.nodes if n.op == "attention")


def test_architecture_outside_the_op_set_names_the_op():
    with pytest.raises(UnsupportedOpError) as e:
        from_config(dict(BASE, model_type="mamba"))
    assert e.value.op_type == "Conv"


@pytest.mark.parametrize("model_type", ["bart", "mbart"])
def test_encoder_decoder_compiles_as_its_encoder(model_type):
    """An encoder-decoder config lowers its encoder (the part that reads the prompt): its layers,
    bidirectional attention, no KV cache, and the encoder's parameters."""
    cfg = dict(model_type=model_type, d_model=64, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
               decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=128,
               max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    g = from_config(cfg)
    facts = model_facts(g)
    assert facts.layers == 2 and facts.kv_bytes_per_token == 0
    assert all(not n.attrs["causal"] for n in g.nodes if n.op == "attention")
    config = transformers.AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        enc = transformers.AutoModel.from_config(config).get_encoder()
    assert facts.params == sum(p.numel() for p in enc.parameters())
