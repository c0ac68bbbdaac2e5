"""Reference interpreter: runs an IR graph step by step with NumPy kernels and a KV cache.

One :meth:`Interpreter.step` feeds ``seq`` new tokens per sequence (a prompt,
then decode steps of one token); attention nodes with ``k_cache``/``v_cache``
operands append this step's K and V to caches the interpreter owns and attend
over everything cached.  Token positions are absolute: ``past + arange(seq)``
for every sequence (what Hugging Face models exported without ``position_ids``
compute, padding or not).  The padding mask given to :meth:`Interpreter.step`
is runtime state like the cache: it accumulates over steps and masks padded
keys of every attention node without a ``mask`` operand (the ONNX frontend
keeps that operand only for non-causal attention); a query that sees no key
(left padding) gets zeros.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..ir import Graph, ValueKind
from .errors import SimulationError
from .kernels import KERNELS
from .weights import check_weights

Kernel = Callable[[Any, dict, "StepContext"], np.ndarray]
DEFAULT_CONTEXT = 1 << 20


@dataclasses.dataclass
class StepContext:
    """What a kernel may read besides its operands."""

    positions: np.ndarray             # [batch, seq] int64, absolute position of each new token
    kv: dict[str, dict]               # attention node name -> {"k", "v": [batch, kv_heads, capacity, head_dim]
    #                                   float32, "len": positions cached before this step}
    weights: Mapping[str, np.ndarray]
    attention_mask: np.ndarray        # [batch, past + seq], 1 = real token, 0 = padding
    bindings: dict[str, int]          # symbolic dims (batch, seq, context, ...) of this step
    past: int                         # tokens per sequence stepped before this one
    graph: Graph


class Interpreter:
    """Runs ``graph`` with ``weights`` (IR weight name -> array); ``kernels`` overrides the
    default kernel of some op kinds; ``context`` limits the tokens per sequence."""

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray],
                 kernels: Mapping[str, Kernel] | None = None, *, context: int = DEFAULT_CONTEXT):
        self.graph = graph
        self.weights = check_weights(graph, weights, where=f"graph '{graph.name}'")
        self.kernels = {**KERNELS, **dict(kernels or {})}
        self.context = int(context)
        for node in graph.nodes:  # fail before running anything
            if node.op not in self.kernels:
                raise SimulationError(f"no kernel for op '{node.op}'", where=f"node '{node.name}'")
        # node -> ((kv_heads, K row width), (kv_heads, V row width)); the widths differ for MLA
        # (its K cache holds the latent, its V cache the shared rotary key, docs/ir.md)
        self._caches: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
        owner: dict[str, str] = {}
        for node in graph.nodes:
            if node.op != "attention" or "k_cache" not in node.inputs:
                continue
            for role in ("k_cache", "v_cache"):
                name = node.inputs.get(role)
                if name is None or graph.values[name].kind is not ValueKind.KV_CACHE:
                    raise SimulationError(f"{role} missing or not a kv value", where=f"node '{node.name}'")
                if name in owner:
                    raise SimulationError(f"cache '{name}' is also used by node '{owner[name]}'",
                                          where=f"node '{node.name}'")
                owner[name] = node.name
            shapes = [graph.values[node.inputs[r]].shape for r in ("k_cache", "v_cache")]
            for shape in shapes:
                if not (isinstance(shape[1], int) and isinstance(shape[3], int)):
                    raise SimulationError(f"cache shape {list(shape)} needs static kv_heads and head_dim",
                                          where=f"node '{node.name}'")
            self._caches[node.name] = tuple((sh[1], sh[3]) for sh in shapes)
        self.reset()

    def reset(self, batch: int = 1) -> None:
        """Forget all cached tokens; the next step starts at position 0 with ``batch`` sequences."""
        self.batch = int(batch)
        self.length = 0
        self._mask = np.ones((self.batch, 0), dtype=np.int64)
        self.kv = {n: {"k": np.zeros((self.batch, hk, 0, dk), np.float32),
                       "v": np.zeros((self.batch, hv, 0, dv), np.float32), "len": 0}
                   for n, ((hk, dk), (hv, dv)) in self._caches.items()}

    # -- one step -------------------------------------------------------------------------
    def step(self, input_ids: np.ndarray | None = None, attention_mask: np.ndarray | None = None,
             inputs: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Feed ``input_ids`` [batch, seq] and other graph inputs by name in ``inputs`` (arrays, or
        functions ``f(ctx) -> array`` of the :class:`StepContext`); returns the graph outputs of
        this step.  ``attention_mask`` [batch, seq] marks padding (0); it also feeds graph inputs
        whose name contains "mask"."""
        g = self.graph
        feeds = {k: v if callable(v) else np.asarray(v) for k, v in (inputs or {}).items()}
        unknown = set(feeds) - set(g.inputs)
        if unknown:
            raise SimulationError(f"graph '{g.name}' has no input(s) {sorted(unknown)}")
        if input_ids is not None:
            ids = np.asarray(input_ids)
            if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
                raise SimulationError(f"input_ids must be an integer array [batch, seq], got {ids.dtype}{list(ids.shape)}")
            name = self._ids_input()
            feeds[name] = ids.astype(np.int64)
            b, s = ids.shape
        else:
            b, s = self._batch_seq(feeds)
        if b != self.batch:
            if self.length:
                raise SimulationError(f"batch {b} differs from the {self.batch} sequences cached; reset() first")
            self.reset(b)
        if self.length + s > self.context:
            raise SimulationError(f"context of {self.length + s} tokens exceeds the cache limit {self.context}")
        mask = np.ones((b, s), np.int64) if attention_mask is None else np.asarray(attention_mask)
        if mask.shape != (b, s):
            raise SimulationError(f"attention_mask {list(mask.shape)} must be [batch, seq] = [{b}, {s}]")
        positions = np.broadcast_to(self.length + np.arange(s, dtype=np.int64), (b, s)).copy()
        ctx = StepContext(positions, self.kv, self.weights,
                          np.concatenate([self._mask, mask.astype(np.int64)], axis=1),
                          {"batch": b, "seq": s, "context": self.length + s}, self.length, g)
        for name in g.inputs:
            if name not in feeds:
                feeds[name] = self._default_input(name, mask, positions)
            elif callable(feeds[name]):
                feeds[name] = np.asarray(feeds[name](ctx))
            self._bind(name, feeds[name], ctx.bindings)
        self._grow(self.length + s)
        env: dict[str, np.ndarray] = {**self.weights, **feeds}
        for node in g.nodes:
            env[node.outputs[0]] = self._run(node, env, ctx)
        self.length += s
        self._mask = ctx.attention_mask
        for entry in self.kv.values():
            entry["len"] = self.length
        return {o: env[o] for o in g.outputs}

    def _run(self, node, env, ctx) -> np.ndarray:
        where = f"node '{node.name}' (op {node.op})"
        ins = {}
        for role, vname in node.inputs.items():
            if self.graph.values[vname].kind is ValueKind.KV_CACHE:
                continue  # caches are in ctx.kv
            if vname not in env:
                raise SimulationError(f"operand {role} = '{vname}' has no value", where=where)
            ins[role] = env[vname]
        try:
            out = np.asarray(self.kernels[node.op](node, ins, ctx))
        except SimulationError:
            raise
        except Exception as e:  # a numpy error inside a kernel: say which node
            raise SimulationError(f"{type(e).__name__}: {e}", where=where) from e
        decl = self.graph.values[node.outputs[0]].shape
        want = tuple(d if isinstance(d, int) else ctx.bindings.get(d, -1) for d in decl)
        if len(want) != out.ndim or any(w not in (-1, o) for w, o in zip(want, out.shape)):
            raise SimulationError(f"kernel gave shape {list(out.shape)}, the IR declares {list(decl)} "
                                  f"= {list(want)}", where=where)
        return out

    # -- helpers ------------------------------------------------------------------------------
    def _ids_input(self) -> str:
        g = self.graph
        if "input_ids" in g.inputs:
            return "input_ids"
        for node in g.nodes:
            if node.op == "embedding" and node.inputs["ids"] in g.inputs:
                return node.inputs["ids"]
        raise SimulationError(f"graph '{g.name}' has no token-id input (no 'input_ids', no embedding of an input)")

    def _batch_seq(self, feeds) -> tuple[int, int]:
        """batch and seq from the shapes of the given inputs (1 if no input has the dim)."""
        bindings: dict[str, int] = {}
        for name in self.graph.inputs:
            if name in feeds and not callable(feeds[name]):
                self._bind(name, feeds[name], bindings)
        return bindings.get("batch", 1), bindings.get("seq", 1)

    def _default_input(self, name: str, mask, positions) -> np.ndarray:
        """The padding mask, and ``position_ids`` (what the ONNX lifter names ids made by a Range:
        absolute positions).  Other inputs, e.g. ids the exporter computed from buffers or from the
        token ids (``<table>.ids``: BERT's positions and token types, RoBERTa's padding-offset
        positions), are not defined by the IR and must be passed."""
        if "mask" in name.lower():
            return mask.astype(np.int64)
        if name == "position_ids":
            return positions
        raise SimulationError(f"graph input '{name}' has no value: pass it in inputs= (an array, or a "
                              f"function of the StepContext such as lambda ctx: ctx.positions)")

    def _bind(self, name: str, arr: np.ndarray, bindings: dict) -> None:
        shape = self.graph.values[name].shape
        if arr.ndim != len(shape):
            raise SimulationError(f"input '{name}' has shape {list(arr.shape)}, the IR declares {list(shape)}")
        for d, n in zip(shape, arr.shape):
            if isinstance(d, int) and d != n or isinstance(d, str) and bindings.setdefault(d, n) != n:
                raise SimulationError(f"input '{name}' has shape {list(arr.shape)}, the IR declares {list(shape)} "
                                      f"with {bindings}")

    def _grow(self, need: int) -> None:
        """Caches grow geometrically (bounded by the context limit) so decode copies rarely."""
        for entry in self.kv.values():
            cap = entry["k"].shape[2]
            if cap >= need:
                continue
            new = min(self.context, max(need, 2 * cap, 16))
            for r in ("k", "v"):
                old = entry[r]
                grown = np.zeros(old.shape[:2] + (new,) + old.shape[3:], np.float32)
                grown[:, :, :cap] = old
                entry[r] = grown

    # -- greedy decoding ------------------------------------------------------------------------
    def generate(self, prompt_ids: np.ndarray, steps: int, attention_mask: np.ndarray | None = None,
                 inputs: Mapping[str, Callable] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """Greedy decoding from a fresh cache: ``steps`` forward passes (the prompt, then one token
        at a time).  Returns the first graph output of every pass and the ``[batch, steps]`` tokens
        picked from each pass's last position (all but the last are fed back).  ``inputs`` are
        passed to every step (use functions of the StepContext: shapes change after the prompt)."""
        if steps < 1:
            raise SimulationError(f"steps must be >= 1, got {steps}")
        ids = np.asarray(prompt_ids)
        ids = ids[None] if ids.ndim == 1 else ids
        self.reset(ids.shape[0])
        out = self.graph.outputs[0]
        logits, tokens = [], []
        mask = attention_mask
        for _ in range(steps):
            y = self.step(ids, mask, inputs)[out]
            logits.append(y)
            tokens.append(np.argmax(y[:, -1], axis=-1))
            ids, mask = tokens[-1][:, None].astype(np.int64), None
        return logits, np.stack(tokens, axis=1)
