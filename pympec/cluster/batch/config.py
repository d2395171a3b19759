"""Site defaults for batch jobs: a TOML file and environment variables.

Sources, lowest precedence first (the command line overrides them all)::

    ~/.pympec/config.toml   [batch]        keys for every scheduler
                            [slurm] [sge] [pbs]   keys for one scheduler
    PYMPEC_BATCH__<KEY>                    environment, every scheduler
    PYMPEC_<SCHEDULER>__<KEY>              environment, one scheduler (dask-jobqueue style)

For example::

    [batch]
    walltime = "02:00:00"
    [slurm]
    queue = "debug"
    account = "proj42"
    [pbs]
    pbs_style = "torque"
    ppn = 16

``PYMPEC_SLURM__QUEUE=debug`` does the same as the ``[slurm]`` line. List keys (``directives``,
``mpiexec_args``, ``prologue``) take a JSON list in the environment, or a single item otherwise
(``mpiexec_args`` a shell-quoted string, ``prologue`` lines separated by newlines).
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, Mapping

from ... import paths
from ...errors import UserError

# Every key a site may set, with its type. The command-line options of the same names override them.
FIELDS: dict[str, type] = {
    "job_name": str, "queue": str, "account": str, "walltime": str, "nodes": int, "ppn": int,
    "pe": str, "output": str, "workdir": str, "python": str, "mpiexec": str, "mpiexec_args": list,
    "ip": str, "sshserver": str, "template": str, "directives": list, "pbs_style": str,
    "queue_timeout": float, "mpi": str, "launcher": str, "pmi": str, "prologue": list,
}
SECTIONS = ("batch", "slurm", "sge", "pbs")


class ConfigError(UserError, ValueError):
    """A config file or environment variable that cannot be used; the message names it."""


def config_path() -> Path:
    """The site config file: ``config.toml`` in the pympec directory."""
    return paths.base_dir() / "config.toml"


def read_file(path: Path) -> dict[str, Any]:
    """Parse a TOML config file; {} when it does not exist.

    Raises ConfigError when it exists but cannot be read: bad TOML, or no TOML parser (Python < 3.11
    without the ``tomli`` package).
    """
    if not path.exists():
        return {}
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError(f"{path} exists but this Python has no TOML parser: "
                              "use Python >= 3.11 or `pip install tomli`") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None


def coerce(key: str, value: Any, source: str) -> Any:
    """Convert a config value (TOML value or environment string) to the type of ``key``."""
    kind = FIELDS.get(key)
    if kind is None:
        raise ConfigError(f"{source}: unknown key {key!r}; known keys: {', '.join(sorted(FIELDS))}")
    try:
        if kind is list:
            if isinstance(value, str):
                text = value.strip()
                if text.startswith("["):
                    value = json.loads(text)
                elif key == "mpiexec_args":
                    value = shlex.split(text)
                elif key == "prologue":   # one line, or several separated by newlines
                    value = [line for line in text.splitlines() if line.strip()]
                else:
                    value = [text] if text else []
            if not isinstance(value, list):
                raise TypeError("expected a list")
            return [str(v) for v in value]
        if kind is str:
            if isinstance(value, (dict, list)):
                raise TypeError("expected a string")
            return str(value)
        if isinstance(value, bool):
            raise TypeError(f"expected {kind.__name__}")
        return kind(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: bad value {value!r} for {key!r}: {e}") from None


def load_defaults(scheduler: str, path: Path | None = None,
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The site defaults for ``scheduler`` (``slurm``, ``sge`` or ``pbs``), merged from all sources.

    Returns only the keys some source set. Raises ConfigError naming the file or variable on an
    unknown key or a badly typed value.
    """
    path = config_path() if path is None else path
    environ = os.environ if environ is None else environ
    data = read_file(path)
    for name in data:
        if name not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{name}]; known: {', '.join(SECTIONS)}")
    merged: dict[str, Any] = {}
    for section in ("batch", scheduler):
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, value in table.items():
            merged[key] = coerce(key, value, f"{path} [{section}]")
    for section in ("batch", scheduler):
        prefix = f"PYMPEC_{section.upper()}__"
        for name, value in environ.items():
            if name.startswith(prefix):
                key = name[len(prefix):].lower()
                merged[key] = coerce(key, value, name)
    return merged
