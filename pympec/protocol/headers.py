"""JSON for message headers: orjson where it is installed (the ``fast`` extra), else the
standard library's json, with one encoder kept (``json.dumps`` makes a new one per call).

Every hop of a call encodes one header and decodes one: orjson does both several times
faster.  Where it refuses what json takes (integers past 64 bits, text with lone
surrogates, nesting past its limit, NaN), json does the work, so what a header means
never depends on which is installed; orjson only writes a NaN (which no header of
pympec's holds) as null.
"""
from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:   # pympec[fast] not installed
    orjson = None

_ENCODER = json.JSONEncoder(separators=(",", ":"))


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON bytes."""
    if orjson is not None:
        try:
            return orjson.dumps(value)
        except TypeError:   # (an integer past 64 bits, a lone surrogate...)
            pass
    return _ENCODER.encode(value).encode()


def loads(data: bytes | bytearray | memoryview) -> Any:
    """The value of JSON ``data``.  Raises ValueError for bad JSON, RecursionError for
    JSON nested too deep."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:   # json decides: it may take it, or say why not
            pass
    return json.loads(bytes(data))
