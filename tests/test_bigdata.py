"""Messages over 2 GiB: a 2.1 GB push and pull through one engine.

MPI counts are C ints, so 2 GiB is where naive byte counts overflow; mpi4py 4 with
MPICH 4+ switches to the large-count (``MPI_*_c``) calls by itself.  The test needs
about 10 GB of RAM (client, controller and engine each hold the payload), so it runs
only with ``PYMPEC_TEST_BIG=1``.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(os.environ.get("PYMPEC_TEST_BIG") != "1",
                                reason="needs ~10 GB RAM: set PYMPEC_TEST_BIG=1")

BIG = (1 << 31) + 4096


def test_push_pull_over_2gib(private_cluster):
    with private_cluster.client() as mec:
        a = np.arange(BIG // 8, dtype=np.int64)
        mec.push({"a": a}, targets=0)
        assert mec.execute("ok = bool(a[-1] == a.size - 1 and a.flags.writeable)",
                           targets=0) is not None
        assert mec.pull("ok", targets=0) == [True]
        back = mec.pull("a", targets=0)[0]
        assert back.nbytes == a.nbytes and back.flags.writeable
        assert back[0] == 0 and back[-1] == a.size - 1 and back[a.size // 2] == a.size // 2


def test_scatter_gather_over_2gib(private_cluster):
    """Collective displacements past 2 GiB (two engines, 1.25 GiB each)."""
    with private_cluster.client() as mec:
        a = np.arange((BIG + (1 << 29)) // 8, dtype=np.int64)
        mec.scatter("part", a)
        assert mec.execute("ok = bool(part[0] == part[-1] - part.size + 1)") is not None
        assert mec.pull("ok") == [True, True]
        back = mec.gather("part")
        assert back.nbytes == a.nbytes and back[-1] == a.size - 1
        assert back[a.size // 2] == a.size // 2
