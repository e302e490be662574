"""Minimal safetensors reader/writer in pure numpy (no torch, no safetensors package).

Container: 8-byte little-endian header length N, N bytes of JSON
{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}, ...},
then the raw little-endian row-major data (offsets relative to the end of the header).

BF16 tensors are returned as float32 (bits << 16, exact). Use `dtypes={name: "BF16"}` in
`save` to store a float array as BF16 (round to nearest even).
"""
import json
import struct
from collections.abc import Mapping

import numpy as np

_NP = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U8": "u1", "BOOL": "?",
}
_CODE = {np.dtype(v).newbyteorder("=") if np.dtype(v).itemsize > 1 else np.dtype(v): k
         for k, v in _NP.items()}


def bf16_bits(x):
    """float array -> uint16 bfloat16 bit patterns (round to nearest even, NaN kept quiet)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    return np.where(nan, np.uint16(0x7FC0), r)


def bf16_round(x):
    """Round a float array to the nearest bfloat16 value, returned as float32."""
    return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32)


def _decode(raw, dtype, shape):
    """raw: uint8 array with exactly the tensor's bytes -> ndarray (copy, native order)."""
    if dtype == "BF16":
        out = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype in _NP:
        out = raw.view(_NP[dtype]).astype(np.dtype(_NP[dtype]).newbyteorder("="))
    else:
        raise ValueError(f"unsupported safetensors dtype {dtype}")
    return out.reshape(shape)


def _parse(buf):
    n = struct.unpack("<Q", bytes(buf[:8]))[0]
    header = json.loads(bytes(buf[8:8 + n]).decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    return 8 + n, header, meta


class LazyTensors(Mapping):
    """Read-only name -> ndarray mapping over a memory-mapped file; decodes on access.
    `rows(name, idx)` decodes only the requested rows of a 2-D tensor (embedding gather)."""

    def __init__(self, path):
        self._buf = np.memmap(path, dtype=np.uint8, mode="r")
        self._base, self._hdr, self.metadata = _parse(self._buf)

    def _raw(self, name):
        e = self._hdr[name]
        b, t = e["data_offsets"]
        return self._buf[self._base + b:self._base + t], e

    def __getitem__(self, name):
        raw, e = self._raw(name)
        return _decode(raw, e["dtype"], e["shape"])

    def rows(self, name, idx):
        raw, e = self._raw(name)
        shape = e["shape"]
        row_bytes = len(raw) // shape[0]
        idx = np.asarray(idx, dtype=np.int64)
        sel = raw.reshape(shape[0], row_bytes)[idx].reshape(-1)
        return _decode(sel, e["dtype"], [len(idx)] + list(shape[1:]))

    def shape(self, name):
        return tuple(self._hdr[name]["shape"])

    def __contains__(self, name):  # no decoding (Mapping's default would decode the tensor)
        return name in self._hdr

    def __iter__(self):
        return iter(self._hdr)

    def __len__(self):
        return len(self._hdr)


def load(path, lazy=False):
    """-> (dict name -> ndarray, metadata dict). lazy=True returns a LazyTensors mapping."""
    if lazy:
        t = LazyTensors(path)
        return t, dict(t.metadata)
    buf = np.fromfile(path, dtype=np.uint8)
    base, hdr, meta = _parse(buf)
    out = {}
    for name, e in hdr.items():
        b, t = e["data_offsets"]
        out[name] = _decode(buf[base + b:base + t], e["dtype"], e["shape"])
    return out, dict(meta)


def save(path, tensors, metadata=None, dtypes=None):
    """Write tensors (name -> array-like). dtypes: optional name -> code ("BF16", "F32", ...)
    overriding the dtype deduced from the array."""
    dtypes = dtypes or {}
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        code = dtypes.get(name)
        if code == "BF16":
            data = bf16_bits(arr).astype("<u2").tobytes()
        else:
            if code is None:
                dt = arr.dtype.newbyteorder("=") if arr.dtype.itemsize > 1 else arr.dtype
                if dt not in _CODE:
                    raise ValueError(f"{name}: unsupported numpy dtype {arr.dtype}")
                code = _CODE[dt]
            data = np.ascontiguousarray(arr, dtype=_NP[code]).tobytes()
        header[name] = {"dtype": code, "shape": [int(s) for s in arr.shape],
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for d in blobs:
            f.write(d)
