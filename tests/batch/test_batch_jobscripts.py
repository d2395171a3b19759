"""The ready-made scripts in ``jobscripts/`` run as submitted, against the real Slurm and SGE.

Each script is copied unchanged and submitted with ``sbatch`` or ``qsub``; the settings their
headers document as overridable from the environment (``PYTHON``, ``PYMPEC_CONNECTION_FILE``) come
from the submitting environment, which the scripts export to the job (``--export=ALL``, ``-V``).
The PBS scripts run through Slurm's ``#PBS`` compatibility (``sbatch`` on a script with only
``#PBS`` lines): that shows their directives parse and their launch works, not that they are right
for a real PBS server (tests named ``*pbs_via_slurm``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from pympec import connection
from pympec.cluster.batch import schedulers
from pympec.cluster.batch.address import facing
from pympec.cluster.batch.launch import controller_answers

from conftest import wait_for

from .conftest import REPO, needs, roundtrip

pytestmark = pytest.mark.timeout(150)
SUBMIT = {"slurm": ["sbatch", "--parsable"], "sge": ["qsub", "-terse"], "pbs": ["sbatch", "--parsable"]}
RUNS_ON = {"slurm": "slurm", "sge": "sge", "pbs": "slurm"}   # PBS scripts: through Slurm's #PBS support
CASES = [pytest.param(s, id=s if s != "pbs" else "pbs_via_slurm", marks=needs(RUNS_ON[s]))
         for s in ("slurm", "sge", "pbs")]


def submit(env, scheduler: str, mode: str) -> tuple[str, schedulers.Scheduler]:
    """Copy ``jobscripts/<scheduler>-<mode>.sh`` (and the example client) and submit it unchanged."""
    script = f"{scheduler}-{mode}.sh"
    for name in (script, "example_client.py"):
        shutil.copy(REPO / "jobscripts" / name, env.root / name)
    proc = subprocess.run(SUBMIT[scheduler] + [script], cwd=env.root, env=env.env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0].split(".")[0]
    return env.track(RUNS_ON[scheduler], job_id), schedulers.get(RUNS_ON[scheduler])


def output_of(env, scheduler: str, job_id: str, mode: str) -> str:
    """The job's output, once its file exists (10 s at most), or a note that it does not."""
    name = {"slurm": f"pympec-injob-{job_id}.out", "sge": f"pympec-injob.o{job_id}",
            "pbs": "pympec-injob.out"}[scheduler]
    if mode == "login":
        name = name.replace("pympec-injob", "pympec")
    path = env.root / name
    try:
        wait_for(path.exists, f"the job's output {path}", timeout=10, interval=0.2)
    except AssertionError:
        return f"(no {path})"
    return path.read_text()


def state(env, scheduler: str, job_id: str, mode: str) -> str:
    """The job's state and output, for failure messages."""
    status = schedulers.get(RUNS_ON[scheduler]).status(job_id)
    return f"{status.describe()}\n{output_of(env, scheduler, job_id, mode)}"


def ended(sched: schedulers.Scheduler, job_id: str) -> schedulers.JobStatus | None:
    """The job's status once the scheduler no longer runs it, else None."""
    status = sched.status(job_id)
    return None if status.active else status


@pytest.mark.parametrize("scheduler", CASES)
def test_injob_script(batch_env, scheduler):
    batch_env.env["PYTHON"] = sys.executable
    job_id, sched = submit(batch_env, scheduler, "injob")
    status = wait_for(lambda: ended(sched, job_id),
                      lambda: f"job {job_id} to end: " + state(batch_env, scheduler, job_id, "injob"),
                      timeout=90, interval=0.5)
    out = output_of(batch_env, scheduler, job_id, "injob")
    assert status.phase == "finished", f"{status.describe()}\n{out}"
    assert status.exit_code in (None, 0), out
    assert "engines: [0, 1]" in out and "squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in out, out
    assert not list(batch_env.root.glob("pympec-*.json"))     # the script removed its connection file


@pytest.mark.parametrize("scheduler", CASES)
def test_login_node_script(batch_env, scheduler):
    conn = batch_env.root / "login.json"
    batch_env.env.update(PYTHON=sys.executable, PYMPEC_CONNECTION_FILE=str(conn))
    job_id, sched = submit(batch_env, scheduler, "login")

    def up() -> bool:
        assert sched.status(job_id).active, state(batch_env, scheduler, job_id, "login")
        return conn.exists() and controller_answers(str(conn), 5)
    wait_for(up, lambda: "the job's controller to answer: " + state(batch_env, scheduler, job_id, "login"),
             timeout=60, interval=0.5)
    info = connection.load(conn)
    assert info.address == facing(os.uname().nodename) and info.address != "0.0.0.0"
    assert info.end_time and 0 < info.end_time - time.time() <= 3600    # from the scheduler
    roundtrip(conn)
    sched.cancel(job_id)
    wait_for(lambda: ended(sched, job_id), f"cancelled job {job_id} to end", timeout=30, interval=0.5)
