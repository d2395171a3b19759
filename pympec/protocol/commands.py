"""Every verb of the protocol, declared once: who may send it, what its header holds,
whether frames come with it, who answers it and how its reply is gathered.

    client ──{id, verb, fields...} + frames──> controller
                check(header, nframes): a client's verb, each field of its type, within
                bounds, nothing unknown; a bad one gets an error reply naming the field
                Command.runs:  CONTROLLER  answered at once: {id, value}
                               TASKS       by the task farm: {id, value}
                               ENGINES     queued on each target; the engines' replies
                                           are joined by Command.reply (PER_ENGINE, GATHER)
    controller ──{job, verb, args, deliver...}──> engine: the engine runs the verbs whose
                runs is ENGINES by name, from this same table; any other gets an error reply

A request for the engines carries its verb's fields in ``args``; the controller's own
verbs carry theirs at the top level.  Verbs whose ``sender`` is CONTROLLER (task batches,
communicator set-up, shutdown) never come from a client.
"""
from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import ProtocolError

CLIENT, CONTROLLER = "client", "controller"          # who sends a verb
ENGINES, TASKS = "engines", "tasks"                 # who answers it (or CONTROLLER)
NONE, VALUE, PER_ENGINE, GATHER = "none", "value", "per-engine", "gather"   # its reply
DELIVER = ("same", "parts")        # a client's payload: the same frames to every target,
                                   # or ``parts[i]`` frames to the i-th target

MAX_ID = 128            # characters of a request id
MAX_LIST = 1 << 22      # items of any list in a header
MAX_DEPTH = 16          # nesting of free-form JSON (metas)


class BadRequest(ProtocolError):
    """A request that does not match its verb's declaration."""


# -- field types: each checks a value and raises BadRequest naming the field ----------

Check = Callable[[Any, str], None]


_SHOWN = reprlib.Repr()   # a bad value, shown briefly however large or deep it is
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 3, 40, 40


def _fail(name: str, want: str, value: Any) -> None:
    raise BadRequest(f"field {name!r} must be {want}, not {_SHOWN.repr(value)}")


def text(max_len: int = 1 << 26, min_len: int = 0) -> Check:
    def check(value: Any, name: str) -> None:
        if not isinstance(value, str) or not min_len <= len(value) <= max_len:
            _fail(name, f"a str of {min_len} to {max_len} characters", value)
    return check


def integer(low: int = 0, high: int = 1 << 62) -> Check:
    def check(value: Any, name: str) -> None:
        if type(value) is not int or not low <= value <= high:
            _fail(name, f"an int in {low}..{high}", value)
    return check


def number(low: float = 0.0, high: float = 1e9) -> Check:
    def check(value: Any, name: str) -> None:
        if type(value) not in (int, float) or not math.isfinite(value) \
                or not low <= value <= high:
            _fail(name, f"a number in {low:g}..{high:g}", value)
    return check


def flag(value: Any, name: str) -> None:
    if type(value) is not bool:
        _fail(name, "true or false", value)


def name_(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value.isidentifier():
        _fail(name, "a Python identifier", value)


def list_of(item: Check, max_items: int = MAX_LIST) -> Check:
    def check(value: Any, name: str) -> None:
        if type(value) is not list or len(value) > max_items:
            _fail(name, f"a list of at most {max_items} items", value)
        for i, x in enumerate(value):
            item(x, f"{name}[{i}]")
    return check


def optional(inner: Check) -> Check:
    def check(value: Any, name: str) -> None:
        if value is not None:
            inner(value, name)
    return check


def one_of(*choices: Any) -> Check:
    def check(value: Any, name: str) -> None:
        if type(value) not in (str, int, bool) or value not in choices:
            _fail(name, f"one of {', '.join(map(repr, choices))}", value)
    return check


def targets(value: Any, name: str) -> None:
    """``'all'``, an engine id, or a list of them (which exist is the controller's call)."""
    if value == "all" or type(value) is int:
        return
    list_of(integer(-(1 << 62)), 1 << 20)(value, name)


def json_value(max_depth: int = MAX_DEPTH) -> Check:
    """Any JSON value nested at most ``max_depth`` deep (checked without recursion)."""
    def check(value: Any, name: str) -> None:
        todo = [(value, 0)]
        while todo:
            item, depth = todo.pop()
            if depth > max_depth:
                _fail(name, f"JSON nested at most {max_depth} deep", value)
            if isinstance(item, dict):
                todo.extend((v, depth + 1) for v in item.values())
            elif isinstance(item, list):
                todo.extend((v, depth + 1) for v in item)
    return check


def record(fields: Mapping[str, Check], required: tuple[str, ...] = ()) -> Check:
    """A JSON object holding only ``fields``, the ``required`` ones among them."""
    def check(value: Any, name: str) -> None:
        if type(value) is not dict:
            _fail(name, "an object", value)
        _check_fields(value, fields, required, name + ".")
    return check


def _check_fields(value: dict, fields: Mapping[str, Check], required: tuple[str, ...],
                  prefix: str = "") -> None:
    for key in required:
        if key not in value:
            raise BadRequest(f"field {prefix + key!r} is missing")
    for key, item in value.items():
        check = fields.get(key)
        if check is None:
            raise BadRequest(f"unknown field {prefix + str(key)!r}")
        check(item, prefix + key)


def _task_spec(depth: int = 0) -> Check:
    fields = {"kind": one_of("map", "chunk", "string"), "n": integer(0, 1 << 20),
              "timeout": number(0, 1e9), "clear_before": flag, "clear_after": flag,
              "retries": integer(0, 1 << 20), "depend": flag, "code": text(),
              "pull": list_of(text(1 << 10)), "push": flag}
    if depth < 4:   # a recovery task may have its own, a few levels deep
        fields["recovery"] = _task_spec(depth + 1)
    return record(fields, required=("kind", "n"))


META = json_value(8)
KEYS = list_of(text(1 << 10))


# -- the commands -------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """One verb.  ``fields`` are its header fields (its ``args`` for engine verbs);
    ``payload`` the delivery modes its frames may take (empty: no frames), and whether
    they may be left out (``payload_optional``); ``reply`` how its answer is made;
    ``ends_engine``: the engine stops serving afterwards; ``kept``: the controller
    keeps its reply until the client acknowledges it (a reply lost with the
    connection comes again), as for every verb that changes something; a question
    (``kept=False``) can simply be asked again."""

    name: str
    runs: str
    sender: str = CLIENT
    fields: Mapping[str, Check] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    payload: tuple[str, ...] = ()
    payload_optional: bool = False
    reply: str = VALUE
    ends_engine: bool = False
    kept: bool = True


def _commands(*commands: Command) -> dict[str, Command]:
    return {c.name: c for c in commands}


ACKS = list_of(text(MAX_ID), 1 << 16)
PUSH = {"names": list_of(name_, 1 << 16), "metas": list_of(META, 1 << 16),
        "parts": json_value(8)}

COMMANDS: dict[str, Command] = _commands(
    # the controller's own
    Command("hello", CONTROLLER, fields={"client": text(MAX_ID, 1)}, required=("client",),
            kept=False),
    Command("ack", CONTROLLER, reply=NONE),
    Command("get_ids", CONTROLLER, kept=False),
    Command("status", CONTROLLER, kept=False),
    Command("queue_status", CONTROLLER, fields={"targets": targets}, kept=False),
    Command("clear_queue", CONTROLLER, fields={"targets": targets}),
    Command("shutdown", CONTROLLER),
    Command("ping", CONTROLLER, kept=False),
    Command("interrupt", CONTROLLER, fields={"targets": targets, "request": text(MAX_ID)}),
    Command("result", CONTROLLER, fields={"ids": list_of(text(MAX_ID), 1 << 16),
                                          "resend": flag}, required=("ids",), kept=False),
    # the task farm
    Command("task_lease", TASKS, fields={"count": integer(1, 1 << 20)}, required=("count",)),
    Command("task_submit", TASKS, fields={"tasks": list_of(_task_spec(), 1 << 20),
                                          "first": integer()},
            required=("tasks",), payload=("tasks",)),
    Command("task_fetch", TASKS, fields={"ids": optional(list_of(integer(-(1 << 62)))),
                                         "wait": number(0, 3600)}),
    Command("task_abort", TASKS, fields={"tid": integer(-(1 << 62))}, required=("tid",)),
    Command("task_clear", TASKS, fields={"ids": optional(list_of(integer(-(1 << 62)))),
                                         "forget": list_of(integer(-(1 << 62)))}),
    Command("task_status", TASKS, fields={"verbose": flag}, kept=False),
    Command("task_config", TASKS, fields={"result_cap": optional(integer())}),
    # the engines': fields travel in ``args``
    Command("execute", ENGINES, fields={"code": text(), "stream": flag}, payload=("same",),
            payload_optional=True, reply=PER_ENGINE),   # code: in args, or (long) a frame
    Command("push", ENGINES, fields=PUSH, required=("names",), payload=DELIVER,
            reply=PER_ENGINE),
    Command("push_function", ENGINES, fields=PUSH, required=("names",), payload=DELIVER,
            reply=PER_ENGINE),
    Command("pull", ENGINES, fields={"keys": list_of(name_, 1 << 16)}, required=("keys",),
            reply=PER_ENGINE),
    Command("gather", ENGINES, fields={"key": name_}, required=("key",), reply=GATHER),
    Command("apply", ENGINES, fields={"name": name_}, payload=DELIVER, reply=PER_ENGINE),
    Command("keys", ENGINES, reply=PER_ENGINE),
    Command("reset", ENGINES, reply=PER_ENGINE),
    Command("get_result", ENGINES, fields={"number": optional(integer())}, reply=PER_ENGINE),
    Command("kill", ENGINES, reply=PER_ENGINE, ends_engine=True),
    Command("set_properties", ENGINES, payload=("same",), reply=PER_ENGINE),
    Command("get_properties", ENGINES, fields={"keys": optional(KEYS)}, reply=PER_ENGINE),
    Command("has_properties", ENGINES, fields={"keys": KEYS}, required=("keys",),
            reply=PER_ENGINE),
    Command("del_properties", ENGINES, fields={"keys": KEYS}, required=("keys",),
            reply=PER_ENGINE),
    Command("clear_properties", ENGINES, reply=PER_ENGINE),
    # from the controller to engines only
    Command("task_batch", ENGINES, CONTROLLER, fields={"tasks": list_of(_task_spec())},
            reply=PER_ENGINE),
    Command("_group", ENGINES, CONTROLLER, fields={"key": text(), "ranks": list_of(integer())},
            reply=NONE),
    Command("_shutdown", ENGINES, CONTROLLER, reply=NONE),
)
ENGINE_REQUEST = {"id": text(MAX_ID), "verb": text(64), "targets": targets,
                  "describe": text(1 << 10), "deliver": one_of(*DELIVER),
                  "parts": list_of(integer(0, MAX_LIST), 1 << 20), "acks": ACKS}


def check(header: Any, nframes: int) -> Command:
    """The client's command ``header`` declares, once it is checked against the table.

    Raises BadRequest, naming the verb and the field, for anything else: a header that
    is not an object, an unknown or internal verb, a missing, unknown or mistyped
    field, frames the verb does not take.
    """
    if type(header) is not dict:
        raise BadRequest(f"a request header must be a JSON object, not "
                         f"{type(header).__name__}")
    verb = header.get("verb")
    command = COMMANDS.get(verb) if isinstance(verb, str) else None
    if command is None or command.sender != CLIENT:
        shown = repr(verb)[:60]
        raise BadRequest(f"unknown verb {shown}" if command is None
                         else f"{verb!r} is the controller's own verb, not a client's")
    try:
        if command.runs == ENGINES:
            _check_engine_request(command, header, nframes)
        else:
            required = command.required + (("id",) if command.reply != NONE else ())
            _check_fields(header, {"id": text(MAX_ID), "verb": text(64), "acks": ACKS,
                                   **command.fields}, required)
            if nframes and not command.payload:
                raise BadRequest("it takes no frames")
    except BadRequest as e:
        raise BadRequest(f"bad {verb} request: {e}") from None
    return command


def _check_engine_request(command: Command, header: dict, nframes: int) -> None:
    _check_fields(header, {**ENGINE_REQUEST, "args": record(command.fields,
                                                            command.required)},
                  ("id", "args") if command.required else ("id",))
    deliver = header.get("deliver")
    if not nframes:
        if deliver is not None or "parts" in header:
            raise BadRequest("'deliver' and 'parts' need frames")
        if command.payload and not command.payload_optional:
            raise BadRequest("it needs frames")
        return
    if deliver not in command.payload:
        raise BadRequest(f"field 'deliver' must be one of {command.payload} with frames")
    parts = header.get("parts")
    if (deliver == "parts") != (parts is not None):
        raise BadRequest("'parts' goes with deliver='parts', and only then")
    if parts is not None and sum(parts) != nframes:
        raise BadRequest(f"'parts' counts {sum(parts)} frames; the message has {nframes}")
