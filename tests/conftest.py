import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
# the build cache off (a limit of 0): a test compiling twice must compile twice, unless it turns the
# cache on itself (tests/test_build_cache.py)
os.environ.setdefault("WAFERCC_BUILD_CACHE_MB", "0")

import pytest  # noqa: E402

_REFERENCE_GRAPHS = {}


@pytest.fixture(scope="session")
def reference_graph():
    """Lowered reference models, shared by the tests of one session (lowering takes seconds)."""
    from wafercc.frontend.hf_config import from_config

    def get(key):
        if key not in _REFERENCE_GRAPHS:
            _REFERENCE_GRAPHS[key] = from_config(key)
        return _REFERENCE_GRAPHS[key]
    return get
