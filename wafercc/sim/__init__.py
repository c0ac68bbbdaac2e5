"""wafercc.sim: a NumPy reference interpreter for the IR (numerics, KV-cache decode).

``Interpreter(graph, load_weights(graph, "model.onnx")).generate(prompt_ids, steps)``
runs a lowered model; :data:`KERNELS` holds one NumPy kernel per op kind, which
callers may override per op kind (e.g. a tiled matmul) to check it against the reference.
"""
from .errors import SimulationError

# the rest loads on first use, so that ``wafercc`` (whose parser registers ``simulate``) and the
# verifier do not import the IR and the kernels
_LAZY = {"KERNELS": "kernels", "kv_append": "kernels", "DEFAULT_CONTEXT": "reference", "Interpreter": "reference",
         "StepContext": "reference", "check_weights": "weights", "load_weights": "weights"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_CONTEXT", "KERNELS", "Interpreter", "SimulationError", "StepContext", "check_weights",
           "kv_append", "load_weights"]
