"""Submit, poll and cancel batch jobs: one small class per scheduler, all with the same methods.

Each command runs with a timeout (:func:`run`), so a hung scheduler daemon is an error, not a hang.
A job's state is reduced to a :class:`JobStatus` phase:

    queued    waiting to start (Slurm PENDING, SGE qw/hqw, PBS Q/H/W)
    running   started (RUNNING, r/t, R/E)
    ending    being killed or cleaned up, still holding its nodes (Slurm COMPLETING, SGE dr)
    finished  left the queue, having ended well
    failed    a state that will not start or did not end well (FAILED/CANCELLED/TIMEOUT..., SGE E*,
              Slurm PENDING for a reason that never clears, such as PartitionConfig)

A job that has left the queue (``JobStatus.left``) carries the scheduler's final word: Slurm's
from ``scontrol`` (which keeps ended jobs for MinJobAge, 10 minutes by default), then from
``sacct`` where accounting is configured; SGE's from ``qacct`` (about 15 s after the end); PBS's
from ``qstat -x``.

Pitfalls respected (see the schedulers README): SGE's ``Eqw`` never runs, so it is a failure; ``qsub
-w e`` rejects a job that can never be scheduled; Slurm's ``squeue`` forgets finished jobs, so the
state comes from ``scontrol show job -o``.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import datetime
from dataclasses import dataclass
from pathlib import Path

COMMAND_TIMEOUT = 30.0


class SchedulerError(RuntimeError):
    """A scheduler command failed or timed out; the message holds the command and its stderr."""


@dataclass
class JobStatus:
    job_id: str
    phase: str          # queued, running, ending, finished, failed
    state: str          # the scheduler's own word (PENDING, qw, Eqw, R, ...)
    reason: str = ""    # why it waits or failed, when the scheduler says
    exit_code: int | None = None
    left: bool = False  # it has left the queue for good: this is the scheduler's final word

    @property
    def active(self) -> bool:
        """Queued or running: it still holds (or will hold) nodes."""
        return self.phase in ("queued", "running", "ending")

    def describe(self) -> str:
        text = self.state + (f" ({self.reason})" if self.reason else "")
        return text + (f", exit code {self.exit_code}" if self.exit_code not in (None, 0) else "")


def run(cmd: list[str], cwd: str | Path | None = None, timeout: float = COMMAND_TIMEOUT,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run a scheduler command and capture its output; blocks at most ``timeout`` seconds.

    Raises SchedulerError when it is missing, times out, or (with ``check``) exits non-zero.
    """
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SchedulerError(f"{cmd[0]} not found: is this a login node of the batch system?") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"`{' '.join(cmd)}` did not answer in {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise SchedulerError(f"`{' '.join(cmd)}` failed (exit code {proc.returncode}): {detail}")
    return proc


class Scheduler:
    """The operations pympec needs from a batch system."""

    name = ""
    commands: tuple[str, ...] = ()

    def unavailable(self) -> str | None:
        """None when this scheduler can take jobs here, else the reason it cannot."""
        missing = [c for c in self.commands if shutil.which(c) is None]
        if missing:
            return f"{self.name}: {', '.join(missing)} not found on PATH"
        try:
            return self.ping()
        except SchedulerError as e:
            return f"{self.name}: {e}"

    def ping(self) -> str | None:
        """None when the scheduler's daemon answers, else why not."""
        raise NotImplementedError

    def submit(self, script: Path, workdir: str | Path) -> str:
        """Submit ``script`` from ``workdir``; returns the job id. Raises SchedulerError."""
        raise NotImplementedError

    def status(self, job_id: str) -> JobStatus:
        """The job's current state. Raises SchedulerError when the scheduler does not answer."""
        raise NotImplementedError

    def cancel(self, job_id: str) -> None:
        """Ask the scheduler to kill the job; returns at once (poll :meth:`status` to see it go)."""
        raise NotImplementedError

    def end_time(self, job_id: str) -> float | None:
        """When the scheduler will kill the (running) job, as a unix time; None if it has no limit.

        Raises SchedulerError when the scheduler does not answer.
        """
        raise NotImplementedError


def clock_seconds(text: str) -> int | None:
    """Seconds in ``[D-]HH:MM:SS`` or a plain number of seconds; None for anything else."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", text.strip())
    if m:
        d, h, mi, sec = (int(g or 0) for g in m.groups())
        return ((d * 24 + h) * 60 + mi) * 60 + sec
    return int(text) if text.strip().isdigit() else None


def key_values(text: str) -> dict[str, str]:
    """``Key=Value`` pairs of one ``scontrol -o`` line (values have no spaces in the keys we read)."""
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", text))


class Slurm(Scheduler):
    name = "slurm"
    commands = ("sbatch", "scontrol", "scancel")
    QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
              "SUSPENDED", "STOPPED", "SIGNALING"}
    RUNNING = {"RUNNING", "STAGE_OUT"}
    ENDING = {"COMPLETING"}
    # Pending reasons that never clear by waiting: the job asks for more than the partition, account
    # or QOS allows. Slurm keeps such jobs pending forever instead of rejecting them.
    NEVER = {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
             "InvalidAccount", "InvalidQOS", "AccountNotAllowed", "QOSMaxCpuPerJobLimit",
             "QOSMaxNodePerJobLimit", "QOSMaxWallDurationPerJobLimit", "DependencyNeverSatisfied"}

    def ping(self) -> str | None:
        proc = run(["scontrol", "ping"], timeout=10, check=False)
        return None if proc.returncode == 0 and "UP" in proc.stdout else \
            f"slurm: slurmctld does not answer: {(proc.stdout + proc.stderr).strip()}"

    def submit(self, script: Path, workdir: str | Path) -> str:
        out = run(["sbatch", "--parsable", str(script)], cwd=workdir).stdout.strip()
        return out.split(";")[0]

    def status(self, job_id: str) -> JobStatus:
        proc = run(["scontrol", "show", "job", "-o", job_id], check=False)
        if proc.returncode != 0:
            if "Invalid job id" in proc.stderr:
                # scontrol keeps finished jobs for MinJobAge; after that, only sacct knows them.
                return self.accounted(job_id)
            raise SchedulerError(f"`scontrol show job {job_id}` failed: {proc.stderr.strip()}")
        fields = key_values(proc.stdout)
        state = fields.get("JobState", "UNKNOWN")
        reason = fields.get("Reason", "")
        reason = "" if reason == "None" else reason
        exit_code = None
        if "ExitCode" in fields:
            exit_code = int(fields["ExitCode"].split(":")[0] or 0)
        if state == "PENDING" and reason in self.NEVER:
            return JobStatus(job_id, "failed", state, f"{reason}: it can never start as asked")
        if state in self.QUEUED:
            return JobStatus(job_id, "queued", state, reason)
        if state in self.RUNNING:
            return JobStatus(job_id, "running", state, reason)
        if state in self.ENDING:
            return JobStatus(job_id, "ending", state, reason)
        return self.final(job_id, state, reason, exit_code)

    def final(self, job_id: str, state: str, reason: str, exit_code: int | None) -> JobStatus:
        """The status of a job that has ended in ``state`` (COMPLETED, TIMEOUT, ...)."""
        if state == "TIMEOUT":
            reason = "its walltime ran out"
        phase = "finished" if state == "COMPLETED" else "failed"
        return JobStatus(job_id, phase, state, reason, exit_code, left=True)

    def accounted(self, job_id: str) -> JobStatus:
        """The final state of a job slurmctld has forgotten, from ``sacct``; GONE when sacct has
        no record of it (accounting is off here, or keeps no jobs this old)."""
        try:
            proc = run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode"],
                       check=False)
            lines = proc.stdout.split() if proc.returncode == 0 else []
            why = (proc.stderr or proc.stdout).strip() or "no record"
        except SchedulerError as e:   # no sacct here
            lines, why = [], str(e)
        if not lines:
            return JobStatus(job_id, "finished", "GONE", f"no longer known to slurmctld, and "
                             f"sacct has no record of it: {why}", left=True)
        state, _, code = lines[-1].partition("|")
        return self.final(job_id, state, "", int(code.split(":")[0] or 0))

    def cancel(self, job_id: str) -> None:
        run(["scancel", job_id])

    def end_time(self, job_id: str) -> float | None:
        end = key_values(run(["scontrol", "show", "job", "-o", job_id]).stdout).get("EndTime", "")
        try:  # local time, as scontrol prints it; "Unknown" without a limit
            return time.mktime(datetime.strptime(end, "%Y-%m-%dT%H:%M:%S").timetuple())
        except ValueError:
            return None


class SGE(Scheduler):
    name = "sge"
    commands = ("qsub", "qstat", "qdel")

    def ping(self) -> str | None:
        proc = run(["qstat"], timeout=10, check=False)
        if proc.returncode != 0:
            return f"sge: qstat fails: {(proc.stderr or proc.stdout).strip()}"
        if "pbs" in run(["qstat", "-help"], timeout=10, check=False).stdout.lower():
            return "sge: the qstat on PATH is not Grid Engine's"
        return None

    def submit(self, script: Path, workdir: str | Path) -> str:
        # -w e: reject at once a job that can never be scheduled, instead of letting it wait forever.
        out = run(["qsub", "-terse", "-w", "e", str(script)], cwd=workdir).stdout.strip()
        return out.split(".")[0]

    def status(self, job_id: str) -> JobStatus:
        listing = run(["qstat"]).stdout
        for line in listing.splitlines():
            cols = line.split()
            if cols and cols[0] == job_id and len(cols) >= 5:
                return self.classify(job_id, cols[4])
        # Not listed: finished, unless `qstat -j` still knows it (between states).
        proc = run(["qstat", "-j", job_id], check=False)
        if proc.returncode != 0:
            return self.accounted(job_id)
        return JobStatus(job_id, "queued", "?", "")

    def accounted(self, job_id: str) -> JobStatus:
        """The final state of a job that has left the queue, from ``qacct -j``: TIMEOUT (h_rt),
        CANCELLED (killed: qdel or a signal), FAILED (with the exit code) or DONE; GONE while
        qacct has no record yet (SGE writes it about 15 s after the end)."""
        try:
            text = run(["qacct", "-j", job_id], check=False).stdout
        except SchedulerError as e:   # no qacct here
            text = str(e)
        record = text.split("=" * 20)[-1]   # the last, if the id was used before
        fields = dict(line.split(None, 1) for line in record.splitlines() if len(line.split()) > 1)
        if "exit_status" not in fields:
            return JobStatus(job_id, "finished", "GONE", "left the queue; qacct has no record of it "
                             "yet (SGE writes it about 15 s after the end)", left=True)
        code = int(fields["exit_status"].split()[0])
        failed = fields.get("failed", "0").strip()
        failed_no = failed.split()[0]
        if "h_rt" in failed:
            return JobStatus(job_id, "failed", "TIMEOUT", "its walltime (h_rt) ran out", code, True)
        if failed_no == "100" and code in (137, 143):
            return JobStatus(job_id, "failed", "CANCELLED", "killed: qdel, or a signal", code, True)
        if failed_no != "0" or code != 0:
            reason = failed.split(":", 1)[-1].strip() if failed_no != "0" else ""
            return JobStatus(job_id, "failed", "FAILED", reason, code, True)
        return JobStatus(job_id, "finished", "DONE", "", code, True)

    def classify(self, job_id: str, state: str) -> JobStatus:
        if "E" in state:
            return JobStatus(job_id, "failed", state, self.error_reason(job_id))
        if "d" in state:
            return JobStatus(job_id, "ending", state, "being deleted")
        if any(c in state for c in "rtR"):
            return JobStatus(job_id, "running", state)
        return JobStatus(job_id, "queued", state)

    def error_reason(self, job_id: str) -> str:
        """The ``error reason`` lines of ``qstat -j``: why a job sits in Eqw."""
        text = run(["qstat", "-j", job_id], check=False).stdout
        lines = [l.split(":", 1)[-1].strip() for l in text.splitlines() if l.startswith("error reason")]
        return "; ".join(lines) or "error state"

    def cancel(self, job_id: str) -> None:
        run(["qdel", job_id])

    def end_time(self, job_id: str) -> float | None:
        # qstat -j has the limit (h_rt, in seconds) but not the start; the job asks as it starts.
        text = run(["qstat", "-j", job_id]).stdout
        m = re.search(r"h_rt=([0-9:-]+)", text)
        seconds = clock_seconds(m.group(1)) if m else None
        return None if seconds is None else time.time() + seconds


class PBS(Scheduler):
    """PBS Pro, OpenPBS and Torque. No PBS server exists on the test machine: this class is written
    against the documented qsub/qstat/qdel behaviour and not exercised for real."""

    name = "pbs"
    commands = ("qsub", "qstat", "qdel")

    def ping(self) -> str | None:
        proc = run(["qstat", "--version"], timeout=10, check=False)
        text = (proc.stdout + proc.stderr).lower()
        if "pbs" not in text and "torque" not in text and "version:" not in text:
            return "pbs: the qsub/qstat on PATH are not PBS's (Grid Engine's?); use --scheduler sge"
        return None

    def submit(self, script: Path, workdir: str | Path) -> str:
        return run(["qsub", str(script)], cwd=workdir).stdout.strip()

    def status(self, job_id: str) -> JobStatus:
        # -x: PBS Pro also shows finished jobs; Torque does not know -x, so retry without it.
        proc = run(["qstat", "-x", "-f", job_id], check=False)
        if proc.returncode != 0 and "Unknown Job" not in proc.stderr:
            proc = run(["qstat", "-f", job_id], check=False)
        if proc.returncode != 0:
            if "Unknown Job" in proc.stderr or "not found" in proc.stderr.lower():
                return JobStatus(job_id, "finished", "GONE", "left the queue", left=True)
            raise SchedulerError(f"`qstat -f {job_id}` failed: {proc.stderr.strip()}")
        fields = dict(re.findall(r"^\s*(\w+) = (.*)$", proc.stdout, re.M))
        state = fields.get("job_state", "?")
        exit_code = int(fields["exit_status"]) if fields.get("exit_status", "").lstrip("-").isdigit() else None
        if state in ("Q", "H", "W", "T", "S", "U"):
            phase = "queued"
        elif state in ("R", "B"):
            phase = "running"
        elif state == "E":
            phase = "ending"
        else:  # F (PBS Pro finished), C (Torque completed)
            phase = "finished" if not exit_code else "failed"
        return JobStatus(job_id, phase, state, fields.get("comment", ""), exit_code,
                         left=phase in ("finished", "failed"))

    def cancel(self, job_id: str) -> None:
        run(["qdel", job_id])

    def end_time(self, job_id: str) -> float | None:
        text = run(["qstat", "-f", job_id]).stdout
        m = re.search(r"Resource_List.walltime = (\S+)", text)
        seconds = clock_seconds(m.group(1)) if m else None
        return None if seconds is None else time.time() + seconds


SCHEDULERS: dict[str, type[Scheduler]] = {"slurm": Slurm, "sge": SGE, "pbs": PBS}


def get(name: str) -> Scheduler:
    """The scheduler called ``name`` (pbs, sge, slurm). Raises ValueError for another name."""
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; use one of {', '.join(sorted(SCHEDULERS))}") from None
