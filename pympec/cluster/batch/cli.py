"""Command-line glue for batch clusters: ``pympec jobscript``, ``pympec tunnel`` and the
``--scheduler``/``--hosts`` forms of ``pympec cluster start`` and ``stop``.

:func:`register` adds the options and subcommands to the parser built in :mod:`pympec.cluster.cli`;
:func:`handles`, :func:`start` and :func:`stop` are what that module calls. Options left unset fall
back to the site defaults of :mod:`.config`. ``-n`` counts engines; the job runs one rank more.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from ... import connection
from . import config, hosts
from .launch import BatchJob, JobFailed, JobRecord, controller_answers
from .schedulers import SchedulerError
from .mpilines import LAUNCHERS
from .templates import PBS_STYLES, SCHEDULERS, JobSpec, TemplateError
from ..mpi import KINDS
from ...client.tunnel import close_tunnel, open_tunnel

DEFAULT_QUEUE_TIMEOUT = 600.0
SPEC_FIELDS = {f.name for f in fields(JobSpec)}


def add_job_options(parser: argparse.ArgumentParser, scheduler_required: bool) -> None:
    """The batch-job options shared by ``jobscript`` and ``cluster start``; all default to None so
    that site defaults apply."""
    group = parser.add_argument_group("batch job options (defaults from ~/.pympec/config.toml and "
                                      "PYMPEC_<SCHEDULER>__<KEY>)")
    group.add_argument("--scheduler", choices=SCHEDULERS, required=scheduler_required,
                       help="submit the cluster as one job of this batch system")
    group.add_argument("-q", "--queue", help="queue (PBS, SGE) or partition (Slurm)")
    group.add_argument("-A", "--account", "--project", dest="account", help="account or project to charge")
    group.add_argument("--walltime", help="time limit: HH:MM:SS, D-HH:MM:SS, minutes, or 30m/2h (default 1h)")
    group.add_argument("--nodes", type=int, help="number of nodes")
    group.add_argument("--ppn", type=int, help="MPI ranks per node")
    group.add_argument("--pe", help="SGE parallel environment (default mpi)")
    group.add_argument("--job-name", help="job name (default pympec, or pympec-<profile>)")
    group.add_argument("--output", help="job output file, on a shared filesystem; %%j is the job id "
                                        "(default ~/.pympec/log/batch-<job name>.%%j.out)")
    group.add_argument("--workdir", help="the job's working directory (default: the current one)")
    group.add_argument("--python", help="python on the compute nodes (default: this one)")
    group.add_argument("--mpiexec-args", type=shlex.split,
                       help="extra mpiexec arguments, as one string: --mpiexec-args='--bind-to none'")
    group.add_argument("--mpi", choices=KINDS,
                       help="the MPI of --mpiexec, for job scripts (default: what its --version says)")
    group.add_argument("--launcher", choices=LAUNCHERS,
                       help="what starts the ranks in the job: mpiexec (default) or srun (Slurm)")
    group.add_argument("--pmi", help="srun's --mpi= for --launcher srun (default: pmi2 for MPICH, "
                                     "pmix for Open MPI, as `srun --mpi=list` offers)")
    group.add_argument("--prologue", action="append",
                       help="a shell line the job runs before the MPI launch: module load, source "
                            "venv/bin/activate, export (repeatable)")
    group.add_argument("--directive", dest="directives", action="append",
                       help="extra directive, e.g. --directive=--mem=4G (repeatable)")
    group.add_argument("--sshserver", help="user@login host that clients tunnel through "
                                           "(written to the connection file)")
    group.add_argument("--template", help="your own job-script template file")
    group.add_argument("--pbs-style", choices=PBS_STYLES, help="PBS resources: pro (select=) or torque (nodes=:ppn=)")
    group.add_argument("--queue-timeout", type=float,
                       help=f"seconds to wait while queued before cancelling (default {DEFAULT_QUEUE_TIMEOUT:.0f})")


def register(commands: argparse._SubParsersAction, start_parser: argparse.ArgumentParser) -> None:
    """Add ``jobscript`` and ``tunnel`` to ``commands`` and the batch options to ``cluster start``."""
    add_job_options(start_parser, scheduler_required=False)
    start_parser.add_argument("--hosts", help="run across these hosts with mpiexec: node1:4,node2:4")

    script = commands.add_parser("jobscript", help="print the job script for a batch cluster (dry run)")
    script.add_argument("-n", "--engines", "--num", dest="n", type=int, default=2,
                        help="number of engines (default 2); the job has one more rank, the controller")
    where = script.add_mutually_exclusive_group()
    where.add_argument("--profile", default=None, help="cluster profile name (default: default)")
    where.add_argument("--connection-file", default=None, help="connection file path the job writes")
    script.add_argument("--mpiexec", default=None, help="mpiexec on the compute nodes")
    script.add_argument("--ip", default=None,
                        help="address the controller binds (default: found in the job, facing the submit host)")
    script.add_argument("--port", type=int, default=0, help="controller port (default: any free port)")
    script.add_argument("--tls", action="store_true",
                        help="encrypt client connections with TLS (the nodes need pympec[fast])")
    add_job_options(script, scheduler_required=True)
    script.set_defaults(func=jobscript)

    tun = commands.add_parser("tunnel", help="forward a cluster's port through ssh to this machine")
    tun.add_argument("sshserver", nargs="?", default=None,
                     help="user@host[:port] to ssh to (default: sshserver in the connection file)")
    where = tun.add_mutually_exclusive_group()
    where.add_argument("--profile", default=None, help="cluster profile name (default: default)")
    where.add_argument("--connection-file", default=None, help="the cluster's connection file")
    tun.add_argument("--local-port", type=int, default=0, help="local port (default: any free port)")
    tun.add_argument("--write", default=None,
                     help="connection file for the local end (default: <connection file>-tunnel.json)")
    tun.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for ssh (default 30)")
    tun.set_defaults(func=tunnel)


def handles(args: argparse.Namespace) -> bool:
    """True when ``cluster start`` asks for a batch job or a host list."""
    return bool(getattr(args, "scheduler", None) or getattr(args, "hosts", None))


def where_of(args: argparse.Namespace) -> str | None:
    return getattr(args, "connection_file", None) or getattr(args, "profile", None)


def spec_from_args(args: argparse.Namespace) -> tuple[JobSpec, float]:
    """(JobSpec, queue timeout) from the command line over the site defaults.

    Raises ConfigError or TemplateError with a message for the user.
    """
    values = config.load_defaults(args.scheduler)
    for key in config.FIELDS:
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    queue_timeout = float(values.pop("queue_timeout", DEFAULT_QUEUE_TIMEOUT))
    profile = getattr(args, "profile", None)
    values.setdefault("job_name", f"pympec-{profile}" if profile else "pympec")
    values = {k: v for k, v in values.items() if k in SPEC_FIELDS}
    spec = JobSpec(scheduler=args.scheduler, engines=args.n,
                   connection_file=str(connection.resolve(where_of(args))),
                   port=getattr(args, "port", 0) or 0, tls=bool(getattr(args, "tls", False)),
                   **values)
    spec.walltime_seconds   # a bad walltime is an error now, not at submission
    return spec, queue_timeout


def fail(message: str, code: int = 1) -> int:
    print(f"pympec: {message}", file=sys.stderr)
    return code


def jobscript(args: argparse.Namespace) -> int:
    """``pympec jobscript``: print the rendered job script."""
    try:
        spec, _ = spec_from_args(args)
        from .templates import render
        sys.stdout.write(render(spec))
    except (config.ConfigError, TemplateError) as e:
        return fail(str(e), 2)
    return 0


class Progress:
    """One status line on stderr: rewritten in place on a terminal, printed on change otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""

    def __call__(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K" + text)
            sys.stderr.flush()
        elif text.split("[")[0] != self.last.split("[")[0]:
            print(text, file=sys.stderr)
        self.last = text

    def done(self) -> None:
        if self.tty and self.last:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        self.last = ""


def start(args: argparse.Namespace) -> int:
    """``pympec cluster start --scheduler ...`` (or ``--hosts ...``): submit, wait, then either
    return (``--daemon``) or watch the job until it ends, cancelling it on Ctrl-C."""
    if getattr(args, "hosts", None):
        if args.scheduler:
            return fail("--hosts and --scheduler do not go together: a batch job brings its own hosts", 2)
        return hosts.start(args)
    try:
        spec, queue_timeout = spec_from_args(args)
    except (config.ConfigError, TemplateError) as e:
        return fail(str(e), 2)
    job = BatchJob(spec)
    reason = job.scheduler.unavailable()
    if reason:
        return fail(f"cannot submit: {reason}", 2)
    previous = JobRecord.load(spec.connection_file)
    if previous is not None and BatchJob.from_record(previous).status().active:
        return fail(f"{previous.scheduler} job {previous.job_id} already runs a cluster at "
                    f"{spec.connection_file}; stop it first (`pympec cluster stop`) or use --profile", 2)
    if previous is None and Path(spec.connection_file).exists() and controller_answers(spec.connection_file, 5):
        return fail(f"a cluster already answers at {spec.connection_file}; stop it first or use --profile", 2)

    progress = Progress()
    try:
        job_id = job.submit()
        print(f"pympec: submitted {spec.scheduler} job {job_id} ({spec.engines} engines + controller); "
              f"script {job.record.script}, output {job.output}", file=sys.stderr)
        job.wait_until_up(timeout=args.timeout, queue_timeout=queue_timeout, progress=progress)
        progress.done()
    except KeyboardInterrupt:
        progress.done()
        return cancel_on_interrupt(job)
    except TemplateError as e:
        progress.done()
        return fail(str(e), 2)
    except SchedulerError as e:
        progress.done()
        return fail(str(e))
    except JobFailed as e:
        progress.done()
        return fail(str(e))
    info = connection.load(spec.connection_file)
    left = f"; walltime ends in {(info.end_time - time.time()) / 60:.0f} min" if info.end_time else ""
    print(f"pympec: cluster of {spec.engines} engines is up in {spec.scheduler} job {job_id} at "
          f"{info.address}:{info.port}{left}; connection file {spec.connection_file}")
    if args.daemon:
        return 0
    print("pympec: press Ctrl-C to cancel the job")
    try:
        while True:
            status = job.status()
            if not status.active:
                break
            time.sleep(2)
    except KeyboardInterrupt:
        return cancel_on_interrupt(job)
    job.forget()
    print(f"pympec: job {job_id} ended ({status.describe()})\n--- last lines of {job.output} ---\n"
          f"{job.output_tail()}", file=sys.stderr)
    return 0 if status.phase == "finished" else 1


def cancel_on_interrupt(job: BatchJob) -> int:
    """Ctrl-C: cancel the job (if submitted) so that no node-hours leak."""
    if job.record is None:
        return fail("interrupted before the job was submitted", 130)
    print(f"\npympec: interrupted; cancelling {job.spec.scheduler} job {job.job_id}", file=sys.stderr)
    return 130 if report_cancel(job) else 1


def report_cancel(job: BatchJob) -> bool:
    """Cancel ``job`` and say how that went; True when it has left the queue."""
    try:
        before = job.status()
        if before.left:
            job.forget()
            print(f"pympec: {job.spec.scheduler} job {job.job_id} had already ended "
                  f"({before.describe()})", file=sys.stderr)
            return True
        status = job.cancel()
    except SchedulerError as e:
        print(f"pympec: could not cancel job {job.job_id}: {e}", file=sys.stderr)
        return False
    if status.active:
        print(f"pympec: job {job.job_id} is still {status.describe()} after cancelling; "
              "check it with the scheduler", file=sys.stderr)
        return False
    print(f"pympec: {job.spec.scheduler} job {job.job_id} cancelled", file=sys.stderr)
    return True


def stop(args: argparse.Namespace) -> bool:
    """``pympec cluster stop``: cancel the batch job recorded for this profile or connection file.

    Returns False when there is none, so that the local stop runs instead; exits with code 1 when
    the job cannot be cancelled.
    """
    record = JobRecord.load(connection.resolve(where_of(args)))
    if record is None:
        return False
    if not report_cancel(BatchJob.from_record(record)):
        raise SystemExit(1)
    return True


def status(args: argparse.Namespace) -> bool:
    """``pympec cluster status`` of a batch cluster whose job has ended: print the scheduler's
    final word on it (state, reason, exit code) and return True (the command exits 1). False
    when no job is recorded for this profile, or it still runs: then the controller answers."""
    record = JobRecord.load(connection.resolve(where_of(args)))
    if record is None:
        return False
    job = BatchJob.from_record(record)
    state = job.status()
    if state.active:
        return False
    print(f"pympec: {record.scheduler} job {record.job_id} has ended: {state.describe()}; its "
          f"output is {record.output}", file=sys.stderr)
    return True


def tunnel(args: argparse.Namespace) -> int:
    """``pympec tunnel``: forward the cluster's port through ssh and write a connection file for the
    local end; runs until Ctrl-C or until ssh exits."""
    source = connection.resolve(where_of(args))
    try:
        info = connection.load(source)
    except (FileNotFoundError, ValueError) as e:
        return fail(str(e), 2)
    server = args.sshserver or info.sshserver
    if not server:
        return fail("say which host to ssh to: `pympec tunnel user@login` (or set sshserver in the "
                    "connection file)", 2)
    try:
        host, port, proc = open_tunnel(server, info.address, info.port, timeout=args.timeout,
                                       local_port=args.local_port, batch_mode=False)
    except ConnectionError as e:
        return fail(str(e))
    local = dict(asdict(info), address=host, port=port, sshserver=None)
    target = Path(args.write) if args.write else source.with_name(source.stem + "-tunnel.json")
    connection.ConnectionInfo(**local).write(target)
    print(f"pympec: {host}:{port} -> {info.address}:{info.port} through {server} (ssh pid {proc.pid})\n"
          f"pympec: connect with client.MultiEngineClient({str(target)!r}); Ctrl-C closes the tunnel")
    try:
        code = proc.wait()
        print(f"pympec: ssh exited with code {code}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        close_tunnel(proc)
        target.unlink(missing_ok=True)
