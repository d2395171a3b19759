"""The ``pympec`` command.

    pympec cluster start -n N [--daemon] [--profile NAME]   (alias: cluster local)
    pympec cluster stop   [--profile NAME]
    pympec cluster status [--profile NAME]
    pympec jobscript --scheduler pbs|sge|slurm -n N ...     (from pympec.cluster.batch)
    pympec tunnel ...                                       (from pympec.cluster.batch)

Batch systems and multi-host runs (``--scheduler``, ``--hosts``) are handled by
:mod:`pympec.cluster.batch.cli`, which adds its own options and subcommands here.
"""
from __future__ import annotations

import argparse
import sys

from . import local
from .batch import cli as batch_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pympec", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    cluster_parser = commands.add_parser("cluster", help="start, stop or inspect a cluster")
    actions = cluster_parser.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", aliases=["local"], help="start a cluster")
    start.add_argument("-n", "--engines", "--num", dest="n", type=int, default=2,
                       help="number of engines (default 2)")
    start.add_argument("--daemon", action="store_true",
                       help="return once the cluster answers, leaving it running")
    add_where(start)
    start.add_argument("--ip", default=None, help="address the controller binds (default 127.0.0.1)")
    start.add_argument("--port", type=int, default=0, help="controller port (default: any free port)")
    start.add_argument("--mpiexec", default=None, help="the mpiexec to run (default: found on PATH)")
    start.add_argument("--timeout", type=float, default=60.0,
                       help="seconds to wait for the cluster to answer (default 60)")
    start.add_argument("--threads", type=int, default=None,
                       help="BLAS/OpenMP threads per engine of a local cluster "
                            "(default: its CPUs per engine)")
    for name, text in (("stop", "stop a running cluster"), ("status", "show a cluster's engines")):
        add_where(actions.add_parser(name, help=text))

    batch_cli.register(commands, start)
    return parser


def add_where(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--profile", default=None, help="cluster profile name (default: default)")
    where.add_argument("--connection-file", default=None, help="explicit connection file path")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "cluster":
        return args.func(args)
    where = args.connection_file or args.profile
    if args.action in ("start", "local"):
        if batch_cli.handles(args):
            return batch_cli.start(args)
        return start_local(args)
    if args.action == "stop":
        if batch_cli.stop(args):
            return 0
        return local.stop(where)
    return local.print_status(where)


def start_local(args: argparse.Namespace) -> int:
    cluster = local.Cluster(n=args.n, profile=args.profile, connection_file=args.connection_file,
                            ip=args.ip, port=args.port, mpiexec=args.mpiexec, timeout=args.timeout,
                            threads=args.threads)
    local.sigterm_interrupts()   # also while it starts: start() cleans up on interrupt
    cluster.start()
    return local.hold(cluster, args.daemon)


if __name__ == "__main__":
    sys.exit(main())
