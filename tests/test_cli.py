"""The cluster command and the tutorial's first session, as a user types them."""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pympec import client
from pympec.cluster import mpi
from pympec.cluster.local import find_mpiexec, launch_record

from conftest import cpu_seconds, first_line, wait_for

PYMPEC = [sys.executable, "-m", "pympec.cluster.cli"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*PYMPEC, *args], capture_output=True, text=True, timeout=timeout)


def up_line(proc: subprocess.Popen) -> str:
    """The CLI's first line after its notes (Open MPI's oversubscription note, say)."""
    line = first_line(proc, "the cluster to come up", timeout=120)
    while line.startswith("pympec: note:"):
        line = first_line(proc, "the cluster to come up", timeout=120)
    return line


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def busy_while_idle(pids: list[int], window: float = 2.0, windows: int = 3) -> dict:
    """The processes that used 5% of a core or more in each of ``windows`` idle windows in a
    row, with their CPU seconds per window.  A rank that polls without sleeping is busy in
    every window; a shared host can charge a passing hiccup to any process (CI saw one idle
    rank charged 0.2 s in 2 s, once), which the next window clears."""
    busy = {p: [] for p in pids}
    for _ in range(windows):
        before = {p: cpu_seconds(p) for p in busy}
        time.sleep(window)                           # not a wait: the idle time being measured
        spent = {p: cpu_seconds(p) - before[p] for p in busy}
        busy = {p: used + [round(spent[p], 2)] for p, used in busy.items()
                if spent[p] >= 0.05 * window}
        if not busy:
            return {}
    return busy


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def test_tutorial_session(pympec_dir):
    """`ipcluster local -n 2`, then get_ids and execute of a print, then Ctrl-C."""
    default = pympec_dir / "security" / "cluster-default.json"
    foreground = subprocess.Popen([*PYMPEC, "cluster", "local", "-n", "2"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    record = None
    try:
        line = up_line(foreground)
        assert "cluster of 2 engines is up" in line, line
        record = json.loads(launch_record(default).read_text())
        mec = client.MultiEngineClient()
        assert mec.get_ids() == [0, 1]
        result = mec.execute('print("Hello world!")')
        assert repr(result) == (
            "<Results List>\n"
            '[0] In [1]: print("Hello world!")\n'
            "[0] Out[1]: Hello world!\n\n"
            '[1] In [1]: print("Hello world!")\n'
            "[1] Out[1]: Hello world!\n")
        mec.close()
    finally:
        foreground.send_signal(signal.SIGINT)       # Ctrl-C stops everything
        rest, _ = foreground.communicate(timeout=60)
        outlived = record is not None and alive(record["pid"])
        if outlived:                                 # never leave a cluster behind
            os.killpg(record["pid"], signal.SIGKILL)
    assert foreground.returncode == 0, rest
    assert "stopping the cluster" in rest
    assert not outlived
    assert not default.exists()


def test_daemon_status_stop(pympec_dir):
    start = run("cluster", "start", "-n", "2", "--daemon", "--profile", "cli")
    assert start.returncode == 0, start.stdout + start.stderr
    path = pympec_dir / "security" / "cluster-cli.json"
    record = json.loads(launch_record(path).read_text())
    try:
        again = run("cluster", "start", "-n", "2", "--daemon", "--profile", "cli")
        assert again.returncode != 0 and "already running" in again.stderr
        status = run("cluster", "status", "--profile", "cli")
        assert status.returncode == 0, status.stderr
        assert re.search(r"engine 0 \(pid \d+ on .+\): idle", status.stdout)
        assert re.search(r"engine 1 \(pid \d+ on .+\): idle", status.stdout)
        assert "127.0.0.1" in status.stdout and "up " in status.stdout
        assert "MB (PYMPEC_RESULT_CAP)" in status.stdout            # what it holds
        # one log file per rank
        cluster_id = json.loads(path.read_text())["cluster_id"]
        logs = sorted(p.name for p in (pympec_dir / "log").glob(f"pympec-{cluster_id}-rank*.log"))
        assert logs == [f"pympec-{cluster_id}-rank{r}.log" for r in range(3)]
        # idle ranks sleep: each uses under 5% of a core over two seconds
        ranks = [c for c in children(record["pid"])]
        ranks = [g for c in ranks for g in children(c)] or ranks
        busy = busy_while_idle(ranks)
        assert not busy, f"rank processes busy while idle (CPU s per window): {busy}"
    finally:
        stop = run("cluster", "stop", "--profile", "cli")
    assert stop.returncode == 0, stop.stderr
    assert not path.exists() and not alive(record["pid"])
    status = run("cluster", "status", "--profile", "cli")
    assert status.returncode == 1 and "pympec cluster start" in status.stderr


def test_stop_without_cluster(pympec_dir):
    stop = run("cluster", "stop", "--profile", "nothing")
    assert stop.returncode == 1 and "no cluster" in stop.stderr


def test_mpiexec_directly_with_fixed_port(pympec_dir, tmp_path):
    """`mpiexec -n 3 python -m pympec.engine --port P --connection-file F` is a cluster, and
    rank 0 says where it listens on its stderr (the banner of a hand-started cluster)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "direct.json"
    command, env = mpi.local_command(find_mpiexec(), 3)   # by hand, as a user would
    proc = subprocess.Popen([*command, sys.executable, "-m", "pympec.engine",
                             "--port", str(port), "--connection-file", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    try:
        banner = first_line(proc, "rank 0's banner", timeout=60, stream=proc.stderr)
        assert f"at 127.0.0.1:{port} with 2 engines; connection file {path}" in banner, banner
        info = json.loads(path.read_text())
        assert info["port"] == port and info["engines"] == 2
        assert f"cluster {info['cluster_id']} " in banner
        mec = client.MultiEngineClient(str(path))
        assert mec.get_ids() == [0, 1]
        mec.kill(controller=True)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_engine_needs_two_ranks(tmp_path):
    command, env = mpi.local_command(find_mpiexec(), 1)
    proc = subprocess.run([*command, sys.executable, "-m", "pympec.engine",
                           "--connection-file", str(tmp_path / "c.json")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode != 0 and "at least 2 ranks" in proc.stderr
    assert "single-rank job" in proc.stderr and "srun --mpi=pmi2" in proc.stderr, proc.stderr


def test_mpiexec_args_reach_local_mpiexec(pympec_dir):
    """--mpiexec-args goes on the local mpiexec's command line: here, a variable for the ranks
    in each MPI's own syntax, which the engines then see."""
    mark = ["-x", "PYMPEC_TEST_MARK=given"] if mpi.kind(find_mpiexec()) == "openmpi" else \
        ["-genv", "PYMPEC_TEST_MARK", "given"]
    start = run("cluster", "start", "-n", "2", "--daemon", "--profile", "args",
                f"--mpiexec-args={' '.join(mark)}")
    assert start.returncode == 0, start.stderr
    try:
        with client.MultiEngineClient("args") as mec:
            mec.execute("import os; mark = os.environ.get('PYMPEC_TEST_MARK')")
            assert mec.pull("mark") == ["given", "given"]
    finally:
        assert run("cluster", "stop", "--profile", "args").returncode == 0


def test_oversubscription_note(pympec_dir):
    """More ranks than cores: Open MPI needs --oversubscribe, which pympec passes, saying so in
    one line; MPICH needs nothing, and nothing is said."""
    engines = mpi.cores() + 1
    start = run("cluster", "start", "-n", str(engines), "--daemon", "--profile", "many")
    try:
        assert start.returncode == 0, start.stderr
        notes = [line for line in start.stderr.splitlines() if "oversubscribe" in line]
        if mpi.kind(find_mpiexec()) == "openmpi":
            assert notes == [f"pympec: note: {engines + 1} ranks on {mpi.cores()} cores: "
                             f"starting Open MPI with --oversubscribe"], start.stderr
        else:
            assert notes == [], start.stderr
    finally:
        run("cluster", "stop", "--profile", "many")


def test_kill_engines(private_cluster):
    mec = private_cluster.client()
    mec.kill(targets=1)
    assert mec.get_ids() == [0]
    assert mec.execute("x = 1") is not None          # 'all' is now engine 0 only
    with pytest.raises(client.InvalidEngineID):
        mec.execute("x = 1", targets=1)
    mec.scatter("a", [1, 2, 3])
    assert mec.gather("a") == [1, 2, 3]


def test_running_cluster_uses_or_starts_one(pympec_dir, tmp_path):
    import pympec
    with pytest.raises(FileNotFoundError):
        with pympec.running_cluster(tmp_path / "none.json"):
            pass
    with pympec.running_cluster(n=1) as path:          # none runs: starts one
        with client.MultiEngineClient(path) as mec:
            assert mec.get_ids() == [0]
        with pympec.running_cluster(n=3) as again:     # one runs: uses it
            assert again == path
    assert not path.exists()                           # and stops what it started


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_stops_a_foreground_cluster(pympec_dir, sig):
    """SIGTERM (kill, a scheduler), SIGHUP (the terminal closed) and SIGINT (Ctrl-C)."""
    default = pympec_dir / "security" / "cluster-default.json"
    foreground = subprocess.Popen([*PYMPEC, "cluster", "start", "-n", "1"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    record = None
    try:
        assert "is up" in up_line(foreground)
        record = json.loads(launch_record(default).read_text())
    finally:
        foreground.send_signal(sig)
        rest, _ = foreground.communicate(timeout=60)
        outlived = record is not None and alive(record["pid"])
        if outlived:                                 # never leave a cluster behind
            os.killpg(record["pid"], signal.SIGKILL)
    assert foreground.returncode == 0 and "stopping the cluster" in rest, rest
    assert not outlived                              # mpiexec did not outlive it
