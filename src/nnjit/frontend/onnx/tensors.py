"""ONNX TensorProto -> numpy, for every element type nnjit can compute in, without trusting the
file: sizes are checked against the declared dims before anything is allocated, raw bytes are
read as little-endian (as the format says) whatever the host, and external data is read only
from files inside the model's folder.
"""
from __future__ import annotations

import os

import numpy as np

from ...ir import NnjitError

# A tensor bigger than this is refused before any allocation (a hostile header can claim 2**62).
MAX_TENSOR_BYTES = 1 << 34


class OnnxError(NnjitError):
    """An ONNX model nnjit cannot read or convert; the message names the tensor or node."""


class ConstantRequired(OnnxError):
    """A shape-determining input is computed at run time; `value_name` is the ONNX value (a
    graph input can be fixed with `load(..., constants={name: array})`)."""

    def __init__(self, msg: str, value_name: str):
        super().__init__(msg)
        self.value_name = value_name


# ONNX TensorProto.DataType -> (name, the little-endian numpy dtype stored, the typed field).
# FLOAT16 and BFLOAT16 are stored as their bit patterns in int32_data; BOOL and the small ints
# widen to int32_data too.
ELEM_TYPES: dict[int, tuple[str, str, str]] = {
    1: ("float", "<f4", "float_data"),
    2: ("uint8", "u1", "int32_data"),
    3: ("int8", "i1", "int32_data"),
    4: ("uint16", "<u2", "int32_data"),
    5: ("int16", "<i2", "int32_data"),
    6: ("int32", "<i4", "int32_data"),
    7: ("int64", "<i8", "int64_data"),
    9: ("bool", "?", "int32_data"),
    10: ("float16", "<f2", "int32_data"),
    11: ("double", "<f8", "double_data"),
    12: ("uint32", "<u4", "uint64_data"),
    13: ("uint64", "<u8", "uint64_data"),
    16: ("bfloat16", "<u2", "int32_data"),
}
# Storage-only types: values are held in float32 (the float8/float4 kinds) or int64 (the 4-
# and 2-bit ints), which hold each of them exactly; they are rounded to the narrow type only
# where they leave the model (its outputs), in ml_dtypes' types (which onnx depends on).
STORAGE_TYPES: dict[int, tuple[str, str, str]] = {
    17: ("float8e4m3fn", "float8_e4m3fn", "f"), 18: ("float8e4m3fnuz", "float8_e4m3fnuz", "f"),
    19: ("float8e5m2", "float8_e5m2", "f"), 20: ("float8e5m2fnuz", "float8_e5m2fnuz", "f"),
    21: ("uint4", "uint4", "i"), 22: ("int4", "int4", "i"),
    23: ("float4e2m1", "float4_e2m1fn", "f"),
    25: ("uint2", "uint2", "i"), 26: ("int2", "int2", "i"),
}
UNSUPPORTED_TYPES = {0: "undefined", 8: "string", 14: "complex64", 15: "complex128",
                     24: "float8e8m0"}


def elem_type_name(t: int) -> str:
    if t in ELEM_TYPES:
        return ELEM_TYPES[t][0]
    if t in STORAGE_TYPES:
        return STORAGE_TYPES[t][0]
    return UNSUPPORTED_TYPES.get(t, f"unknown type {t}")


def storage_dtype(elem_type: int) -> np.dtype | None:
    """The ml_dtypes dtype of a storage-only type (None when it is not one, or ml_dtypes is
    missing)."""
    if elem_type not in STORAGE_TYPES:
        return None
    try:
        import ml_dtypes
    except ImportError:
        return None
    t = getattr(ml_dtypes, STORAGE_TYPES[elem_type][1], None)
    return None if t is None else np.dtype(t)


def storage_compute_dtype(dt: np.dtype) -> np.dtype | None:
    """float32 / int64 for an ml_dtypes storage dtype, else None."""
    for _, ml_name, kind in STORAGE_TYPES.values():
        if dt.name == ml_name:     # NOTE: some ml_dtypes types have kind "f", others "V"
            return np.dtype(np.float32 if kind == "f" else np.int64)
    return None


def numpy_dtype(elem_type: int, what: str) -> np.dtype:
    """The numpy dtype of ONNX element type `elem_type` (bfloat16 reads as float32; the
    float8/4-bit/2-bit types are ml_dtypes' types)."""
    st = storage_dtype(elem_type)
    if st is not None:
        return st
    if elem_type not in ELEM_TYPES:
        raise OnnxError(f"{what}: element type {elem_type_name(elem_type)} is not supported "
                        f"(supported: {', '.join(v[0] for v in ELEM_TYPES.values())}, and, as "
                        "inputs, outputs and casts, "
                        f"{', '.join(v[0] for v in STORAGE_TYPES.values())})")
    if elem_type == 16:
        return np.dtype(np.float32)
    return np.dtype(ELEM_TYPES[elem_type][1]).newbyteorder("=")


def checked_dims(dims, what: str, itemsize: int = 1) -> tuple[int, ...]:
    """`dims` as a shape, refusing negative dims and sizes beyond MAX_TENSOR_BYTES (exact
    Python ints, so a product that would overflow int64 is caught, not wrapped)."""
    shape = tuple(int(d) for d in dims)
    if any(d < 0 for d in shape):
        raise OnnxError(f"{what}: negative dim in {list(shape)}")
    n = 1
    for d in shape:
        n *= d
    if n * itemsize > MAX_TENSOR_BYTES:
        raise OnnxError(f"{what}: dims {list(shape)} give {n} elements ({n * itemsize} bytes), "
                        f"more than the {MAX_TENSOR_BYTES} bytes nnjit accepts in one tensor")
    return shape


def to_numpy(t, base_dir: str | None) -> np.ndarray:
    """The value of TensorProto `t`; `base_dir` is the model's folder (for external data)."""
    what = f"tensor {t.name!r}" if t.name else "tensor"
    if t.HasField("segment"):
        raise OnnxError(f"{what}: segmented tensors are not supported")
    st = storage_dtype(t.data_type)
    if st is not None:
        return _storage_to_numpy(t, what, st)
    if t.data_type not in ELEM_TYPES:
        numpy_dtype(t.data_type, what)     # raises, naming the type
    _, stored, field = ELEM_TYPES[t.data_type]
    stored_dt = np.dtype(stored)
    shape = checked_dims(t.dims, what, stored_dt.itemsize)
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if t.data_location == 1:          # TensorProto.EXTERNAL
        raw = _external_bytes(t, what, base_dir, count * stored_dt.itemsize)
        flat = np.frombuffer(raw, dtype=stored_dt)
    elif t.HasField("raw_data"):
        if len(t.raw_data) != count * stored_dt.itemsize:
            raise OnnxError(f"{what}: raw_data has {len(t.raw_data)} bytes, dims "
                            f"{list(shape)} of {elem_type_name(t.data_type)} need "
                            f"{count * stored_dt.itemsize}")
        flat = np.frombuffer(t.raw_data, dtype=stored_dt)
    else:
        values = getattr(t, field)
        if len(values) != count:
            raise OnnxError(f"{what}: {field} has {len(values)} values, dims {list(shape)} "
                            f"need {count}")
        flat = _from_typed_field(values, t.data_type, stored_dt)
    if t.data_type == 16:   # bfloat16: the high half of a float32
        flat = (flat.astype(np.uint32) << 16).view(np.float32)
    native = stored_dt.newbyteorder("=") if stored_dt.byteorder not in "|=" else stored_dt
    if t.data_type != 16:
        flat = flat.astype(native, copy=False)
    return np.array(flat.reshape(shape))   # owned and writable, never a view of the proto


def _storage_to_numpy(t, what: str, st: np.dtype) -> np.ndarray:
    """A float8 / 4-bit / 2-bit tensor, unpacked by onnx's own numpy_helper (after our dims
    check), in the type nnjit computes it in."""
    from onnx import numpy_helper

    if t.data_location == 1:
        raise OnnxError(f"{what}: external data of type {elem_type_name(t.data_type)} is not "
                        "supported")
    checked_dims(t.dims, what, 1)
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:     # a raw_data of the wrong length, and such
        raise OnnxError(f"{what}: cannot read its {elem_type_name(t.data_type)} data: "
                        f"{e}") from None
    return np.array(arr.astype(storage_compute_dtype(st)))


def _from_typed_field(values, data_type: int, stored_dt: np.dtype) -> np.ndarray:
    if data_type in (10, 16):   # float16 / bfloat16 bit patterns held in int32s
        return np.asarray(values, dtype=np.int64).astype(np.uint16).view(
            np.float16 if data_type == 10 else np.uint16)
    if data_type == 9:
        return np.asarray(values, dtype=np.int64) != 0
    return np.asarray(values).astype(stored_dt.newbyteorder("="))


def _external_bytes(t, what: str, base_dir: str | None, nbytes: int) -> bytes:
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    if base_dir is None:
        raise OnnxError(f"{what}: its data is in an external file ({location!r}), so the model "
                        "must be loaded from a path (not a ModelProto in memory)")
    if not location or os.path.isabs(location) or "\x00" in location:
        raise OnnxError(f"{what}: external data location {location!r} must be a relative path "
                        "inside the model's folder")
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, path]) != root:
        raise OnnxError(f"{what}: external data location {location!r} escapes the model's "
                        f"folder {base_dir!r}")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(nbytes)))
    except ValueError:
        raise OnnxError(f"{what}: external data offset/length must be integers, got "
                        f"{info.get('offset')!r}/{info.get('length')!r}") from None
    if offset < 0 or length != nbytes:
        raise OnnxError(f"{what}: external data (offset {offset}, length {length}) does not "
                        f"hold the {nbytes} bytes its dims need")
    if not os.path.isfile(path):
        raise OnnxError(f"{what}: external data file {location!r} not found in {base_dir!r}")
    size = os.path.getsize(path)
    if offset + length > size:
        raise OnnxError(f"{what}: external data {location!r} has {size} bytes, the tensor "
                        f"needs bytes {offset}..{offset + length}")
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)
