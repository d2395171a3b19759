"""Shared fixtures: one real cluster (mpiexec, real sockets) for the whole session.

Tests never touch ``~/.pympec``: PYMPEC_DIR points at a temporary directory.
"""
from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("PYMPEC_DIR", tempfile.mkdtemp(prefix="pympec-tests-"))

import pympec  # noqa: E402
from pympec import client  # noqa: E402

ENGINES = 4


@pytest.fixture(scope="session")
def cluster():
    """A running cluster of ENGINES engines, stopped at the end of the session."""
    with pympec.Cluster(n=ENGINES, profile="tests", timeout=120) as running:
        yield running


@pytest.fixture
def mec(cluster):
    """A fresh MultiEngineClient; engines are reset before the test."""
    c = cluster.client()
    c.reset()
    yield c
    c.close()


@pytest.fixture
def private_cluster(tmp_path):
    """A cluster of 2 engines of the test's own, for tests that break or stop it."""
    with pympec.Cluster(n=2, connection_file=tmp_path / "cluster.json", timeout=120) as c:
        yield c


__all__ = ["client", "ENGINES"]
