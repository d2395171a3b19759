"""IPython magics: ``%px``, ``%%px``, ``%autopx`` and ``%result``, as in IPython 0.10.

They are simply there: creating a MultiEngineClient inside IPython (a terminal, Jupyter)
registers them and makes that client the one they drive, unless another one already is
(as IPython 0.10 registered them on import).  ``%load_ext pympec`` registers them too,
and connects to the default running cluster; ``mec.activate()`` switches to ``mec``::

    In [1]: mec = client.MultiEngineClient()
    In [2]: %px a = id * 2; print(a)
    Parallel execution on engines: all
    [stdout:0] 0
    [stdout:1] 2
    Out[2]:
    <Results List>
    [0] In [1]: a = id * 2; print(a)
    [1] In [1]: a = id * 2; print(a)

* ``%px CODE`` runs one line on the active client's targets, printing each engine's
  output as it arrives, and returns the Results List (a PendingResult with
  ``block=False``), without the output already printed.  ``%%px`` does the same for a
  cell.  Both take ``--targets T`` (``all``, ``3``, ``0,2``, ``1:3``), ``--noblock`` /
  ``--block`` and ``--nostream`` before the code, for this call only.
* ``%autopx`` toggles sending every input to the engines, as ``%px`` would.  An input
  that does not compile is reported here, as a SyntaxError, and not sent.
* ``%result [N]`` shows execute record ``N`` of each target (default: the latest).

Remote failures show as the CompositeError's message and each distinct remote
traceback once (see ``CompositeError._render_traceback_``).
"""
from __future__ import annotations

import ast
import re
import sys
from typing import Any

NO_ACTIVE_CONTROLLER = ("Error: No Controller is activated\n"
                        "Use activate() on a MultiEngineClient object to activate it "
                        "for magics.")
AUTOPX_ON = "Auto Parallel Enabled\nType %autopx to disable"
AUTOPX_OFF = "Auto Parallel Disabled"

_active: Any = None          # the client the magics drive
_AUTOPX_CALL = re.compile(r"run_line_magic\(\s*['\"]autopx['\"]")


def active_client() -> Any:
    """The client the magics use, or None."""
    return _active


def activate(client: Any) -> None:
    """Make ``client`` the one the magics use, and load them into the running IPython.

    Outside IPython, prints a notice: the client is remembered, but there are no
    magics to run.
    """
    global _active
    _active = client
    shell = _shell()
    if shell is None:
        print("pympec: the %px, %result and %autopx magics work only within IPython; "
              "this client is activated for them.")
        return
    load_ipython_extension(shell)


def adopt(client: Any) -> None:
    """What creating a MultiEngineClient does: within IPython, register the magics and
    make ``client`` the one they use unless another one is; outside, nothing."""
    global _active
    shell = _shell()
    if shell is None:
        return
    load_ipython_extension(shell)
    if _active is None:
        _active = client


def deactivate() -> None:
    """Forget the active client (the magics then print the no-controller notice)."""
    global _active
    _active = None


def forget(client: Any) -> None:
    """What closing a client does: if the magics use ``client``, they use none now."""
    if _active is client:
        deactivate()


def _shell() -> Any:
    """The running IPython shell, or None (without importing IPython when it is not)."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython
    return get_ipython()


def parse_targets(text: str) -> Any:
    """``all``, ``3``, ``0,2``, ``[0, 2]`` or ``1:3`` as a targets value.

    Raises ValueError for anything else.
    """
    text = text.strip().strip("[]()").replace(" ", "")
    if text == "all":
        return "all"
    try:
        if ":" in text:
            start, _, stop = text.partition(":")
            return list(range(int(start or 0), int(stop)))
        if "," in text:
            return [int(t) for t in text.split(",") if t]
        return int(text)
    except ValueError:
        raise ValueError(f"--targets takes all, an id, ids like 0,2 or a range like 1:3; "
                         f"not {text!r}") from None


def split_options(line: str) -> tuple[dict, str]:
    """Split leading ``--targets T``, ``--noblock``, ``--block`` off a magic's line.

    Returns (call options, the code that follows).  Raises ValueError for an unknown
    option or a missing value.
    """
    options: dict = {}
    rest = line.lstrip()
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        if word.startswith("--targets"):
            if "=" in word:
                value = word.partition("=")[2]
            else:
                value, _, rest = rest.partition(" ")
                rest = rest.lstrip()
            if not value:
                raise ValueError("--targets needs a value, like --targets 0,1")
            options["targets"] = parse_targets(value)
        elif word == "--noblock":
            options["block"] = False
        elif word == "--block":
            options["block"] = True
        elif word in ("--stream", "--nostream"):
            options["stream"] = word == "--stream"
        else:
            raise ValueError(f"unknown option {word!r}: %px takes --targets T, --noblock, "
                             f"--block, --stream, --nostream")
    return options, rest


def px_execute(code: str, **options: Any) -> Any:
    """What ``%px`` does: print the banner, then ``execute`` on the active client,
    printing the engines' output as it arrives (unless ``stream=False``).

    Blocks until the engines finish (unless ``block=False``).  Returns the ResultList,
    which leaves out the output already printed (or a PendingResult when not blocking);
    None when there is no active client (the notice is printed instead).  Raises
    CompositeError for remote failures.
    """
    mec = _active
    if mec is None:
        print(NO_ACTIVE_CONTROLLER)
        return None
    targets = options.get("targets", mec.targets)
    print(f"Parallel execution on engines: {targets}")
    return mec.execute(code.rstrip(), targets=targets, block=options.get("block"),
                       stream=options.get("stream", True))


def autopx_execute(code: str) -> None:
    """Run one ``%autopx`` input on the engines, streaming its output as ``%px`` does,
    and show its Results List."""
    mec = _active
    if mec is None:
        print(NO_ACTIVE_CONTROLLER)
        return
    result = mec.execute(code.rstrip(), stream=True)
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - only called from IPython
        print(repr(result))
    else:
        display(result)


class AutoPx:
    """The ``%autopx`` input transformer: rewrites each input into a call to
    :func:`autopx_execute`, unless it turns autopx off or does not compile (then it is
    left alone, so IPython runs the magic, or reports the SyntaxError, locally)."""

    def __init__(self) -> None:
        self.enabled = False

    def __call__(self, lines: list[str]) -> list[str]:
        if not self.enabled:
            return lines
        source = "".join(lines)
        if not source.strip() or _AUTOPX_CALL.search(source):
            return lines
        try:
            ast.parse(source)
        except (SyntaxError, ValueError, OverflowError):
            return lines
        return [f"__import__('pympec.client.magics', fromlist=['autopx_execute'])"
                f".autopx_execute({source!r})\n"]


def _magics_class() -> type:
    from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class

    @magics_class
    class ParallelMagics(Magics):
        """%px, %%px, %autopx and %result, driving the activated client."""

        def __init__(self, shell: Any) -> None:
            super().__init__(shell)
            self.autopx = AutoPx()
            shell.input_transformers_post.append(self.autopx)

        @line_cell_magic
        def px(self, line: str, cell: str | None = None) -> Any:
            """Run code on the engines: ``%px CODE`` or ``%%px [--targets T] [--noblock]``.

            Prints ``Parallel execution on engines: <targets>`` and returns the Results
            List (a PendingResult with --noblock).  Remote output is printed live,
            labelled ``[stdout:0] ...``, as it arrives, and left out of the Results List
            (``--nostream`` turns that off).
            """
            try:
                options, rest = split_options(line)
            except ValueError as e:
                print(f"UsageError: {e}")
                return None
            code = rest if cell is None else cell
            return px_execute(code, **options)

        @line_magic
        def autopx(self, line: str = "") -> None:
            """Toggle sending every input to the engines (``%autopx`` again stops)."""
            if _active is None:
                print(NO_ACTIVE_CONTROLLER)
                return
            self.autopx.enabled = not self.autopx.enabled
            print(AUTOPX_ON if self.autopx.enabled else AUTOPX_OFF)

        @line_magic
        def result(self, line: str = "") -> Any:
            """``%result [N]``: execute record N of each target (default: the latest)."""
            if _active is None:
                print(NO_ACTIVE_CONTROLLER)
                return None
            try:
                number = int(line.strip())
            except ValueError:
                number = None
            return _active.get_result(number)

    return ParallelMagics


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics on ``ipython`` (once per shell).  ``%load_ext pympec`` also
    connects to the default cluster: see :func:`pympec.load_ipython_extension`."""
    if getattr(ipython, "_pympec_magics", None) is not None:
        return
    magics = _magics_class()(ipython)
    ipython.register_magics(magics)
    ipython._pympec_magics = magics


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext pympec``: stop autopx and forget the magics' transformer."""
    magics = getattr(ipython, "_pympec_magics", None)
    if magics is None:
        return
    if magics.autopx in ipython.input_transformers_post:
        ipython.input_transformers_post.remove(magics.autopx)
    ipython._pympec_magics = None
