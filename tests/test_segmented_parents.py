"""Segmented reduction trees (passes/transfers.py segmented_parents): seg 1 is the binomial tree,
seg >= n a chain, every tile reaches the root, and the root's depth matches the segment formula."""
from __future__ import annotations

import numpy as np
import pytest

from wafercc.passes.transfers import segmented_parents, tree_parents


def _depth(par: np.ndarray) -> np.ndarray:
    d = np.zeros(len(par), dtype=np.int64)
    for p in range(1, len(par)):  # parents are always smaller distances
        assert 0 <= par[p] < p
        d[p] = d[par[p]] + 1
    return d


@pytest.mark.parametrize("n", [1, 2, 7, 16, 456])
def test_seg1_is_binomial_and_big_seg_is_chain(n):
    assert np.array_equal(segmented_parents(n, 1), tree_parents(n))
    chain = np.arange(n) - 1
    assert np.array_equal(segmented_parents(n, n), chain)
    assert np.array_equal(segmented_parents(n, n + 5), chain)


@pytest.mark.parametrize("n,seg", [(456, 16), (456, 32), (100, 3), (9, 4)])
def test_every_tile_reaches_root_and_root_children(n, seg):
    par = segmented_parents(n, seg)
    depth = _depth(par)
    heads = -(-n // seg)
    # deepest tile: the chain part (seg - 1) plus the binomial depth over the heads
    assert depth.max() <= (min(seg, n) - 1) + int(np.ceil(np.log2(heads)) if heads > 1 else 0)
    # the root receives one partial from its chain plus ceil(log2 heads) from other heads
    kids = int((par == 0).sum())
    assert kids == (1 if seg > 1 and n > 1 else 0) + (int(np.ceil(np.log2(heads))) if heads > 1 else 0)


def test_bad_segment():
    with pytest.raises(ValueError):
        segmented_parents(8, 0)
