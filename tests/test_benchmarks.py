"""The benchmark suite runs (a smoke test; figures are never asserted): every topic and
tool imports, ``--only`` takes every topic, and the mpi4py.futures peer script answers
under a real mpiexec with tiny sizes."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the repository root

from benchmarks.__main__ import TOPICS, parse_args  # noqa: E402
from benchmarks.common import run_mpi  # noqa: E402


def test_every_topic_imports_and_is_selectable():
    for topic in TOPICS:
        assert callable(importlib.import_module(f"benchmarks.{topic}").run)
    assert parse_args(["--only", ",".join(TOPICS)]).topics == list(TOPICS)
    for tool in ("hops", "micro"):   # python -m benchmarks.<tool>
        assert callable(importlib.import_module(f"benchmarks.{tool}").main)


def test_the_futures_peer_runs():
    got = json.loads(run_mpi(3, "futures_peer.py", "rates", "200", "200", "2000", "1",
                             timeout=120, pool=True))
    assert set(got) == {"submit", "map1", "map100"}
    assert all(len(rates) == 1 and rates[0] > 0 for rates in got.values())
    assert float(run_mpi(2, "futures_peer.py", "coldstart", timeout=120, pool=True)) > 0
