"""Fixtures and helpers of the batch-system tests (``tests/batch/``).

Tests that need a scheduler use :func:`needs`, which skips them with the reason the scheduler cannot
take jobs here (commands missing, daemon not answering). Every test job gets a unique short name
(:func:`job_name`), and the :func:`batch_env` fixture cancels, at teardown, any job of the names it
handed out that is still queued: only jobs these tests submitted are ever cancelled. Batch settings
from the user's environment are removed for every test here.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from pympec.cluster.batch import schedulers

from conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
JOB_WAIT = 60.0   # bound on any wait for a job to start or to go


def unavailable(name: str) -> str | None:
    """Why scheduler ``name`` cannot run test jobs here, or None."""
    return schedulers.get(name).unavailable()


def needs(name: str) -> pytest.MarkDecorator:
    reason = unavailable(name)
    return pytest.mark.skipif(reason is not None, reason=f"needs a running {name} ({reason}); "
                                                         f"start it with ../shared/schedulers/{name}.sh setup")


def job_name() -> str:
    # SGE's qstat shows 10 characters of a name: keep it short and unique.
    return "pt" + secrets.token_hex(3)


def queued_ids(scheduler: str, name: str) -> list[str]:
    """Ids of the jobs called ``name`` that the scheduler still lists (queued, running or ending)."""
    if scheduler in ("slurm", "pbs-via-slurm"):
        out = schedulers.run(["squeue", "-h", "-n", name, "-o", "%i"], check=False).stdout
        return out.split()
    out = schedulers.run(["qstat"], check=False).stdout
    return [cols[0] for cols in (line.split() for line in out.splitlines())
            if len(cols) > 2 and cols[2] == name]


def wait_gone(scheduler: str, name: str, timeout: float = JOB_WAIT) -> None:
    """Wait (bounded) until no job called ``name`` is listed; fails naming the ids still listed."""
    wait_for(lambda: not queued_ids(scheduler, name),
             lambda: f"{scheduler} to drop job {name} (still lists {queued_ids(scheduler, name)})",
             timeout=timeout, interval=0.5)


class BatchEnv:
    """A private pympec directory plus the names of the jobs a test submits."""

    def __init__(self, root: Path, pympec_dir: Path) -> None:
        self.root = root
        self.dir = pympec_dir
        self.names: list[tuple[str, str]] = []
        self.ids: list[tuple[str, str]] = []
        self.env = dict(os.environ, PYMPEC_DIR=str(self.dir), PYTHONUNBUFFERED="1")

    def name(self, scheduler: str) -> str:
        name = job_name()
        self.names.append((scheduler, name))
        return name

    def track(self, scheduler: str, job_id: str) -> str:
        """Remember a job submitted by id (not through a name of ours), to cancel it at teardown."""
        self.ids.append((scheduler, job_id))
        return job_id

    def cli(self, *args: str, timeout: float = 120.0, **kw) -> subprocess.CompletedProcess:
        """Run ``python -m pympec.cluster.cli ARGS`` with this environment; bounded by ``timeout``."""
        return subprocess.run([sys.executable, "-m", "pympec.cluster.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, cwd=self.root, **kw)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pympec.cluster.cli", *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=self.root)

    def cleanup(self) -> None:
        leftover = [(s, job_id) for s, name in self.names for job_id in queued_ids(s, name)]
        for scheduler, job_id in leftover + self.ids:
            cancel = ["scancel"] if scheduler in ("slurm", "pbs-via-slurm") else ["qdel"]
            subprocess.run(cancel + [job_id], capture_output=True, timeout=30)


@pytest.fixture(autouse=True)
def no_batch_settings_from_the_environment(monkeypatch):
    """Site settings (``PYMPEC_SLURM__QUEUE``...) come only from what a test sets itself."""
    for name in list(os.environ):
        if name.startswith(("PYMPEC_SLURM__", "PYMPEC_SGE__", "PYMPEC_PBS__", "PYMPEC_BATCH__")):
            monkeypatch.delenv(name)


@pytest.fixture
def batch_env(tmp_path, pympec_dir):
    """A BatchEnv in ``tmp_path``, with the test's own pympec directory; at teardown, cancels the
    jobs of its names still queued."""
    env = BatchEnv(tmp_path, pympec_dir)
    yield env
    env.cleanup()


def roundtrip(connection_file: str | os.PathLike, engines: int = 2, **client_kw) -> None:
    """Connect to a cluster and check execute, scatter and gather on all its engines."""
    from pympec import client
    mec = client.MultiEngineClient(str(connection_file), timeout=30, **client_kw)
    try:
        assert mec.get_ids() == list(range(engines))
        mec.execute("x = 1")
        assert mec.pull("x") == [1] * engines
        mec.scatter("a", list(range(10)))
        assert mec.gather("a") == list(range(10))
    finally:
        mec.close()
