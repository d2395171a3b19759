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


def wait_phase(sched: schedulers.Scheduler, job_id: str, done, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        status = sched.status(job_id)
        if done(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def output_of(env, scheduler: str, job_id: str, mode: str) -> str:
    name = {"slurm": f"pympec-injob-{job_id}.out", "sge": f"pympec-injob.o{job_id}",
            "pbs": "pympec-injob.out"}[scheduler]
    if mode == "login":
        name = name.replace("pympec-injob", "pympec")
    path = env.root / name
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return path.read_text() if path.exists() else f"(no {path})"


@pytest.mark.parametrize("scheduler", CASES)
def test_injob_script(batch_env, scheduler):
    batch_env.env["PYTHON"] = sys.executable
    job_id, sched = submit(batch_env, scheduler, "injob")
    status = wait_phase(sched, job_id, lambda s: not s.active)
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
    deadline = time.monotonic() + 60
    while not (conn.exists() and controller_answers(str(conn), 5)):
        status = sched.status(job_id)
        assert status.active and time.monotonic() < deadline, \
            f"{status.describe()}\n{output_of(batch_env, scheduler, job_id, 'login')}"
        time.sleep(0.5)
    info = connection.load(conn)
    assert info.address == facing(os.uname().nodename) and info.address != "0.0.0.0"
    assert info.end_time and 0 < info.end_time - time.time() <= 3600    # from the scheduler
    roundtrip(conn)
    sched.cancel(job_id)
    assert not wait_phase(sched, job_id, lambda s: not s.active, 30).active
