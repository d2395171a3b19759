"""``with mec: remote() ...``: run the body of a with block on the engines instead of here.

IPython 0.10's trick, kept for its users::

    with mec:
        remote()
        a = numpy.random.rand(10)
        s = a.sum()

``__enter__`` finds the block in the caller's source (a file, or an IPython cell, both
through linecache), and if its first statement is ``remote()``, executes the rest on the
engines; then a one-shot trace function stops the local run of the block with
StopLocalExecution, which ``__exit__`` swallows.  A with block that does not start with
``remote()`` is an ordinary context manager.
"""
from __future__ import annotations

import ast
import linecache
import sys
import textwrap
from types import FrameType

from ..errors import StopLocalExecution


def remote() -> None:
    """Marks a ``with mec:`` block as one to run on the engines (see module doc)."""


def remote_body(frame: FrameType) -> str | None:
    """The source after ``remote()`` in the with block at ``frame``'s current line,
    or None when that block does not start with ``remote()``."""
    lines = linecache.getlines(frame.f_code.co_filename, frame.f_globals)
    # Most with blocks are ordinary: look for remote() nearby before parsing the file.
    if not any("remote(" in line for line in lines[frame.f_lineno:frame.f_lineno + 3]):
        return None
    source = "".join(lines)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and node.lineno == frame.f_lineno and node.body:
            first = node.body[0]
            if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Call)
                    and getattr(first.value.func, "id", None) == "remote"):
                return None
            lines = source.splitlines()[first.end_lineno:node.body[-1].end_lineno]
            return textwrap.dedent("\n".join(lines))
    return None


def skip_block(frame: FrameType) -> bool:
    """Raise StopLocalExecution at the next line the caller's frame runs; True if a
    global trace function had to be installed (the caller removes it afterwards)."""
    def stop(frame_, event, arg):
        if event == "line":
            frame.f_trace = None
            raise StopLocalExecution("the block ran on the engines")
        return stop

    frame.f_trace = stop
    if sys.gettrace() is None:
        sys.settrace(lambda *args: None)   # frame tracing needs a global trace function
        return True
    return False
