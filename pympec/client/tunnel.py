"""Reach a controller on a compute node through an ssh tunnel (``ssh -N -L``).

A login node or laptop often cannot reach compute nodes directly, but can ssh to a host that can
(``sshserver``, e.g. ``user@login``). The controller uses a single TCP port, so one forwarding is
enough: :func:`open_tunnel` runs the system ``ssh`` with ``-L 127.0.0.1:LOCAL:address:port``, waits
until the local port accepts connections, and hands back the local address and the ssh process.
The client then connects to the local end; authentication (the key's challenge/response and signed
frames) is end to end, so ssh only carries bytes.

``pympec tunnel`` does the same from a shell and writes a connection file for the local end.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from typing import NamedTuple

SSH_OPTIONS = [
    "-o", "ExitOnForwardFailure=yes",   # a forwarding that cannot be set up is an error, not a warning
    "-o", "ServerAliveInterval=30",     # notice a dead login node instead of hanging
    "-o", "ServerAliveCountMax=3",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def split_server(sshserver: str) -> tuple[str, list[str]]:
    """``user@host[:port]`` -> (``user@host``, ssh port options), as IPython's ``sshserver`` took it."""
    host, sep, port = sshserver.rpartition(":")
    if sep and port.isdigit() and host and "]" not in port:
        return host, ["-p", port]
    return sshserver, []


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Tunnel(NamedTuple):
    """An open tunnel: connect to ``host:port`` here; end ``process`` to close it."""

    host: str
    port: int
    process: subprocess.Popen


def open_tunnel(sshserver: str, address: str, port: int, timeout: float = 15,
                local_port: int = 0, batch_mode: bool = True,
                ssh: str = "ssh") -> Tunnel:
    """Forward ``127.0.0.1:<local port>`` to ``address:port`` as seen from ``sshserver``.

    Returns the Tunnel; terminate its process to close it.
    Blocks until the local port accepts connections, at most ``timeout`` seconds. With
    ``batch_mode`` ssh never prompts (keys or an agent are needed); without it, ssh may ask for a
    password on the terminal. Raises ConnectionError, with ssh's own error message, when ssh is
    missing, exits, or the port does not open in time (the ssh process is then killed).
    """
    exe = shutil.which(ssh)
    if exe is None:
        raise ConnectionError(f"cannot tunnel to {address}:{port} through {sshserver}: "
                              f"no `{ssh}` command on PATH")
    host, port_opts = split_server(sshserver)
    local = local_port or free_port()
    cmd = [exe, "-N", *SSH_OPTIONS, *(["-o", "BatchMode=yes"] if batch_mode else []),
           "-o", f"ConnectTimeout={max(1, int(timeout))}", *port_opts,
           "-L", f"127.0.0.1:{local}:{address}:{port}", host]
    # stderr goes to a file, not a pipe: a long-lived ssh must never block on a full pipe.
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                            start_new_session=True)  # Ctrl-C in the client's terminal is not ssh's

    def fail(what: str) -> ConnectionError:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        err.seek(0)
        detail = err.read().decode(errors="replace").strip()
        err.close()
        return ConnectionError(f"ssh tunnel to {address}:{port} through {sshserver} {what}"
                               + (f": {detail}" if detail else "") + f"\n(command: {' '.join(cmd)})")

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise fail(f"failed (ssh exit code {proc.returncode})")
        if accepts("127.0.0.1", local):
            err.close()
            return Tunnel("127.0.0.1", local, proc)
        time.sleep(0.1)
    raise fail(f"did not open within {timeout:.0f} s")


def close_tunnel(proc: subprocess.Popen, timeout: float = 5) -> None:
    """Stop a tunnel's ssh process: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
