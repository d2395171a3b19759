"""An engine's last words: how its process died, as its log file tells it.

    engine (pympec.engine.lastwords) writes         controller (pympec.controller.deaths) reads
    ------------------------------------------------------------------------------------------
    "LAST WORDS: os._exit(3)"                 ──>  "its process exited with code 3 (os._exit(3))"
    faulthandler: "Fatal Python error:        ──>  "its process died of SIGSEGV (Segmentation
      Segmentation fault" + the stacks               fault, in FILE line N (FUNCTION))"
    nothing (SIGKILL, an exit in C code)      ──>  "... without last words in its log ..."
"""
from __future__ import annotations

import re

from .. import paths

MARK = "LAST WORDS: "   # before what pympec.engine.lastwords writes
TAIL = 16 << 10         # bytes of a dead engine's log that are read
# faulthandler's words for the signals it catches
SIGNALS = {"Segmentation fault": "SIGSEGV", "Bus error": "SIGBUS", "Aborted": "SIGABRT",
           "Floating-point exception": "SIGFPE", "Floating point exception": "SIGFPE",
           "Illegal instruction": "SIGILL"}
FATAL = re.compile(r"Fatal Python error: (?P<what>[^\n]+)\n(?P<rest>.*)", re.S)
WHERE = re.compile(r'^\s+File "(?P<file>[^"]*)", line (?P<line>\d+) in (?P<name>\S+)', re.M)
UNKNOWN = ("its process ended without last words in its log: a signal it cannot catch "
           "(SIGKILL, from the out-of-memory killer, a batch system or by hand), or an exit "
           "from C code")


def how_it_died(cluster_id: str, rank: int) -> str:
    """How the engine at ``rank`` died, from the tail of its log file; never raises."""
    try:
        with open(paths.rank_log(cluster_id, rank), "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - TAIL))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return UNKNOWN
    return cause(tail)


def cause(tail: str) -> str:
    """How a process died, from the last lines of its log (``tail``)."""
    crash, words = tail.rfind("Fatal Python error: "), tail.rfind(MARK)   # the last count
    if crash > words:
        fatal = FATAL.match(tail, crash)
        what = fatal["what"].strip()
        signal = next((name for text, name in SIGNALS.items() if text in what), None)
        rest = fatal["rest"]   # the crashed thread's stack, innermost call first
        where = WHERE.search(rest, max(0, rest.find("Current thread")))
        at = f", in {where['file']} line {where['line']} ({where['name']})" if where else ""
        return (f"its process died of {signal} ({what}{at})" if signal else
                f"its process died: Fatal Python error: {what}{at}")
    if words >= 0:
        said = tail[words + len(MARK):].splitlines()[0].strip()
        code = re.fullmatch(r"os\._exit\((?P<code>-?\d+)\)", said)
        return (f"its process exited with code {code['code']} ({said})" if code else
                f"its process ended: {said}")
    return UNKNOWN
