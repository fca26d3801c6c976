"""Writing IDX files, for the tests' own small and damaged MNIST copies (the package only reads them)."""

import gzip
from pathlib import Path

import numpy as np

from vae_keras.data import IDX_DTYPES


def write_idx(path, array):
    """Writes `array` as an IDX file, gzip-compressed when `path` ends in .gz.

    The gzip wrapper is written like `gzip -9 -n` (no name, no time stamp),
    so the same array always gives the same bytes.

    Args:
        path: the file to write, a `str` or `pathlib.Path`.
        array: array-like of dtype uint8, int8, int16, int32, float32 or
            float64, with at most 255 dimensions.

    Returns:
        The `pathlib.Path` written.

    Raises:
        ValueError: the dtype has no IDX element type, or the array has too
            many dimensions or a dimension too large for IDX.

    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native_dtype = array.dtype.newbyteorder("=")
    if native_dtype not in codes:
        supported = ", ".join(str(dtype) for dtype in codes)
        raise ValueError(
            f"write_idx supports dtypes {supported}; received an array of "
            f"dtype {array.dtype}. Cast it first, e.g. array.astype('int32')."
        )
    if array.ndim > 255 or any(size > 0xFFFFFFFF for size in array.shape):
        raise ValueError(
            f"IDX holds at most 255 dimensions of at most 2**32 - 1 each; "
            f"received shape {array.shape}."
        )
    code = codes[native_dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(
        array.shape, ">u4"
    ).tobytes()
    content = header + np.ascontiguousarray(array, IDX_DTYPES[code]).tobytes()
    if path.suffix == ".gz":
        content = gzip.compress(content, compresslevel=9, mtime=0)
    path.write_bytes(content)
    return path
