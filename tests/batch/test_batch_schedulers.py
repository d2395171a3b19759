"""``pympec cluster start --scheduler slurm|sge`` against the real daemons on this machine.

Each test submits real jobs rendered from the shipped templates, with this Python and its venv's
mpiexec, into a private PYMPEC_DIR. They skip, saying why, when the scheduler is not running
(``../shared/schedulers/{slurm,sge}.sh setup`` starts them). Every test checks that no job of its
own is left behind; the ``batch_env`` fixture cancels any that is, and only those.

The PBS template is run through Slurm's ``#PBS`` compatibility (``sbatch`` on a script with only
``#PBS`` lines): that shows its directives parse and its MPI launch works, not that it is right for a
real PBS server, which this machine does not have. Those tests are named ``*_pbs_via_slurm``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pympec import connection
from pympec.cluster.batch import schedulers
from pympec.cluster.batch.launch import BatchJob
from pympec.cluster.batch.templates import JobSpec

from conftest import wait_for

from .conftest import needs, queued_ids, roundtrip, wait_gone

pytestmark = pytest.mark.timeout(150)

SCHEDULERS = [pytest.param("slurm", marks=needs("slurm")), pytest.param("sge", marks=needs("sge"))]
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
# A directive that keeps a job queued until released, for the Ctrl-C and queue-timeout tests.
HOLD = {"slurm": "--hold", "sge": "-h"}


def start_args(env, scheduler: str, *extra: str) -> list[str]:
    return ["cluster", "start", "--scheduler", scheduler, "-n", "2", "--job-name", env.name(scheduler),
            "--mpiexec", MPIEXEC, "--timeout", "60", "--queue-timeout", "60", *extra]


def read_until(proc: subprocess.Popen, text: str, timeout: float = 60.0) -> str:
    """The CLI's output up to the first line containing ``text``; fails (and kills the CLI) if
    the CLI exits first or after ``timeout`` s."""
    seen: list[str] = []
    os.set_blocking(proc.stdout.fileno(), False)

    def shown() -> bool:
        line = proc.stdout.readline()
        seen.append(line)
        assert line or proc.poll() is None, f"the CLI exited before {text!r}:\n{''.join(seen)}"
        return text in line
    try:
        wait_for(shown, lambda: f"{text!r} from the CLI; its output:\n{''.join(seen)}",
                 timeout=timeout, interval=0.1)
    except AssertionError:
        proc.kill()
        raise
    return "".join(seen)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_start_use_stop(batch_env, scheduler):
    proc = batch_env.cli(*start_args(batch_env, scheduler, "--daemon", "--walltime", "5m"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is up" in proc.stdout and "walltime ends in 5 min" in proc.stdout
    name = batch_env.names[-1][1]
    conn = connection.resolve(None)
    info = connection.load(conn)
    assert info.engines == 2 and info.address != "0.0.0.0"
    assert abs(info.end_time - (time.time() + 300)) < 30       # PYMPEC_END_TIME from the walltime
    record = json.loads(conn.with_name("cluster-default.job.json").read_text())
    assert record["scheduler"] == scheduler and queued_ids(scheduler, name) == [record["job_id"]]

    roundtrip(conn)
    status = batch_env.cli("cluster", "status")
    assert status.returncode == 0 and "job ends in 4m" in status.stdout, status.stdout + status.stderr

    stop = batch_env.cli("cluster", "stop")
    assert stop.returncode == 0 and "cancelled" in stop.stderr, stop.stderr
    wait_gone(scheduler, name, 10)
    assert not conn.exists() and not conn.with_name("cluster-default.job.json").exists()
    # Nothing recorded any more: a second stop is the local one, which finds no cluster.
    assert batch_env.cli("cluster", "stop").returncode == 1
    # The job's output and script are named with its id, and kept.
    job_id = record["job_id"]
    assert record["output"] == str(batch_env.dir / "log" / f"batch-{name}.{job_id}.out")
    assert record["script"] == str(batch_env.dir / "log" / f"batch-{name}.{job_id}.{scheduler}.sh")
    wait_for(lambda: os.path.exists(record["output"]), f"the job's output {record['output']}")
    assert f"job {job_id} on" in open(record["output"]).read()
    assert os.path.exists(record["script"])


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_bad_python_is_reported_with_output(batch_env, scheduler):
    proc = batch_env.cli(*start_args(batch_env, scheduler, "--python", "/nonexistent/bin/python"))
    assert proc.returncode == 1, proc.stderr
    assert f"{scheduler} job" in proc.stderr and "before the cluster answered" in proc.stderr
    assert "--- last lines of" in proc.stderr
    assert "/nonexistent/bin/python" in proc.stderr.split("--- last lines of")[-1], proc.stderr
    # the scheduler's final word (SGE's from qacct, which the CLI waits for)
    assert "FAILED" in proc.stderr and "exit code" in proc.stderr, proc.stderr
    wait_gone(scheduler, batch_env.names[-1][1], 10)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_impossible_job_fails_at_once(batch_env, scheduler):
    """More ranks than the machine has: SGE rejects it (qsub -w e); Slurm would keep it pending
    forever (PartitionConfig), so pympec reports it and cancels it instead of waiting."""
    proc = batch_env.cli(*start_args(batch_env, scheduler, "--daemon"), "-n", "40")
    assert proc.returncode == 1          # at once: the reason below, not the 60 s queue timeout
    assert {"slurm": "can never start as asked", "sge": "no suitable queues"}[scheduler] in proc.stderr, \
        proc.stderr
    wait_gone(scheduler, batch_env.names[-1][1], 10)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_ctrl_c_while_queued_cancels(batch_env, scheduler):
    proc = batch_env.popen(*start_args(batch_env, scheduler, f"--directive={HOLD[scheduler]}"))
    read_until(proc, "queued")
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out
    assert "cancelled" in out
    wait_gone(scheduler, batch_env.names[-1][1], 10)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_ctrl_c_when_up_cancels(batch_env, scheduler):
    proc = batch_env.popen(*start_args(batch_env, scheduler))
    read_until(proc, "Ctrl-C")
    assert queued_ids(scheduler, batch_env.names[-1][1])
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130 and "cancelled" in out, out
    wait_gone(scheduler, batch_env.names[-1][1], 10)
    assert not connection.resolve(None).exists()


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_queue_timeout_cancels(batch_env, scheduler):
    args = start_args(batch_env, scheduler, f"--directive={HOLD[scheduler]}")
    args[args.index("--queue-timeout") + 1] = "2"
    proc = batch_env.cli(*args)
    assert proc.returncode == 1 and "still queued after 2 s" in proc.stderr, proc.stderr
    wait_gone(scheduler, batch_env.names[-1][1], 10)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_second_start_on_same_profile_refused(batch_env, scheduler):
    first = batch_env.cli(*start_args(batch_env, scheduler, "--daemon"))
    assert first.returncode == 0, first.stderr
    second = batch_env.cli(*start_args(batch_env, scheduler, "--daemon"))
    assert second.returncode == 2 and "already runs a cluster" in second.stderr   # a user error
    assert batch_env.cli("cluster", "stop").returncode == 0
    wait_gone(scheduler, batch_env.names[0][1], 10)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_walltime_warning(batch_env, scheduler):
    """A 1-minute job: the connection file carries its end, and the client warns of it."""
    proc = batch_env.cli(*start_args(batch_env, scheduler, "--daemon", "--walltime", "1m"))
    assert proc.returncode == 0, proc.stderr
    # `cluster start` says it as one plain line, not as a Python warning with its source line
    warned = [line for line in proc.stderr.splitlines() if "reaches its walltime" in line]
    assert len(warned) == 1 and warned[0].startswith("pympec: warning: the cluster's batch job "
                                                     "reaches its walltime in "), proc.stderr
    assert "WalltimeWarning" not in proc.stderr and "warnings.warn" not in proc.stderr
    conn = connection.resolve(None)
    assert 30 < connection.load(conn).end_time - time.time() <= 60
    from pympec import client
    with pytest.warns(Warning, match=r"(?i)walltime|end|kill|left"):
        mec = client.MultiEngineClient(str(conn), timeout=30)
        mec.execute("x = 1")
    mec.close()
    assert batch_env.cli("cluster", "stop").returncode == 0


@needs("slurm")
def test_pbs_template_runs_pbs_via_slurm(batch_env):
    """The PBS template, submitted with sbatch: Slurm reads its #PBS directives (no #SBATCH lines)."""
    name = batch_env.name("pbs-via-slurm")
    spec = JobSpec("pbs", 2, job_name=name, walltime="00:07:00", python=sys.executable,
                   mpiexec=MPIEXEC, connection_file=str(batch_env.dir / "security" / "pbs.json"))
    job = BatchJob(spec, scheduler=schedulers.Slurm())
    job_id = job.submit()
    assert "#SBATCH" not in open(job.record.script).read()
    job.wait_until_up(timeout=60, queue_timeout=60)
    fields = schedulers.key_values(schedulers.run(["scontrol", "show", "job", "-o", job_id]).stdout)
    assert fields["JobName"] == name                   # #PBS -N
    assert fields["NumTasks"] == "3"                   # #PBS -l select=1:ncpus=3:mpiprocs=3
    assert fields["TimeLimit"] == "00:07:00"           # #PBS -l walltime=
    output = spec.output_of(job_id)                    # the script's own, named with the job id
    assert output == job.record.output and output.endswith(f".{job_id}.out")
    wait_for(lambda: os.path.exists(output) and "PBS job" in open(output).read(),
             f"the job's output in {output}")
    roundtrip(spec.connection_file)
    assert not job.cancel().active
    wait_gone("slurm", name, 10)


@needs("slurm")
def test_torque_style_pbs_via_slurm(batch_env):
    """Torque's nodes=N:ppn=P form, read by sbatch: the job gets the ranks it asks for."""
    name = batch_env.name("pbs-via-slurm")
    spec = JobSpec("pbs", 3, job_name=name, pbs_style="torque", python=sys.executable, mpiexec=MPIEXEC,
                   connection_file=str(batch_env.dir / "security" / "torque.json"))
    job = BatchJob(spec, scheduler=schedulers.Slurm())
    job_id = job.submit()
    job.wait_until_up(timeout=60, queue_timeout=60)
    fields = schedulers.key_values(schedulers.run(["scontrol", "show", "job", "-o", job_id]).stdout)
    assert fields["NumTasks"] == "4"                   # #PBS -l nodes=1:ppn=4
    roundtrip(spec.connection_file, engines=3)
    assert not job.cancel().active
