"""``pympec logs`` on a real cluster, and the clean-up of old clusters' log files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from pympec import client
from pympec.cluster import logs

from conftest import wait_for

PYMPEC = [sys.executable, "-m", "pympec.cluster.cli"]


def run(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*PYMPEC, *args], capture_output=True, text=True, timeout=timeout, **kw)


def headers(text: str) -> list[str]:
    """The file names of the ``==> path <==`` headers in ``pympec logs`` output."""
    return [os.path.basename(line[4:-4]) for line in text.splitlines() if line.startswith("==> ")]


def test_logs_show_and_follow(pympec_dir):
    assert run("cluster", "start", "-n", "2", "--daemon", "--profile", "logs").returncode == 0
    follower = None
    try:
        cid = json.loads((pympec_dir / "security" / "cluster-logs.json").read_text())["cluster_id"]
        shown = run("logs", "--profile", "logs")
        assert shown.returncode == 0, shown.stderr
        assert headers(shown.stdout) == [f"pympec-{cid}-rank{r}.log" for r in range(3)] + \
            [f"pympec-{cid}-mpiexec.log"]
        assert f"pympec: cluster {cid} at 127.0.0.1:" in shown.stdout   # the banner, in mpiexec's
        one = run("logs", "--profile", "logs", "--rank", "1")
        assert headers(one.stdout) == [f"pympec-{cid}-rank1.log"]

        follower = subprocess.Popen([*PYMPEC, "logs", "--profile", "logs", "--rank", "0", "-f"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with client.MultiEngineClient("logs") as mec:   # the controller logs the connection
            mec.get_ids()
        assert run("cluster", "stop", "--profile", "logs").returncode == 0
        out, _ = follower.communicate(timeout=30)      # following ends when the cluster stops
        assert follower.returncode == 0, out
        assert "closing connection from" in out and "controller stopped" in out, out
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
        run("cluster", "stop", "--profile", "logs")


def make(path, age_days: float) -> None:
    path.write_text("a log line\n")
    then = time.time() - age_days * 86400
    os.utime(path, (then, then))


def test_old_clusters_logs_are_cleaned_up(pympec_dir, monkeypatch):
    """The newest PYMPEC_LOG_KEEP groups stay; of the older, those a connection file names or a
    process holds open stay too; everything else of theirs goes, other files are left alone."""
    log = pympec_dir / "log"
    security = pympec_dir / "security"
    log.mkdir(parents=True)
    security.mkdir(parents=True)
    for age, cid in enumerate(["aa01", "aa02", "aa03", "aa04", "aa05"], start=1):
        for rank in range(2):
            make(log / f"pympec-{cid}-rank{rank}.log", age)
        make(log / f"pympec-{cid}-mpiexec.log", age)
    make(log / "batch-pympec.4242.out", 6)
    make(log / "batch-pympec.4242.slurm.sh", 6)
    make(log / "mpiexec-20200101-000000-1.log", 7)           # a start that failed
    make(log / "hosts-default.txt", 8)                       # not a log: never touched
    (security / "cluster-old.json").write_text(json.dumps({"cluster_id": "aa04"}))
    held = open(log / "pympec-aa05-rank0.log", "a")          # as a running rank holds its log
    try:
        monkeypatch.setenv("PYMPEC_LOG_KEEP", "2")
        deleted = sorted(p.name for p in logs.clean())
    finally:
        held.close()
    assert deleted == sorted([f"pympec-aa03-{f}.log" for f in ("rank0", "rank1", "mpiexec")] +
                             ["batch-pympec.4242.out", "batch-pympec.4242.slurm.sh",
                              "mpiexec-20200101-000000-1.log"])
    left = sorted(p.name for p in log.iterdir())
    assert left == sorted([f"pympec-{cid}-{f}.log" for cid in ("aa01", "aa02", "aa04", "aa05")
                           for f in ("rank0", "rank1", "mpiexec")] + ["hosts-default.txt"])

    # A real start cleans up too: with one group kept, only what may still run stays besides it.
    (security / "cluster-old.json").unlink()
    env = dict(os.environ, PYMPEC_LOG_KEEP="1")
    assert run("cluster", "start", "-n", "1", "--daemon", env=env).returncode == 0
    try:
        cid = json.loads((security / "cluster-default.json").read_text())["cluster_id"]
        wait_for(lambda: (log / f"pympec-{cid}-mpiexec.log").exists(), "the mpiexec log's new name")
        groups = {logs.group_of(p) for p in log.iterdir()} - {None}
        assert groups == {cid, "aa01"}, groups      # aa01 was the newest group at the start
    finally:
        assert run("cluster", "stop").returncode == 0
