"""Every ``PYMPEC_*`` environment variable, declared once and read where it is used.

    setting = Setting(name, kind, default, doc, low, high)     declared here, once
    setting.get()   ──> os.environ[name] now ──> same text as last time? the value parsed then
                                             └─> else parse and check it: the value, or SettingError

Each ``get()`` looks at the environment again, so ``monkeypatch.setenv`` and a variable set
in the process take effect without a reimport; remembering the last text keeps a read per
message cheap.  Importing pympec never reads a setting, so a bad value fails only the code
that uses it (and a cluster's ranks at startup, see :func:`check`), with a
:class:`SettingError` that names the variable, the value and what is expected.

``python docs/make_settings.py`` writes docs/settings.md, the table of them all.
The batch defaults ``PYMPEC_BATCH__<KEY>`` and ``PYMPEC_<SCHEDULER>__<KEY>`` keep their own
parser (:mod:`pympec.cluster.batch.config`); the table lists them as a family.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from .errors import UserError


class SettingError(UserError, ValueError):
    """An environment variable whose value cannot be used; the message names the
    variable and the value, and says what is expected."""


@dataclass(frozen=True)
class Kind:
    """How to read one type of value from the environment and how to show it."""
    name: str                         # the type, as the table shows it
    expected: str                     # what a good value looks like, for error messages
    parse: Callable[[str], Any]       # raises ValueError (its text, if any, is a detail)
    show: Callable[[Any], str]        # a value as a user would write it
    numeric: bool = True              # checked against the setting's low..high
    span: str = ""                    # the range, for kinds that are not numeric


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _bytes(text: str) -> int:
    found = re.fullmatch(r"\s*([+-]?\d+)\s*([KMGT]?)\s*", text, re.I)
    if not found:
        raise ValueError()
    return int(found[1]) * _UNITS[found[2].upper()]


def _show_bytes(n: int) -> str:
    for suffix in "TGMK":
        if n and n % _UNITS[suffix] == 0:
            return f"{n // _UNITS[suffix]}{suffix}"
    return str(n)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError() from None   # the message says what is expected; float's adds nothing
    if not math.isfinite(value):       # inf and nan: no time to wait or compare against
        raise ValueError()
    return value


BACKOFF_FIELDS = ("spin", "start", "max", "idle", "idle_max")


def _backoff(text: str) -> Mapping[str, float]:
    """``0.002`` (``max``, in seconds) or ``max=0.001,idle=2``: the Backoff fields set."""
    fields: dict[str, float] = {}
    if "=" not in text:
        fields["max"] = _seconds(text)
    else:
        for item in text.split(","):
            name, _, value = item.partition("=")
            name = name.strip()
            if name not in BACKOFF_FIELDS:
                raise ValueError(f"unknown field {name!r}")
            fields[name] = _seconds(value)
    for name, value in fields.items():
        if value < 0:
            raise ValueError(f"{name} is negative")
    return MappingProxyType(fields)   # read-only: the remembered value is shared


def _seconds_list(text: str) -> tuple[float, ...]:
    """``600,120``: lead times in seconds, each finite and >= 0, returned largest first."""
    values = tuple(_seconds(item) for item in text.split(",") if item.strip())
    if not values or any(value < 0 for value in values):
        raise ValueError()
    return tuple(sorted(set(values), reverse=True))


def _flag(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError()


def _count(text: str) -> int:
    return int(text.strip())   # ValueError on anything but a whole number


BYTES = Kind("bytes", "a byte count such as 2147483648 or 2G", _bytes, _show_bytes)
SECONDS = Kind("seconds", "a finite number of seconds such as 600 or 0.5", _seconds,
               lambda value: f"{value:g}")
SECONDS_LIST = Kind("seconds, listed", "finite numbers of seconds >= 0 separated by commas, "
                    "such as 600,120", _seconds_list,
                    lambda values: ",".join(f"{value:g}" for value in values),
                    numeric=False, span="each >= 0")
FLAG = Kind("flag", "1 or 0 (or true/false, yes/no, on/off)", _flag,
            lambda value: "1" if value else "0", numeric=False, span="1 or 0")
COUNT = Kind("count", "a whole number such as 10", _count, str)
PATH = Kind("path", "a path", str, str, numeric=False, span="any")
INT = Kind("count", "a whole number such as 256", int, str)
BACKOFF_KIND = Kind(
    "seconds, or fields",
    f"seconds (the max sleep), or name=seconds fields among {', '.join(BACKOFF_FIELDS)} "
    f"separated by commas, each finite and >= 0", _backoff,
    lambda fields: ",".join(f"{name}={value:g}" for name, value in fields.items()),
    numeric=False, span="each field >= 0")


@dataclass(frozen=True)
class Setting:
    """One ``PYMPEC_*`` environment variable: its type, default, range and what it does."""
    name: str
    kind: Kind
    default: Any                      # the value when the variable is unset or blank
    doc: str                          # one line, for the table
    low: float = 0
    high: float = math.inf
    shown: str | None = None          # the default as the table shows it, if not kind.show
    # The last (text, value) parsed: a one-item list, as the dataclass is frozen.
    _last: list = field(default_factory=lambda: [None], init=False, repr=False, compare=False)

    def get(self) -> Any:
        """The variable's value now (the default when unset or blank).

        Raises SettingError when the value cannot be used; never blocks.
        """
        raw = os.environ.get(self.name, "")
        last = self._last[0]
        if last is not None and last[0] == raw:
            return last[1]
        value = self.parse(raw)
        self._last[0] = (raw, value)   # one tuple, swapped whole: safe across threads
        return value

    def parse(self, raw: str) -> Any:
        """The value ``raw`` stands for (the default when blank); raises SettingError."""
        if not raw.strip():
            return self.default
        try:
            value = self.kind.parse(raw)
            if self.kind.numeric and not self.low <= value <= self.high:
                raise ValueError()
        except ValueError as e:
            detail = f" ({e})" if str(e) else ""
            raise SettingError(f"{self.name}={raw!r}: expected {self.expected()}{detail}") \
                from None
        return value

    def expected(self) -> str:
        """What a good value looks like, range included."""
        return f"{self.kind.expected}, {self.span()}" if self.kind.numeric else self.kind.expected

    def span(self) -> str:
        """The allowed range, as the table shows it."""
        if not self.kind.numeric:
            return self.kind.span
        if self.high == math.inf:
            return f">= {self.kind.show(self.low)}"
        return f"{self.kind.show(self.low)} to {self.kind.show(self.high)}"

    def default_text(self) -> str:
        """The default, as the table shows it."""
        return self.shown if self.shown is not None else self.kind.show(self.default)


DIR = Setting("PYMPEC_DIR", PATH, None, "Where pympec keeps connection files (`security/`), "
              "per-rank logs (`log/`) and `config.toml`.", shown="`~/.pympec`")
MPIEXEC = Setting("PYMPEC_MPIEXEC", PATH, None, "The mpiexec that starts local clusters.",
                  shown="the one beside Python (the venv's), else on PATH")
PROFILE = Setting("PYMPEC_PROFILE", PATH, None, "A directory: every rank runs under cProfile "
                  "and writes `rank<N>.prof` there on a clean exit.", shown="unset: off")
END_TIME = Setting("PYMPEC_END_TIME", SECONDS, None, "When the batch job ends, in unix "
                   "seconds; job scripts set it, the controller tells clients.",
                   shown="unset: no end")
WALLTIME_WARNING = Setting("PYMPEC_WALLTIME_WARNING", SECONDS_LIST, (600.0, 120.0), "A client "
                           "warns when its cluster's batch job is this many seconds from its "
                           "walltime, once per value (`600,120`: at 10 and at 2 minutes); see "
                           "docs/batch.md.")
LOG_KEEP = Setting("PYMPEC_LOG_KEEP", COUNT, 10, "How many clusters' log files (`log/`) are "
                   "kept; older ones go when pympec starts a cluster, except a running "
                   "cluster's; see docs/batch.md.")
CLIENT_SPIN = Setting("PYMPEC_CLIENT_SPIN", SECONDS, 1e-3, "After sending, a client polls its "
                      "socket this long before it sleeps, so a short call's reply costs no "
                      "wake-up.")
BACKOFF = Setting("PYMPEC_BACKOFF", BACKOFF_KIND, MappingProxyType({}), "How long idle ranks "
                  "sleep between polls: `0.002` sets `max`, or give fields by name "
                  "(`max=0.001,idle=2,idle_max=0.05,spin=0.0005`); see docs/performance.md.",
                  shown="per rank")
MAX_MESSAGE = Setting("PYMPEC_MAX_MESSAGE", BYTES, 1 << 40, "The largest message (bytes of "
                      "frames) a controller or client accepts; a larger one is refused before "
                      "anything is allocated.")
RESULT_CAP = Setting("PYMPEC_RESULT_CAP", BYTES, 2 << 30, "Bytes the controller keeps for "
                     "clients (results not yet acknowledged, execute records and their "
                     "output, task results not yet fetched); past it, new submissions fail "
                     "with MemoryError until clients fetch or clear what they are owed.")
RESULT_GRACE = Setting("PYMPEC_RESULT_GRACE", SECONDS, 300.0, "Seconds the controller keeps "
                       "the results of a client that disconnected, for it to reconnect and "
                       "fetch them; then they are released.")
CONTROLLER_TIMEOUT = Setting("PYMPEC_CONTROLLER_TIMEOUT", SECONDS, 30.0, "A client waiting on "
                             "a controller that sends nothing for this long (frozen, or the "
                             "network gone) raises ClusterError; it pings the controller "
                             "every few seconds of silence meanwhile.  The controller "
                             "likewise closes a client connection that stops this long in "
                             "the middle of a message (a stalled upload holds its engines).",
                             low=1.0)
MAX_UNAUTHENTICATED = Setting("PYMPEC_MAX_UNAUTHENTICATED", INT, 256, "Connections a "
                              "controller lets wait in the handshake at once; past it, the "
                              "oldest is dropped.", low=1)
BUFFER_CAP = Setting("PYMPEC_BUFFER_CAP", BYTES, 2 << 30, "Free bytes the warm-buffer pool "
                     "keeps for reuse; 0 turns the pool off.")
BUFFER_KEEP = Setting("PYMPEC_BUFFER_KEEP", SECONDS, 5.0, "Seconds a free pooled buffer waits "
                      "for reuse before it goes back to the system.")
ENGINE_THREADS = Setting("PYMPEC_ENGINE_THREADS", COUNT, None, "Threads each engine's "
                        "BLAS, OpenMP and numexpr may start (`OMP_NUM_THREADS` and the like, "
                        "set over the environment's); see docs/performance.md.", low=1,
                        shown="unset: the CPUs per engine on its node, keeping those set")
FAULT_TOLERANT = Setting("PYMPEC_FAULT_TOLERANT", FLAG, False, "A local cluster outlives the "
                         "death of an engine's process where its MPI can (Open MPI 5: "
                         "`--with-ft ulfm`); its ranks then watch for dead engines.  See "
                         "docs/fault-tolerance.md.")

SETTINGS: tuple[Setting, ...] = (
    DIR, MPIEXEC, PROFILE, END_TIME, WALLTIME_WARNING, LOG_KEEP, CLIENT_SPIN, BACKOFF,
    MAX_MESSAGE, RESULT_CAP, RESULT_GRACE, CONTROLLER_TIMEOUT, MAX_UNAUTHENTICATED,
    BUFFER_CAP, BUFFER_KEEP, ENGINE_THREADS, FAULT_TOLERANT)


def check() -> None:
    """Read every setting now; raises SettingError on the first bad one.

    Ranks call it first thing, so a bad value stops the whole cluster at startup (every
    rank sees the same environment) instead of the controller's loop at first use.
    """
    for setting in SETTINGS:
        setting.get()
