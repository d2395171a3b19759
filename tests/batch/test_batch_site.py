"""What an HPC site needs, against the real Slurm and SGE here: srun as the launcher, a site
prologue, and the scheduler's final word on a job that has ended (cancelled by hand, or killed at
its walltime: TIMEOUT). Each test skips, saying why, where its scheduler is not running.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pympec import client, connection
from pympec.cluster import mpi
from pympec.cluster.batch import schedulers
from pympec.errors import ClusterError

from conftest import wait_for

from .conftest import needs, roundtrip, wait_gone
from .test_batch_schedulers import MPIEXEC, SCHEDULERS, start_args

pytestmark = pytest.mark.timeout(150)
KIND = mpi.kind(MPIEXEC)


def record_of(env) -> dict:
    return json.loads((env.dir / "security" / "cluster-default.job.json").read_text())


@needs("slurm")
def test_srun_launcher(batch_env):
    """--launcher srun: the job script runs `srun --mpi=<PMI>` with the PMI this MPI speaks, as
    `srun --mpi=list` offers it; the cluster comes up and serves."""
    proc = batch_env.cli(*start_args(batch_env, "slurm", "--daemon", "--launcher", "srun"))
    script = proc.stderr.split("; script ")[1].split(",")[0]   # kept, whatever happened
    pmi = {"mpich": "pmi2", "openmpi": "pmix"}[KIND]
    assert f"exec srun --mpi={pmi} " in open(script).read()
    if KIND == "openmpi" and proc.returncode != 0:
        # Open MPI 5 speaks only PMIx, which this Slurm's pmix plugin cannot load without the
        # PMIx library: the failure must say so in srun's own words.
        assert "pmix" in proc.stderr.lower() and "last lines of" in proc.stderr, proc.stderr
        wait_gone("slurm", batch_env.names[-1][1], 10)
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        roundtrip(connection.resolve(None))
    finally:
        assert batch_env.cli("cluster", "stop").returncode == 0


@needs("slurm")
def test_srun_without_pmi_says_why(tmp_path):
    """srun with no PMI starts each task as an MPI job of one rank: rank 0 of task 0 says so,
    once, naming srun --mpi=pmi2."""
    proc = subprocess.run(["srun", "--mpi=none", "-n", "3", "--time=1", sys.executable, "-m",
                           "pympec.engine", "--connection-file", str(tmp_path / "c.json")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.count("a cluster needs at least 2 ranks") == 1, proc.stderr
    assert "srun started 3 tasks, each a single-rank MPI job" in proc.stderr
    assert "srun --mpi=pmi2" in proc.stderr


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_site_prologue(batch_env, scheduler):
    """Prologue lines from the site config (here PYMPEC_<SCHEDULER>__PROLOGUE) run in the job
    before the launch: an export the engines then see, under either MPI, and an echo."""
    batch_env.env[f"PYMPEC_{scheduler.upper()}__PROLOGUE"] = \
        "echo prologue-ran-$((6 * 7))\nexport PYMPEC_TEST_MARK=from-prologue"
    shown = batch_env.cli("jobscript", "--scheduler", scheduler)
    assert "echo prologue-ran-$((6 * 7))\nexport PYMPEC_TEST_MARK=from-prologue\n" in shown.stdout
    proc = batch_env.cli(*start_args(batch_env, scheduler, "--daemon"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        with client.MultiEngineClient(str(connection.resolve(None)), timeout=30) as mec:
            mec.execute("import os; mark = os.environ.get('PYMPEC_TEST_MARK')")
            assert mec.pull("mark") == ["from-prologue"] * 2
        output = record_of(batch_env)["output"]
        wait_for(lambda: "prologue-ran-42" in open(output).read(), f"the prologue's echo in {output}")
    finally:
        assert batch_env.cli("cluster", "stop").returncode == 0


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_final_state_of_a_job_cancelled_by_hand(batch_env, scheduler):
    """A job cancelled behind pympec's back (scancel/qdel): `cluster status` reports the
    scheduler's final state (SGE's from qacct, once it has it) and exits 1; `cluster stop` says
    the job had already ended, and cancels nothing."""
    proc = batch_env.cli(*start_args(batch_env, scheduler, "--daemon"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = record_of(batch_env)["job_id"]
    subprocess.run({"slurm": ["scancel"], "sge": ["qdel"]}[scheduler] + [job_id],
                   capture_output=True, timeout=30, check=True)
    wait_gone(scheduler, batch_env.names[-1][1], 30)

    def reported() -> str | None:
        status = batch_env.cli("cluster", "status")
        return status.stderr if status.returncode == 1 and "CANCELLED" in status.stderr else None
    said = wait_for(reported, "`cluster status` to report the job CANCELLED", timeout=60,
                    interval=1)
    assert f"{scheduler} job {job_id} has ended: CANCELLED" in said, said
    stop = batch_env.cli("cluster", "stop")
    assert stop.returncode == 0, stop.stderr
    assert f"job {job_id} had already ended (CANCELLED" in stop.stderr, stop.stderr
    assert "cancelled\n" not in stop.stderr
    assert not (batch_env.dir / "security" / "cluster-default.job.json").exists()


@pytest.mark.walltime_minute
@needs("slurm")
@pytest.mark.timeout(240)
def test_timeout_at_the_walltime(batch_env):
    """A job with a 1-minute walltime, killed by Slurm at its end (this takes the minute): the
    client's error says the walltime ended; `status` and `stop` report TIMEOUT."""
    proc = batch_env.cli(*start_args(batch_env, "slurm", "--daemon", "--walltime", "1m"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = record_of(batch_env)["job_id"]
    mec = client.MultiEngineClient(str(connection.resolve(None)), timeout=30)
    try:
        mec.execute("x = 1")
        slurm = schedulers.Slurm()
        wait_for(lambda: slurm.status(job_id).left, f"Slurm to end job {job_id} at its walltime",
                 timeout=180, interval=2)
        with pytest.raises(ClusterError, match="batch job reached its walltime at"):
            mec.execute("x = 2")
    finally:
        mec.close()
    status = batch_env.cli("cluster", "status")
    assert status.returncode == 1
    assert f"slurm job {job_id} has ended: TIMEOUT (its walltime ran out)" in status.stderr
    stop = batch_env.cli("cluster", "stop")
    assert stop.returncode == 0 and "had already ended (TIMEOUT" in stop.stderr, stop.stderr
