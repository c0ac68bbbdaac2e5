"""Mixture-of-experts regions (filled in below)."""
def detect_moe(src, topk_idx, act, claimed):
    return None
