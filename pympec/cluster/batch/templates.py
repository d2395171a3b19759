"""Job specifications and the rendering of job-script templates.

A :class:`JobSpec` holds everything a job script needs. :func:`render` fills a template with it:
``launchers/<scheduler>.template`` shipped in the ``pympec.launchers`` package, or a user's file.

Template syntax is :class:`string.Template` with one restriction, so that shell text stays readable:
only ``${lowercase_name}`` is a placeholder. ``$NSLOTS``, ``${SLURM_JOB_ID}`` and ``$(date +%s)`` are
left alone; write ``$${name}`` for a literal ``${name}``. One rule keeps optional settings optional:
a directive or comment line (starting with ``#``), or a line holding nothing but a placeholder, is
dropped when a placeholder on it is empty; so ``#SBATCH --account=${account}`` vanishes without an
account.

Variables (:func:`variables`): ``job_name``, ``n`` (MPI ranks: engines + 1), ``engines``, ``nodes``,
``ppn``, ``queue``, ``account``, ``walltime`` (HH:MM:SS), ``walltime_seconds``, ``pe``, ``output``
(with the scheduler's job-id pattern), ``workdir``, ``python``, ``mpiexec`` (or ``srun``),
``mpi_args`` and ``mpi_setup`` (what the MPI and launcher need, :mod:`.mpilines`),
``mpiexec_args``, ``prologue`` (the site's lines), ``ip``, ``connection_file``, ``engine_args``,
``extra_directives``, ``pbs_resources``.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import string
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ... import paths
from ...errors import UsageError, UserError
from ..mpi import KINDS
from . import mpilines

SCHEDULERS = ("pbs", "sge", "slurm")
DIRECTIVE_PREFIX = {"pbs": "#PBS", "sge": "#$", "slurm": "#SBATCH"}
PBS_STYLES = ("pro", "torque")
# Characters that would break a directive line or need quoting in the shell.
UNSAFE = re.compile(r"[\s'\"`$;&|<>()\\*?!]")


class TemplateError(UserError, ValueError):
    """A template or job setting that cannot be rendered; the message says which and why."""


class JobTemplate(string.Template):
    """``string.Template`` where only ``${lowercase_name}`` is a placeholder (see module docstring)."""

    flags = 0  # case-sensitive, so ${SLURM_JOB_ID} is shell, not a placeholder
    pattern = r"""
    \$(?:
      (?P<escaped>\$)(?=\{[a-z_][a-z0-9_]*\}) |   # $${name} -> ${name}
      \{(?P<braced>[a-z_][a-z0-9_]*)\} |
      (?P<named>(?!)) |                            # bare $name: never a placeholder
      (?P<invalid>(?!))
    )
    """


def parse_walltime(text: str | int) -> int:
    """Seconds in a walltime: ``[D-]HH:MM:SS``, ``MM:SS``, ``D-HH``, minutes (``90``, as Slurm reads
    a bare number) or a number with a unit (``45s``, ``30m``, ``2h``, ``1d``).

    Raises TemplateError on anything else or on a non-positive time.
    """
    raw = str(text).strip()
    try:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", raw)
        if m:
            seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        elif raw.isdigit():
            seconds = int(raw) * 60
        else:
            days, _, clock = raw.rpartition("-")
            parts = [int(p) for p in clock.split(":")]
            if days and len(parts) == 1:      # D-HH
                parts += [0, 0]
            if not 2 <= len(parts) <= 3:
                raise ValueError
            if len(parts) == 2:               # MM:SS
                parts = [0] + parts
            h, mi, s = parts
            seconds = (int(days) if days else 0) * 86400 + h * 3600 + mi * 60 + s
    except ValueError:
        raise TemplateError(f"bad walltime {raw!r}: use HH:MM:SS, D-HH:MM:SS, MM:SS, minutes, "
                            "or 30m / 2h / 1d") from None
    if seconds <= 0:
        raise TemplateError(f"walltime {raw!r} must be positive")
    return int(math.ceil(seconds))


def format_walltime(seconds: int) -> str:
    """``HH:MM:SS`` (hours may pass 24), the form PBS, SGE and Slurm all accept."""
    h, rest = divmod(int(seconds), 3600)
    return f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}"


def default_mpiexec(python: str) -> str:
    """The mpiexec next to ``python`` (a venv with the ``mpich`` wheel), else the one on PATH."""
    beside = Path(python).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    return shutil.which("mpiexec") or "mpiexec"


@dataclass
class JobSpec:
    """Everything a job script needs. ``engines`` counts engines; the job runs ``engines + 1`` ranks.

    Empty strings mean "not set": the template drops directives that use them.
    """

    scheduler: str
    engines: int
    job_name: str = "pympec"
    nodes: int | None = None
    ppn: int | None = None
    queue: str = ""
    account: str = ""
    walltime: str = "01:00:00"
    pe: str = "mpi"
    output: str = ""            # %j is the job id; default: <pympec dir>/log/batch-<job_name>.%j.out
    workdir: str = ""           # default: the current directory
    python: str = field(default_factory=lambda: sys.executable)
    mpiexec: str = ""           # default: default_mpiexec(python)
    mpiexec_args: list[str] = field(default_factory=list)
    ip: str = ""                # default: the node's address facing the submit host, found in the job
    port: int = 0
    sshserver: str = ""         # written to the connection file: clients tunnel through it
    tls: bool = False           # the controller encrypts client connections (--tls)
    connection_file: str = ""   # default: the default profile's connection file
    directives: list[str] = field(default_factory=list)
    pbs_style: str = "pro"
    template: str = ""          # default: the shipped launchers/<scheduler>.template
    mpi: str = ""               # "mpich" or "openmpi"; default: what `mpiexec --version` says
    launcher: str = "mpiexec"   # or "srun" (Slurm): srun starts the ranks itself
    pmi: str = ""               # srun --mpi=; default: what this MPI speaks of `srun --mpi=list`
    prologue: list[str] = field(default_factory=list)   # shell lines before the launch

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise TemplateError(f"unknown scheduler {self.scheduler!r}; use one of {', '.join(SCHEDULERS)}")
        if self.engines < 1:
            raise TemplateError(f"a cluster needs at least 1 engine, not {self.engines}")
        if self.pbs_style not in PBS_STYLES:
            raise TemplateError(f"unknown pbs_style {self.pbs_style!r}; use one of {', '.join(PBS_STYLES)}")
        check_choice("mpi", self.mpi, ("", *KINDS))
        check_choice("launcher", self.launcher, mpilines.LAUNCHERS)
        if self.launcher == "srun" and self.scheduler != "slurm":
            raise TemplateError(f"--launcher srun is Slurm's; {self.scheduler} jobs use mpiexec")
        for name in ("nodes", "ppn"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TemplateError(f"{name} must be at least 1, not {value}")
        self.python = os.path.expanduser(self.python)
        self.mpiexec = os.path.expanduser(self.mpiexec) if self.mpiexec else default_mpiexec(self.python)
        self.workdir = os.path.abspath(os.path.expanduser(self.workdir or os.getcwd()))
        self.output = os.path.abspath(os.path.expanduser(
            self.output or str(paths.base_dir() / "log" / f"batch-{self.job_name}.%j.out")))
        self.connection_file = os.path.abspath(os.path.expanduser(
            self.connection_file or str(paths.base_dir() / "security" / "cluster-default.json")))

    def output_of(self, job_id: str) -> str:
        """The output file of the job ``job_id``: ``output`` with ``%j`` replaced by the id
        (its number, without a PBS server's name)."""
        return self.output.replace("%j", job_id.split(".")[0])

    @property
    def ranks(self) -> int:
        """MPI ranks in the job: the controller plus the engines."""
        return self.engines + 1

    @property
    def walltime_seconds(self) -> int:
        return parse_walltime(self.walltime)

    def layout(self) -> tuple[int, int]:
        """(nodes, ranks per node) covering all ranks, from whichever of nodes/ppn was given.

        Neither given: one node. Raises TemplateError when nodes * ppn cannot hold the ranks.
        """
        nodes, ppn = self.nodes, self.ppn
        if nodes is None and ppn is None:
            nodes, ppn = 1, self.ranks
        elif ppn is None:
            ppn = math.ceil(self.ranks / nodes)
        elif nodes is None:
            nodes = math.ceil(self.ranks / ppn)
        if nodes * ppn < self.ranks:
            raise TemplateError(f"{nodes} nodes x {ppn} per node hold {nodes * ppn} ranks, but "
                                f"{self.engines} engines need {self.ranks} (one more for the controller)")
        return nodes, ppn


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise TemplateError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise TemplateError(f"unknown {name} {value!r}; use one of "
                            f"{', '.join(c for c in choices if c)}")


# How each scheduler writes the job id in its output directive (PBS has none: the script
# redirects its own output, see launchers/pbs.template).
OUTPUT_JOB_ID = {"slurm": "%j", "sge": "$JOB_ID", "pbs": "${PYMPEC_JOB%%.*}"}


def checked(name: str, value: str) -> str:
    """``value``, after making sure it can stand unquoted in a directive and a command line."""
    if UNSAFE.search(value):
        raise TemplateError(f"{name} {value!r} cannot go in a job script: it has spaces or shell "
                            "characters; choose another path")
    return value


def variables(spec: JobSpec) -> dict[str, str]:
    """The template variables of ``spec``, all strings (see the module docstring)."""
    walltime_seconds = spec.walltime_seconds
    prefix = DIRECTIVE_PREFIX[spec.scheduler]
    extra = [d if d.lstrip().startswith("#") else f"{prefix} {d}" for d in spec.directives]
    # Slurm and SGE place ranks themselves; only PBS must be told nodes and ranks per node.
    if spec.scheduler == "pbs":
        nodes, ppn = spec.layout()
    else:
        if spec.nodes is not None or spec.ppn is not None:
            spec.layout()  # validate
        nodes, ppn = spec.nodes, spec.ppn
    if spec.pbs_style == "torque":
        pbs_resources = f"nodes={nodes}:ppn={ppn}"
    else:
        pbs_resources = f"select={nodes}:ncpus={ppn}:mpiprocs={ppn}"
    python = checked("python", spec.python)
    # The controller's address is found on the node at run time unless given (see batch.address).
    ip = checked("ip", spec.ip) if spec.ip else f"$({python} -m pympec.cluster.batch.address)"
    return {
        "job_name": checked("job_name", spec.job_name),
        "n": str(spec.ranks),
        "engines": str(spec.engines),
        "nodes": "" if nodes is None else str(nodes),
        "ppn": "" if ppn is None else str(ppn),
        "queue": checked("queue", spec.queue),
        "account": checked("account", spec.account),
        "walltime": format_walltime(walltime_seconds),
        "walltime_seconds": str(walltime_seconds),
        "pe": checked("pe", spec.pe),
        "output": checked("output", spec.output).replace("%j", OUTPUT_JOB_ID[spec.scheduler]),
        "workdir": checked("workdir", spec.workdir),
        "python": python,
        **mpi_variables(spec),
        "mpiexec_args": " ".join(spec.mpiexec_args),
        "prologue": "\n".join(["# Site prologue (--prologue, or prologue in config.toml):",
                               *spec.prologue]) if spec.prologue else "",
        "ip": ip,
        "connection_file": checked("connection_file", spec.connection_file),
        "engine_args": engine_args(spec),
        "extra_directives": "\n".join(extra),
        "pbs_resources": pbs_resources,
    }


def mpi_variables(spec: JobSpec) -> dict[str, str]:
    """``mpiexec``, ``mpi_args`` and ``mpi_setup`` (see :mod:`.mpilines`); TemplateError when
    srun offers no PMI that the job's MPI speaks."""
    checked("mpiexec", spec.mpiexec)
    try:
        return mpilines.variables(spec)
    except UsageError as e:
        raise TemplateError(str(e)) from None


def engine_args(spec: JobSpec) -> str:
    """The optional ``python -m pympec.engine`` arguments of ``spec``."""
    args = [f"--port {spec.port}"] if spec.port else []
    if spec.sshserver:
        args.append(f"--sshserver {checked('sshserver', spec.sshserver)}")
    if spec.tls:
        args.append("--tls")
    return " ".join(args)


def template_text(spec: JobSpec) -> tuple[str, str]:
    """(text, name) of the template for ``spec``: its own file, or the shipped one.

    Raises TemplateError when a user's template file cannot be read.
    """
    if spec.template:
        path = Path(spec.template).expanduser()
        try:
            return path.read_text(), str(path)
        except OSError as e:
            raise TemplateError(f"cannot read template {path}: {e.strerror}") from None
    name = f"{spec.scheduler}.template"
    return resources.files("pympec.launchers").joinpath(name).read_text(), f"pympec.launchers/{name}"


def render_text(text: str, values: dict[str, str], name: str = "<template>") -> str:
    """Fill ``text`` with ``values``, dropping lines whose placeholders are empty (module docstring).

    Raises TemplateError naming the template and line for an unknown placeholder.
    """
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        used = [m.group("braced") for m in JobTemplate.pattern.finditer(line) if m.group("braced")]
        unknown = [u for u in used if u not in values]
        if unknown:
            raise TemplateError(f"{name}:{lineno}: unknown variable ${{{unknown[0]}}}; "
                                f"known: {', '.join(sorted(values))}")
        optional = line.lstrip().startswith("#") or line.strip() == f"${{{used[0]}}}" if used else False
        if optional and any(values[u] == "" for u in used):
            continue
        out.append(JobTemplate(line).substitute(values).rstrip())
    return "\n".join(out) + "\n"


def render(spec: JobSpec) -> str:
    """The job script for ``spec``. Raises TemplateError on a bad setting or template."""
    text, name = template_text(spec)
    return render_text(text, variables(spec), name)
