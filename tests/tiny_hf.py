"""Tiny Hugging Face models (random weights) for frontend tests."""
from __future__ import annotations

import contextlib
import io
import warnings

import torch
import transformers

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=128, max_position_embeddings=256)


def make_config(arch: str):
    if arch == "llama":
        return transformers.LlamaConfig(**COMMON, head_dim=16)
    if arch == "qwen3":
        return transformers.Qwen3Config(**COMMON, head_dim=16)
    if arch == "mixtral":
        return transformers.MixtralConfig(**COMMON, head_dim=16, num_local_experts=4, num_experts_per_tok=2)
    if arch == "qwen3_moe":
        return transformers.Qwen3MoeConfig(**COMMON, head_dim=16, num_experts=4, num_experts_per_tok=2,
                                           moe_intermediate_size=32, decoder_sparse_step=1, mlp_only_layers=[])
    if arch == "gpt_oss":
        return transformers.GptOssConfig(**COMMON, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                                         sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=256, n_inner=128,
                                       bos_token_id=0, eos_token_id=0)
    if arch == "bert":
        return transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=128, vocab_size=128, max_position_embeddings=256)
    raise ValueError(arch)


class LogitsOf(torch.nn.Module):
    """forward(input_ids, attention_mask) -> logits (decoders) or last hidden state (encoders)."""

    def __init__(self, model, encoder: bool):
        super().__init__()
        self.model, self.encoder = model, encoder

    def forward(self, input_ids, attention_mask):
        if self.encoder:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def build(arch: str, meta: bool = False):
    cfg = make_config(arch)
    encoder = arch == "bert"
    cls = transformers.AutoModel if encoder else transformers.AutoModelForCausalLM
    kw = {"experts_implementation": "batched_mm"} if arch in ("mixtral", "qwen3_moe", "gpt_oss") else {}
    torch.manual_seed(0)
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = cls.from_config(cfg, **kw)
    if not meta:
        with torch.no_grad():  # every parameter distinct, so exporters cannot merge equal ones
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return LogitsOf(model.eval(), encoder).eval()


def param_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def inputs(meta: bool = False):
    dev = "meta" if meta else "cpu"
    ids = torch.zeros((2, 8), dtype=torch.long, device=dev) if meta else torch.randint(0, 128, (2, 8))
    return ids, torch.ones((2, 8), dtype=torch.long, device=dev)


def export(module, path: str, exporter: str) -> None:
    """exporter: 'dynamoNN' (optimized, as users export) or 'legacyNN', NN the opset."""
    ids, mask = inputs()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter.startswith("legacy"):
            torch.onnx.export(module, (ids, mask), path, dynamo=False, opset_version=int(exporter[-2:]),
                              input_names=["input_ids", "attention_mask"], output_names=["out"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                            "attention_mask": {0: "batch", 1: "seq"}})
        else:
            b, s = torch.export.Dim("batch"), torch.export.Dim("seq")
            torch.onnx.export(module, (ids, mask), path, dynamo=True, opset_version=int(exporter[-2:]),
                              dynamic_shapes={"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s}},
                              input_names=["input_ids", "attention_mask"])
