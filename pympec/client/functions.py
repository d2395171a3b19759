"""The functions tasks carry, pickled as rarely as is safe.

    a function of an importable module  ──> plain pickle: its module and name
    any other (a lambda, a function of __main__)  ──> cloudpickle, by value, kept for
        the next task of the same function while nothing it captured can have changed:
        its code, its defaults, its closure's cells and the globals it names are the
        same objects as then, and each is immutable (numbers, strings, None, tuples of
        them, modules, functions and classes of importable modules)
    one that captures anything mutable (a list, a dict, an array) ──> pickled again for
        every task, so that a task sees what it captured as it was when submitted,
        as in IPython 0.10

cloudpickle takes tens of microseconds for even a small function, which would cap a
loop of ``tc.run`` far below what the rest of the path does.
"""
from __future__ import annotations

import collections
import pickle
import sys
import threading
import types
from typing import Any

import cloudpickle

from ..protocol.serialize import PROTOCOL

KEPT = 64   # functions whose pickles are kept
_kept: collections.OrderedDict[int, tuple[Any, tuple, bytes]] = collections.OrderedDict()
_lock = threading.Lock()   # (an executor's thread pickles too)
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), range, types.ModuleType,
              types.BuiltinFunctionType)
_MISSING = object()


def pickled(func: Any) -> bytes:
    """``func``'s pickle (see the module doc); raises TypeError if it cannot be sent."""
    try:
        if _importable(func):
            return pickle.dumps(func, protocol=PROTOCOL)
        captured = _captured(func)
        with _lock:
            kept = _kept.get(id(func))
        if kept is not None and kept[0] is func and captured is not None \
                and _same(kept[1], captured):
            return kept[2]
        data = cloudpickle.dumps(func, protocol=PROTOCOL)
    except Exception as e:
        raise TypeError(f"cannot send {type(func).__name__} object: {e}") from e
    if captured is not None:
        with _lock:
            _kept[id(func)] = (func, captured, data)   # (holding func keeps its id unique)
            while len(_kept) > KEPT:
                _kept.popitem(last=False)
    return data


def _importable(obj: Any) -> bool:
    """Whether ``obj`` is found again by its module and name (pickled by reference)."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if module is None or module.__name__ == "__main__":
        return False
    found: Any = module
    for part in getattr(obj, "__qualname__", "<>").split("."):
        found = getattr(found, part, _MISSING)
    return found is obj and module.__name__ not in _by_value()


def _by_value() -> set:
    """Modules cloudpickle was told to pickle by value (register_pickle_by_value)."""
    return getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", set())


def _captured(func: Any) -> tuple | None:
    """What a function pickled by value captures, if all of it is immutable; else None."""
    if not isinstance(func, types.FunctionType) or func.__dict__:
        return None
    values = [func.__code__, *(func.__defaults__ or ()),
              *(func.__kwdefaults__ or {}).values()]
    values += [cell.cell_contents for cell in func.__closure__ or ()]
    values += [func.__globals__.get(name, _MISSING) for name in _names(func.__code__)]
    if all(v is _MISSING or v is func.__code__ or _immutable(v) for v in values):
        return tuple(values)
    return None


def _names(code: types.CodeType) -> set:
    """The global (and attribute) names a code object and the ones nested in it use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _immutable(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _IMMUTABLE):
        return True
    if type(value) in (tuple, frozenset) and depth < 3:
        return all(_immutable(v, depth + 1) for v in value)
    return isinstance(value, (types.FunctionType, type)) and _importable(value)


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))
