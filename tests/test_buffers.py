"""The warm-buffer pool (pympec.protocol.buffers): reuse only what nobody holds, give back the rest."""
from __future__ import annotations

import time

import numpy as np

from pympec.protocol.buffers import ALIGN, POOL_FROM, BufferPool

MB = 1 << 20


def address(view: memoryview) -> int:
    return np.frombuffer(view, np.uint8).ctypes.data


def test_buffers_are_aligned_writable_and_sized():
    pool = BufferPool()
    for n in (0, 1, 100, POOL_FROM, 3 * MB + 5):
        view = pool.allocate(n)
        assert len(view) == n and not view.readonly
        assert n == 0 or address(view) % ALIGN == 0


def test_a_buffer_in_use_is_never_handed_out_again():
    pool = BufferPool()
    first = pool.allocate(4 * MB)
    array = np.frombuffer(first, np.uint8)   # user data on it
    del first
    second = pool.allocate(4 * MB)
    assert address(second) != array.ctypes.data
    assert len(pool.entries) == 2


def test_a_dropped_buffer_is_reused():
    pool = BufferPool()
    view = pool.allocate(4 * MB)
    where = address(view)
    del view
    assert address(pool.allocate(4 * MB)) == where
    assert len(pool.entries) == 1


def test_reuse_only_within_twice_the_size():
    pool = BufferPool()
    del_me = pool.allocate(16 * MB)
    del del_me
    pool.allocate(4 * MB)                    # 16 MB is too big to hold 4 MB
    assert len(pool.entries) == 2
    small = pool.allocate(10 * MB)           # the free 16 MB one fits 10 MB
    assert len(pool.entries) == 2 and len(small) == 10 * MB


def test_small_buffers_bypass_the_pool():
    pool = BufferPool()
    pool.allocate(POOL_FROM - 1)
    assert pool.entries == []


def test_trim_gives_back_buffers_unused_for_keep_seconds():
    pool = BufferPool(keep=5.0)
    held = pool.allocate(2 * MB)
    dropped = pool.allocate(2 * MB)
    del dropped
    t = time.monotonic() + 1.0
    pool.trim(now=t)                         # first seen free: its clock starts
    assert len(pool.entries) == 2
    pool.trim(now=t + 4.0)
    assert len(pool.entries) == 2
    pool.trim(now=t + 6.0)                    # free for 6 s: gone; the held one stays
    assert len(pool.entries) == 1 and pool.held() >= len(held)


def test_trim_keeps_at_most_cap_free_bytes():
    pool = BufferPool(keep=60.0, cap=5 * MB)
    views = [pool.allocate(2 * MB) for _ in range(4)]
    del views
    pool.trim(now=time.monotonic() + 1.0)
    assert pool.held() <= 5 * MB and len(pool.entries) == 2


def test_cap_zero_disables_the_pool():
    pool = BufferPool(cap=0)
    pool.allocate(4 * MB)
    assert pool.entries == []
