"""The connection file: how a client finds and proves itself to a controller.

Rank 0 writes it when its socket listens; clients read it. It is JSON::

    {"address": "127.0.0.1", "port": 40123, "key": "<64 hex digits>",
     "cluster_id": "...", "engines": 4, "pid": 1234, "started": 1700000000.0}

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

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)

    def write(self, path: str | os.PathLike) -> Path:
        """Write atomically with mode 0600; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=1)
        os.replace(tmp, path)
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
    missing, and ValueError when it is not a pympec connection file.
    """
    path = resolve(where)
    try:
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
