"""``python -m pympec.cluster.batch.endtime``: print when the scheduler will kill the current job.

Job scripts run it to set ``PYMPEC_END_TIME`` (unix seconds), which the controller reports to clients
so they warn before the walltime runs out. It finds the job from the scheduler's environment
(``SLURM_JOB_ID``, SGE's ``JOB_ID`` with ``SGE_ROOT``, ``PBS_JOBID``) and asks that scheduler. It prints
nothing, and still exits 0, outside a job, without a time limit, or when the scheduler does not
answer: a missing end time must never stop a cluster from starting.
"""
from __future__ import annotations

import os
import sys

from .schedulers import SchedulerError, get


def current_job() -> tuple[str, str] | None:
    """(scheduler name, job id) of the batch job this process runs in, or None."""
    if os.environ.get("SLURM_JOB_ID"):
        return "slurm", os.environ["SLURM_JOB_ID"]
    if os.environ.get("PBS_JOBID"):
        return "pbs", os.environ["PBS_JOBID"]
    if os.environ.get("JOB_ID") and os.environ.get("SGE_ROOT"):
        return "sge", os.environ["JOB_ID"]
    return None


def end_time() -> float | None:
    """The current job's end time (unix seconds), or None when unknown; never raises."""
    job = current_job()
    if job is None:
        return None
    try:
        return get(job[0]).end_time(job[1])
    except (SchedulerError, OSError, ValueError):
        return None


def main() -> int:
    end = end_time()
    if end is not None:
        print(f"{end:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
