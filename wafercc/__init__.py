"""wafercc: compile transformer models onto wafer-scale meshes."""
__version__ = "0.1.0"

from .errors import (  # noqa: E402
    InputFileError, IRError, IRParseError, IRVerificationError, ModelConfigError,
    UnsupportedOpError, WaferccError,
)

__all__ = [
    "__version__", "WaferccError", "InputFileError", "UnsupportedOpError", "ModelConfigError",
    "IRError", "IRParseError", "IRVerificationError",
]
