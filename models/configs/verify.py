"""Re-verify the reference configs: build each on the meta device with
transformers, count parameters (tied embeddings counted once) and compare to
REFERENCE.json public_params. Writes VERIFY.txt next to this file."""
import dataclasses, importlib, json, os, shutil, sys, tempfile
import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ref = json.load(open(os.path.join(HERE, "REFERENCE.json")))
rows, unknown, ok = [], {}, True
for key, info in ref.items():
    raw = json.load(open(os.path.join(HERE, f"{key}.json")))
    assert "quantization_config" not in raw, key
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(os.path.join(HERE, f"{key}.json"), os.path.join(d, "config.json"))
        cfg = AutoConfig.from_pretrained(d)
    cls = type(cfg)
    known = set()
    for c in cls.__mro__:
        if dataclasses.is_dataclass(c):
            known |= {f.name for f in dataclasses.fields(c)}
        known |= set(getattr(c, "__annotations__", {}))
        known |= set(getattr(c, "attribute_map", {}) or {})
    unk = sorted(k for k in raw if k not in known and k not in ("transformers_version", "_name_or_path", "architectures", "model_type", "torch_dtype", "rope_scaling", "rope_theta"))
    if unk:
        mod = importlib.import_module(type(cfg).__module__.replace("configuration_", "modeling_"))
        src = open(mod.__file__).read()
        unknown[key] = [k + (" (read by modeling code via getattr)" if f'"{k}"' in src or f"config.{k}" in src else " (inert)") for k in unk]
    auto = AutoModel if info["kind"] == "encoder" else AutoModelForCausalLM
    with torch.device("meta"):
        m = auto.from_config(cfg)
    n = sum(p.numel() for p in m.parameters())  # parameters() dedups tied weights
    pub = info["public_params"]
    err = (n - pub) / pub
    ok &= abs(err) < 0.01
    rows.append((key, type(m).__name__, n, pub, err))
    del m
    print(key, n, pub, f"{err:+.3%}", flush=True)

lines = [f"# wafercc reference configs: meta-device parameter counts (transformers {transformers.__version__}, torch {torch.__version__})",
         "# counted = sum(p.numel() for p in model.parameters()) on torch.device('meta'); tied embeddings counted once",
         "# rel_err = (counted - public) / public; tolerance 1 %", "",
         f"{'key':<17} {'class':<22} {'counted':>16} {'public':>16} {'rel_err':>9}"]
for key, cname, n, pub, err in rows:
    lines.append(f"{key:<17} {cname:<22} {n:>16,} {pub:>16,} {err:>+9.3%}")
lines += ["", "ALL WITHIN 1 %: " + ("yes" if ok else "NO"), ""]
if unknown:
    lines.append("Hub keys kept for fidelity that are not declared fields of the transformers config class (kept as plain attributes):")
    for k, v in unknown.items():
        lines.append(f"  {k}: {', '.join(v)}")
    lines.append("")
lines.append("gpt-oss-120b: hub quantization_config (mxfp4) removed; counts are logical unquantized elements (see REFERENCE.json notes).")
open(os.path.join(HERE, "VERIFY.txt"), "w").write("\n".join(lines) + "\n")
sys.exit(0 if ok else 1)
