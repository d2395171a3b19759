"""20 client processes at once, 500 checked, mixed calls each (tests/reliability/worker.py):
execute, push and pull of objects and arrays, scatter and gather of arrays and lists,
MapTask and StringTask, map on the engines and as tasks, on random sets of targets of
the session cluster.  Every call comes back (0 lost) with exactly what its process
expected (0 mismatched), and the cluster serves afterwards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from reliability import worker

from conftest import first_line

PROCESSES = 20
CALLS = 500
SEED = 20261204


@pytest.mark.timeout(300)
def test_twenty_clients_five_hundred_calls_each(cluster):
    procs = [subprocess.Popen([sys.executable, worker.__file__, str(cluster.connection_file),
                               str(i), str(CALLS), str(SEED + i)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for i in range(PROCESSES)]
    summaries = []
    try:
        for proc in procs:
            assert first_line(proc, "a worker to connect").strip() == "ready"
        for proc in procs:   # all at once
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for i, proc in enumerate(procs):
            summaries.append(json.loads(first_line(proc, f"worker {i} to finish", 240)))
            assert proc.wait(30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    kinds = sum((Counter(s["kinds"]) for s in summaries), Counter())
    lost, mismatched = sum(s["lost"] for s in summaries), sum(s["mismatched"] for s in summaries)
    print(f"\n{PROCESSES} processes x {CALLS} calls: {sum(kinds.values())} calls, {lost} lost, "
          f"{mismatched} mismatched, slowest process {max(s['seconds'] for s in summaries):.0f} s;"
          f" {dict(kinds)}")
    assert sum(kinds.values()) == PROCESSES * CALLS
    assert (lost, mismatched) == (0, 0), [s["failures"] for s in summaries if s["failures"]]
    with cluster.client() as mec:
        assert mec.get_ids() == [0, 1, 2, 3] and mec.pull("id") == [0, 1, 2, 3]
        assert mec.status()["clients"] == 1
        mec.reset()
