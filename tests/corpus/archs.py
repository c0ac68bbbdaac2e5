"""Tiny random-weight transformers architectures for the corpus: configs, models, wrappers.

Every config is a plain dict (it is also what build.py saves as the architecture's config.json,
the input of the config frontend), so the model built here and the one the config path builds
come from the same numbers.
"""
from __future__ import annotations

import torch
import transformers

SEED = 0
BATCH, SEQ, PAST = 2, 8, 4  # export inputs: batch, new tokens, cached tokens (past variants)
IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
# Llama-family fields; the other families spell the same sizes their own way below.
COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, **IDS)
MOE = dict(n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, moe_intermediate_size=32,
           n_group=1, topk_group=1, first_k_dense_replace=1)

# arch -> (config dict, kind, class). kind: decoder (ids, mask -> logits), encoder (ids, mask ->
# last_hidden_state), vision (pixel_values -> last_hidden_state). class: the transformers class.
ARCHS: dict[str, tuple[dict, str, str]] = {
    "gpt2": (dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, n_inner=128, vocab_size=128,
                  n_positions=256, bos_token_id=1, eos_token_id=2), "decoder", "GPT2LMHeadModel"),
    "gpt_neox": (dict(model_type="gpt_neox", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, vocab_size=128, max_position_embeddings=256, **IDS),
                 "decoder", "GPTNeoXForCausalLM"),
    "gptj": (dict(model_type="gptj", n_embd=64, n_layer=2, n_head=4, n_inner=128, rotary_dim=8,
                  vocab_size=128, n_positions=256, **IDS), "decoder", "GPTJForCausalLM"),
    "opt": (dict(model_type="opt", hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                 word_embed_proj_dim=64, vocab_size=128, max_position_embeddings=256, **IDS),
            "decoder", "OPTForCausalLM"),
    "bloom": (dict(model_type="bloom", hidden_size=64, n_layer=2, n_head=4, vocab_size=128, **IDS),
              "decoder", "BloomForCausalLM"),
    "bert": (dict(model_type="bert", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, vocab_size=128, max_position_embeddings=256, pad_token_id=0),
             "encoder", "BertModel"),
    "roberta": (dict(model_type="roberta", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, vocab_size=128, max_position_embeddings=258, pad_token_id=1),
                "encoder", "RobertaModel"),
    "distilbert": (dict(model_type="distilbert", dim=64, hidden_dim=128, n_layers=2, n_heads=4, vocab_size=128,
                        max_position_embeddings=256, pad_token_id=0), "encoder", "DistilBertModel"),
    "t5_encoder": (dict(model_type="t5", d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                        vocab_size=128, pad_token_id=0, eos_token_id=1), "encoder", "T5EncoderModel"),
    "bart_encoder": (dict(model_type="bart", d_model=64, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                          decoder_ffn_dim=128, vocab_size=128, max_position_embeddings=256, **IDS),
                     "encoder", "BartModel"),  # the encoder half only, see build_model
    "vit": (dict(model_type="vit", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 image_size=32, patch_size=8, num_channels=3), "vision", "ViTModel"),
    "llama": (dict(COMMON, model_type="llama", head_dim=16), "decoder", "LlamaForCausalLM"),
    "mistral_swa": (dict(COMMON, model_type="mistral", head_dim=16, sliding_window=4), "decoder",
                    "MistralForCausalLM"),
    "qwen2": (dict(COMMON, model_type="qwen2"), "decoder", "Qwen2ForCausalLM"),
    "qwen3_moe": (dict(COMMON, model_type="qwen3_moe", head_dim=16, num_experts=4, num_experts_per_tok=2,
                       moe_intermediate_size=32, decoder_sparse_step=1, mlp_only_layers=[]),
                  "decoder", "Qwen3MoeForCausalLM"),
    "phi3": (dict(COMMON, model_type="phi3"), "decoder", "Phi3ForCausalLM"),
    "falcon": (dict(model_type="falcon", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    vocab_size=128, **IDS), "decoder", "FalconForCausalLM"),
    "mixtral": (dict(COMMON, model_type="mixtral", head_dim=16, num_local_experts=4, num_experts_per_tok=2),
                "decoder", "MixtralForCausalLM"),
    "deepseek_v3": (dict(COMMON, **MOE, model_type="deepseek_v3", num_key_value_heads=4, q_lora_rank=32,
                         kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16),
                    "decoder", "DeepseekV3ForCausalLM"),
    "glm4_moe": (dict(COMMON, **MOE, model_type="glm4_moe", head_dim=16), "decoder", "Glm4MoeForCausalLM"),
    "gpt_oss": (dict(COMMON, model_type="gpt_oss", head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                     sliding_window=4, layer_types=["sliding_attention", "full_attention"]),
                "decoder", "GptOssForCausalLM"),
}


def config_dict(arch: str) -> dict:
    """The config.json the config frontend reads: the tiny sizes plus `architectures`."""
    cfg, _, cls = ARCHS[arch]
    return dict(cfg, architectures=[cls])


def make_config(arch: str):
    cfg = dict(ARCHS[arch][0])
    return transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def build_model(arch: str) -> torch.nn.Module:
    """The bare transformers model, seeded, with every parameter perturbed so no two are equal
    (trained weights never are; exporters would merge equal initializers)."""
    _, kind, cls = ARCHS[arch]
    config = make_config(arch)
    torch.manual_seed(SEED)
    model = getattr(transformers, cls)(config)
    if model._can_set_experts_implementation():
        # transformers' default (grouped_mm) exports with neither exporter (aten::histc); batched_mm
        # is what its own ExecuTorch exporter switches to, and what wafercc's config path uses.
        model.set_experts_implementation("batched_mm")
    if arch == "bart_encoder":
        model = model.get_encoder()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


class _Wrapper(torch.nn.Module):
    """Holds the transformers model; subclasses give the positional forward users export."""

    def __init__(self, model):
        super().__init__()
        self.model = model


class Decoder(_Wrapper):
    """forward(input_ids, attention_mask) -> logits, no cache."""

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class DecoderWithPast(_Wrapper):
    """forward(input_ids, attention_mask, k0, v0, k1, v1, ...) -> (logits, present k0, v0, ...):
    the flat past/present tensors of an optimum-style decoder export."""

    def forward(self, input_ids, attention_mask, *past):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(ddp_cache_data=list(zip(past[0::2], past[1::2])), config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, cache=cache, use_cache=True)
        present = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


class Encoder(_Wrapper):
    """forward(input_ids, attention_mask) -> last_hidden_state."""

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class Vision(_Wrapper):
    """forward(pixel_values) -> last_hidden_state."""

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).last_hidden_state


def wrap(arch: str, model, past: bool = False) -> torch.nn.Module:
    kind = ARCHS[arch][1]
    if kind == "decoder":
        return (DecoderWithPast if past else Decoder)(model).eval()
    return (Encoder if kind == "encoder" else Vision)(model).eval()


def example_inputs(arch: str, model, past: bool = False) -> dict[str, torch.Tensor]:
    """Named example inputs, in forward's positional order. With past, the cache comes from a real
    prefill of PAST tokens, so its shapes are the model's own (MLA keys and values differ in width,
    multi-query has one head)."""
    if ARCHS[arch][1] == "vision":
        torch.manual_seed(SEED)
        return {"pixel_values": torch.randn(BATCH, 3, 32, 32)}
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(3, 128, (BATCH, SEQ + PAST), generator=g)
    if not past:
        return {"input_ids": ids[:, :SEQ], "attention_mask": torch.ones(BATCH, SEQ, dtype=torch.long)}
    with torch.no_grad():
        out = model(input_ids=ids[:, :PAST], attention_mask=torch.ones(BATCH, PAST, dtype=torch.long),
                    use_cache=True)
    named = {"input_ids": ids[:, PAST:], "attention_mask": torch.ones(BATCH, PAST + SEQ, dtype=torch.long)}
    for i, layer in enumerate(out.cache.layers):
        named[f"past.{i}.key"], named[f"past.{i}.value"] = layer.keys, layer.values
    return named


def unique_param_count(module: torch.nn.Module) -> int:
    """Parameters counted once per storage, so tied weights (GPT-2's lm_head) count once."""
    seen: dict[tuple[int, int], int] = {}
    for _, p in module.named_parameters(remove_duplicate=False):
        seen[(p.data_ptr(), p.numel())] = p.numel()
    return sum(seen.values())


def kv_bytes_per_token(arch: str) -> int:
    """fp32 KV-cache bytes per token from the config: 2 x layers x kv_heads x head_dim x 4.
    MLA (DeepSeek-V3) caches the compressed latent (kv_lora_rank) and the shared rope key
    (qk_rope_head_dim) per layer, as transformers' own cache does. Encoders have no cache."""
    if ARCHS[arch][1] != "decoder":
        return 0
    c = make_config(arch)
    layers, heads = c.num_hidden_layers, c.num_attention_heads
    if getattr(c, "kv_lora_rank", None):
        return layers * (c.kv_lora_rank + c.qk_rope_head_dim) * 4
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    if c.model_type == "falcon":  # multi-query unless the new decoder architecture's kv groups
        kv_heads = c.num_kv_heads if c.new_decoder_architecture else (1 if c.multi_query else heads)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return 2 * layers * kv_heads * head_dim * 4
