"""The verifier is independent: verifying a directory loads none of the compiler's passes."""
from __future__ import annotations

import subprocess
import sys

from target_util import tiny_target
from test_verify_writer import two_wafer


def test_verifier_imports_no_planner_passes_or_frontends(tmp_path):
    out = two_wafer(tiny_target(tmp_path, width=15, height=10)).write(tmp_path / "out")
    code = ("import sys; from wafercc.cli import main; rc = main(['verify', sys.argv[1], '--format', 'json']); "
            "bad = sorted(m for m in sys.modules if m.startswith(('wafercc.plan', 'wafercc.passes', "
            "'wafercc.frontend', 'wafercc.api', 'wafercc.ir'))); print(bad, file=sys.stderr); "
            "sys.exit(rc or (3 if bad else 0))")
    p = subprocess.run([sys.executable, "-c", code, out], check=False, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_solver_status_nested_in_floorplan(tmp_path):
    from wafercc.verify import verify_dir

    s = two_wafer(tiny_target(tmp_path, width=15, height=10))
    s.doc["qor"] = {"wafers": [{"floorplan": {"status": "CONSTRUCTIVE", "gap": None}},
                               {"solver_status": "OPTIMAL", "gap": 0.5}]}
    q = verify_dir(s.write(tmp_path / "out")).wafers
    assert (q[0]["solver_status"], q[0]["gap"], q[1]["solver_status"], q[1]["gap"]) == \
        ("CONSTRUCTIVE", None, "OPTIMAL", 0.5)
