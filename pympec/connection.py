"""The connection file: how a client finds and proves itself to a controller.

Rank 0 writes it when its socket listens; clients read it. It is JSON::

    {"address": "127.0.0.1", "port": 40123, "key": "<64 hex digits>",
     "cluster_id": "...", "engines": 4, "pid": 1234, "started": 1700000000.0,
     "tls_fingerprint": null}

``tls_fingerprint``, for a controller started with ``--tls``, is the SHA-256 of its
certificate (64 hex digits): clients connect with TLS and accept that certificate only.

The key is 256 random bits, so the file is written with mode 0600 and appears
atomically (written to a temporary name, then renamed).
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import paths


@dataclass
class ConnectionInfo:
    address: str
    port: int
    key: str = field(default_factory=lambda: secrets.token_hex(32))
    cluster_id: str = field(default_factory=lambda: secrets.token_hex(6))
    engines: int = 0
    pid: int = 0
    started: float = 0.0
    sshserver: str | None = None
    end_time: float | None = None
    tls_fingerprint: str | None = None   # --tls: SHA-256 of the controller's certificate

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)

    def write(self, path: str | os.PathLike) -> Path:
        """Write atomically with mode 0600; returns the path.

        The file is made under a new random name, exclusively and never through a
        symbolic link (O_EXCL, O_NOFOLLOW), so nobody can pre-create or redirect it, then
        renamed into place.  Raises PermissionError if its mode is not 0600 after all.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            if os.fstat(fd).st_mode & 0o077:
                raise PermissionError(f"{tmp} is open to others; refusing to write a key in it")
            with os.fdopen(fd, "w") as f:
                fd = -1
                json.dump(asdict(self), f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return path


def resolve(where: str | os.PathLike | None = None) -> Path:
    """The connection file path for ``where``: None (default profile), a path, or a profile name."""
    if where is None or where == "":
        return paths.connection_file()
    text = os.fspath(where)
    if os.sep in text or text.endswith(".json") or os.path.isfile(text):
        return Path(text).expanduser()
    return paths.connection_file(text)


def load(where: str | os.PathLike | None = None) -> ConnectionInfo:
    """Read a connection file (see :func:`resolve`).

    Raises FileNotFoundError, naming the file and how to start a cluster, when it is
    missing, PermissionError when other users may read or write it (mode other than
    0600, as jupyter_core's ``secure_write`` checks), and ValueError when it is not a
    pympec connection file.
    """
    path = resolve(where)
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise PermissionError(
                f"the connection file {path} can be read or written by other users (mode "
                f"{mode & 0o777:o}): its key may be known to them. Make it private with "
                f"`chmod 600 {path}`, or better, restart the cluster for a new key")
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no pympec connection file at {path}: is a cluster running? "
            "Start one with `pympec cluster start -n 4`") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a pympec connection file: {e}") from None
    known = {k: data[k] for k in ConnectionInfo.__dataclass_fields__ if k in data}
    try:
        return ConnectionInfo(**known)
    except TypeError as e:
        raise ValueError(f"{path} is not a pympec connection file: {e}") from None
