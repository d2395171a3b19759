"""ssh tunnels to a controller (``pympec.client.tunnel``, ``pympec tunnel``, ``sshserver=``).

Failures are tested for real against ports and names that do not answer. Success needs an ssh
server: these tests start Debian's ``sshd`` on 127.0.0.1 only, with throwaway keys, and skip when
it is not installed (``apt-get install openssh-server``). The client side is the system ``ssh``,
given the test's keys through a wrapper on PATH that adds ``-F <config>``.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from pympec import connection
from pympec.client.tunnel import close_tunnel, free_port, open_tunnel, split_server

from conftest import first_line, wait_for

from .conftest import roundtrip

pytestmark = pytest.mark.timeout(120)
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


def test_split_server():
    assert split_server("me@login") == ("me@login", [])
    assert split_server("me@login:2222") == ("me@login", ["-p", "2222"])


def test_refused_port_is_a_clear_error():
    # "failed": ssh gave up on the refusal, before the tunnel's timeout ("did not open within")
    with pytest.raises(ConnectionError, match=r"through nobody@127.0.0.1:1 failed .*Connection refused"):
        open_tunnel("nobody@127.0.0.1:1", "10.0.0.5", 40000, timeout=10)


def test_unknown_host_is_a_clear_error():
    with pytest.raises(ConnectionError, match="(?i)could not resolve hostname"):
        open_tunnel("login.invalid", "10.0.0.5", 40000, timeout=10)


def test_missing_ssh_is_a_clear_error():
    with pytest.raises(ConnectionError, match="no `no-such-ssh` command"):
        open_tunnel("me@login", "10.0.0.5", 40000, ssh="no-such-ssh")


def test_tunnel_command_reports_failure(batch_env, tmp_path):
    conn = tmp_path / "c.json"
    connection.ConnectionInfo(address="10.0.0.5", port=40000).write(conn)
    proc = batch_env.cli("tunnel", "nobody@127.0.0.1:1", "--connection-file", str(conn), "--timeout", "10")
    assert proc.returncode == 1 and "Connection refused" in proc.stderr
    proc = batch_env.cli("tunnel", "--connection-file", str(conn))
    assert proc.returncode == 2 and "say which host to ssh to" in proc.stderr


@pytest.fixture
def sshd(tmp_path, monkeypatch):
    """An sshd on 127.0.0.1 accepting a fresh key for the current user; yields "user@127.0.0.1:port"."""
    if SSHD is None:
        pytest.skip("needs sshd (apt-get install openssh-server) for a loopback ssh server")
    d = tmp_path / "ssh"
    d.mkdir(mode=0o700)
    for key in ("host", "id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "id.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "AllowTcpForwarding yes\n")
    os.makedirs("/run/sshd", exist_ok=True)   # sshd's privilege-separation directory
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                              stderr=open(d / "sshd.log", "wb"))

    def listening() -> bool:
        assert server.poll() is None, f"sshd exited: {(d / 'sshd.log').read_text()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True
    wait_for(listening, lambda: f"sshd to listen: {(d / 'sshd.log').read_text()}", timeout=10,
             interval=0.1)
    (d / "config").write_text(f"Host *\n  IdentityFile {d}/id\n  StrictHostKeyChecking no\n"
                              "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {d}/config \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield f"{os.environ.get('USER') or 'root'}@127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


def test_open_tunnel_reaches_controller(sshd, private_cluster):
    info = connection.load(private_cluster.connection_file)
    host, port, proc = open_tunnel(sshd, info.address, info.port, timeout=15)
    try:
        assert host == "127.0.0.1" and port != info.port
        socket.create_connection((host, port), timeout=5).close()
    finally:
        close_tunnel(proc)
    assert proc.poll() is not None


def test_client_sshserver_tunnels(sshd, private_cluster):
    roundtrip(private_cluster.connection_file, sshserver=sshd)


def test_tunnel_command(sshd, private_cluster, batch_env, tmp_path):
    batch_env.env["PATH"] = os.environ["PATH"]     # the ssh wrapper
    local = tmp_path / "local.json"
    proc = subprocess.Popen([sys.executable, "-m", "pympec.cluster.cli", "tunnel", sshd, "--connection-file",
                             str(private_cluster.connection_file), "--write", str(local)],
                            env=batch_env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = first_line(proc, "the tunnel to open", timeout=30)
        assert "->" in line, line + proc.stderr.read() if proc.poll() is not None else line
        assert connection.load(local).address == "127.0.0.1"
        roundtrip(local)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    assert proc.returncode == 0 and not local.exists()
