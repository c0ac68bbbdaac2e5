"""wafercc.sim: a NumPy reference interpreter for the IR (numerics, KV-cache decode).

``Interpreter(graph, load_weights(graph, "model.onnx")).generate(prompt_ids, steps)``
runs a lowered model; :data:`KERNELS` holds one NumPy kernel per op kind, which
callers may override per op kind (e.g. a tiled matmul) to check it against the reference.
"""
from .errors import SimulationError
from .kernels import KERNELS, kv_append
from .reference import DEFAULT_CONTEXT, Interpreter, StepContext
from .weights import check_weights, load_weights

__all__ = ["DEFAULT_CONTEXT", "KERNELS", "Interpreter", "SimulationError", "StepContext", "check_weights",
           "kv_append", "load_weights"]
