"""Decode figures of a compiled program from its per-op records (docs/metrics.md defines each).

``Program`` is what the timing model needs of a schedule: the op records of every wafer
(wafercc.perf.records), the bytes and edge hops of every wafer boundary, and the workload
(activation bytes, context, batch).  ``performance`` turns it into the report's ``performance``
section; ``timeline`` into the schedule's per-token event timeline.
"""
from __future__ import annotations

import dataclasses
import math

from .model import (CostParams, Machine, Workload, boundary_seconds, bottleneck_cycles, check_finite,
                    expected_accepted, pipeline_round, wafer_time)


# Prompt length of the published single-user speeds (Artificial Analysis measures with ~1k input tokens)
DEFAULT_PROMPT_TOKENS = 1024


@dataclasses.dataclass(frozen=True)
class Boundary:
    src_wafer: int
    bytes_per_token: float
    hops: int                     # edge routes: last op -> east edge, west edge -> first op


@dataclasses.dataclass(frozen=True)
class Program:
    wafers: tuple[tuple[dict, ...], ...]   # op records per wafer, dataflow order
    boundaries: tuple[Boundary, ...]       # one per consecutive wafer pair
    act_bytes: float
    context: int
    batch: int


# The sweep over draft tokens per step, and the --spec-tokens range
MAX_PROPOSED = 8
# Expected per-token acceptance when none is given: Leviathan et al. 2023 ("Fast Inference from
# Transformers via Speculative Decoding", ICML, Table 3) measure alpha = 0.75 for T5-small drafting
# T5-XXL on English-German translation at greedy sampling (0.62-0.80 across their tasks and pairs).
DEFAULT_ACCEPTANCE = 0.75
ACCEPTANCE_SOURCE = "Leviathan et al. 2023, Table 3 (T5-small drafting T5-XXL, EnDe, greedy: 0.75)"


@dataclasses.dataclass(frozen=True)
class Speculative:
    """Speculative decoding: a draft model proposes ``proposed`` tokens per step (None: the fastest
    of 1..MAX_PROPOSED), the target verifies them in one pass; each is accepted with probability
    ``acceptance``."""
    draft: str
    proposed: int | None = None
    acceptance: float = DEFAULT_ACCEPTANCE

    def __post_init__(self):
        from .model import CostModelError
        if self.proposed is not None and not 1 <= self.proposed <= MAX_PROPOSED:
            raise CostModelError(f"speculative: proposed tokens {self.proposed}: expected 1..{MAX_PROPOSED}")
        if not (math.isfinite(self.acceptance) and 0.0 <= self.acceptance < 1.0):
            raise CostModelError(f"speculative: acceptance {self.acceptance}: expected a probability in [0, 1) "
                                 "(1 would accept every draft token)")


def decode_position(prog: Program, prompt_tokens: int) -> int:
    """Cached positions a decode step attends over: the prompt, capped by the planned context."""
    return max(1, min(prog.context, prompt_tokens))


def token_seconds(prog: Program, mc: Machine, p: CostParams, kv_len: int, tokens: int = 1, queries: int = 1):
    """(per-wafer stage seconds, per-boundary seconds, per-wafer WaferTime) for ``tokens`` tokens,
    ``queries`` of them positions of one user (model.Workload)."""
    w = Workload(prog.act_bytes, kv_len, tokens, queries)
    times = [wafer_time(i, list(ops), mc, p, w) for i, ops in enumerate(prog.wafers)]
    stages = [t.cycles / mc.clock_hz for t in times]
    bounds = [boundary_seconds(b.bytes_per_token, b.hops, mc, p, tokens) for b in prog.boundaries]
    return stages, bounds, times


def tpot_seconds(prog: Program, mc: Machine, p: CostParams, prompt_tokens: int) -> float:
    stages, bounds, _ = token_seconds(prog, mc, p, decode_position(prog, prompt_tokens))
    return sum(stages) + sum(bounds)


def performance(prog: Program, mc: Machine, p: CostParams, prompt_tokens: int) -> dict:
    prompt_tokens = min(prompt_tokens, prog.context)     # a prompt longer than the KV cache cannot be served
    kv = decode_position(prog, prompt_tokens)
    stages, bounds, times = token_seconds(prog, mc, p, kv)
    tpot = check_finite(sum(stages) + sum(bounds), "time per output token")
    comp = sum(t.compute for t in times) / mc.clock_hz
    fab = sum(t.fabric for t in times) / mc.clock_hz
    # batch B: users in groups along the wafer pipeline
    groups = max(1, min(prog.batch, len(stages)))
    m = -(-prog.batch // groups)
    st_b, bd_b, _ = token_seconds(prog, mc, p, kv, m)
    round_s, groups, per_group = pipeline_round(st_b, bd_b, prog.batch)
    # prefill: the prompt streams through the (spatially separate) ops behind its first token
    w1 = Workload(prog.act_bytes, kv, 1)
    interval = max(max(bottleneck_cycles(list(ops), mc, p, w1) for ops in prog.wafers) / mc.clock_hz,
                   max((b.bytes_per_token / mc.off_wafer_bandwidth for b in prog.boundaries), default=0.0))
    ttft = tpot + (prompt_tokens - 1) * interval
    wafers = len(prog.wafers)
    out = {
        "decode_tokens_per_s_per_user": round(1.0 / tpot, 3),
        "time_per_output_token_s": tpot,
        "decode_tokens_per_s_aggregate": round(prog.batch / round_s, 3),
        "decode_tokens_per_s_per_user_at_batch": round(1.0 / round_s, 3),
        "batch": prog.batch, "pipeline_groups": groups, "users_per_group": per_group,
        "ttft_s": ttft, "prompt_tokens": int(prompt_tokens), "decode_context_tokens": int(kv),
        "energy_j_per_token": wafers * mc.system_power_w * round_s / prog.batch,
        "breakdown_s": {"compute": comp, "fabric": fab, "inter_wafer": sum(bounds)},
        "stream_interval_s": interval,
        "speculative": None,
    }
    return out


def verify_pass_seconds(prog: Program, mc: Machine, p: CostParams, kv_len: int, k: int) -> float:
    """The target checking ``k`` draft tokens: one pass of k + 1 columns (the last accepted token
    and the k proposals) of one user through every layer, each op's cost kernel at ``tokens`` =
    ``queries`` = k + 1 (the KV grids attend k + 1 queries over the same rows)."""
    stages, bounds, _ = token_seconds(prog, mc, p, kv_len, k + 1, k + 1)
    return sum(stages) + sum(bounds)


def exchange_seconds(k: int, mc: Machine, p: CostParams) -> float:
    """The draft's k token ids to the target's first wafer and the verdict (accepted count and the
    target's token) back: two wafer-to-wafer crossings per step."""
    from ..passes.cost_kernel import ID_BYTES
    return 2 * p.inter_wafer_latency_s + (k + 2) * ID_BYTES / mc.off_wafer_bandwidth


def step_figures(k: int, acceptance: float, draft_s: float, verify_s: float, exchange_s: float) -> dict:
    """One step: the draft's k passes one after another, the exchange, the target's verify pass."""
    step = k * draft_s + exchange_s + verify_s
    tokens = expected_accepted(k, acceptance)
    return {"proposed_tokens": k, "expected_tokens_per_step": tokens, "verify_pass_s": verify_s,
            "step_s": step, "decode_tokens_per_s_per_user": round(tokens / step, 3)}


def speculative_figures(s: Speculative, target: Program, draft_time_per_token_s: float, mc: Machine,
                        p: CostParams, prompt_tokens: int, stream: tuple[float, float] | None = None) -> dict:
    """The sweep over k = 1..MAX_PROPOSED at ``s.acceptance``, and the chosen k: ``s.proposed``, or
    the fastest of the sweep (the smallest k among equals).  ``stream`` = (time per output token,
    stream interval) adds to each row the bound if the k + 1 columns streamed through the spatially
    separate ops as a prompt does (latency + k intervals): not the prediction, its upper bound."""
    kv = decode_position(target, min(prompt_tokens, target.context))
    sweep = [step_figures(k, s.acceptance, draft_time_per_token_s, verify_pass_seconds(target, mc, p, kv, k),
                          exchange_seconds(k, mc, p)) for k in range(1, MAX_PROPOSED + 1)]
    if stream is not None:
        for f in sweep:
            k = f["proposed_tokens"]
            v = stream[0] + k * stream[1]
            f["streamed_bound_verify_pass_s"] = v
            f["streamed_bound_tokens_per_s_per_user"] = round(
                f["expected_tokens_per_step"] / (k * draft_time_per_token_s + exchange_seconds(k, mc, p) + v), 3)
    best = max(sweep, key=lambda f: (f["decode_tokens_per_s_per_user"], -f["proposed_tokens"]))
    chosen = sweep[s.proposed - 1] if s.proposed is not None else best
    return {"draft": s.draft, "acceptance": s.acceptance,
            "acceptance_source": "option" if s.acceptance != DEFAULT_ACCEPTANCE else ACCEPTANCE_SOURCE,
            "draft_time_per_token_s": draft_time_per_token_s, **chosen,
            "exchange_s": exchange_seconds(chosen["proposed_tokens"], mc, p),
            "proposed_tokens_from": "option" if s.proposed is not None else "sweep (the fastest k)",
            "sweep": sweep}


def speculative_ceiling(draft: str, draft_time_per_token_s: float, target: Program, mc: Machine, p: CostParams,
                        prompt_tokens: int) -> dict:
    """The best speculative figure a schedule can reach with ``draft``: every proposed token
    accepted, the best of 1..MAX_PROPOSED tokens per step (an upper bound, not a prediction)."""
    kv = decode_position(target, min(prompt_tokens, target.context))
    return max((step_figures(k, 1.0, draft_time_per_token_s, verify_pass_seconds(target, mc, p, kv, k),
                             exchange_seconds(k, mc, p)) for k in range(1, MAX_PROPOSED + 1)),
               key=lambda f: f["decode_tokens_per_s_per_user"])


def timeline(prog: Program, mc: Machine, p: CostParams, prompt_tokens: int) -> dict:
    """One decode token at batch 1, in integer cycles from its start on wafer 0: per wafer its
    arrival and each op's start and end (counted from the arrival), and per wafer boundary the
    activation transfer (leaves when the wafer's last op ends, arrives at the next wafer)."""
    stages, bounds, times = token_seconds(prog, mc, p, decode_position(prog, prompt_tokens))
    wafers, transfers, arrive = [], [], 0.0
    for i, t in enumerate(times):
        wafers.append({"wafer": i, "arrive_cycle": int(round(arrive * mc.clock_hz)),
                       "cycles": int(round(t.cycles)),
                       "ops": [[int(round(a)), int(round(b))] for a, b in zip(t.start, t.end)]})
        arrive += stages[i]
        if i < len(bounds):
            b = prog.boundaries[i]
            transfers.append({"src_wafer": i, "dst_wafer": i + 1, "bytes": int(round(b.bytes_per_token)),
                              "start_cycle": int(round(arrive * mc.clock_hz)),
                              "end_cycle": int(round((arrive + bounds[i]) * mc.clock_hz))})
            arrive += bounds[i]
    return {"wafers": wafers, "transfers": transfers}
