"""Defect maps as data: parse a defect spec, generate one wafer's map deterministically.

Grammar (docs/targets.md)::

    spec  := term ("+" term)*
    term  := "none" | "default" | "file:" PATH | KIND [":" arg ("," arg)*]
    KIND  := random | clustered | dies | links
    arg   := VALUE | KEY "=" VALUE          (a bare VALUE is the first parameter)

    random:rate=0.01,seed=7      dead cores, independent per core
    clustered:rate=0.01,size=8   dead cores in clusters of ~size cores (or count=N clusters)
    dies:count=1                 whole dead dies
    links:rate=0.001             dead links between neighbouring cores
    default                      random at the target's default_dead_core_rate

Each term draws from ``Generator(PCG64(SeedSequence([seed, wafer_index, kind, occurrence])))``,
so the same seed gives the same map, wafers differ, and the terms are independent of their order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..limits import MAX_CLUSTER_SIZE, MAX_DEFECT_COUNT, MAX_DEFECT_TERMS, MAX_INT_DIGITS, MAX_SEED
from .defects_file import apply_defect_file, load_defect_file
from .errors import DefectSpecError

# kind -> (positional parameter, {parameter: type}); types: rate (fraction), int, size, seed
KINDS = {
    "random": ("rate", {"rate": "rate", "seed": "seed"}),
    "clustered": ("rate", {"rate": "rate", "size": "size", "count": "int", "seed": "seed"}),
    "dies": ("count", {"count": "int", "seed": "seed"}),
    "links": ("rate", {"rate": "rate", "seed": "seed"}),
}
# parameter type -> (low, high, what is expected); the bounds are wafercc.limits'
_RANGES = {
    "rate": (0.0, 1.0, "a fraction in [0, 1) or a percentage"),
    "int": (0, MAX_DEFECT_COUNT, f"an integer >= 0, at most {MAX_DEFECT_COUNT} (wafercc.limits.MAX_DEFECT_COUNT)"),
    "size": (1.0, MAX_CLUSTER_SIZE, f"a number >= 1, at most {MAX_CLUSTER_SIZE} cores "
                                    f"(wafercc.limits.MAX_CLUSTER_SIZE)"),
    "seed": (0, MAX_SEED, f"an integer >= 0, at most {MAX_SEED} (wafercc.limits.MAX_SEED)"),
}
KIND_CODE = {"random": 1, "clustered": 2, "dies": 3, "links": 4, "default": 1, "file": 5}
EAST, SOUTH = 0, 1  # canonical link directions: the link from (row, col) to its east / south neighbour


@dataclass(frozen=True)
class Term:
    kind: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DefectSpec:
    text: str
    terms: tuple[Term, ...]

    @property
    def is_empty(self) -> bool:
        return not self.terms


@dataclass(frozen=True, eq=False)
class DefectMap:
    """One wafer's defects over the program rectangle (arrays are read-only)."""
    alive: np.ndarray        # bool [rows, cols]
    dead_dies: np.ndarray    # int64 [K, 2] (die_row, die_col), sorted, unique
    dead_links: np.ndarray   # int64 [K, 3] (row, col, EAST|SOUTH), sorted, unique


def _value(kind: str, key: str, typ: str, raw: str, spec: str):
    lo, hi, exp = _RANGES[typ]
    try:
        if len(raw) > MAX_INT_DIGITS:
            raise ValueError
        if typ == "rate":
            v = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
            ok = lo <= v < hi
        elif typ in ("int", "seed"):
            v = int(raw)
            ok = lo <= v <= hi
        else:
            v = float(raw)
            ok = lo <= v <= hi                 # NaN and inf fail here
        if not ok:
            raise ValueError
        return v
    except ValueError:
        raise DefectSpecError(f"defect spec '{_short(spec)}': {kind} {key}='{_short(raw)}', expected {exp}") from None


def _short(text: str, limit: int = 80) -> str:
    """``text`` as one line (newlines and control characters escaped), cut to ``limit``."""
    text = repr(text)[1:-1]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parse_defect_spec(spec: str | None) -> DefectSpec:
    """Parse a defect spec string (None -> "default"); raises DefectSpecError."""
    text = "default" if spec is None else str(spec).strip()
    if not text:
        raise DefectSpecError("defect spec '': empty, expected e.g. none, random:0.01 or dies:1")
    parts = text.split("+")
    if len(parts) > MAX_DEFECT_TERMS:
        raise DefectSpecError(f"defect spec '{_short(text)}': {len(parts)} terms, expected at most "
                              f"{MAX_DEFECT_TERMS} (wafercc.limits.MAX_DEFECT_TERMS)")
    terms = []
    for raw in parts:
        raw = raw.strip()
        kind, _, rest = raw.partition(":")
        kind = kind.strip()
        if kind == "none" and not rest:
            continue
        if kind == "default" and not rest:
            terms.append(Term("default"))
            continue
        if kind == "file":
            if not rest.strip():
                raise DefectSpecError(f"defect spec '{_short(text)}': file: needs a path, e.g. file:defects.json")
            terms.append(Term("file", {"path": rest.strip(), "data": load_defect_file(rest.strip())}))
            continue
        if kind not in KINDS:
            raise DefectSpecError(f"defect spec '{_short(text)}': unknown term '{_short(raw, 40)}', expected none, default, "
                                  f"{', '.join(KINDS)} or file:PATH (joined with +)")
        first, types = KINDS[kind]
        params = {}
        for i, arg in enumerate(a.strip() for a in rest.split(",") if a.strip()):
            key, eq, val = arg.partition("=")
            if not eq:
                key, val = (first, arg) if i == 0 else (None, arg)
            if key not in types:
                raise DefectSpecError(f"defect spec '{_short(text)}': {kind} has no parameter '{_short(key or arg, 40)}' "
                                      f"(expected {', '.join(types)})")
            params[key] = _value(kind, key, types[key], val.strip(), text)
        if first not in params and not (kind == "clustered" and "count" in params):
            raise DefectSpecError(f"defect spec '{_short(text)}': {kind} needs {first}, e.g. {kind}:{first}=...")
        terms.append(Term(kind, params))
    return DefectSpec(text, tuple(terms))


def die_edges(target) -> tuple[np.ndarray, np.ndarray]:
    """Die boundaries in program-rectangle coordinates: (row_edges[rows+1], col_edges[cols+1]), clipped.
    Dies are assumed to split the whole fabric uniformly (see the preset's [dies] note)."""
    m, d = target.mesh, target.dies
    rows = np.arange(d.rows + 1) * m.fabric_height // d.rows - target.usable_y0
    cols = np.arange(d.columns + 1) * m.fabric_width // d.columns - target.usable_x0
    return np.clip(rows, 0, target.usable_rows), np.clip(cols, 0, target.usable_cols)


def _rng(seed: int, index: int, kind: str, occurrence: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index, KIND_CODE[kind], occurrence])))


def _clustered(rng, shape, rate, size, count) -> np.ndarray:
    rows, cols = shape
    dead = np.zeros(shape, dtype=bool)
    sigma = max(0.5, np.sqrt(size / np.pi) / 2)   # most of a cluster within a disc of ~size cores
    want = round(rate * rows * cols) if count is None else None
    n = count if count is not None else max(1, round(want / size)) if want else 0
    for _ in range(64):
        if n <= 0:
            break
        k = 1 + rng.poisson(size - 1, n)
        centre = np.stack([rng.integers(0, rows, n), rng.integers(0, cols, n)], axis=1)
        pts = np.repeat(centre, k, axis=0) + np.rint(rng.normal(0, sigma, (int(k.sum()), 2))).astype(np.int64)
        dead[np.clip(pts[:, 0], 0, rows - 1), np.clip(pts[:, 1], 0, cols - 1)] = True
        if want is None:
            break
        missing = want - int(dead.sum())
        n = int(np.ceil(missing / size)) if missing > size / 2 else 0
    return dead


def _canonical_links(links: np.ndarray, shape) -> np.ndarray:
    """(row, col, N|E|S|W) -> unique (row, col, EAST|SOUTH) inside the rectangle."""
    rows, cols = shape
    r, c, d = links[:, 0].copy(), links[:, 1].copy(), links[:, 2]
    r[d == 0] -= 1   # N of (r, c) is S of (r-1, c)
    c[d == 3] -= 1   # W of (r, c) is E of (r, c-1)
    out = np.stack([r, c, np.where((d == 1) | (d == 3), EAST, SOUTH)], axis=1)
    ok = (r >= 0) & (c >= 0) & (r < rows - (out[:, 2] == SOUTH)) & (c < cols - (out[:, 2] == EAST))
    return out[ok]


def generate_defects(spec: DefectSpec, target, seed: int, index: int) -> DefectMap:
    """The defect map of wafer ``index`` (0-based) for ``spec`` on ``target``; deterministic."""
    shape = (target.usable_rows, target.usable_cols)
    alive = np.ones(shape, dtype=bool)
    re, ce = die_edges(target)
    box = lambda dr, dc: (re[dr], re[dr + 1], ce[dc], ce[dc + 1])
    dies: list[tuple[int, int]] = []
    links = [np.zeros((0, 3), np.int64)]
    seen: dict[str, int] = {}
    for term in spec.terms:
        occ = seen[term.kind] = seen.get(term.kind, -1) + 1
        p = term.params
        rng = _rng(int(p.get("seed", seed)), index, term.kind, occ)
        if term.kind in ("random", "default"):
            rate = p["rate"] if term.kind == "random" else target.defects.default_dead_core_rate
            alive &= rng.random(shape, dtype=np.float32) >= np.float32(rate)
        elif term.kind == "clustered":
            size, count, cores = p.get("size", 8.0), p.get("count"), shape[0] * shape[1]
            if count is not None and count * size > 4 * cores:   # each cluster draws ~size points
                raise DefectSpecError(f"defect spec '{_short(spec.text)}': clustered count x size = "
                                      f"{count * size:.0f} cores, expected at most 4 x the {cores} cores of "
                                      f"{target.name} (they would all be dead)")
            alive &= ~_clustered(rng, shape, p.get("rate", 0.0), size, count)
        elif term.kind == "dies":
            n_dies = target.die_count
            if p["count"] > n_dies:
                raise DefectSpecError(f"defect spec '{spec.text}': dies:count={p['count']}, expected at most "
                                      f"{n_dies} (the dies of {target.name})")
            for d in rng.choice(n_dies, size=p["count"], replace=False).tolist():
                dr, dc = divmod(d, target.dies.columns)
                r0, r1, c0, c1 = box(dr, dc)
                alive[r0:r1, c0:c1] = False
                dies.append((dr, dc))
        elif term.kind == "links":
            for direction, sub in ((EAST, (shape[0], shape[1] - 1)), (SOUTH, (shape[0] - 1, shape[1]))):
                r, c = np.nonzero(rng.random(sub, dtype=np.float32) < np.float32(p["rate"]))
                links.append(np.stack([r, c, np.full_like(r, direction)], axis=1).astype(np.int64))
        elif term.kind == "file":
            fdies, flinks = apply_defect_file(p["data"], index, target, alive, box,
                                              (target.dies.rows, target.dies.columns))
            dies.extend(fdies)
            links.append(_canonical_links(flinks, shape))
    dead_dies = np.unique(np.array(dies, dtype=np.int64).reshape(-1, 2), axis=0)
    dead_links = np.unique(np.concatenate(links), axis=0)
    for a in (alive, dead_dies, dead_links):
        a.flags.writeable = False
    return DefectMap(alive, dead_dies, dead_links)
