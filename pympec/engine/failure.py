"""How an engine reports an exception: one encoding for direct calls and tasks alike.

    user code raises e  ──>  encode(e) ──> {"status": "error", "ename", "evalue", "traceback"}
                                            + [the pickled exception], if it pickles and
                                              unpickles; else no frame
    the client rebuilds it (pympec.client.failures): the exception itself, or a
    RemoteError, with the engine's traceback text chained as its ``__cause__``

Nothing here may raise, whatever the exception does: its ``__str__`` may raise, its
pickling may fail or raise a BaseException of its own, formatting its traceback may fail.
Each step falls back to a plainer description instead, so a failure always becomes a
reply and the engine goes on serving.
"""
from __future__ import annotations

import os
import pickle
import traceback

from ..protocol.serialize import PROTOCOL

_HERE = os.path.dirname(os.path.abspath(__file__))
TEXT_MAX = 64 << 10


def encode(e: BaseException) -> tuple[dict, list]:
    """The reply fields for a failed call, and its frames (the pickled exception, or
    none when it does not survive pickling).  Its texts are cut at TEXT_MAX characters
    each, so they never swell a message header (the exception itself travels whole)."""
    name = _name(e)
    info = {"status": "error", "ename": name, "evalue": cut(_value(e, name)),
            "traceback": cut(remote_traceback(e))}
    return info, _pickled(e)


def cut(text: str) -> str:
    """``text``, its middle cut out past TEXT_MAX characters."""
    if len(text) <= TEXT_MAX:
        return text
    return f"{text[:TEXT_MAX // 2]}\n... ({len(text) - TEXT_MAX} characters cut) ...\n" \
           f"{text[-TEXT_MAX // 2:]}"


def remote_traceback(e: BaseException) -> str:
    """The formatted traceback of ``e``, without the engine's own frames."""
    try:
        tb = e.__traceback__
        while tb is not None and os.path.dirname(os.path.abspath(
                tb.tb_frame.f_code.co_filename)) == _HERE:
            tb = tb.tb_next
        return "".join(traceback.format_exception(type(e), e, tb))
    except BaseException:   # a broken __str__ can break formatting in some Pythons
        name = _name(e)
        return f"{name}: {_value(e, name)}\n(its traceback could not be formatted)\n"


def _name(e: BaseException) -> str:
    try:
        return str(type(e).__name__)
    except BaseException:
        return "Exception"


def _value(e: BaseException, name: str) -> str:
    try:
        return str(e)
    except BaseException:
        return f"<unprintable {name} object>"


def _pickled(e: BaseException) -> list:
    try:
        e.__traceback__ = None   # tracebacks do not pickle; their text travels instead
        import cloudpickle   # (loaded at the first failure: engines start faster)
        stream = cloudpickle.dumps(e, protocol=PROTOCOL)
        pickle.loads(stream)     # it must also unpickle, on the client
        return [stream]
    except BaseException:
        return []
