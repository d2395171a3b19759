"""An engine's interpreter: the persistent user namespace and what runs in it.

One Interpreter per engine.  It knows nothing of MPI or messages: the engine loop
(:mod:`pympec.engine.loop`) decodes a command, calls the method of the same name here, and
encodes what it returns or raises.
"""
from __future__ import annotations

import ast
import functools
import io
import sys
import time
import types
from typing import Any, Callable

# Names ``keys()`` leaves out, as IPython 0.10's engines did.
HIDDEN = frozenset({"__name__", "_ih", "_oh", "__builtins__", "In", "Out", "_", "__", "___",
                    "__IP", "input", "raw_input"})


class EngineGlobals(dict):
    """Globals for a function sent by a client: its own captured globals first, then
    the engine namespace, then builtins.  So cloudpickled closures keep what they
    brought, and names defined only on the engine resolve there, as in IPython 0.10."""

    def __init__(self, captured: dict, namespace: dict) -> None:
        super().__init__(captured)
        self.namespace = namespace

    def __missing__(self, name: str) -> Any:
        return self.namespace[name]


def bind(func: Any, namespace: dict, *, replace: bool = False) -> Any:
    """``func`` with its global names resolving in ``namespace``.

    Functions of importable modules keep their module globals.  With ``replace``, the
    namespace *is* the globals (IPython 0.10's push_function); otherwise it comes after
    what cloudpickle captured.
    """
    if not isinstance(func, types.FunctionType):
        return func
    module = sys.modules.get(func.__module__ or "")
    if module is not None and getattr(module, "__dict__", None) is func.__globals__:
        return func
    globals_ = namespace if replace else EngineGlobals(func.__globals__, namespace)
    bound = types.FunctionType(func.__code__, globals_, func.__name__, func.__defaults__,
                               func.__closure__)
    bound.__kwdefaults__ = func.__kwdefaults__
    bound.__dict__.update(func.__dict__)
    bound.__qualname__, bound.__doc__ = func.__qualname__, func.__doc__
    return bound


class Interpreter:
    """The namespace and history of one engine."""

    def __init__(self, engine_id: int, seed: dict[str, Any]) -> None:
        self.id = engine_id
        self.seed = seed
        self.history: dict[int, dict] = {}
        self.properties: dict[str, Any] = {}
        self.namespace: dict[str, Any] = {}
        self.capture = Capture()
        self.shown: Any = _NOTHING
        self.reset()

    # -- the commands ------------------------------------------------------------

    def execute(self, code: str, live: Callable[[str, str], None] | None = None) -> dict:
        """Run ``code`` statement by statement, as an interactive session would.

        Returns IPython 0.10's record: id, number, input, and stdout/stderr/display
        when there were any.  The record is ``history[number]`` from the start, so after
        an exception (which propagates) it still holds the output.  With ``live``,
        output is also passed on while the code runs: ``live(name, text)``.
        """
        self.number += 1
        record: dict[str, Any] = {"id": self.id, "number": self.number,
                                  "input": {"raw": code, "translated": code}}
        self.history[self.number] = record
        out, err = (LiveOutput("stdout", live), LiveOutput("stderr", live)) if live else \
            self.capture.fresh()
        self.shown = _NOTHING
        saved = sys.stdout, sys.stderr, sys.displayhook
        sys.stdout, sys.stderr, sys.displayhook = out, err, self.display
        try:
            for statement in statements(code):
                exec(statement, self.namespace)
        finally:
            sys.stdout, sys.stderr, sys.displayhook = saved
            for name, stream in (("stdout", out), ("stderr", err)):
                stream.flush()
                text = stream.getvalue()
                if text:
                    record[name] = text
            if self.shown is not _NOTHING:
                record["display"] = {"repr": repr(self.shown), "pprint": _pformat(self.shown)}
        return record

    def display(self, value: Any) -> None:
        """sys.displayhook while code runs: keep the last value an expression showed."""
        if value is not None:
            self.shown = value

    def push(self, namespace: dict) -> None:
        self.namespace.update(namespace)

    def push_function(self, namespace: dict) -> None:
        for name, func in namespace.items():
            if not callable(func):
                raise TypeError(f"push_function needs functions; {name!r} is "
                                f"{type(func).__name__}")
        self.namespace.update({name: bind(func, self.namespace, replace=True)
                               for name, func in namespace.items()})

    def pull(self, keys: list[str]) -> list[Any]:
        missing = [k for k in keys if k not in self.namespace]
        if missing:
            raise NameError(f"name {missing[0]!r} is not defined on engine {self.id}")
        return [self.namespace[k] for k in keys]

    def apply(self, func: Callable | str, chunk: list[tuple]) -> list[Any]:
        """``[func(*args) for args in chunk]``; a str names a function in the namespace."""
        if isinstance(func, str):
            if func not in self.namespace:
                raise NameError(f"name {func!r} is not defined on engine {self.id}")
            func = self.namespace[func]
        else:
            func = bind(func, self.namespace)
        return [func(*args) for args in chunk]

    def keys(self) -> list[str]:
        return [k for k in self.namespace if k not in HIDDEN]

    def reset(self) -> None:
        """A new interpreter: only the seeded names, no properties, no history, and the
        execute counter back at 0."""
        self.number = 0
        self.history.clear()
        self.namespace.clear()
        self.namespace.update({"__name__": "__main__", "__builtins__": __builtins__,
                               "id": self.id, **self.seed})
        self.properties.clear()

    def get_result(self, number: int | None = None) -> dict:
        if number is None:
            number = self.number
        if number not in self.history:
            raise IndexError(f"engine {self.id} has no execute result number {number} "
                             f"(it has run {self.number})")
        return self.history[number]

    # -- properties (for task dependencies) -------------------------------------

    def set_properties(self, properties: dict) -> None:
        self.properties.update(properties)

    def get_properties(self, keys: list[str] | None = None) -> dict:
        if keys is None:
            return dict(self.properties)
        return {k: self.properties[k] for k in keys}

    def has_properties(self, keys: list[str]) -> list[bool]:
        return [k in self.properties for k in keys]

    def del_properties(self, keys: list[str]) -> None:
        for k in keys:
            del self.properties[k]

    def clear_properties(self) -> None:
        self.properties.clear()


_NOTHING = object()     # no expression showed a value


class Capture:
    """Where an execute's stdout and stderr go: two StringIO made once per engine and
    emptied for each call (making them, and entering a context manager, cost more than
    a no-op's whole run)."""

    def __init__(self) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()

    def fresh(self) -> tuple[io.StringIO, io.StringIO]:
        for stream in (self.out, self.err):
            stream.seek(0)
            stream.truncate()
        return self.out, self.err


LIVE_PIECE = 64 << 10   # characters of live output per message


class LiveOutput(io.StringIO):
    """A captured stream that also passes its text on, a line batch at a time, at most
    every ``interval`` seconds (and whatever is left on flush)."""

    def __init__(self, name: str, send: Callable[[str, str], None],
                 interval: float = 0.1) -> None:
        super().__init__()
        self.name, self.send, self.interval = name, send, interval
        self.pending: list[str] = []
        self.sent_at = 0.0

    def write(self, text: str) -> int:
        self.pending.append(text)
        if "\n" in text and time.monotonic() - self.sent_at >= self.interval:
            self.flush()
        return super().write(text)

    def flush(self) -> None:
        if self.pending:
            text, self.pending = "".join(self.pending), []
            self.sent_at = time.monotonic()
            for at in range(0, len(text), LIVE_PIECE):   # small messages, however much
                self.send(self.name, text[at:at + LIVE_PIECE])


@functools.lru_cache(maxsize=256)   # a client's loop sends the same code again and again
def statements(code: str) -> tuple[types.CodeType, ...]:
    """Compile ``code`` into one 'single'-mode code object per top-level statement,
    so expression statements are displayed as in an interactive session."""
    tree = ast.parse(code, "<pympec>", "exec")
    return tuple(compile(ast.Interactive([node]), "<pympec>", "single") for node in tree.body)


def _pformat(value: Any) -> str:
    import pprint
    try:
        return pprint.pformat(value)
    except Exception:
        return repr(value)
