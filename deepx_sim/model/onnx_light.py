"""An ONNX file parsed without its large weights: they stay in the file, read on demand.

``onnx.load`` copies every initialiser's bytes into the protobuf (1 s and 553 MB
for a VGG-16 export), and reading ``raw_data`` back copies them again.  Here a
few lines of protobuf wire format walk ModelProto.graph (field 7) and each
GraphProto.initializer (field 5), drop ``raw_data`` (field 9) payloads larger
than :data:`LARGE_BYTES`, and note where each one lies in the file; the rest
(nodes, shapes, small constants) parses as usual.  A weight is then read with
one ``np.fromfile`` at its offset.  Files this does not cover (external data,
unusual encodings) fall back to ``onnx.load``.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: raw_data payloads above this stay in the file.  Above 8 KB a tensor has more than 1024
#: elements, so the importer never needs its values for shape arithmetic.
LARGE_BYTES = 8192
#: TensorProto data types whose raw_data is a little-endian numpy array.
RAW_DTYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 10: "<f2", 11: "<f8",
              12: "<u4", 13: "<u8"}
_GRAPH, _INITIALIZER = 7, 5  # ModelProto.graph, GraphProto.initializer
_DIMS, _DATA_TYPE, _NAME, _RAW_DATA = 1, 2, 8, 9  # TensorProto fields


@dataclass(frozen=True)
class Extent:
    """Where an initialiser's bytes lie in its file, and how to read them."""

    offset: int
    dtype: str
    shape: tuple[int, ...]

    def read(self, path: Path) -> np.ndarray:
        count = int(np.prod(self.shape))
        array = np.fromfile(path, dtype=np.dtype(self.dtype), count=count, offset=self.offset)
        if array.size != count:
            raise ValueError(f"{path}: {count} values expected at byte {self.offset}, found {array.size}")
        return array.reshape(self.shape)


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(buf: Any, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, key start, value start, value end) of a message's fields."""
    pos = start
    while pos < end:
        key_start = pos
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, stop = _varint(buf, pos)
        elif wire == 1:
            stop = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            stop = pos + length
        elif wire == 5:
            stop = pos + 4
        else:
            raise ValueError(f"protobuf wire type {wire} (groups) in an ONNX file")
        yield field, wire, key_start, pos, stop
        pos = stop
    if pos != end:
        raise ValueError("protobuf message overruns its length")


def _message(field: int, body: bytes) -> bytes:
    return _encode_varint(field << 3 | 2) + _encode_varint(len(body)) + body


def _tensor(buf: Any, start: int, end: int) -> tuple[bytes, str, Extent | None]:
    """The TensorProto without a large raw_data, its name and that payload's extent."""
    kept, name, data_type, dims = bytearray(), "", 0, []
    raw: tuple[int, int] | None = None
    for field, wire, key_start, value, stop in _fields(buf, start, end):
        if field == _NAME and wire == 2:
            name = bytes(buf[value:stop]).decode()
        elif field == _DATA_TYPE and wire == 0:
            data_type = _varint(buf, value)[0]
        elif field == _DIMS and wire == 0:
            dims.append(_varint(buf, value)[0])
        elif field == _DIMS and wire == 2:  # packed
            pos = value
            while pos < stop:
                dim, pos = _varint(buf, pos)
                dims.append(dim)
        if field == _RAW_DATA and wire == 2 and stop - value > LARGE_BYTES:
            raw = (value, stop - value)
            continue
        kept += buf[key_start:stop]
    if raw is None or data_type not in RAW_DTYPES:
        return bytes(buf[start:end]), name, None
    extent = Extent(raw[0], RAW_DTYPES[data_type], tuple(dims))
    if np.dtype(extent.dtype).itemsize * int(np.prod(extent.shape)) != raw[1]:
        raise ValueError(f"initialiser {name!r}: raw_data length does not match its shape")
    return bytes(kept), name, extent


def _graph(buf: Any, start: int, end: int, extents: dict[str, Extent]) -> bytes:
    out = bytearray()
    for field, wire, key_start, value, stop in _fields(buf, start, end):
        if field == _INITIALIZER and wire == 2:
            tensor, name, extent = _tensor(buf, value, stop)
            if extent is not None:
                extents[name] = extent
            out += _message(_INITIALIZER, tensor)
        else:
            out += buf[key_start:stop]
    return bytes(out)


def load_light(path: Path) -> tuple[Any, dict[str, Extent]]:
    """The ModelProto at ``path`` without its large raw_data, and where those lie.
    Raises ValueError for what this reader does not cover (the caller then uses onnx.load)."""
    import onnx

    extents: dict[str, Extent] = {}
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        out = bytearray()
        for field, wire, key_start, value, stop in _fields(buf, 0, len(buf)):
            if field == _GRAPH and wire == 2:
                out += _message(_GRAPH, _graph(buf, value, stop, extents))
            else:
                out += buf[key_start:stop]
    model = onnx.ModelProto()
    model.ParseFromString(bytes(out))
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ValueError("external data")
    return model, extents
