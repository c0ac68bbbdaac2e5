"""Pass infrastructure: small frozen-dataclass passes run by a PassManager.

Each pass has a ``name``, declares the graph properties it ``requires`` and
``ensures``, and transforms a :class:`wafercc.ir.Graph` in place.  The manager
checks requirements, can verify and dump the IR after every pass, and records
per-pass wall time for the compile report.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import ClassVar, Sequence

from ..errors import WaferccError
from ..ir import Graph, print_graph, verify


class PassError(WaferccError):
    """A pass was run without a property it requires, or failed on the graph."""


@dataclasses.dataclass(frozen=True)
class Pass:
    name: ClassVar[str] = "pass"
    requires: ClassVar[frozenset[str]] = frozenset()
    ensures: ClassVar[frozenset[str]] = frozenset()

    def run(self, graph: Graph) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclasses.dataclass
class PassRecord:
    name: str
    seconds: float


@dataclasses.dataclass
class PassManager:
    passes: Sequence[Pass]
    verify_each: bool = True
    dump_dir: str | None = None
    records: list[PassRecord] = dataclasses.field(default_factory=list)

    def run(self, graph: Graph) -> Graph:
        have = set(graph.meta.get("properties", []))
        for i, p in enumerate(self.passes):
            missing = p.requires - have
            if missing:
                raise PassError(f"pass '{p.name}' requires {sorted(missing)}, graph has {sorted(have)}")
            t0 = time.perf_counter()
            p.run(graph)
            self.records.append(PassRecord(p.name, time.perf_counter() - t0))
            have |= p.ensures
            graph.meta["properties"] = sorted(have)
            if self.verify_each:
                verify(graph)
            if self.dump_dir:
                os.makedirs(self.dump_dir, exist_ok=True)
                path = os.path.join(self.dump_dir, f"{i:02d}-{p.name}.ir")
                tmp = path + ".tmp"
                with open(tmp, "w") as f:
                    f.write(print_graph(graph))
                os.replace(tmp, path)
        return graph
