"""numpy arrays <-> (datatype, shape, raw bytes), with the Open Inference Protocol's type names.

Raw bytes are little-endian and row-major, as the protocol requires.
"""

from __future__ import annotations

import math

import numpy as np

from splitserve.core.errors import InvalidInput, shown

_TO_NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_FROM_NUMPY = {dt.newbyteorder("="): name for name, dt in _TO_NUMPY.items()}


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype name of a numpy array."""
    try:
        return _FROM_NUMPY[array.dtype.newbyteorder("=")]
    except KeyError:
        raise InvalidInput(f"unsupported tensor dtype {array.dtype}") from None


def numpy_dtype(datatype: str) -> np.dtype:
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        raise InvalidInput(f"unsupported tensor datatype {shown(datatype)}") from None


def to_raw(array: np.ndarray) -> tuple[str, list[int], bytes]:
    """(datatype, shape, raw bytes) of an array."""
    datatype = datatype_of(array)
    contiguous = np.ascontiguousarray(array, dtype=_TO_NUMPY[datatype])
    return datatype, list(array.shape), contiguous.tobytes()


MAX_DIMS = 8  # more dimensions than any model input or output has
MAX_ELEMENTS = 2**48  # more elements than any message can hold


def check_shape(name: str, shape: list[int] | tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """A caller's shape as ints and its element count, checked before any arithmetic on it: at most
    MAX_DIMS dimensions, none negative; the product is a Python int (no overflow)."""
    dims = tuple(int(d) for d in shape)
    if len(dims) > MAX_DIMS:
        raise InvalidInput(f"tensor {shown(name)}: {len(dims)} dimensions; at most {MAX_DIMS}")
    if any(d < 0 for d in dims):
        raise InvalidInput(f"tensor {shown(name)}: negative dimension in shape {list(dims)}")
    if math.prod(d for d in dims if d) >= MAX_ELEMENTS:  # numpy cannot even shape an empty array so
        raise InvalidInput(f"tensor {shown(name)}: shape {list(dims)} is too large")
    return dims, math.prod(dims)


def from_raw(name: str, datatype: str, shape: list[int] | tuple[int, ...], raw: bytes) -> np.ndarray:
    """The array held by raw bytes; a size that does not match the shape is InvalidInput."""
    dtype = numpy_dtype(datatype)
    dims, count = check_shape(name, shape)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"tensor {shown(name)}: {len(raw)} bytes do not fit shape {list(dims)} of {datatype} "
            f"({count * dtype.itemsize} bytes expected)"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(dims)
