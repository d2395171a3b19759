"""A cluster's log files: finding them, ``pympec logs``, and cleaning up old ones.

Every rank writes ``pympec-<cluster id>-rank<N>.log`` in :func:`pympec.paths.log_dir`. Beside
them: ``pympec-<cluster id>-mpiexec.log``, what a local start's mpiexec printed (named
``mpiexec-<time>-<pid>.log`` until the cluster answers and its id is known), and a batch
cluster's job output and script, ``batch-<job name>.<job id>.out`` and ``...<scheduler>.sh``.

Cleaning up (:func:`clean`, run whenever pympec starts or submits a cluster): the files of one
cluster, or of one batch job, or one mpiexec log of a start that failed, are a *group*. The
newest ``PYMPEC_LOG_KEEP`` groups (by their newest file) stay; older groups are deleted, except
those of a cluster that may still run: one whose id a connection file in ``security/`` names,
whose job a job record there names, or whose files a process on this host holds open.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

from .. import connection, paths, settings

RANK_LOG = re.compile(r"pympec-(?P<cid>[0-9a-f]+)-(?:rank(?P<rank>\d+)|mpiexec)\.log$")
BATCH_FILE = re.compile(r"(?P<group>batch-.+\.\d+)\.(?:out|\w+\.sh)$")
STARTING_LOG = re.compile(r"mpiexec-[\d-]+\.log$")
FOLLOW_POLL = 0.5   # seconds between looks at the files while following


def group_of(path: Path) -> str | None:
    """The group a log file belongs to (see the module docstring), or None for other files."""
    name = path.name
    for pattern, key in ((RANK_LOG, "cid"), (BATCH_FILE, "group")):
        found = pattern.match(name)
        if found:
            return found[key]
    return name if STARTING_LOG.match(name) else None


def in_use() -> set[str]:
    """Groups and file names that may belong to a running cluster: the cluster ids in the
    connection files in ``security/``, the files named by its job and launch records, and the
    files of the log directory that a process on this host holds open."""
    keep: set[str] = set()
    for record in paths.security_dir().glob("*.json"):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            keep.add(str(data.get("cluster_id", "")))
            keep.update(Path(str(data[k])).name for k in ("output", "script", "log") if k in data)
    log_dir = str(paths.log_dir())
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:   # another user's process, or one that just ended
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:   # closed meanwhile
                continue
            if link.startswith(log_dir):
                keep.add(Path(link).name)
    return keep


def clean(keep: int | None = None) -> list[Path]:
    """Delete the log files of all but the newest ``keep`` groups (default
    ``PYMPEC_LOG_KEEP``), sparing any group that may still run; returns what was deleted.
    Never raises for a file that cannot be deleted: cleaning up must not stop a start."""
    keep = settings.LOG_KEEP.get() if keep is None else keep
    groups: dict[str, list[Path]] = {}
    for path in paths.log_dir().iterdir():
        group = group_of(path)
        if group is not None:
            groups.setdefault(group, []).append(path)

    def newest(files: list[Path]) -> float:
        return max((f.stat().st_mtime for f in files if f.exists()), default=0.0)

    ordered = sorted(groups, key=lambda g: newest(groups[g]), reverse=True)
    old = ordered[keep:]
    if not old:
        return []
    spared = in_use()
    deleted = []
    for group in old:
        files = groups[group]
        if group in spared or any(f.name in spared for f in files):
            continue
        for f in files:
            try:
                f.unlink()
                deleted.append(f)
            except OSError:
                pass
    return deleted


def adopt(log: Path, connection_file: Path) -> Path:
    """Rename a starting cluster's mpiexec log to ``pympec-<cluster id>-mpiexec.log`` once the
    connection file names the cluster, and point the launch record at it; returns the log's
    path (the old one if either cannot be read or renamed). mpiexec keeps writing to it."""
    try:
        cluster_id = connection.load(connection_file).cluster_id
        named = log.with_name(f"pympec-{cluster_id}-mpiexec.log")
        os.replace(log, named)
    except (OSError, ValueError):
        return log
    record = connection_file.with_name(connection_file.stem + ".launch.json")
    try:
        data = json.loads(record.read_text())
        data["log"] = str(named)
        record.write_text(json.dumps(data))
    except (OSError, ValueError):
        pass
    return named


def cluster_files(cluster_id: str, rank: int | None = None) -> list[Path]:
    """The log files of ``cluster_id``, rank logs in rank order then mpiexec's (only
    ``rank``'s when given)."""
    found = []
    for path in paths.log_dir().glob(f"pympec-{cluster_id}-*.log"):
        match = RANK_LOG.match(path.name)
        if match and (rank is None or match["rank"] == str(rank)):
            found.append((int(match["rank"]) if match["rank"] else 1 << 30, path))
    return [path for _, path in sorted(found)]


def newest_cluster() -> str | None:
    """The id of the cluster whose rank 0 log is the newest, or None."""
    logs = list(paths.log_dir().glob("pympec-*-rank0.log"))
    if not logs:
        return None
    newest = max(logs, key=lambda p: p.stat().st_mtime)
    return RANK_LOG.match(newest.name)["cid"]


def which_cluster(where: str | None) -> tuple[str, bool]:
    """(cluster id, running) for ``pympec logs``: the cluster the connection file names, else
    the one with the newest logs (with a note on stderr). Raises FileNotFoundError when there
    is neither."""
    path = connection.resolve(where)
    try:
        return connection.load(path).cluster_id, True
    except (FileNotFoundError, ValueError):
        pass
    cluster_id = newest_cluster()
    if cluster_id is None:
        raise FileNotFoundError(f"no cluster runs with {path} and {paths.log_dir()} holds no "
                                f"cluster's logs")
    print(f"pympec: no cluster runs with {path}; showing the logs of the newest cluster, "
          f"{cluster_id}", file=sys.stderr)
    return cluster_id, False


def show(files: list[Path], out=None) -> dict[Path, int]:
    """Print each file whole under a ``==> path <==`` header; returns how far each was read."""
    out = out or sys.stdout
    read = {}
    for path in files:
        data = path.read_bytes()
        out.write(f"==> {path} <==\n{data.decode(errors='replace')}")
        if data and not data.endswith(b"\n"):
            out.write("\n")
        read[path] = len(data)
    out.flush()
    return read


def follow(cluster_id: str, where: str | None, rank: int | None, read: dict[Path, int],
           out=None) -> None:
    """Print what the cluster's log files gain (and files that appear) until Ctrl-C or until
    the connection file no longer names this cluster (it stopped); polls every 0.5 s."""
    out = out or sys.stdout
    path = connection.resolve(where)
    while True:
        for log in cluster_files(cluster_id, rank):
            with open(log, "rb") as f:
                f.seek(read.get(log, 0))
                data = f.read()
            if data:
                out.write(f"==> {log} <==\n{data.decode(errors='replace')}")
                out.flush()
                read[log] = read.get(log, 0) + len(data)
        if not running(path, cluster_id):
            return
        time.sleep(FOLLOW_POLL)


def running(path: Path, cluster_id: str) -> bool:
    """True while the connection file at ``path`` names ``cluster_id``."""
    try:
        return connection.load(path).cluster_id == cluster_id
    except (FileNotFoundError, ValueError):
        return False

