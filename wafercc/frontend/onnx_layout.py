"""Layout lifting: reshapes, transposes, slices and splits change views, not values."""
from __future__ import annotations

import dataclasses

from .onnx_views import View


class LayoutLifting:
    """Methods of the lifter for layout-only ONNX ops."""

    def _layout(self, node, vs):
        op = node.op_type
        x = vs[0]
        out = node.output[0]
        if isinstance(x, tuple):
            if op == "SequenceAt" and x[0] == "sequence":
                _, v, pieces, axis = x
                idx = self.src.scalar(node.input[1])
                if idx is None:
                    self._fail(node, "SequenceAt with a non-constant index")
                start, end = pieces[int(idx)]
                return self._emit_slice(node, v, out, start, end, axis)
            self.views[out] = x
            return
        if not isinstance(x, View):
            self._fail(node, "layout op on a non-activation")
        if node.input[0] in self.present and op in ("Slice", "Identity", "Cast"):
            # a sliding-window cache keeps its last positions: still the cache state (present.*)
            self.present.add(out)
            self.views[out] = x
            return
        if op == "Slice" and self._full_slice(node, x):
            self.views[out] = x
            return
        if op == "SplitToSequence":
            return self._split_to_sequence(node, x)
        if op in ("Identity", "Cast", "Dropout", "Contiguous", "CastLike"):
            self.views[out] = x
            return
        shape = self.src.shapes.get(out)
        rank = len(shape) if shape is not None else None
        width = self.g.values[x.value].shape[-1]
        if op in ("Reshape", "Flatten"):
            target = self.src.const(node.input[1]) if op == "Reshape" else None
            if rank is None and target is not None:
                rank = target.size
            if rank is None and op == "Reshape":  # rank from the length of the shape tensor
                tshape = self.src.shapes.get(node.input[1])
                rank = tshape[0] if tshape and isinstance(tshape[0], int) else None
            last = shape[-1] if shape else None
            if not isinstance(last, int) and target is not None and target[-1] > 0:
                last = int(target[-1])
            if x.layout == "flat" and rank == 4:
                dh = last if isinstance(last, int) and last > 0 else None
                if dh is None:
                    heads = shape[-2] if shape and isinstance(shape[-2], int) else \
                        (int(target[-2]) if target is not None and target[-2] > 0 else None)
                    dh = width // heads if heads else None
                if not dh or width % dh:
                    self._fail(node, "cannot tell the head size of a split into heads")
                self.views[out] = View(x.value, "bshd", dh, x.scale)
                return
            if x.layout == "flat" and rank in (2, 3) and (last == width or not isinstance(last, int)):
                self.views[out] = x  # leading (token) dims merged or split: same IR value
                return
            if x.layout == "flat" and rank == 5:
                return self._fused_qkv_view(node, x, shape, target)  # onnx_attention
            if x.layout == "bshd" and rank in (2, 3) and (last == width or not isinstance(last, int)):
                self.views[out] = View(x.value, "flat", 0, x.scale)
                return
            if x.layout == "gqa" and rank in (3, 4):
                # the repeated KV heads merged back: [b, h, s, d], or batch and heads in one dim
                self.views[out] = dataclasses.replace(x, layout="bhsd" if rank == 4 else "Bsd", expanded=True)
                return
            if x.layout in ("bhsd", "bhds") and rank == 4:
                self.views[out] = x
                return
            # batch and heads merged into one leading dim (bmm-style decompositions)
            merged = {("bhsd", 3): "Bsd", ("bhds", 3): "Bds", ("Bsd", 4): "bhsd", ("Bds", 4): "bhds"}
            if (x.layout, rank) in merged:
                self.views[out] = dataclasses.replace(x, layout=merged[(x.layout, rank)])
                return
            self._fail(node, f"reshape of a {x.layout} tensor to rank {rank} is not a supported layout change")
        if op == "Transpose":
            perm = list(self.src.attr(node, "perm") or [])
            table = {("bshd", (0, 2, 1, 3)): "bhsd", ("bhsd", (0, 2, 1, 3)): "bshd",
                     ("bhsd", (0, 1, 3, 2)): "bhds", ("bshd", (0, 2, 3, 1)): "bhds", ("bhds", (0, 1, 3, 2)): "bhsd",
                     ("Bsd", (0, 2, 1)): "Bds", ("Bds", (0, 2, 1)): "Bsd",
                     # heads first: how torch exports advanced indexing of the heads axis (GatherND)
                     ("bshd", (2, 0, 1, 3)): "hbsd", ("hbsd", (1, 2, 0, 3)): "bshd",
                     ("hbsd", (1, 0, 2, 3)): "bhsd", ("bhsd", (1, 0, 2, 3)): "hbsd"}
            new = table.get((x.layout, tuple(perm)))
            if new is None:
                self._fail(node, f"transpose {perm} of a {x.layout} tensor")
            self.views[out] = dataclasses.replace(x, layout=new)
            return
        if op in ("Unsqueeze", "Expand", "Squeeze"):
            if x.layout in ("bhsd", "gqa") and (rank == 5 or op == "Expand" and rank != 4):
                self.views[out] = dataclasses.replace(x, layout="gqa")
                return
            if x.layout in ("bhsd", "bhds") and op == "Expand" and rank == 4:
                self.views[out] = dataclasses.replace(x, expanded=True)
                return
            last = shape[-1] if shape else None
            if x.layout == "flat" and (last == width or op == "Squeeze"):
                self.views[out] = x
                return
            self._fail(node, f"{op} of a {x.layout} tensor")
        if op in ("Slice", "Split"):
            return self._slice(node, x)
        self._fail(node, "layout op not supported here")

    def _gather_tokens(self, node, x: View):
        """Picking positions out of the token dims (e.g. a pooler's first token)."""
        if x.layout == "fused":
            return self._fused_qkv_pick(node, x)  # onnx_attention
        if x.layout in self.AXES and x.layout != "flat":
            return self._gather_heads(node, x)
        src = self.src
        idx = src.const(node.input[1])
        rank = len(src.shapes.get(node.input[0], ())) or len(self.g.values[x.value].shape)
        axis = src.attr(node, "axis", 0) % rank
        if x.layout != "flat" or idx is None or axis == rank - 1 or idx.ndim > 1:
            self._fail(node, "gather from an activation other than constant positions along a token axis")
        shape = list(self.g.values[x.value].shape)
        ir_axis = axis - rank + len(shape)
        shape[ir_axis:ir_axis + 1] = [] if idx.ndim == 0 else [int(idx.size)]
        start = int(idx.reshape(-1)[0])
        self.views[node.output[0]] = View(self._emit(node, "layout", {"x": x.value}, {
            "kind": "slice", "shape": shape, "axis": ir_axis, "start": start, "end": start + max(1, int(idx.size))}))

    def _gather_heads(self, node, x: View):
        """One head picked by a constant index from a split-heads tensor (a multi-query model's
        fused QKV, [b, s, heads + 2, d], picks its key and value heads): a slice of whole heads,
        kept as a one-head view ([k] index) or the flat [b, s, d] (scalar index)."""
        idx = self.src.const(node.input[1])
        axis = self._onnx_axis(node, self.src.attr(node, "axis", 0))
        if idx is None or idx.size != 1 or self._axis_role(node, x, axis) != "h":
            self._fail(node, f"gather from a {x.layout} tensor other than one constant head")
        heads = self._extent(node, x, axis)
        h = int(idx.reshape(-1)[0]) % heads
        value = self._slice_value(node, x.value, h * x.head_dim, (h + 1) * x.head_dim)
        self.views[node.output[0]] = dataclasses.replace(x, value=value) if idx.ndim == 1 else View(value, scale=x.scale)

    def _gather_nd_heads(self, node, x: View):
        """GatherND of whole heads from a heads-first view ([heads, b, s, d]: fused[:, :, [i]] as
        torch exports it): constant indices [[i], ...] pick heads; the rest of the view is kept."""
        idx = self.src.const(node.input[1])
        if x.layout != "hbsd" or idx is None or idx.ndim != 2 or idx.shape[1] != 1 \
                or self.src.attr(node, "batch_dims", 0) != 0:
            self._fail(node, "GatherND other than constant whole heads of a heads-first activation")
        heads = self._extent(node, x, -4)
        picked = sorted({int(i) % heads for i in idx.reshape(-1)})
        if picked != list(range(picked[0], picked[-1] + 1)) or len(picked) != idx.shape[0]:
            self._fail(node, f"GatherND of heads {idx.reshape(-1).tolist()}: only a run of consecutive heads")
        value = self._slice_value(node, x.value, picked[0] * x.head_dim, (picked[-1] + 1) * x.head_dim)
        self.views[node.output[0]] = dataclasses.replace(x, value=value)

    def _full_slice(self, node, x) -> bool:
        """A slice from 0 to the end with step 1 along any axis copies its input."""
        src = self.src
        starts, ends = src.const(node.input[1]), src.const(node.input[2])
        steps = src.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
        if starts is None or ends is None:
            return False
        big = ends.reshape(-1) >= 2**31 - 1
        return bool((starts.reshape(-1) == 0).all() and big.all() and (steps is None or (steps == 1).all()))

    def _split_to_sequence(self, node, x):
        src = self.src
        axis = self._onnx_axis(node, src.attr(node, "axis", 0))
        split = src.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        if split is None:
            self._fail(node, "SplitToSequence with non-constant sizes")
        sizes = [int(v) for v in split.reshape(-1)]
        if len(sizes) == 1:  # one size: equal chunks
            sizes = [sizes[0]] * (self._extent(node, x, axis) // sizes[0])
        self.views[node.output[0]] = ("sequence", x, self._pieces(sizes), axis)

    @staticmethod
    def _pieces(sizes):
        pieces, start = [], 0
        for n in sizes:
            pieces.append((start, start + n))
            start += n
        return pieces

    def _onnx_axis(self, node, axis: int) -> int:
        """``axis`` of the node's first input counted from the end (-1: the last axis)."""
        rank = len(self.src.shapes.get(node.input[0], ()) or ())
        if axis >= 0 and not rank:
            self._fail(node, "axis of a tensor of unknown rank")
        return axis % rank - rank if rank else axis

    # What each axis of a view's ONNX tensor is: batch, seq, heads, head dim (F: the flat features).
    AXES = {"flat": "bsF", "bshd": "bshd", "bhsd": "bhsd", "hbsd": "hbsd"}

    def _extent(self, node, x, axis: int) -> int:
        """Elements of the view's ONNX tensor along ``axis`` (static for features, heads, head dim)."""
        width = self.g.values[x.value].shape[-1]
        role = self._axis_role(node, x, axis)
        if role == "F":
            return width
        if role == "d":
            return x.head_dim
        if role == "h":
            return width // x.head_dim
        self._fail(node, f"size along the {role} axis of a {x.layout} tensor")

    def _axis_role(self, node, x, axis: int) -> str:
        """What axis ``axis`` (from :meth:`_onnx_axis`, negative) of the view's ONNX tensor holds."""
        if x.layout == "flat":
            # a flat view may be [b, s, F], [b*s, F] or [F] after merges: only the last axis is the features
            return "F" if axis == -1 else "s"
        roles = self.AXES.get(x.layout)
        if roles is None or axis < -4:
            self._fail(node, f"slicing a {x.layout} tensor")
        return roles[axis]

    def _slice(self, node, x):
        src = self.src
        if node.op_type == "Split":
            axis = self._onnx_axis(node, src.attr(node, "axis", 0))
            sizes = src.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
            if sizes is None:
                sizes = src.attr(node, "split")
            if sizes is None:
                n = len(node.output)
                sizes = [self._extent(node, x, axis) // n] * n
            for o, (a, b) in zip(node.output, self._pieces([int(s) for s in sizes])):
                self._emit_slice(node, x, o, a, b, axis)
            return
        starts, ends = src.const(node.input[1]), src.const(node.input[2])
        axes = src.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        steps = src.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
        if starts is None or ends is None or starts.size != 1:
            self._fail(node, "slice with non-constant bounds")
        if steps is not None and int(steps.reshape(-1)[0]) != 1:
            self._fail(node, f"slice with step {int(steps.reshape(-1)[0])} outside a recognised rotary embedding")
        axis = self._onnx_axis(node, int(axes.reshape(-1)[0]) if axes is not None else 0)
        self._emit_slice(node, x, node.output[0], int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0]), axis)

    def _emit_slice(self, node, x, out, start, end, axis):
        role = self._axis_role(node, x, axis)
        if role in ("b", "s"):
            if x.layout != "flat":
                self._fail(node, f"slicing the {'batch' if role == 'b' else 'sequence'} axis of a {x.layout} tensor")
            # a slice over tokens (e.g. keep the last position's logits): same IR value
            self.views[out] = x
            return
        n = self._extent(node, x, axis)
        end = min(end, n) if end >= 0 else n + end
        start = max(0, start if start >= 0 else n + start)
        if start == 0 and end == n:
            self.views[out] = x
            return
        if end <= start:
            # nothing kept (a partial rotary's pass-through part when it rotates whole heads):
            # a Concat drops it
            self.views[out] = ("empty", x)
            return
        if role == "F":
            value = self._slice_value(node, x.value, start, end)
            self.views[out] = View(value)
        elif role == "h":      # whole heads: a contiguous run of each token's features
            value = self._slice_value(node, x.value, start * x.head_dim, end * x.head_dim)
            self.views[out] = dataclasses.replace(x, value=value)
        else:                  # part of every head (a partial rotary's halves, a fused per-head QKV)
            value = self._slice_heads(node, x, start, end)
            self.views[out] = dataclasses.replace(x, value=value, head_dim=end - start)
            self.head_slices[out] = (x, start, end)

    def _slice_value(self, node, value, start, end):
        shape = self.g.values[value].shape
        new = tuple(shape[:-1]) + (end - start,)
        return self._emit(node, "layout", {"x": value},
                          {"kind": "slice", "shape": list(new), "axis": -1, "start": start, "end": end})

    def _slice_heads(self, node, x, start, end):
        """Elements [start:end] of each head: [.., h*d] -> [.., h, d] -> slice -> [.., h*(end-start)]."""
        shape = list(self.g.values[x.value].shape)
        heads = shape[-1] // x.head_dim
        split = self._emit(node, "layout", {"x": x.value},
                           {"kind": "reshape", "shape": shape[:-1] + [heads, x.head_dim]})
        part = self._emit(node, "layout", {"x": split}, {"kind": "slice", "shape": shape[:-1] + [heads, end - start],
                                                         "axis": -1, "start": start, "end": end})
        return self._emit(node, "layout", {"x": part}, {"kind": "reshape", "shape": shape[:-1] + [heads * (end - start)]})
