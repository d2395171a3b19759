"""Where pympec keeps its files.

Everything lives under one directory, ``~/.pympec`` by default, or ``$PYMPEC_DIR``
when set (as ``IPYTHONDIR`` relocated ``~/.ipython``)::

    ~/.pympec/security/cluster-<profile>.json   connection files (mode 0600, dir 0700)
    ~/.pympec/log/                              one log file per rank
    ~/.pympec/config.toml                       site defaults (batch launchers)
"""
from __future__ import annotations

from pathlib import Path

from . import settings

DEFAULT_PROFILE = "default"


def base_dir() -> Path:
    """The pympec directory: ``$PYMPEC_DIR`` or ``~/.pympec``."""
    return Path(settings.DIR.get() or Path.home() / ".pympec")


def security_dir() -> Path:
    """The directory holding connection files, created with mode 0700."""
    path = base_dir() / "security"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def log_dir() -> Path:
    """The directory holding per-rank log files."""
    path = base_dir() / "log"
    path.mkdir(parents=True, exist_ok=True)
    return path


def rank_log(cluster_id: str, rank: int) -> Path:
    """The log file of one rank of a cluster."""
    return log_dir() / f"pympec-{cluster_id}-rank{rank}.log"


def connection_file(profile: str | None = None) -> Path:
    """The connection file of a profile (``default`` when None)."""
    return security_dir() / f"cluster-{profile or DEFAULT_PROFILE}.json"
