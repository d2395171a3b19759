"""What an engine writes in its log as its process dies, so the controller can say how.

    user code on the engine          this module                     the engine's log file
    ----------------------------------------------------------------------------------------
    os._exit(3)               ──>  the wrapper logs "LAST WORDS:      ──>  "... LAST WORDS:
                                   os._exit(3)", then exits               os._exit(3)"
    a segfault in C code      ──>  faulthandler (C level, no Python   ──>  "Fatal Python error:
      (SIGSEGV, SIGBUS, SIGFPE,    needed) dumps every thread's            Segmentation fault"
       SIGILL, SIGABRT)            stack, then the signal kills            + the stacks
    SIGKILL, exit() in C      ──>  nothing can run: no last words

The controller reads them (:mod:`pympec.protocol.lastwords`) when MPI reports the engine's
rank dead.  Nothing here costs anything until the process dies.
"""
from __future__ import annotations

import faulthandler
import logging
import os
from typing import IO

from ..protocol.lastwords import MARK

log = logging.getLogger("pympec.engine")


def install(log_file: IO[str] | None) -> None:
    """Write the engine's last words to ``log_file`` (the rank's log, an open file)."""
    if log_file is not None:
        faulthandler.enable(file=log_file, all_threads=True)
    engine_pid, real_exit = os.getpid(), os._exit

    def exit_with_last_words(code: int) -> None:
        if os.getpid() == engine_pid:   # (not in a forked child: it is not the engine)
            log.critical("%sos._exit(%s)", MARK, code)
        real_exit(code)

    os._exit = exit_with_last_words


def log_stream() -> IO[str] | None:
    """The open file of the root logger's file handler (see ``pympec.boot``), if any."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.stream
    return None
