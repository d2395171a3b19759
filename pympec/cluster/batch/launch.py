"""The life of one batch cluster: submit, wait until it answers, watch, cancel.

:class:`BatchJob` ties a rendered :class:`~.templates.JobSpec` to a :class:`~.schedulers.Scheduler`:

1. :meth:`BatchJob.submit` writes the job script next to the job's output file, removes a stale
   connection file (so an old cluster's file is never mistaken for the new one), submits, and records
   the job in ``<connection file stem>.job.json`` beside the connection file (:class:`JobRecord`),
   which is how ``pympec cluster stop`` finds it later.
2. :meth:`BatchJob.wait_until_up` polls the scheduler and the connection file until the controller
   answers. Every phase is bounded: ``queue_timeout`` while queued, ``timeout`` once running. A job
   that fails, finishes or times out first raises :class:`JobFailed` with the tail of its output; on
   a timeout the job is cancelled first, so no node-hours leak.
3. :meth:`BatchJob.cancel` (``scancel``/``qdel``) waits, bounded, until the job has left the queue,
   and removes the record and the connection file.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .. import logs
from . import schedulers as sched_mod
from .schedulers import JobStatus, Scheduler, SchedulerError
from .templates import JobSpec, render

POLL = 0.5            # seconds between scheduler polls: cheap commands, and a quick start matters
TAIL_LINES = 30


class JobFailed(RuntimeError):
    """The job did not bring a cluster up; the message says how it ended, with its output's tail."""


@dataclass
class JobRecord:
    """What ``pympec cluster stop`` needs to find a batch cluster's job, kept beside its connection file."""

    scheduler: str
    job_id: str
    connection_file: str
    output: str
    script: str
    submitted: float
    engines: int

    @staticmethod
    def path_for(connection_file: str | os.PathLike) -> Path:
        conn = Path(connection_file)
        return conn.with_name(conn.stem + ".job.json")

    def save(self) -> Path:
        path = self.path_for(self.connection_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, connection_file: str | os.PathLike) -> "JobRecord | None":
        """The record beside ``connection_file``, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads(cls.path_for(connection_file).read_text())
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remove(self) -> None:
        self.path_for(self.connection_file).unlink(missing_ok=True)


def tail(path: str | os.PathLike, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a file, or a note saying it does not exist (yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as e:
        return f"(no job output at {path}: {e.strerror})"
    return "\n".join(text.splitlines()[-lines:]) or f"(job output {path} is empty)"


def controller_answers(connection_file: str, timeout: float = 10.0) -> bool:
    """True when a controller answers at ``connection_file`` (connects, authenticates, lists engines)."""
    from ... import client   # the runtime; imported late so rendering works without it
    try:
        mec = client.MultiEngineClient(connection_file, timeout=timeout)
    except Exception:
        return False
    try:
        mec.get_ids()
        return True
    except Exception:
        return False
    finally:
        try:
            mec.close()
        except Exception:
            pass


class BatchJob:
    """One cluster as one batch job. Construct, then :meth:`submit` and :meth:`wait_until_up`."""

    def __init__(self, spec: JobSpec, scheduler: Scheduler | None = None,
                 record: JobRecord | None = None) -> None:
        self.spec = spec
        self.scheduler = scheduler or sched_mod.get(spec.scheduler)
        self.record = record

    @classmethod
    def from_record(cls, record: JobRecord) -> "BatchJob":
        """The job of an earlier ``cluster start``, for stopping it."""
        spec = JobSpec(record.scheduler, record.engines, output=record.output,
                       connection_file=record.connection_file)
        return cls(spec, record=record)

    @property
    def job_id(self) -> str:
        if self.record is None:
            raise RuntimeError("the job has not been submitted")
        return self.record.job_id

    def script_path(self, job_id: str = "") -> Path:
        """Where the rendered job script goes: beside the output file (on shared storage), named
        with the job id once there is one."""
        out = Path(self.spec.output)
        stem = out.name.split(".%j")[0] if "%j" in out.name else out.stem
        return out.with_name(f"{stem}.{job_id + '.' if job_id else ''}{self.spec.scheduler}.sh")

    @property
    def output(self) -> str:
        """The job's output file (its name has the job id once submitted)."""
        if self.record is not None:
            return self.record.output
        return self.spec.output

    def submit(self) -> str:
        """Render, write and submit the job script, clean up old clusters' logs; returns the
        job id. The script is then renamed with the job id, and kept, as its output is.

        Raises TemplateError for a bad setting and SchedulerError when submission fails.
        """
        text = render(self.spec)
        script = self.script_path()
        script.parent.mkdir(parents=True, exist_ok=True)
        Path(self.spec.output).parent.mkdir(parents=True, exist_ok=True)
        Path(self.spec.connection_file).parent.mkdir(parents=True, exist_ok=True)
        logs.clean()
        script.write_text(text)
        script.chmod(0o755)
        # An old cluster's connection file must not pass for this job's.
        Path(self.spec.connection_file).unlink(missing_ok=True)
        submitted = time.time()
        job_id = self.scheduler.submit(script, self.spec.workdir)
        named = self.script_path(job_id)
        os.replace(script, named)   # the scheduler has its own copy already
        self.record = JobRecord(self.spec.scheduler, job_id, self.spec.connection_file,
                                self.spec.output_of(job_id), str(named), submitted,
                                self.spec.engines)
        self.record.save()
        return job_id

    def status(self) -> JobStatus:
        return self.scheduler.status(self.job_id)

    def output_tail(self, lines: int = TAIL_LINES) -> str:
        return tail(self.output, lines)

    def failure(self, what: str) -> JobFailed:
        """A JobFailed saying ``what`` happened, with the output tail (waiting briefly for the file,
        which the scheduler may copy or flush only as the job ends)."""
        deadline = time.monotonic() + 3
        while not os.path.exists(self.output) and time.monotonic() < deadline:
            time.sleep(0.2)
        return JobFailed(f"{self.spec.scheduler} job {self.job_id} {what}.\n"
                         f"--- last lines of {self.output} ---\n{self.output_tail()}")

    def wait_until_up(self, timeout: float = 60.0, queue_timeout: float = 600.0,
                      progress: Callable[[str], None] | None = None) -> None:
        """Block until the controller answers at the connection file.

        ``queue_timeout`` bounds the wait while queued, ``timeout`` the wait once running. Raises
        JobFailed (after cancelling the job, if it is still there) when the job fails, finishes, or
        either bound passes; SchedulerError when the scheduler stops answering.
        """
        conn = self.spec.connection_file
        started = time.monotonic()
        running_since: float | None = None
        while True:
            status = self.status()
            now = time.monotonic()
            if status.phase == "queued":
                if progress:
                    progress(f"job {self.job_id} queued: {status.describe()} [{now - started:.0f} s]")
                if now - started > queue_timeout:
                    self.cancel()
                    raise self.failure(f"was still queued after {queue_timeout:.0f} s "
                                       f"({status.describe()}); cancelled it")
            elif status.phase == "running":
                running_since = running_since or now
                if progress:
                    progress(f"job {self.job_id} running, waiting for the controller "
                             f"[{now - running_since:.0f} s]")
                if os.path.exists(conn) and controller_answers(conn, timeout=min(10.0, timeout)):
                    return
                if time.monotonic() - running_since > timeout:
                    self.cancel()
                    raise self.failure(f"ran {timeout:.0f} s without a controller answering at "
                                       f"{conn}; cancelled it")
            else:
                # Finished, failed or ending: clean up (an SGE job in Eqw stays queued until deleted).
                self.cancel(wait=10.0)
                status = self.final_word(status)
                verb = "failed" if status.phase == "failed" else "ended"
                raise self.failure(f"{verb} ({status.describe()}) before the cluster answered")
            time.sleep(POLL)

    def final_word(self, status: JobStatus, wait: float = 25.0) -> JobStatus:
        """``status``, or for a job just gone whose final state the scheduler has not yet
        recorded (SGE's qacct lags about 15 s), the recorded one once it is there, polling at
        most ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while status.state == "GONE" and time.monotonic() < deadline:
            time.sleep(POLL * 2)
            status = self.status()
        return status

    def cancel(self, wait: float = 30.0) -> JobStatus:
        """Cancel the job, wait (at most ``wait`` s) until it is no longer queued or running, and
        forget it. Returns the last status seen; raises SchedulerError if cancelling fails."""
        status = self.status()
        if status.active or not status.left:
            # A failed SGE job (Eqw) still sits in the queue: delete it too.
            try:
                self.scheduler.cancel(self.job_id)
            except SchedulerError:
                if self.status().active:
                    raise
        deadline = time.monotonic() + wait
        while status.active and time.monotonic() < deadline:
            time.sleep(POLL)
            status = self.status()
        if not status.active:
            self.forget()
        return status

    def forget(self) -> None:
        """Remove the job record and the (now stale) connection file."""
        if self.record is not None:
            self.record.remove()
        Path(self.spec.connection_file).unlink(missing_ok=True)
