"""Kernels that execute the placed program tile by tile (override the reference interpreter's).

* gemv (matmul, moe router/experts/shared): tile (e, r, c) multiplies its own input slice
  ``x[r*tile_k:(r+1)*tile_k]`` by its own weight tile, cut from the real (logical [k, n]) matrix;
  partials are summed along the grid's ROUTED reduction forest, leaves to roots (each receiving
  tile adds its children in increasing tile order); output slice c is read at column c's root,
  where the bias is added.
* lookup (embedding): the tile whose vocabulary rows hold the token gives its column slice, which
  travels its routed tree to the column's root.
* attention with a KV grid: K/V of position p of (sequence b, kv head h) live on grid row
  b * kv_heads + h (or row b holding all heads, when the grid has one row per sequence), column
  p mod cols, slot p // cols (a ring of ``n`` positions for sliding windows); each tile computes
  its partial softmax (running max, sum, weighted V) for the query heads of its kv head, and the
  partials merge (log-sum-exp) along the row's routed reduction tree to the row's root.
* norm riders whose host routes the all-reduce as a tree (route kind 4): column c of the host's
  output row holds ``x[..., c*tile_n:(c+1)*tile_n]``; each computes its sums of x and x^2 per norm
  group, the sums travel the ROUTED all-reduce tree to the row's root (each receiving tile adding
  its children in increasing tile order), and every column normalises its slice with the root's
  statistic.  Chained all-reduces (``--reduction chain``) and softmax riders run the reference.
* every other op, and ops without tiles, run the reference kernel.

Tiles compute and accumulate in ``dtype`` (float32 by default: the hardware's fp32 partial sums;
bf16 weight plans are simulated at fp32).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from .errors import SimulationError
from .kernels import KERNELS, _glu, _mask, attrs_of, position_bias, routed_experts
from .placed import GridView, Placement


def _fail(node, msg):
    raise SimulationError(msg, where=f"node '{node.name}' (op {node.op})")


class TiledKernels:
    """``Interpreter(graph, weights, TiledKernels(placement).kernels())``."""

    def __init__(self, placement: Placement, dtype=np.float32):
        self.p = placement
        self.dtype = np.dtype(dtype)
        self._w: dict = {}        # (node, operand, expert) -> weight tiles [R, tk, C*tn]
        self._kv: dict = {}       # attention node -> per-tile K/V store
        self._forests: dict = {}  # (grid, expert) -> that expert's reduction forest
        self.calls: dict[str, int] = {}   # op kind -> tiled calls (tests check the path was taken)

    def kernels(self) -> dict:
        return {"matmul": self.matmul, "embedding": self.embedding, "moe": self.moe, "attention": self.attention,
                "norm": self.norm}

    def _grids(self, node):
        view = self.p.op(node.name)
        return view if view is not None and view.grids and view.role in ("gemv", "lookup", "kv") else None

    def _count(self, node):
        self.calls[node.op] = self.calls.get(node.op, 0) + 1

    # --- gemv --------------------------------------------------------------------------------
    def _grid(self, node, view, operand) -> GridView:
        g = view.grid(operand)
        if g is None:
            _fail(node, f"the schedule has no grid for operand '{operand}'")
        return g

    def gemv(self, node, g: GridView, w: np.ndarray, x: np.ndarray, e: int = 0, bias=None) -> np.ndarray:
        """y = x @ w (w logical [k, n], expert e of grid g) through the grid's tiles and reduction forest."""
        k, n = w.shape
        if (g.k, g.n) != (k, n) or g.rows * g.tile_k < k or g.cols * g.tile_n < n:
            _fail(node, f"grid {g.index} ({g.operand}) is [{g.k} x {g.n}] in {g.rows} x {g.cols} tiles of "
                        f"{g.tile_k} x {g.tile_n}, the weight is [{k} x {n}]")
        R, C, tk, tn = g.rows, g.cols, g.tile_k, g.tile_n
        key = (node.name, g.operand, e)
        wt = self._w.get(key)
        if wt is None:  # tile (r, c) = w[r*tk:(r+1)*tk, c*tn:(c+1)*tn]; short edge tiles padded with 0
            pad = np.zeros((R * tk, C * tn), self.dtype)
            pad[:k, :n] = w
            wt = self._w[key] = pad.reshape(R, tk, C * tn)
        lead = x.shape[:-1]
        xt = np.zeros((int(np.prod(lead, dtype=np.int64)), R * tk), self.dtype)
        xt[:, :k] = x.reshape(-1, k)
        # every tile's partial [R*C, T, tn]: row r's input slice times tile (r, c)
        part = np.matmul(xt.reshape(-1, R, tk).transpose(1, 0, 2), wt)           # [R, T, C*tn]
        part = part.reshape(R, -1, C, tn).transpose(0, 2, 1, 3).reshape(R * C, -1, tn)
        acc = part.copy()
        fkey = (id(g), e)
        forest = self._forests.get(fkey)
        if forest is None:
            forest = self._forests[fkey] = g.reduction if g.experts == 1 else g.expert_reduction(e)
        for s, d in forest.batches:
            acc[d] += acc[s]
        roots = g.roots[e]                                                        # [C] local within expert e
        y = acc[roots - e * R * C].transpose(1, 0, 2).reshape(-1, C * tn)[:, :n]
        if bias is not None:
            y = y + np.asarray(bias, self.dtype).reshape(n)
        return y.reshape(*lead, n)

    def matmul(self, node, inputs, ctx):
        view = self._grids(node)
        if view is None:
            return KERNELS["matmul"](node, inputs, ctx)
        self._count(node)
        w = np.asarray(inputs["w"], self.dtype)
        if w.ndim != 2:
            _fail(node, f"weight must be 2-D, got shape {list(w.shape)}")
        w = w.T if attrs_of(node)["transpose_w"] else w
        x = np.asarray(inputs["x"], self.dtype)
        if x.shape[-1] != w.shape[0]:
            _fail(node, f"x {list(x.shape)} does not match weight [{w.shape[0]}, {w.shape[1]}] (in, out)")
        return self.gemv(node, self._grid(node, view, "w"), w, x, bias=inputs.get("b")).astype(np.float32)

    # --- norm on its host's all-reduce tree -----------------------------------------------------
    def _host_grid(self, node) -> GridView | None:
        view = self.p.op(node.name)
        if view is None or view.host is None:
            return None
        host = next((v for v in self.p.ops.values() if v.wafer == view.wafer and v.op_id == view.host), None)
        g = host.grids[-1] if host is not None and host.grids else None
        return g if g is not None and g.allreduce is not None else None

    def norm(self, node, inputs, ctx):
        g = self._host_grid(node)
        x = np.asarray(inputs["x"], np.float64)
        at = attrs_of(node)
        if g is None or x.shape[-1] != g.n or at["kind"] not in ("rms", "layer"):
            return KERNELS["norm"](node, inputs, ctx)
        self._count(node)
        D = x.shape[-1]
        G = at["group"] or D
        if D % G:
            _fail(node, f"group {G} does not divide the last dim {D}")
        xs = x.reshape(-1, D)
        cols = g.cols
        pad = np.zeros((xs.shape[0], cols * g.tile_n))
        pad[:, :D] = xs
        grp = np.minimum(np.arange(cols * g.tile_n) // G, D // G)       # the padding: a group of its own
        onehot = np.zeros((cols * g.tile_n, D // G + 1))
        onehot[np.arange(cols * g.tile_n), grp] = 1.0
        # per column of expert 0's output row: its slice's sums of x and x^2 per group
        s1 = np.stack([pad[:, c * g.tile_n:(c + 1) * g.tile_n] @ onehot[c * g.tile_n:(c + 1) * g.tile_n]
                       for c in range(cols)])                              # [cols, tokens, groups + 1]
        s2 = np.stack([(pad[:, c * g.tile_n:(c + 1) * g.tile_n] ** 2) @ onehot[c * g.tile_n:(c + 1) * g.tile_n]
                       for c in range(cols)])
        base = (g.rows - 1) * cols if g.operand != "kv" else 0            # expert 0's output row
        f = g.allreduce
        acc1 = {base + c: s1[c] for c in range(cols)}
        acc2 = {base + c: s2[c] for c in range(cols)}
        for src, dst in f.batches:
            for a, b in zip(src.tolist(), dst.tolist()):
                if a in acc1:
                    acc1[b] = acc1[b] + acc1.pop(a)
                    acc2[b] = acc2[b] + acc2.pop(a)
        root = int(f.root[base])
        if set(acc1) != {root}:
            _fail(node, f"the all-reduce tree of its host '{g.op}' leaves {len(acc1)} partial sums, not one")
        mean, sq = acc1[root][:, :D // G] / G, acc2[root][:, :D // G] / G
        xg = xs.reshape(-1, D // G, G)
        if at["kind"] == "rms":
            y = xg / np.sqrt(sq + at["eps"])[..., None]
        else:                                                             # layer: var = E[x^2] - mean^2
            y = (xg - mean[..., None]) / np.sqrt(sq - mean ** 2 + at["eps"])[..., None]
        y = y.reshape(x.shape)
        if "scale" in inputs:
            y = y * (np.asarray(inputs["scale"], np.float64) + at["scale_offset"])
        elif at["scale_offset"]:
            _fail(node, "scale_offset without a scale operand has no defined meaning")
        if "bias" in inputs:
            y = y + np.asarray(inputs["bias"], np.float64)
        return y.astype(np.float32)

    # --- lookup -------------------------------------------------------------------------------
    def embedding(self, node, inputs, ctx):
        view = self._grids(node)
        if view is None:
            return KERNELS["embedding"](node, inputs, ctx)
        self._count(node)
        ids, table = np.asarray(inputs["ids"]), np.asarray(inputs["table"], np.float32)
        g = self._grid(node, view, "table")
        V, D = table.shape
        if (g.k, g.n) != (V, D):
            _fail(node, f"lookup grid is [{g.k} x {g.n}], the table [{V} x {D}]")
        if not np.issubdtype(ids.dtype, np.integer):
            _fail(node, f"ids must be integers, got {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            _fail(node, f"ids out of range [0, {V}): min {ids.min()}, max {ids.max()}")
        flat = ids.reshape(-1)
        r, off = flat // g.tile_k, flat % g.tile_k
        out = np.zeros((flat.size, g.cols * g.tile_n), np.float32)
        for c in range(g.cols):
            holder = r * g.cols + c                         # local index of tile (0, r, c)
            # its slice must travel its routed tree to the column's root (validated forests: always)
            if (g.reduction.root[holder] != g.roots[0, c]).any():
                _fail(node, f"the tile holding an id does not reduce into column {c}'s root")
            lo, hi = c * g.tile_n, min((c + 1) * g.tile_n, D)
            out[:, lo:hi] = table[r * g.tile_k + off, lo:hi]   # the tile's own rows and columns
        return out[:, :D].reshape(*ids.shape, D)

    # --- mixture of experts --------------------------------------------------------------------
    def moe(self, node, inputs, ctx):
        view = self._grids(node)
        if view is None:
            return KERNELS["moe"](node, inputs, ctx)
        self._count(node)
        at = attrs_of(node)
        d = at["hidden"]
        dt = self.dtype
        x = np.asarray(inputs["x"], dt)
        if x.shape[-1] != d:
            _fail(node, f"x last dim {x.shape[-1]} != hidden {d}")
        xt = x.reshape(-1, d)

        def mm(role, xs, e=None, bias=None):
            w = np.asarray(inputs[role], dt)
            if w.ndim == 3:
                w = w[e].T if at["experts_transposed"] else w[e]
            else:
                t = at["shared_transposed"] if role.startswith("shared") else at["router_transposed"]
                w = w.T if t else w
            return self.gemv(node, self._grid(node, view, role), w, xs, e or 0, bias).astype(np.float64)

        y = routed_experts(node, at, inputs, xt, mm, np.float64)
        y += self._shared(node, at, inputs, xt, mm)
        return y.reshape(x.shape).astype(np.float32)

    def _shared(self, node, at, inputs, xt, mm):
        if "shared_up_w" not in inputs:
            return 0.0  # the reference kernel rejects half-given shared experts; it ran the same checks
        gate = mm("shared_gate_w", xt) if "shared_gate_w" in inputs else None
        out = mm("shared_down_w", _glu(node, at, gate, mm("shared_up_w", xt)))
        if "shared_router_w" in inputs:
            w = np.asarray(inputs["shared_router_w"])
            g = self.p.op(node.name).grid("shared_router_w")
            s = mm("shared_router_w", xt)[:, :1] if g is not None else xt @ w.reshape(-1, 1)
            out = out * expit(s)
        return out

    # --- attention over a KV grid ------------------------------------------------------------
    def attention(self, node, inputs, ctx):
        view = self._grids(node)
        g = view.grid("kv") if view is not None else None
        if g is None or "k_cache" not in node.inputs or node.attrs.get("kv_lora_rank"):
            # MLA (a latent + shared rotary key row per position, up-projected per head) runs the
            # reference kernel over the interpreter's cache: no per-tile MLA kernel yet
            return KERNELS["attention"](node, inputs, ctx)
        self._count(node)
        return _KVAttention(self, node, g).run(inputs, ctx)


class _KVAttention:
    """One call of a KV-grid attention op; the per-tile store lives in ``kernels._kv``."""

    def __init__(self, kernels: TiledKernels, node, g: GridView):
        self.kk, self.node, self.g = kernels, node, g
        at = self.at = attrs_of(node)
        self.hq, self.hkv, self.dh = at["num_heads"], at["num_kv_heads"], at["head_dim"]
        if self.hq % self.hkv:
            _fail(node, f"num_heads {self.hq} is not a multiple of num_kv_heads {self.hkv}")
        batch = kernels.p.batch
        if g.rows == batch * self.hkv:
            self.hr = 1                 # one (sequence, kv head) per grid row
        elif g.rows == batch:
            self.hr = self.hkv          # one sequence (all kv heads) per grid row
        else:
            _fail(node, f"KV grid has {g.rows} rows, expected batch x kv heads = {batch} x {self.hkv}")

    def _store(self, ctx):
        g, name = self.g, self.node.name
        st = self.kk._kv.get(name)
        if st is None or ctx.kv[name]["len"] == 0:     # the interpreter was reset
            shape = (g.rows, g.cols, g.tile_n, self.hr, self.dh)
            st = self.kk._kv[name] = {"k": np.zeros(shape, np.float32), "v": np.zeros(shape, np.float32),
                                      "pos": np.full(shape[:3], -1, np.int64), "len": 0}
        if st["len"] != ctx.past:
            _fail(self.node, f"the tile store holds {st['len']} positions, the interpreter {ctx.past}")
        return st

    def run(self, inputs, ctx):
        node, g, at, dt = self.node, self.g, self.at, self.kk.dtype
        hq, hkv, dh, hr = self.hq, self.hkv, self.dh, self.hr
        q, k, v = (np.asarray(inputs[r], dt) for r in ("q", "k", "v"))
        if q.ndim != 3 or k.shape[:2] != q.shape[:2] or v.shape != k.shape or q.shape[2] != hq * dh \
                or k.shape[2] != hkv * dh:
            _fail(node, f"expected q [batch, seq, {hq * dh}] and k, v [batch, seq, {hkv * dh}], got "
                        f"{list(q.shape)}, {list(k.shape)}, {list(v.shape)}")
        b, s, _ = q.shape
        rps = hkv // hr                                     # grid rows per sequence
        if b * rps > g.rows:
            _fail(node, f"{b} sequences, the KV grid was planned for {g.rows // rps}")
        st = self._store(ctx)
        G, C = hq // hkv, g.cols
        window = at["sliding_window"] or 0
        qpos = np.broadcast_to(np.asarray(ctx.positions), (b, s))[0]
        if not (np.broadcast_to(np.asarray(ctx.positions), (b, s)) == qpos).all():
            _fail(node, "sequences at different positions")
        t = ctx.past + s
        if (qpos >= g.n).any() and not window:
            _fail(node, f"position {int(qpos.max())} beyond the {g.n} positions of the KV grid")
        ring = qpos % g.n
        col, slot = ring % C, ring // C                      # striped: position p on column p mod cols
        # rows: (b, h) -> b * rps + h // hr, head h % hr inside the row
        kh = k.reshape(b, s, rps, hr, dh).transpose(0, 2, 1, 3, 4).reshape(b * rps, s, hr, dh)
        vh = v.reshape(b, s, rps, hr, dh).transpose(0, 2, 1, 3, 4).reshape(b * rps, s, hr, dh)
        qh = q.reshape(b, s, rps, hr, G, dh).transpose(0, 2, 3, 4, 1, 5).reshape(b * rps, hr, G, s, dh)
        used = b * rps
        # keys a tile sees this step: its stored ones, then this step's new ones of its column
        newpos = np.where(col[None, :] == np.arange(C)[:, None], qpos[None, :], -1)        # [C, s]
        kx = np.concatenate([st["k"][:used], np.broadcast_to(kh[:, None], (used, C, s, hr, dh))], axis=2)
        vx = np.concatenate([st["v"][:used], np.broadcast_to(vh[:, None], (used, C, s, hr, dh))], axis=2)
        kpos = np.concatenate([st["pos"][:used], np.broadcast_to(newpos, (used, C, s))], axis=2)  # [used, C, J]
        scale = at["scale"] if at["scale"] is not None else 1.0 / math.sqrt(dh)
        sc = np.einsum("rhgqd,rcjhd->rchgqj", qh, kx.astype(dt)) * dt.type(scale)             # [used,C,hr,G,s,J]
        if at["softcap"]:
            sc = dt.type(at["softcap"]) * np.tanh(sc / dt.type(at["softcap"]))
        ok = np.broadcast_to((kpos >= 0)[:, :, None, None, None, :], sc.shape).copy()
        diff = qpos[:, None] - kpos[:, :, None, :]                                           # [used, C, s, J]
        if at["causal"]:
            ok &= (diff >= 0)[:, :, None, None]
        if window:
            if not at["causal"]:
                _fail(node, "sliding_window without causal has no defined meaning")
            ok &= (diff < window)[:, :, None, None]
        keep, additive = _mask(node, inputs, ctx, b, s, t, hq, True)
        bi = np.arange(used) // rps
        head = ((np.arange(used) % rps)[:, None, None] * hr + np.arange(hr)[None, :, None]) * G \
            + np.arange(G)[None, None, :]                                                     # [used, hr, G]
        if at["position_bias"] is not None:           # each tile biases its own keys' scores
            rel = -diff[:, :, None, None]                                                     # [used, C, 1, 1, s, J]
            sc = sc + position_bias(node, at, inputs, head[:, None, :, :, None, None], rel).astype(dt)
        kp = np.maximum(kpos, 0)
        for m, add in ((keep, False), (additive, True)):
            if m is None:
                continue
            mm = np.broadcast_to(m, (b, hq, s, t))
            val = mm[bi[:, None, None, None, None, None], head[:, None, :, :, None, None],
                     np.arange(s)[None, None, None, None, :, None], kp[:, :, None, None, None, :]]
            if add:
                sc = sc + val.astype(dt)
            else:
                ok &= val
        sc = np.where(ok, sc, -np.inf)
        # each tile's partial: running max, sum of exponentials, weighted V
        mx = sc.max(axis=-1)
        safe = np.where(np.isfinite(mx), mx, 0).astype(dt)
        ex = np.exp(sc - safe[..., None])
        lsum = ex.sum(axis=-1)
        o = np.einsum("rchgqj,rcjhd->rchgqd", ex, vx.astype(dt))
        # merge along the row's routed reduction tree (local index r * C + c)
        mx, lsum, o = (a.reshape(used * C, *a.shape[2:]) for a in (mx, lsum, o))
        for src, dst in g.reduction.batches:
            keep_ = (src < used * C) & (dst < used * C)
            src, dst = src[keep_], dst[keep_]
            m2 = np.maximum(mx[dst], mx[src])
            ref = np.where(np.isfinite(m2), m2, 0)          # both empty: factors exp(-inf) = 0
            a_d, a_s = np.exp(mx[dst] - ref), np.exp(mx[src] - ref)
            lsum[dst] = lsum[dst] * a_d + lsum[src] * a_s
            o[dst] = o[dst] * a_d[..., None] + o[src] * a_s[..., None]
            mx[dst] = m2
        roots = g.roots[0, :used]
        mr, lr, orr = mx[roots], lsum[roots], o[roots]                # [used, hr, G, s(, dh)]
        if "sinks" in inputs:
            sink = np.asarray(inputs["sinks"], dt).reshape(hq)[head][..., None]            # [used, hr, G, 1]
            m2 = np.maximum(mr, sink)                       # finite: the sink is
            f = np.exp(mr - m2)
            den = lr * f + np.exp(sink - m2)
            orr = orr * f[..., None]
        else:
            den = lr
        out = np.divide(orr, den[..., None], out=np.zeros_like(orr), where=den[..., None] > 0)
        self._append(st, kh, vh, col, slot, qpos, used)
        # [used, hr, G, s, dh] -> [b, s, hq * dh]
        out = out.reshape(b, rps, hr, G, s, dh).transpose(0, 4, 1, 2, 3, 5).reshape(b, s, hq * dh)
        return out.astype(np.float32)

    def _append(self, st, kh, vh, col, slot, qpos, used):
        for j in range(len(qpos)):  # in order: in a ring the newest position wins its slot
            st["k"][:used, col[j], slot[j]] = kh[:, j]
            st["v"][:used, col[j], slot[j]] = vh[:, j]
            st["pos"][:used, col[j], slot[j]] = qpos[j]
        st["len"] += len(qpos)
