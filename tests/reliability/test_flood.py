"""A flood of unauthenticated connections against a controller that may open 1024 files.

Its mpiexec, and so every rank, runs under RLIMIT_NOFILE soft = hard = 1024, so the
controller cannot raise it.  1,200 sockets are opened at once, and stay silent, while a
legitimate client works.  Two settings:
- the default PYMPEC_MAX_UNAUTHENTICATED (256): the oldest handshakes are dropped and
  the controller never runs out of files;
- PYMPEC_MAX_UNAUTHENTICATED above the limit: the controller runs out of files, drops
  the older half of its handshakes, pauses accept() and goes on serving; a new client
  queued behind the flood is let in long before the handshake deadline, and a call that
  needs a new communicator works.
Either way: the controller closes every flood socket (dropped, or at the handshake
deadline); the connected client's calls all succeed, each within LIMIT, during and after;
new clients connect afterwards; the cluster lives; and the rank-0 log holds a few summary
lines, not one per connection, and no exception.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import pytest

import pympec
from pympec import connection
from pympec.cluster import mpi
from pympec.controller.door import HANDSHAKE_TIMEOUT, LOG_EVERY

from conftest import first_line, wait_for
from reliability import tools
from reliability.tools import Legit, rank0_log, turned_away

FILES = 1024      # the controller's open-file limit, soft and hard
FLOOD = 1200      # sockets opened at once
LIMIT = 30.0      # seconds any call of the legitimate client may take


def limit_files() -> None:   # in mpiexec's process, before it runs: inherited by the ranks
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILES, FILES))


@pytest.fixture
def limited_cluster(request, tmp_path):
    """A private cluster of 3 engines whose every rank may open at most FILES files;
    the test's parameter is its PYMPEC_MAX_UNAUTHENTICATED (None: the default)."""
    env = dict(os.environ)
    if request.param is not None:
        env["PYMPEC_MAX_UNAUTHENTICATED"] = str(request.param)
    cluster = pympec.Cluster(n=3, connection_file=tmp_path / "c.json", timeout=120, env=env)
    cluster.log_path = tmp_path / "mpiexec.log"
    launch = mpi.local_launch(cluster.mpiexec, cluster.n + 1)   # what Open MPI needs
    with open(cluster.log_path, "ab") as log:   # (Cluster.start, with the limit)
        cluster.process = subprocess.Popen(
            cluster.command(launch.args), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, env={**env, **launch.env},
            preexec_fn=limit_files)
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("limited_cluster", [None, 100_000], indirect=True,
                         ids=["default-cap", "cap-above-the-file-limit"])
def test_flood_of_unauthenticated_sockets(limited_cluster):
    cluster = limited_cluster
    info = connection.load(cluster.connection_file)
    with open(f"/proc/{info.pid}/limits") as f:
        assert any(line.split()[3:5] == [str(FILES)] * 2 for line in f
                   if line.startswith("Max open files")), "the controller's limit"
    other = cluster.client(timeout=LIMIT)    # connected before the flood
    legit = Legit(cluster, limit=LIMIT)
    log = rank0_log(cluster)
    logged_before = len(log.read_text().splitlines())
    legit.start()
    started = time.monotonic()
    # from a process of its own, so that the flood's sockets take none of this one's
    # file numbers (the client waits with select(), which takes none above 1023)
    flooder = subprocess.Popen([sys.executable, tools.__file__, info.address, str(info.port),
                                str(FLOOD), str(3 * HANDSHAKE_TIMEOUT + LIMIT)],
                               stdout=subprocess.PIPE, text=True)
    try:
        opened_in = json.loads(first_line(flooder, "the flood", LIMIT))["opened in"]
        if cluster.env.get("PYMPEC_MAX_UNAUTHENTICATED"):
            # queued behind the flood, which runs the controller out of files: it is let
            # in well before the flood's handshakes time out, since the oldest are dropped
            # to make room (it used to wait HANDSHAKE_TIMEOUT, a client's default timeout)
            with cluster.client(timeout=HANDSHAKE_TIMEOUT / 2) as newcomer:
                assert newcomer.get_ids() == [0, 1, 2]
            # a call that needs a new communicator, meanwhile
            assert other.execute("flooded = 1", targets=[0, 1], block=False).get_result(
                timeout=LIMIT) is not None
            assert other.pull("flooded", targets=[0, 1]) == [1, 1]
        fate = json.loads(first_line(flooder, "every flood socket closed",
                                     4 * HANDSHAKE_TIMEOUT + LIMIT))
        flood_over = time.monotonic() - started
        rounds_during = legit.rounds
    finally:
        flooder.kill()
        flooder.wait(LIMIT)
    assert fate["open"] == 0 and fate["beyond the greeting"] == 0, fate
    time.sleep(1)          # calls after the flood, on the same connection and new ones
    legit.stop()
    print(f"\n{FLOOD} sockets opened in {opened_in:.2f} s, all closed by the controller "
          f"{flood_over:.1f} s after: {fate}\nlegitimate client: {legit.rounds} rounds "
          f"({rounds_during} during the flood), slowest {legit.slowest:.2f} s; "
          f"{legit.fresh} new connections, slowest {legit.slowest_fresh:.2f} s, "
          f"{len(legit.fresh_errors)} failed: {legit.fresh_errors[:3]}")
    assert not legit.errors and not legit.fresh_errors, legit.errors + legit.fresh_errors
    assert rounds_during > 0 and legit.rounds > rounds_during
    assert cluster.poll() is None, "the cluster died"
    with cluster.client(timeout=LIMIT) as mec:
        assert mec.pull("id") == [0, 1, 2]
        wait_for(lambda: mec.status()["clients"] == 2,       # itself and other
                 lambda: f"no client but ours: {mec.status()['clients']}")
    other.close()
    # a summary line per LOG_EVERY s at most, not a line per connection
    wait_for(lambda: sum(turned_away(log.read_text())[1].values()) >= FLOOD // 2,
             lambda: f"the summaries: {turned_away(log.read_text())}", timeout=2 * LOG_EVERY)
    text = log.read_text()
    lines, reasons = turned_away(text)
    new_lines = text.splitlines()[logged_before:]
    print(f"log: {len(new_lines)} new lines, {lines} summaries: {dict(reasons)}")
    assert lines <= (time.monotonic() - started) / LOG_EVERY + 2
    # the rest: one line for each legitimate client that closed its connection
    assert [line for line in new_lines if " INFO: " not in line] == [
        line for line in new_lines if "turned away" in line]
    assert len(new_lines) <= lines + legit.fresh + 10
    assert "Traceback" not in text and "internal error" not in text
    if cluster.env.get("PYMPEC_MAX_UNAUTHENTICATED"):
        assert any(why.startswith("accept() paused") for why in reasons), reasons
        assert reasons["dropped while out of files"] > 0, reasons
    else:
        assert reasons["over PYMPEC_MAX_UNAUTHENTICATED"] > 0, reasons
