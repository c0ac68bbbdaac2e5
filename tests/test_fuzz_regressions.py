"""Every crash the fuzz harness found, as the smallest input that reproduced it (docs/testing.md:
each one is fixed with a test here, named after what it checks, quoting the shrunk reproducer)."""
from __future__ import annotations

import pytest

from target_util import write_variant
from wafercc.target import load_target
from wafercc.target.errors import TargetError


@pytest.mark.parametrize("unit", ["[]", "[1, 2]", "{ a = 1 }"])
def test_target_unit_of_the_wrong_type_is_refused(tmp_path, unit):
    # fuzz (target family, seed 0): `unit = []` raised TypeError: unhashable type: 'list'
    path = write_variant(tmp_path, 'fabric_width = { value = 762, unit = "cores"',
                         f'fabric_width = {{ value = 762, unit = {unit}')
    with pytest.raises(TargetError, match=r"field 'mesh.fabric_width.unit': got .*expected one of"):
        load_target(path)
