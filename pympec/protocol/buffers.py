"""Warm buffers: large transfers reuse memory instead of paying for fresh pages.

Fresh memory costs the kernel a page fault and a zero fill per page when it is first
touched: writing 100 MB into new memory takes 12.5 ms on the reference machine, into
memory written before 3.6 ms.  A 100 MB push touches new memory twice (the
controller's receive buffer, then the engine's), which costs as much CPU as moving the
bytes over MPI.  So every buffer of POOL_FROM bytes or more comes from a pool that
keeps the buffers nobody uses any more and hands them out again::

    allocate(n) ──> the smallest free pooled buffer of n..2n bytes  (warm: no faults)
                └─> else a new one, which joins the pool              (cold)

    a pooled buffer is free once nothing but the pool refers to it (an array built on
    it, a view, a pending MPI request all keep it in use); a free one not reused within
    PYMPEC_BUFFER_KEEP seconds (default 5), or beyond PYMPEC_BUFFER_CAP free bytes
    (default 2 GiB), goes back to the system at the next ``trim()``.

The pool is off (every buffer is new) where reference counts cannot tell that a buffer
fell free: on Pythons other than CPython, and on CPython's free-threaded build.

Buffers are 64-byte aligned and writable, and not zeroed (a reused one holds old bytes;
every caller overwrites what it allocates).
"""
from __future__ import annotations

import functools
import sys
import sysconfig
import threading
import time
from typing import Any

from .. import settings

ALIGN = 64
POOL_FROM = 1 << 20          # smaller buffers come straight from malloc, which is warm
TRIM_EVERY = 0.1             # seconds between trims that look at the pool


class _Pooled:
    __slots__ = ("array", "free_since")

    def __init__(self, array: Any) -> None:
        self.array = array
        self.free_since: float | None = None

    def free(self) -> bool:
        # referenced only by this entry (and getrefcount's own argument)
        return sys.getrefcount(self.array) <= 2


class BufferPool:
    """Large aligned buffers, reused once free (see the module doc).  ``keep`` and
    ``cap`` left None follow PYMPEC_BUFFER_KEEP and PYMPEC_BUFFER_CAP, read at use."""

    def __init__(self, keep: float | None = None, cap: int | None = None) -> None:
        self._keep, self._cap = keep, cap
        self.entries: list[_Pooled] = []
        self.lock = threading.Lock()
        self.trimmed = 0.0

    @property
    def keep(self) -> float:
        """Seconds a free buffer waits for reuse; raises SettingError on a bad setting."""
        return settings.BUFFER_KEEP.get() if self._keep is None else self._keep

    @property
    def cap(self) -> int:
        """Free bytes kept (0: the pool is off, as where reference counts cannot tell a
        free buffer); raises SettingError on a bad setting."""
        if self._cap is not None:
            return self._cap
        return settings.BUFFER_CAP.get() if refcounts_tell() else 0

    def allocate(self, nbytes: int) -> memoryview:
        """A writable, 64-byte aligned buffer of ``nbytes`` bytes, not zero-filled."""
        if nbytes < POOL_FROM or self.cap <= 0:
            self.trim()
            return _aligned_view(_empty(nbytes + ALIGN), nbytes)
        with self.lock:
            fits = [e for e in self.entries
                    if nbytes + ALIGN <= e.array.nbytes <= 2 * nbytes + ALIGN and e.free()]
            if fits:
                entry = min(fits, key=lambda e: e.array.nbytes)
                entry.free_since = None
            else:
                entry = _Pooled(_empty(nbytes + ALIGN))
                self.entries.append(entry)
            view = _aligned_view(entry.array, nbytes)
        self.trim()
        return view

    def trim(self, now: float | None = None) -> None:
        """Give back free buffers unused for ``keep`` seconds, and the oldest free ones
        beyond ``cap`` bytes; at most once per TRIM_EVERY seconds."""
        now = time.monotonic() if now is None else now
        if not self.entries or now - self.trimmed < TRIM_EVERY:
            return
        with self.lock:
            self.trimmed = now
            free = []
            for entry in self.entries:
                if not entry.free():
                    entry.free_since = None
                    continue
                if entry.free_since is None:
                    entry.free_since = now
                free.append(entry)
            free.sort(key=lambda e: e.free_since, reverse=True)   # newest first
            kept, drop = 0, set()
            for entry in free:
                kept += entry.array.nbytes
                if kept > self.cap or now - entry.free_since > self.keep:
                    drop.add(id(entry))
            if drop:
                self.entries = [e for e in self.entries if id(e) not in drop]

    def held(self) -> int:
        """Bytes the pool holds, in use or free."""
        return sum(e.array.nbytes for e in self.entries)


def _empty(nbytes: int) -> Any:
    # Not a bytearray: that zero-fills (a full pass over the memory), while NumPy's
    # large allocations skip it and get huge pages.  (Imported here, at the first large
    # message: a controller that moves none never loads NumPy, and starts faster.)
    import numpy
    return numpy.empty(nbytes, dtype=numpy.uint8)


def _aligned_view(raw: Any, nbytes: int) -> memoryview:
    start = -raw.ctypes.data % ALIGN
    return memoryview(raw[start:start + nbytes])


@functools.lru_cache(maxsize=None)
def refcounts_tell() -> bool:
    """Whether reference counts show when a buffer falls free: CPython with the GIL
    (the free-threaded build and other Pythons count differently), checked once."""
    if sys.implementation.name != "cpython" or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return False
    pool = BufferPool(keep=1.0, cap=POOL_FROM)   # (explicit: no settings read)
    view = pool.allocate(POOL_FROM)
    held = view[:]   # (a second view keeps the array in use, as an array on it would)
    del view
    in_use = not pool.entries[0].free()
    del held
    return in_use and pool.entries[0].free()


POOL = BufferPool()
allocate = POOL.allocate
trim = POOL.trim
