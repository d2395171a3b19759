"""The address a controller on a compute node binds: the node's address facing the submit host.

A job's controller must be reachable from the login node that submitted it, over the cluster
network, and must not listen on every interface (``0.0.0.0``). The submit host is in the job's
environment (``SLURM_SUBMIT_HOST``, ``SGE_O_HOST``, ``PBS_O_HOST``); the kernel's routing table says
which local address reaches it. A UDP ``connect`` asks exactly that, without sending a packet.

``python -m pympec.cluster.batch.address [HOST]`` prints it; the job templates call this.
"""
from __future__ import annotations

import os
import socket
import sys

SUBMIT_HOST_VARS = ("SLURM_SUBMIT_HOST", "SGE_O_HOST", "PBS_O_HOST")


def submit_host() -> str | None:
    """The host that submitted this batch job, from the scheduler's environment; None outside a job."""
    for name in SUBMIT_HOST_VARS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def facing(host: str | None = None) -> str:
    """The local address that routes to ``host`` (default: the submit host).

    Without a host, or when it does not resolve, the address of this machine's own host
    name, unless that is a loopback address (as Debian's /etc/hosts gives): then the one
    the default route leaves from.  Never returns ``0.0.0.0``; does not block beyond a
    name lookup, and sends no packet.
    """
    host = host or submit_host()
    if host:
        address = _route_to(host)
        if address:
            return address
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        address = "127.0.0.1"
    if address.startswith("127."):
        address = _route_to("192.0.2.1") or address   # (TEST-NET-1: only routed, never sent)
    return address


def _route_to(host: str) -> str | None:
    """The local address the kernel would send from to reach ``host``: a UDP connect
    asks the routing table, without sending a packet."""
    try:
        target = socket.getaddrinfo(host, 9, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(target)
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address == "0.0.0.0" else address


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(facing(argv[0] if argv else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
