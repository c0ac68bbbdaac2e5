"""Generate the tiny reference ONNX models checked into models/onnx/.

    python models/make_tiny.py            # (re)write models/onnx/*.onnx and SHA256SUMS
    python models/make_tiny.py --check    # exit 1 if the checked-in files are not up to date
    python models/make_tiny.py --out DIR  # write into DIR instead

The output is byte-for-byte deterministic: weights come from ``torch.manual_seed(0)``
(norm weights and biases are randomised too, so the exporter's initializer
de-duplication has nothing to merge), the export runs with fixed inputs, and node
metadata that depends on the machine or the tracing run (stack traces with file
paths, FX node text, graph-level export signatures) is dropped.  Kept per node:
``pkg.torch.onnx.name_scopes`` (the lifter reads layer indices from it) and
``pkg.torch.onnx.class_hierarchy`` (with the wrapper class named independently of
how this script was started).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ONNX_DIR = os.path.join(HERE, "onnx")

# hidden 64, intermediate 128, 2 layers, 4 heads, 2 kv heads, head_dim 16, vocab 256, max_position 128
COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, vocab_size=256, max_position_embeddings=128)

MODELS = ("tiny-llama", "tiny-moe")

# node metadata kept in the output; everything else (stack traces with file paths,
# FX node names that depend on tracing internals) is dropped
KEEP_METADATA = ("pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy")


def build(name: str):
    """The torch model (eval mode, seeded random weights) for one tiny model."""
    import torch
    import transformers

    if name == "tiny-llama":
        cfg = transformers.LlamaConfig(**COMMON)
        kw = {}
    elif name == "tiny-moe":
        cfg = transformers.MixtralConfig(**COMMON, num_local_experts=4, num_experts_per_tok=2)
        kw = {"experts_implementation": "batched_mm"}
    else:
        raise ValueError(f"unknown tiny model {name!r}; expected one of {MODELS}")
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, **kw)
    # Fresh init leaves norms at 1 and biases at 0; randomise them so no two
    # initializers have equal contents (the ONNX optimizer would merge them).
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1 and not pname.endswith("inv_freq"):
                if "norm" in pname:
                    p.normal_(1.0, 0.1)
                else:
                    p.normal_(0.0, 0.1)
    model.eval()
    return model


def _wrapper(model):
    import torch

    class TinyLM(torch.nn.Module):
        """(input_ids, attention_mask) -> logits, no KV cache."""

        def __init__(self, m):
            super().__init__()
            self.model = m

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    # the class path lands in the node metadata: make it independent of how this
    # script was started (as __main__, models.make_tiny or wafercc.models.make_tiny)
    TinyLM.__module__ = "wafercc.models.make_tiny"
    TinyLM.__qualname__ = "TinyLM"
    return TinyLM(model).eval()


def _strip_metadata(proto) -> None:
    """Drop machine-dependent metadata in place (nodes, graph, model, functions)."""
    def clean_graph(g):
        for node in g.node:
            keep = [(p.key, p.value) for p in node.metadata_props if p.key in KEEP_METADATA]
            del node.metadata_props[:]
            for k, v in keep:
                node.metadata_props.add(key=k, value=v)
            node.doc_string = ""
            for a in node.attribute:
                if a.HasField("g"):
                    clean_graph(a.g)
                for sg in a.graphs:
                    clean_graph(sg)
        del g.metadata_props[:]
        g.doc_string = ""
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            del vi.metadata_props[:]
            vi.doc_string = ""
        for init in g.initializer:
            del init.metadata_props[:]
            init.doc_string = ""

    clean_graph(proto.graph)
    for f in proto.functions:
        for node in f.node:
            keep = [(p.key, p.value) for p in node.metadata_props if p.key in KEEP_METADATA]
            del node.metadata_props[:]
            for k, v in keep:
                node.metadata_props.add(key=k, value=v)
            node.doc_string = ""
        del f.metadata_props[:]
        f.doc_string = ""
    del proto.metadata_props[:]
    proto.doc_string = ""


def export(name: str, path: str) -> None:
    """Export one tiny model to ``path`` (opset 18, dynamic batch/seq, weights inline)."""
    import torch

    model = _wrapper(build(name))
    ids = torch.arange(16, dtype=torch.long).reshape(2, 8) % COMMON["vocab_size"]
    mask = torch.ones(2, 8, dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    dynamic_shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, (ids, mask), dynamo=True, opset_version=18,
                                 dynamic_shapes=dynamic_shapes, optimize=True,
                                 input_names=["input_ids", "attention_mask"], output_names=["logits"],
                                 verbose=False, report=False)
    proto = prog.model_proto
    _strip_metadata(proto)
    proto.producer_name = "wafercc/models/make_tiny.py"
    proto.producer_version = ""
    import onnx
    onnx.checker.check_model(proto)
    data = proto.SerializeToString(deterministic=True)
    with open(path, "wb") as f:
        f.write(data)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def generate(out_dir: str) -> dict[str, str]:
    """Write every tiny model and SHA256SUMS into ``out_dir``; returns {file: sha256}."""
    os.makedirs(out_dir, exist_ok=True)
    sums = {}
    for name in MODELS:
        path = os.path.join(out_dir, f"{name}.onnx")
        export(name, path)
        sums[f"{name}.onnx"] = sha256(path)
    with open(os.path.join(out_dir, "SHA256SUMS"), "w") as f:
        for fname, digest in sums.items():
            f.write(f"{digest}  {fname}\n")
    return sums


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="verify the checked-in files are up to date")
    ap.add_argument("--out", default=ONNX_DIR, help=f"output directory (default {ONNX_DIR})")
    args = ap.parse_args(argv)
    if not args.check:
        for fname, digest in generate(args.out).items():
            size = os.path.getsize(os.path.join(args.out, fname))
            print(f"{digest}  {fname}  ({size} bytes)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(tmp)
    stale = []
    for fname, digest in fresh.items():
        path = os.path.join(args.out, fname)
        if not os.path.exists(path) or sha256(path) != digest:
            stale.append(fname)
    if stale:
        print(f"out of date: {', '.join(stale)}; run: python models/make_tiny.py", file=sys.stderr)
        return 1
    print("models/onnx is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
