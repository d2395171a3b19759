"""Checks of the public API's arguments, made here before anything is sent.

Each raises what IPython 0.10 (or Python) would: TypeError for a value of the wrong type,
ValueError for a value out of range (InvalidEngineID, a ValueError, for targets;
IndexError for task ids and execute records that cannot exist), with a message naming
the argument, the bad value and what is expected.

They accept no more than the controller's registry (:mod:`pympec.protocol.commands`)
does, so a request that passes here passes its door: names are ``str.isidentifier()``,
ids and counts are ints in ``0..MAX_INT``, property keys str of at most ``MAX_KEY``
characters.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable

from ..errors import InvalidEngineID

MAX_INT = 1 << 62      # the registry's bound on ids and counts (commands.integer)
MAX_KEY = 1 << 10      # characters of a property key (commands.KEYS)
MAX_RETRIES = 1 << 20  # a task's retries (commands._task_spec)


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_int(value: Any) -> bool:
    """An int (NumPy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# -- targets, block and friends -----------------------------------------------------

def check_targets(targets: Any) -> Any:
    """``targets`` as sent: ``'all'``, an engine id, or a list of distinct ids.
    InvalidEngineID otherwise; which ids exist is the controller's to say."""
    if isinstance(targets, str) and targets == "all":
        return targets
    want = "'all', an engine id (an int) or a list of ids"
    if isinstance(targets, (list, tuple)):
        if not targets:
            raise InvalidEngineID("targets is an empty list: name at least one engine, "
                                  "or 'all'")
        if not all(_is_int(t) for t in targets):
            raise InvalidEngineID(f"targets must be {want}, not {shown(targets)}")
        ids = [_engine_id(t) for t in targets]
        twice = [t for i, t in enumerate(ids) if t in ids[:i]]
        if twice:
            raise InvalidEngineID(f"targets name engine {twice[0]} twice: {shown(targets)}")
        return ids
    if not _is_int(targets):
        raise InvalidEngineID(f"targets must be {want}, not {shown(targets)}")
    return _engine_id(targets)


def _engine_id(value: numbers.Integral) -> int:
    if not 0 <= value <= MAX_INT:
        raise InvalidEngineID(f"no engine has id {value}: engine ids count from 0")
    return int(value)


def check_block(block: Any) -> bool:
    """``block`` must be True or False (ValueError, as in IPython 0.10)."""
    if block is not True and block is not False:
        raise ValueError(f"block must be True or False, not {shown(block)}")
    return block


def check_flag(value: Any, name: str) -> bool:
    """A yes/no option such as ``flatten`` or ``clear_after``: True or False."""
    if value is not True and value is not False:
        raise TypeError(f"{name} must be True or False, not {shown(value)}")
    return value


def check_seconds(value: Any, name: str, high: float = 1e9) -> float:
    """A duration: a real number (NumPy's too) in ``0..high``, as a float.  TypeError
    for another type, ValueError out of range or not finite."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, not {shown(value)}")
    seconds = float(value)
    if not 0 <= seconds <= high:   # (False for nan too)
        raise ValueError(f"{name} must be in 0..{high:g} seconds, not {shown(value)}")
    return seconds


def check_dist(dist: Any) -> None:
    if not isinstance(dist, str) or dist != "b":
        raise ValueError(f"dist must be 'b' (block distribution, the only one), "
                         f"not {shown(dist)}")


def check_count(value: Any, name: str, low: int = 1, high: int = MAX_INT) -> int:
    """An int in ``low..high``: TypeError for another type, ValueError out of range."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, not {shown(value)}")
    if not low <= value <= high:
        bounds = f">= {low}" if high == MAX_INT else f"in {low}..{high}"
        raise ValueError(f"{name} must be an int {bounds}, not {value}")
    return int(value)


# -- names --------------------------------------------------------------------------

def check_name(name: Any, what: str = "name") -> str:
    """A variable name of the engines' namespaces: a str that is a Python identifier."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str naming a variable, not "
                        f"{type(name).__name__} {shown(name)}")
    if not name.isidentifier():
        raise ValueError(f"{what} must be a Python identifier, not {shown(name)}")
    return name


def check_names(keys: Any, what: str = "keys") -> tuple[list[str], bool]:
    """``keys`` of pull and friends: a name, or a list or tuple of names.  Returns the
    names and whether one bare name was given."""
    if isinstance(keys, str):
        return [check_name(keys, what)], True
    if not isinstance(keys, (list, tuple)):
        raise TypeError(f"{what} must be a name or a list or tuple of names, not "
                        f"{type(keys).__name__} {shown(keys)}")
    return [check_name(k, f"each of {what}") for k in keys], False


def check_namespace(namespace: Any, what: str) -> dict:
    """A dict of names to values (push, push_function, StringTask's push)."""
    if not isinstance(namespace, dict):
        raise TypeError(f"{what} needs a dict of names to values, not "
                        f"{type(namespace).__name__}")
    for name in namespace:
        check_name(name, f"{what}: each key")
    return namespace


def check_property_keys(keys: Any) -> list[str]:
    """Property keys: a str, or a list or tuple of str (any text, up to MAX_KEY)."""
    names = [keys] if isinstance(keys, str) else keys
    if not isinstance(names, (list, tuple)):
        raise TypeError(f"property keys must be a str or a list or tuple of str, not "
                        f"{type(keys).__name__} {shown(keys)}")
    for k in names:
        if not isinstance(k, str):
            raise TypeError(f"property keys must be str, not {type(k).__name__} {shown(k)}")
        if len(k) > MAX_KEY:
            raise ValueError(f"a property key has at most {MAX_KEY} characters, not "
                             f"{len(k)}")
    return list(names)


# -- functions and sequences ----------------------------------------------------------

def check_function(func: Any, what: str, named: bool = False) -> Any:
    """A callable; with ``named``, also the name (identifier) of an engine's function."""
    if named and isinstance(func, str):
        return check_name(func, f"{what}'s function name")
    if not callable(func):
        more = " or the name of one" if named else ""
        raise TypeError(f"{what} needs a function{more}, not {type(func).__name__} "
                        f"{shown(func)}")
    return func


def check_sequences(sequences: Any, what: str) -> int:
    """At least one sequence (with a length), all of one length; returns it."""
    if not sequences:
        raise TypeError(f"{what} needs at least one sequence")
    lengths = []
    for i, seq in enumerate(sequences):
        try:
            lengths.append(len(seq))
            iter(seq)
        except TypeError:
            raise TypeError(f"{what} needs sequences with a length; sequence {i} is "
                            f"{type(seq).__name__} {shown(seq)} (wrap an iterator in "
                            f"list())") from None
    if len(set(lengths)) > 1:
        raise ValueError(f"{what}: all sequences must have the same length, not {lengths}")
    return lengths[0]


def check_record(i: Any) -> int:
    """The number of an execute record: records count from 1 on each engine."""
    if not _is_int(i):
        raise TypeError(f"i must be an int (an execute record's number), not "
                        f"{type(i).__name__} {shown(i)}")
    if not 1 <= i <= MAX_INT:
        raise IndexError(f"no execute record {i}: records count from 1")
    return int(i)


# -- task ids -----------------------------------------------------------------------

def check_task_id(taskid: Any) -> int:
    """A task id: TypeError for a non-int, IndexError (IPython's "task ID not
    registered") for one that no task can have."""
    if not _is_int(taskid):
        raise TypeError(f"task ids are ints, not {type(taskid).__name__} {shown(taskid)}")
    if not 0 <= taskid <= MAX_INT:
        raise IndexError(f"task ID not registered: {taskid} (task ids count from 0)")
    return int(taskid)


def check_task_ids(taskids: Any) -> list[int]:
    """One task id, or a list or tuple of them."""
    if _is_int(taskids):
        return [check_task_id(taskids)]
    if not isinstance(taskids, (list, tuple)):
        raise TypeError(f"task ids must be an int or a list or tuple of ints, not "
                        f"{type(taskids).__name__} {shown(taskids)}")
    return [check_task_id(t) for t in taskids]


def check_optional(value: Any, check: Callable[..., Any], *args: Any) -> Any:
    """``check(value, *args)`` unless ``value`` is None."""
    return None if value is None else check(value, *args)
