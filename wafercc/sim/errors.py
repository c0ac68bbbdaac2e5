"""The exception the reference interpreter raises."""
from __future__ import annotations

from ..errors import WaferccError


class SimulationError(WaferccError):
    """The interpreter cannot run a graph: a missing or mis-shaped weight or input, an op or
    attribute combination it has no kernel for, or a context longer than its cache limit."""
