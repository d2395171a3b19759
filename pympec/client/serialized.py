"""Objects serialized once, for ``push_serialized`` and ``pull_serialized`` (IPython
0.10's ``newserialized``).

    s = serialize(big)                         # pickled (or an array's raw bytes) once
    mec.push_serialized({"x": s}, targets=0)   # sent as is, to as many pushes as you like
    mec.push_serialized({"x": s}, targets=1)
    unserialize(s)                             # the object again
"""
from __future__ import annotations

from typing import Any

from ..protocol import serialize as wire


class Serialized:
    """An object in the form it travels in: ``meta`` (a JSON-able description: a raw
    NumPy array, or a pickle) and ``frames`` (its bytes)."""

    def __init__(self, meta: dict, frames: list) -> None:
        self.meta, self.frames = meta, list(frames)

    @property
    def nbytes(self) -> int:
        """How many bytes the frames hold."""
        return sum(memoryview(f).nbytes for f in self.frames)

    def __repr__(self) -> str:
        return f"<Serialized {self.meta['kind']}, {self.nbytes} bytes>"


def serialize(obj: Any) -> Serialized:
    """``obj`` serialized as pympec sends it: a NumPy array as its raw bytes (no copy
    when contiguous), anything else pickled with cloudpickle.  Raises TypeError when
    it cannot be pickled."""
    return Serialized(*wire.encode(obj))


def unserialize(s: Serialized) -> Any:
    """The object ``s`` holds (an array is a view on its bytes)."""
    if not isinstance(s, Serialized):
        raise TypeError(f"unserialize needs a Serialized, not {type(s).__name__}")
    return wire.decode(s.meta, s.frames)
