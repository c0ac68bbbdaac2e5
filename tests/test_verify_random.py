"""Random defect maps: schedules the writer builds around them verify; killing a used core is caught."""
from __future__ import annotations

import numpy as np
import pytest
from target_util import tiny_target
from test_verify_writer import Sched

from wafercc.verify import verify_dir


@pytest.mark.parametrize("seed", range(6))
def test_random_defects(tmp_path, seed):
    t = tiny_target(tmp_path, width=15, height=10)        # usable 8 x 8
    rng = np.random.default_rng(seed)
    alive = rng.random((8, 8)) >= 0.1
    s = Sched(t, 1, [alive])
    s.layers(0, 0, 0)
    free = alive.copy()
    for _ in range(30):                                   # fully alive rectangles, never overlapping
        nr, nc = (int(x) for x in rng.integers(1, 4, size=2))
        r0, c0 = int(rng.integers(0, 9 - nr)), int(rng.integers(0, 9 - nc))
        if free[r0:r0 + nr, c0:c0 + nc].all():
            free[r0:r0 + nr, c0:c0 + nc] = False
            o = s.op(0, f"op{len(s.doc['wafers'][0]['ops'])}", 0, (r0, c0, nr, nc), tile_bytes=int(rng.integers(1, 9999)))
            s.gemv_routes(0, o)
    res = verify_dir(s.write(tmp_path / "ok"))
    assert res.ok, [str(v) for v in res.violations]
    used = np.argwhere(~free & alive)
    if used.size:
        r, c = used[int(rng.integers(len(used)))].tolist()

        def edit(doc, arrs, defects):
            defects["alive_0"][r, c] = False
        bad = verify_dir(s.write(tmp_path / "bad", edit))
        assert "tile-dead-core" in bad.counts and f"dead core ({r}, {c})" in str(bad.violations[0])
