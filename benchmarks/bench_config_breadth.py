"""Config breadth: tiny configs of model types outside the corpus, lowered from their config.

    python benchmarks/bench_config_breadth.py [MODEL_TYPE ...]

Each config (the shared tiny sizes below plus per-type keys) is written as a config.json and lowered
as a user would, `wafercc compile CONFIG --until ir --no-cache`, in a subprocess. Prints per type: ok
with the IR's params against the meta-device model's parameter count, or the one-line refusal (TB
marks a traceback, a bug). Not part of pytest.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers

BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, head_dim=16,
            pad_token_id=0, bos_token_id=1, eos_token_id=2)
VISION = dict(image_size=32, patch_size=8)
TYPES = {
    "olmo": {}, "olmoe": dict(num_experts=4, num_experts_per_tok=2), "phi": dict(partial_rotary_factor=0.5),
    "gpt_bigcode": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, multi_query=True),
    "mpt": dict(d_model=64, n_layers=2, n_heads=4, max_seq_len=256), "nemotron": dict(partial_rotary_factor=0.5),
    "helium": {}, "glm": dict(partial_rotary_factor=0.5), "glm4": dict(partial_rotary_factor=0.5), "exaone4": {},
    "ernie4_5": {}, "seed_oss": {}, "hunyuan_v1_dense": {}, "qwen3": {}, "gemma3_text": dict(sliding_window=8),
    "cohere2": dict(sliding_window=8), "granitemoe": dict(num_local_experts=4, num_experts_per_tok=2),
    "jetmoe": dict(num_local_experts=4, num_experts_per_tok=2, kv_channels=16), "dbrx": {},
    "xglm": dict(d_model=64, ffn_dim=128, num_layers=2, attention_heads=4),
    "codegen": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, rotary_dim=8), "biogpt": {}, "persimmon": {},
    "stablelm": {}, "deberta-v2": {}, "albert": dict(embedding_size=32), "mobilebert": {}, "xlm-roberta": {},
    "megatron-bert": {}, "ernie": {}, "camembert": {},
    "mbart": dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128),
    "llama4_text": dict(num_local_experts=4, num_experts_per_tok=1, intermediate_size_mlp=128),
    "minimax": dict(num_local_experts=4, num_experts_per_tok=2), "bamba": {}, "falcon_h1": {}, "mamba": {},
    "dinov2": VISION, "deit": VISION, "beit": VISION, "siglip_vision_model": VISION, "clip_vision_model": VISION,
}


def torch_params(cfg) -> int | None:
    config = transformers.AutoConfig.for_model(**cfg)
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoModel):
        try:
            with torch.device("meta"):
                return sum(p.numel() for p in cls.from_config(config).parameters())
        except Exception:  # noqa: BLE001 - a class this config has no model for
            continue
    return None


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(TYPES)
    work = tempfile.mkdtemp(prefix="wafercc-breadth-")
    counts = {"ok": 0, "refused": 0, "traceback": 0}
    for t in names:
        cfg = dict(BASE, model_type=t, **TYPES[t])
        path = os.path.join(work, f"{t}.json")
        with open(path, "w") as f:
            json.dump(transformers.AutoConfig.for_model(**cfg).to_dict(), f, default=str)
        out = os.path.join(work, f"out-{t}")
        r = subprocess.run([sys.executable, "-m", "wafercc.cli", "compile", path, "--until", "ir", "-o", out,
                            "--no-cache"], capture_output=True, text=True, timeout=300)
        if r.returncode == 0:
            with open(os.path.join(out, "summary.json")) as f:
                params = json.load(f)["params"]
            ref = torch_params(cfg)
            counts["ok"] += 1
            print(f"{t:22} ok   params {params:,} (torch {ref:,})" if ref else f"{t:22} ok   params {params:,}")
        else:
            tb = "Traceback (most recent call last)" in r.stderr
            counts["traceback" if tb else "refused"] += 1
            last = (r.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{t:22} {'TB  ' if tb else 'R   '} {last[:160]}")
    print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
