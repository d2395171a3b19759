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
        raise TypeError(f"scatter needs a sequence that supports len() and slicing, "
                        f"not {type(seq).__name__}") from None
    parts = [seq[slice(*bounds(length, q, p))] for p in range(q)]
    if flatten:
        parts = [part[0] if len(part) == 1 else part for part in parts]
    return parts


def join(parts: list[Any]) -> Any:
    """Join gathered parts: arrays concatenate, lists and tuples flatten into one list,
    anything else stays a list of parts."""
    if not parts:
        return []
    first = parts[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if isinstance(first, (list, tuple)):
        return [item for part in parts for item in part]
    return parts
