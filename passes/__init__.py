"""wafercc.passes: IR passes and the pass manager (see passes/pipeline.py)."""
from .dce import DeadCodeElimination
from .pipeline import Pass, PassError, PassManager, PassRecord

__all__ = ["Pass", "PassError", "PassManager", "PassRecord", "DeadCodeElimination"]
