"""Rewrite reference_facts.json from the current compiler (run on purpose, review the diff).

    python tests/golden/regenerate_reference_facts.py
"""
import json
import os
import pathlib

from wafercc.frontend.hf_config import from_config
from wafercc.ir import model_facts
from wafercc.models_registry import names

KEYS = ("layers", "params", "weight_bytes", "kv_bytes_per_token", "decode_flops_per_token", "op_counts")

if __name__ == "__main__":
    out = {}
    for key in names():
        facts = model_facts(from_config(key)).as_dict()
        out[key] = {k: facts[k] for k in KEYS}
        print(key, out[key]["params"])
    path = pathlib.Path(__file__).with_name("reference_facts.json")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1, sort_keys=True))
    os.replace(tmp, path)
