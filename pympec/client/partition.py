"""Block partitioning for scatter and map, and joining for gather (IPython 0.10's ``Map``).

For ``q`` engines and ``L`` items, the first ``L % q`` engines get ``L // q + 1``
consecutive items and the rest ``L // q``.  Each part is a slice of the sequence, so lists
give lists, tuples tuples, and NumPy arrays views split along axis 0.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def bounds(length: int, q: int, p: int) -> tuple[int, int]:
    """``(lo, hi)`` of part ``p`` of ``q`` for a sequence of ``length`` items."""
    base, extra = divmod(length, q)
    lo = p * base + min(p, extra)
    return lo, lo + base + (p < extra)


def partition(seq: Sequence, q: int, flatten: bool = False) -> list[Any]:
    """Split ``seq`` into ``q`` block parts; with ``flatten``, a 1-item part is its item."""
    try:
        length = len(seq)
        seq[0:0]
    except TypeError:
        what = "a 0-d array" if isinstance(seq, np.ndarray) else type(seq).__name__
        raise TypeError(f"scatter needs a sequence that supports len() and slicing, "
                        f"not {what}") from None
    parts = [seq[slice(*bounds(length, q, p))] for p in range(q)]
    if flatten:
        parts = [part[0] if len(part) == 1 else part for part in parts]
    return parts


def join(parts: list[Any]) -> Any:
    """Join gathered parts, as the first one says: arrays concatenate (masked arrays
    keep their masks; dtypes promote as NumPy's do), lists, tuples and ranges flatten
    into one list, anything else stays a list of parts.  ValueError when the parts do
    not join (arrays of other trailing shapes, or 0-d; a list next to a number)."""
    if not parts:
        return []
    first = parts[0]
    try:
        if isinstance(first, np.ma.MaskedArray):
            return np.ma.concatenate(parts)
        if isinstance(first, np.ndarray):
            return np.concatenate(parts)
        if isinstance(first, (list, tuple, range)):
            return [item for part in parts for item in part]
    except (TypeError, ValueError) as e:
        kinds = ", ".join(f"{type(p).__name__} {np.shape(p)}" for p in parts)
        raise ValueError(f"gather cannot join the parts ({kinds}): {e}") from None
    return parts
