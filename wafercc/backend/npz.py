"""Deterministic .npz files: fixed member order and zip timestamps, written atomically."""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np

_EPOCH = (1980, 1, 1, 0, 0, 0)
# deflate level 2: on a Llama-3.1-70B wafer (134 MB of arrays) 0.47 s and 14.4 MB, against 2.4 s
# and 14.4 MB at zlib's default 6 with the int64 ids of before (docs/schedule-format.md)
COMPRESSLEVEL = 2


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` (at ``COMPRESSLEVEL``) but byte-identical for identical arrays."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    _write(tmp, arrays)
    os.replace(tmp, path)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The bytes ``write_npz`` writes (a wafer routed on another machine sends them back)."""
    buf = io.BytesIO()
    _write(buf, arrays)
    return buf.getvalue()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = os.fspath(path)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def _write(target, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESSLEVEL) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=COMPRESSLEVEL)
