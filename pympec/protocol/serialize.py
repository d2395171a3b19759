"""Turning Python objects into frames and back.

An object becomes ``(meta, frames)``: ``meta`` is JSON-able and says how to rebuild it.

* A NumPy array (not of object dtype) travels raw: ``{"kind": "array", "dtype", "shape"}``
  and one frame holding its bytes.  Nothing is pickled, and the receiver's array is a view
  on the buffer the bytes landed in: writable, no copy.  Any dtype goes (datetime64,
  structured, big-endian...).  A Fortran-ordered array travels as its own memory and
  arrives Fortran-ordered (``"order": "F"``); any other array that is not contiguous
  (a slice with a step, say) is copied once, and arrives C-ordered.  Subclasses
  (np.matrix, masked arrays) are pickled, so they keep their class.
* A JSON value known to be plain (an execute record: str keys, str and int values)
  travels inside its meta: ``{"kind": "json", "value": ...}``, no frames, no pickle; a
  large one as one frame of JSON text instead: ``{"kind": "jsonb"}``.
* Anything else is pickled with cloudpickle (so closures and lambdas travel) at protocol 5,
  with out-of-band buffers: ``{"kind": "pickle", "n": k}``, then the pickle stream and one
  frame per buffer, so arrays nested in lists and dicts are not copied either.
"""
from __future__ import annotations

import math
import pickle
import sys
from typing import Any, Sequence

from . import headers

PROTOCOL = 5


def _numpy() -> Any:
    """NumPy, loaded at its first use: an engine that runs only code starts faster."""
    import numpy
    return numpy


def _cloudpickle() -> Any:
    import cloudpickle
    return cloudpickle


def dumps(obj: Any) -> list[Any]:
    """Pickle ``obj``: the pickle stream, then its out-of-band buffers.

    Raises TypeError, naming the object's type, when it cannot be pickled.
    """
    buffers: list[pickle.PickleBuffer] = []
    try:
        stream = _cloudpickle().dumps(obj, protocol=PROTOCOL, buffer_callback=buffers.append)
    except Exception as e:
        raise TypeError(f"cannot send {type(obj).__name__} object: {e}") from e
    return [stream, *buffers]


def loads(frames: Sequence[Any]) -> Any:
    return pickle.loads(frames[0], buffers=frames[1:])


def is_raw_array(obj: Any) -> bool:
    np = sys.modules.get("numpy")   # (not loaded: nothing can be an array)
    return np is not None and type(obj) is np.ndarray and not obj.dtype.hasobject


def fortran(a: Any) -> bool:
    """Whether ``a`` is Fortran-ordered (and not also C-ordered)."""
    return a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous


def raw_bytes(a: Any) -> Any:
    """The bytes of an array, in memory order, as a flat uint8 array (a view when it is
    contiguous): the buffer protocol cannot export some dtypes (datetime64,
    timedelta64) as they are."""
    np = _numpy()
    flat = a.T if fortran(a) else np.ascontiguousarray(a)
    return flat.reshape(-1).view(np.uint8)


def encode(obj: Any) -> tuple[dict, list[Any]]:
    """``(meta, frames)`` for one object (see module doc)."""
    if is_raw_array(obj):
        return array_meta(obj), [raw_bytes(obj)]
    frames = dumps(obj)
    return {"kind": "pickle", "n": len(frames)}, frames


def decode(meta: dict, frames: Sequence[Any]) -> Any:
    """Rebuild an object from :func:`encode`'s meta and frames."""
    if meta["kind"] == "array":
        return array_from(meta, frames[0])
    if meta["kind"] == "json":
        return meta["value"]
    if meta["kind"] == "jsonb":
        return headers.loads(frames[0])
    return loads(frames)


def encode_json(value: Any, inline: bool = True) -> tuple[dict, list]:
    """A plain JSON value: inside its meta, with no frames, when ``inline``; else as
    one frame of JSON text (``{"kind": "jsonb"}``), so a large one (megabytes of
    output) never travels inside a message header."""
    if inline:
        return {"kind": "json", "value": value}, []
    return {"kind": "jsonb"}, [headers.dumps(value)]


def nframes(meta: dict) -> int:
    kind = meta["kind"]
    return 1 if kind in ("array", "jsonb") else 0 if kind == "json" else meta["n"]


def array_meta(a: Any) -> dict:
    from numpy.lib import format as npformat
    meta = {"kind": "array", "dtype": npformat.dtype_to_descr(a.dtype), "shape": list(a.shape)}
    if fortran(a):
        meta["order"] = "F"
    return meta


def array_dtype(meta: dict) -> Any:
    descr = meta["dtype"]
    if isinstance(descr, list):  # JSON turned the structured descr's tuples into lists
        descr = [tuple(field) for field in descr]
    from numpy.lib import format as npformat
    return npformat.descr_to_dtype(descr)


def array_from(meta: dict, buf: Any) -> Any:
    """The array ``meta`` describes, as a view on ``buf`` (writable if ``buf`` is).
    ValueError if ``buf`` does not hold exactly its bytes."""
    dtype = array_dtype(meta)
    size = math.prod(meta["shape"]) * dtype.itemsize
    if memoryview(buf).nbytes != size:
        raise ValueError(f"an array of shape {tuple(meta['shape'])} and dtype {dtype} takes "
                         f"{size} bytes, not {memoryview(buf).nbytes}")
    return _numpy().ndarray(meta["shape"], dtype, buffer=buf, order=meta.get("order", "C"))


def encode_many(values: Sequence[Any]) -> tuple[list[dict], list[Any]]:
    """Encode several objects: their metas, and all their frames in order."""
    metas, frames = [], []
    for value in values:
        meta, more = encode(value)
        metas.append(meta)
        frames.extend(more)
    return metas, frames


def decode_many(metas: Sequence[dict], frames: Sequence[Any]) -> list[Any]:
    values, i = [], 0
    for meta in metas:
        n = nframes(meta)
        values.append(decode(meta, frames[i:i + n]))
        i += n
    return values


def encode_inband(obj: Any) -> tuple[dict, Any]:
    """``(meta, one buffer)``: a raw array's own memory, or one in-band pickle stream.
    For collectives, which need each rank's part in one contiguous buffer."""
    if is_raw_array(obj):
        return array_meta(obj), raw_bytes(obj)
    try:
        stream = _cloudpickle().dumps(obj, protocol=PROTOCOL)
    except Exception as e:
        raise TypeError(f"cannot send {type(obj).__name__} object: {e}") from e
    return {"kind": "pickle", "n": 1}, stream
