"""Resource limits: every bound wafercc puts on what a user can ask for, in one place.

Inputs beyond these are refused with one line (exit 2) before anything is built, so no config,
option, target or defect spec can make the compiler hang or grow without bound.  Each limit sits
well above the largest published model or wafer (the reason is noted beside it); docs/frontends.md
and docs/targets.md list them.  Raising one is safe where memory and time allow.
"""
from __future__ import annotations

# ---- models (Hugging Face configs and --layers) ----
MAX_LAYERS = 1024                 # transformer blocks; the deepest published decoders have ~126
MAX_MODEL_DIM = 2 ** 20           # hidden / intermediate / head sizes; largest published hidden is 25,600
MAX_VOCAB = 2 ** 22               # vocabulary entries; largest published is 262,144
MAX_HEADS = 2 ** 14               # attention heads per layer; largest published is 128
MAX_EXPERTS = 2 ** 14             # routed experts per MoE layer; largest published is 384
MIN_POSITIONS = 2                 # max_position_embeddings: a 1-token window shows no causal mask
MAX_POSITIONS = 2 ** 27           # max_position_embeddings; largest published context is 10 M tokens
MAX_IMAGE_SIZE = 2 ** 14          # pixels per side of a vision model's input image
MAX_CHANNELS = 64                 # image channels

# ---- compile options ----
MAX_CONTEXT = 2 ** 32             # --context / --prompt-tokens tokens per sequence (4.3 G); the planner bounds the rest by arithmetic
MAX_BATCH = 2 ** 16               # --batch sequences decoded together
MAX_WAFERS = 256                  # --wafers / --max-wafers; Llama-3.1-405B in bf16 needs ~21
MAX_SPEC_TOKENS = 8               # --spec-tokens draft tokens proposed per step (the sweep's range)
MAX_JOBS = 1024                   # --jobs worker processes (one per wafer at most is used)
MAX_SEED = 2 ** 31 - 1            # --seed: CP-SAT's random_seed is an int32

# ---- files ----
MAX_CONFIG_BYTES = 4 * 2 ** 20    # a config.json (published ones are < 100 KB)
MAX_TARGET_BYTES = 1 * 2 ** 20    # a target .toml (the presets are ~10 KB)
MAX_DEFECT_FILE_BYTES = 64 * 2 ** 20   # a defect-map JSON (every core of a wafer listed is ~15 MB)
MAX_JSON_DEPTH = 64               # nesting of any JSON/TOML input (configs nest 3-4 levels)
MAX_INT_DIGITS = 40               # digits of one integer literal in any input (int128 has 39)

# ---- defect specs ----
MAX_DEFECT_TERMS = 16             # "+"-joined terms of one spec (each term draws a map per wafer)
MAX_DEFECT_COUNT = 2 ** 24        # clustered:count / dies:count (a wafer has < 2**20 cores)
MAX_CLUSTER_SIZE = 2 ** 20        # clustered:size, cores per cluster (a whole wafer)
MAX_FABRIC_SIDE = 2 ** 13         # cores per fabric row or column in a target (WSE-3: 762 x 1172)
