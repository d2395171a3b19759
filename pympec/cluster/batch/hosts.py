"""``pympec cluster start --hosts node1:4,node2:4``: one mpiexec across listed hosts.

This is the seed's "ssh" mode done with mpiexec's own host support: a host file (hydra/MPICH and
Intel MPI: ``host:slots`` lines with ``-f``; Open MPI: ``host slots=N`` with ``--hostfile``) in the
pympec log directory, handed to :class:`pympec.Cluster`, which runs and watches mpiexec as for
a local cluster. mpiexec starts the remote ranks itself (through ssh). The controller, rank 0, runs
on the first host and binds that host's address (``--ip`` overrides), never ``0.0.0.0``.
"""
from __future__ import annotations

import argparse
import socket
import sys

from ... import paths
from ...errors import UsageError
from .. import mpi


def parse_hosts(text: str) -> list[tuple[str, int]]:
    """``"node1:4,node2:4,node3"`` -> ``[("node1", 4), ("node2", 4), ("node3", 1)]``.

    Raises ValueError naming the bad entry.
    """
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, sep, slots = item.rpartition(":")
        if not sep:
            host, slots = item, "1"
        if not host or not slots.isdigit() or int(slots) < 1:
            raise ValueError(f"bad host {item!r} in --hosts: use name or name:slots, e.g. node1:4")
        out.append((host, int(slots)))
    if not out:
        raise ValueError("--hosts is empty: give e.g. node1:4,node2:4")
    return out


def check_hosts(hosts: list[tuple[str, int]]) -> None:
    """Raise UsageError naming the first host whose name does not resolve (before mpiexec tries
    to ssh to it and fails with pages of output)."""
    for host, _ in hosts:
        try:
            socket.getaddrinfo(host, None)
        except OSError as e:
            raise UsageError(f"--hosts: unknown host {host!r} ({e.strerror or e})") from None


def hostfile_args(hosts: list[tuple[str, int]], mpiexec: str, name: str) -> list[str]:
    """Write the host file for ``mpiexec``'s MPI; returns the mpiexec arguments that use it."""
    path = paths.log_dir() / f"hosts-{name}.txt"
    if mpi.kind(mpiexec) == "openmpi":
        path.write_text("".join(f"{h} slots={n}\n" for h, n in hosts))
        return ["--hostfile", str(path)]
    path.write_text("".join(f"{h}:{n}\n" for h, n in hosts))
    return ["-f", str(path)]


def start(args: argparse.Namespace) -> int:
    """Start a cluster of ``args.n`` engines across ``args.hosts``, as ``cluster start`` does locally:
    wait until it answers, then return (``--daemon``) or run until Ctrl-C.

    Raises UsageError for a bad host list or mpiexec.
    """
    from .. import local
    try:
        hosts = parse_hosts(args.hosts)
    except ValueError as e:
        raise UsageError(str(e)) from None
    check_hosts(hosts)
    slots = sum(n for _, n in hosts)
    if args.n + 1 > slots:
        print(f"pympec: note: {args.n} engines + controller = {args.n + 1} ranks on {slots} slots; "
              "mpiexec will oversubscribe", file=sys.stderr)
    mpiexec = args.mpiexec or local.find_mpiexec()
    extra = hostfile_args(hosts, mpiexec, args.profile or "default") + (args.mpiexec_args or [])
    cluster = local.Cluster(n=args.n, profile=args.profile, connection_file=args.connection_file,
                            ip=args.ip or hosts[0][0], port=args.port, mpiexec=mpiexec,
                            timeout=args.timeout, mpiexec_args=extra, tls=bool(args.tls))
    cluster.start()
    return local.hold(cluster, args.daemon, f" on {', '.join(h for h, _ in hosts)}")
