"""IDX files (the format MNIST ships in): finding them in a folder and reading them with validation."""
import gzip
import os
import struct
import zlib
from typing import Dict, Optional, Union

import numpy as np

from .._runtime.errors import DataError

__all__ = ["SPLITS", "read_idx", "find_idx_file", "has_mnist"]

#: MNIST's two splits: ``(images file stem, labels file stem, count)``.
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
_IDX_DTYPES: Dict[int, Union[type, str]] = {
    0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str, expected_ndim: Optional[int] = None) -> np.ndarray:
    """Read one IDX file (raw or ``.gz``) into a NumPy array, validating its header and size.

    Raises :class:`DataError` naming the file when it is unreadable, truncated,
    corrupt, or has the wrong magic number or dimensionality.
    """
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable gzip file ({err})") from None
    if len(raw) < 4:
        raise DataError(f"{name}: truncated ({len(raw)} bytes, no IDX header)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{name}: bad IDX magic number 0x{raw[:4].hex()} (not an IDX file)")
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(f"{name}: expected a {expected_ndim}-d IDX array, the header says {ndim}-d")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise DataError(f"{name}: {what}: header says {'x'.join(map(str, dims))} "
                        f"({expected} bytes of data), file has {got}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def find_idx_file(folder: str, stem: str) -> Optional[str]:
    """The IDX file ``stem`` in ``folder`` (``.gz`` or raw, ``-idx`` or ``.idx`` spelling), or ``None``."""
    for candidate in (stem + ".gz", stem, stem.replace("-idx", ".idx"),
                      stem.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def has_mnist(folder: str) -> bool:
    """Whether ``folder`` holds all four MNIST IDX files."""
    return all(find_idx_file(folder, stem) for images, labels, _ in SPLITS.values()
               for stem in (images, labels))
