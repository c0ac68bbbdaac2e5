"""wafercc: compile transformer models onto wafer-scale meshes.

Entry points: :func:`compile` (any model source, every stage -> :class:`Compilation`; docs/api.md),
:func:`check` (a quick wafer and speed budget check), :func:`lower_onnx` (ONNX file -> IR), :func:`from_config` (Hugging Face config
or reference model -> IR, no weights), :func:`compile_module` (``nn.Module`` -> IR).
Heavy dependencies (torch, transformers) are imported on first use.
"""
__version__ = "0.1.0"

from .errors import (  # noqa: E402
    FrontendError, Infeasible, InputFileError, IRError, IRParseError, IRVerificationError, ModelConfigError,
    PlacementError, StageError, UnsupportedOpError, WaferccError,
)

__all__ = [
    "__version__", "WaferccError", "InputFileError", "UnsupportedOpError", "ModelConfigError",
    "FrontendError", "IRError", "IRParseError", "IRVerificationError", "Infeasible", "PlacementError",
    "StageError", "compile", "check", "CheckResult", "Compilation", "CompileResult", "Performance", "lower_onnx", "lower_onnx_model", "from_config", "compile_module",
    "to_onnx", "reference_models",
]


def __getattr__(name):  # lazy: `import wafercc` stays cheap (no torch import)
    if name in ("compile", "check", "CheckResult", "CompileResult"):
        from . import api
        return getattr(api, name)
    if name in ("Compilation", "Performance"):
        from . import driver
        return getattr(driver, name)
    if name in ("lower_onnx", "lower_onnx_model"):
        from .frontend import onnx_frontend
        return getattr(onnx_frontend, name)
    if name == "from_config":
        from .frontend.hf_config import from_config
        return from_config
    if name in ("compile_module", "to_onnx"):
        from .frontend import torch_frontend
        return getattr(torch_frontend, name)
    if name == "reference_models":
        from .models_registry import all_models
        return all_models
    raise AttributeError(f"module 'wafercc' has no attribute {name!r}")
