"""IPython magics: ``%px``, ``%%px``, ``%autopx`` and ``%result``, as in IPython 0.10.

Turn them on with ``%load_ext pympec`` or with ``mec.activate()`` (which also makes
``mec`` the client they use)::

    In [1]: mec.activate()
    In [2]: %px a = id * 2
    Parallel execution on engines: all
    Out[2]:
    <Results List>
    [0] In [1]: a = id * 2
    ...

* ``%px CODE`` runs one line on the active client's targets and returns the Results
  List (a PendingResult with ``block=False``).  ``%%px`` does the same for a cell.  Both
  take ``--targets T`` (``all``, ``3``, ``0,2``, ``1:3``) and ``--noblock`` / ``--block``
  before the code, for this call only.
* ``%autopx`` toggles sending every input to the engines.  An input that does not
  compile is reported here, as a SyntaxError, and not sent.
* ``%result [N]`` shows execute record ``N`` of each target (default: the latest).

Remote failures show as the CompositeError's summary plus each engine's traceback.
"""
from __future__ import annotations

import ast
import re
from typing import Any

NO_ACTIVE_CONTROLLER = ("Error: No Controller is activated\n"
                        "Use activate() on a MultiEngineClient object to activate it "
                        "for magics.")
AUTOPX_ON = "Auto Parallel Enabled\nType %autopx to disable"
AUTOPX_OFF = "Auto Parallel Disabled"

_active: Any = None          # the client the magics drive
_AUTOPX_CALL = re.compile(r"run_line_magic\(\s*['\"]autopx['\"]")


def active_client() -> Any:
    """The client ``activate()`` chose, or None."""
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


def deactivate() -> None:
    """Forget the active client (the magics then print the no-controller notice)."""
    global _active
    _active = None


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
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
    """What ``%px`` does: print the banner, then ``execute`` on the active client.

    Returns the ResultList (or a PendingResult when not blocking), None when there is
    no active client (the notice is printed instead).  Raises CompositeError for
    remote failures.
    """
    mec = _active
    if mec is None:
        print(NO_ACTIVE_CONTROLLER)
        return None
    targets = options.get("targets", mec.targets)
    print(f"Parallel execution on engines: {targets}")
    return mec.execute(code, targets=targets, block=options.get("block"),
                       stream=options.get("stream", False))


def autopx_execute(code: str) -> None:
    """Run one ``%autopx`` input on the engines and show its Results List."""
    mec = _active
    if mec is None:
        print(NO_ACTIVE_CONTROLLER)
        return
    result = mec.execute(code)
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
            List (a PendingResult with --noblock).  ``%%px`` prints remote output live,
            labelled ``[stdout:0] ...``, as it arrives (``--nostream`` turns that off;
            ``%px --stream`` turns it on).
            """
            try:
                options, rest = split_options(line)
            except ValueError as e:
                print(f"UsageError: {e}")
                return None
            if cell is not None:   # a cell streams its output live unless --nostream
                options.setdefault("stream", True)
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


def composite_error_lines(error: Any) -> list[str]:
    """A CompositeError as IPython shows it: the summary, then each remote traceback."""
    import io
    buf = io.StringIO()
    print(f"{type(error).__name__}: {error}", file=buf)
    error.print_tracebacks(file=buf)
    return buf.getvalue().rstrip("\n").splitlines()


def show_composite_error(shell: Any, etype: type, value: BaseException, tb: Any,
                         tb_offset: int | None = None) -> list[str]:
    """IPython's handler for CompositeError: show the remote tracebacks, not the local
    frames of the client (through IPython's ``_render_traceback_`` protocol, so the
    terminal and Jupyter both get it)."""
    lines = composite_error_lines(value)
    try:
        value._render_traceback_ = lambda: lines
    except AttributeError:  # pragma: no cover - exceptions take attributes
        pass
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
    return []


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext pympec``: register the magics on ``ipython`` (once per shell)."""
    if getattr(ipython, "_pympec_magics", None) is not None:
        return
    magics = _magics_class()(ipython)
    ipython.register_magics(magics)
    ipython._pympec_magics = magics
    from ..errors import CompositeError
    if not ipython.custom_exceptions:
        ipython.set_custom_exc((CompositeError,), show_composite_error)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext pympec``: stop autopx and forget the magics' transformer."""
    magics = getattr(ipython, "_pympec_magics", None)
    if magics is None:
        return
    if magics.autopx in ipython.input_transformers_post:
        ipython.input_transformers_post.remove(magics.autopx)
    ipython._pympec_magics = None
