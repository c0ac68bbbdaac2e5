"""The IR, run by the NumPy reference interpreter, against onnxruntime on the same token ids."""
from __future__ import annotations

import numpy as np


def ir_vs_onnxruntime(graph, path, batch: int = 2, seq: int = 8) -> float:
    """Max relative error of the graph's output against onnxruntime's for ``path`` on one forward pass
    of ids (the file's static input shape where it has one, else ``batch`` x ``seq``)."""
    import onnxruntime as ort

    from wafercc.sim.reference import Interpreter
    from wafercc.sim.weights import load_weights
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else (batch if k == 0 else seq) for k, d in enumerate(sess.get_inputs()[0].shape)]
    ids = (np.arange(np.prod(shape), dtype=np.int64).reshape(shape) * 7 + 3) % 128
    mask = np.ones_like(ids)
    interp = Interpreter(graph, load_weights(graph, path), None, context=64)
    interp.reset(ids.shape[0])
    got = interp.step(ids, mask, {})[graph.outputs[0]]
    feeds = {"input_ids": ids, "attention_mask": mask}
    want = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]
    return float(np.abs(got - want).max() / np.abs(want).max())
