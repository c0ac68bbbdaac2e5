"""``--mapping auto`` inside a compile: the search's priced candidates (wafercc.perf.mapping_search),
the best few placed and routed for real as compiles of their own, and the fastest routed one adopted
(its stages are not rerun).  The plan stage calls ``resolve_mapping``; docs/mapping.md."""
from __future__ import annotations

import dataclasses
import shutil
import weakref

from .errors import PlacementError
from .options import STAGES


def resolve_mapping(c) -> bool:
    """``mapping="auto"``: price the candidate mappings (wafercc.perf.mapping_search), then, when the
    compile runs through timing, place and route the estimate's best few and the reference (regions,
    tree) for real and keep the fastest routed one (the estimate has no router: detours and long
    activation routes are only seen routed); otherwise record the mapping asked for.  Fills the
    report's ``mapping`` section; True when a confirmed candidate's stages were adopted."""
    place = c.options.place
    if place.mapping != "auto":
        c.mapping_search = {"method": "given", "chosen": {"mapping": place.mapping, "reduction": place.reduction},
                            "alternatives": None, "why": "the mapping option (auto searches)"}
        return False
    from .perf.mapping_search import CONFIRM_TOP, confirm_candidates, search_mapping
    found = search_mapping(c.graph, c.target, c.options.plan, c.device, c.options.perf.prompt_tokens)
    c.mapping_search = found
    cands = confirm_candidates(found)
    adopt = None
    if len(cands) > 1 and STAGES.index(c.options.last_stage) >= STAGES.index("timing"):
        routed, spent = [], 0.0
        for m, red in cands:
            sub = _candidate(c, m, red)
            try:
                sub.run(until="timing")
            except PlacementError as e:
                routed.append({"mapping": m, "reduction": red, "fits": False,
                               "reason": " ".join(str(e).split("\n")[0].split())})
                continue
            spent += sum(sub.seconds.values())
            tps = sub.performance.tokens_per_s_per_user
            routed.append({"mapping": m, "reduction": red, "fits": True, "tokens_per_s_per_user": tps})
            if adopt is None or tps > adopt.performance.tokens_per_s_per_user:
                adopt = sub
        found["confirmed"] = routed
        if adopt is not None:
            best = adopt.options.place
            est_of = {(r["mapping"], r["reduction"]): r.get("tokens_per_s_per_user") for r in found["alternatives"]}
            found["chosen"] = {"mapping": best.mapping, "reduction": best.reduction,
                               "estimate_tokens_per_s_per_user": est_of[(best.mapping, best.reduction)],
                               "routed_tokens_per_s_per_user": adopt.performance.tokens_per_s_per_user}
            est = found["why"]
            found["why"] = (f"{best.mapping}/{best.reduction} is the fastest routed of the {len(cands)} placed and "
                            f"routed: the estimate's best {min(CONFIRM_TOP, len(cands))} and the reference regions/tree "
                            f"(estimate: {est})")
    ch = found["chosen"]
    c.options = dataclasses.replace(
        c.options, place=dataclasses.replace(place, mapping=ch["mapping"], reduction=ch["reduction"]),
        plan=dataclasses.replace(c.options.plan, mapping=ch["mapping"], reduction=ch["reduction"]))
    if adopt is None:
        return False
    for f in ("plan", "tiles", "placement", "program", "schedule_files", "performance_section"):
        setattr(c, f, getattr(adopt, f))
    c._workdir = adopt._workdir                       # the schedule files: now this compile's to save
    adopt._cleanup.detach()
    c._cleanup = weakref.finalize(c, shutil.rmtree, c._workdir, True)
    c._adopted = [(s, adopt.seconds[s]) for s in adopt.ran if s not in ("frontend", "plan")]
    c._candidates_seconds = spent - sum(adopt.seconds.values())   # the candidates not kept
    return True


def _candidate(c, mapping: str, reduction: str):
    """A compile of ``c``'s lowered model with one mapping, from the plan stage on."""
    o = c.options
    opts = dataclasses.replace(o, place=dataclasses.replace(o.place, mapping=mapping, reduction=reduction),
                               plan=dataclasses.replace(o.plan, mapping=mapping, reduction=reduction))
    from .driver import Compilation
    sub = Compilation(c.model, opts, c.example_inputs, stage_dir=c.stage_dir)
    sub.lowered, sub.graph, sub.facts = c.lowered, c.graph, c.facts
    sub.target, sub.device, sub.draft = c.target, c.device, c.draft
    sub.ran, sub.seconds = ["frontend"], {"frontend": 0.0}
    return sub
