"""MultiEngineClient: direct, explicit control of the engines (IPython 0.10's API).

Every call names its ``targets`` (an id, a list of ids, or ``'all'``) and whether to
``block``; ``None`` means the instance attributes.  A blocking call returns one entry
per target engine; a non-blocking one returns a :class:`PendingResult` at once.
Engine failures raise one :class:`CompositeError` naming each engine.

Sequences are partitioned here, on the client, because it knows the engine ids; the
controller then moves the parts with one MPI collective.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..protocol import serialize
from ..errors import (CallInterrupted, CompositeError, InvalidDeferredID, NotAPendingResult,
                      RequestLost, StopLocalExecution)
from . import magics
from .checks import (check_block, check_count, check_dist, check_flag, check_function,
                     check_name, check_names, check_namespace, check_property_keys,
                     check_record, check_sequences, check_targets, shown)
from .failures import rebuild
from .partition import join, partition
from .results import PendingResult, ResultList
from .serialized import Serialized, serialize as to_serialized
from .session import Session, new_id

LONG_CODE = 16 << 10    # characters of code sent in a frame rather than in the header
INTERRUPT_WAIT = 2.0    # seconds Ctrl-C waits for an interrupted call to end
DEFER_UP_TO = 1 << 20   # bytes of frames a non-blocking call may leave to the outbox

class MultiEngineClient:
    """Explicit control of a pympec cluster's engines.

    ``where`` (or IPython 0.10's keyword ``furl_or_file``) is a connection file path, a
    profile name, or None for the default profile.  Connecting blocks at most
    ``timeout`` seconds.  A blocking call waits at most its ``timeout=`` seconds, by
    default ``call_timeout`` (None: as long as the controller answers), then raises
    TimeoutError while the call goes on; a silent controller is reported after
    PYMPEC_CONTROLLER_TIMEOUT seconds whatever the timeout.  Raises FileNotFoundError when there is no connection file,
    ClusterError when the controller it names does not answer, SecurityError on a wrong
    key.  Inside IPython, the first client created becomes the one the %px magics use.
    """

    def __init__(self, where: str | os.PathLike | None = None, *, timeout: float = 10.0,
                 sshserver: str | None = None,
                 furl_or_file: str | os.PathLike | None = None,
                 call_timeout: float | None = None) -> None:
        self._session = Session(connection_argument(where, furl_or_file), timeout=timeout,
                                sshserver=sshserver)
        self.call_timeout = call_timeout   # the default ``timeout=`` of blocking calls
        self._targets: Any = "all"
        self._block = True
        magics.adopt(self)

    # -- targets and block ---------------------------------------------------------------

    @property
    def targets(self) -> Any:
        """Default targets of calls: an engine id, a list of ids, or ``'all'``.
        Setting anything else raises ValueError."""
        return self._targets

    @targets.setter
    def targets(self, value: Any) -> None:
        self._targets = check_targets(value)

    @property
    def block(self) -> bool:
        """Whether calls wait for their results (True) or return PendingResults.
        Setting anything but True or False raises ValueError."""
        return self._block

    @block.setter
    def block(self, value: bool) -> None:
        self._block = check_block(value)

    def _resolve(self, targets: Any, block: Any) -> tuple[Any, bool]:
        targets = self._targets if targets is None else check_targets(targets)
        return targets, self._block if block is None else check_block(block)

    def _ids(self, targets: Any) -> list[int]:
        """The engine ids ``targets`` means now (asks the controller for ``'all'``)."""
        if targets == "all":
            ids = self.get_ids()
            if not ids:
                from ..errors import NoEnginesRegistered
                raise NoEnginesRegistered("no engines are registered")
            return ids
        return [targets] if isinstance(targets, int) else list(targets)

    # -- the one way a call is made ------------------------------------------------------

    def _call(self, verb: str, targets: Any, block: bool, *, args: dict | None = None,
              frames: Sequence[Any] = (), parts: list[int] | None = None,
              describe: str | None = None,
              finish: Callable[[Any], Any] = list, method: str | None = None,
              listener: Callable[[dict], None] | None = None,
              decode: Callable[[Any, str], Any] | None = None,
              timeout: float | None = None) -> Any:
        """Send one request; return ``finish(decode(reply))``, or a PendingResult.
        ``decode`` defaults to the per-engine values; ``listener`` gets output streamed
        while the call runs; a blocking call waits at most ``timeout`` seconds (None:
        ``call_timeout``), then raises TimeoutError (the call goes on)."""
        header = {"id": new_id(), "verb": verb, "targets": targets,
                  "args": args or {}, "describe": describe or f"{verb}()"}
        if listener is not None:
            self._session.listeners[header["id"]] = listener
        if frames:
            header["deliver"] = "parts" if parts is not None else "same"
        if parts is not None:
            header["parts"] = parts
        # a call that does not block waits (a millisecond) to go with the next ones
        request_id = self._session.send(header, list(frames),
                                        now=block or sum(map(len, frames)) > DEFER_UP_TO)
        method = method or verb

        def complete(message: Any) -> Any:
            self._session.listeners.pop(request_id, None)
            return finish((decode or engine_values)(message, method))

        pending = PendingResult(self, request_id, complete, targets=targets,
                                describe=header["describe"])
        return pending.get_result(timeout=timeout) if block else pending

    # -- the API -------------------------------------------------------------------------

    def get_ids(self) -> list[int]:
        """Ids of the registered engines (always blocking)."""
        return self._session.call("get_ids")

    def __len__(self) -> int:
        """The number of registered engines (ignores ``targets``)."""
        return len(self.get_ids())

    def execute(self, lines: str, targets: Any = None, block: Any = None,
                stream: bool | Callable[[int, str, str], None] = False,
                *, timeout: float | None = None) -> Any:
        """Run ``lines`` in each target's namespace; a ResultList of per-engine records.

        With ``stream=True``, output is printed here while the code runs, labelled
        ``[stdout:0] ...``; a callable ``stream(engine_id, name, text)`` gets it instead.
        Either way the ResultList's display leaves out what was streamed (its records
        keep it all).
        """
        if not isinstance(lines, str):
            raise TypeError(f"execute needs a str of code, not {type(lines).__name__}")
        if not (stream is True or stream is False or callable(stream)):
            raise TypeError(f"stream must be True, False or a function "
                            f"stream(engine_id, name, text), not {shown(stream)}")
        targets, block = self._resolve(targets, block)
        # long code goes as a frame: megabytes never travel inside a message header
        args, frames = ({"code": lines}, []) if len(lines) <= LONG_CODE else \
            ({}, [lines.encode()])
        echo = None
        if stream:
            args["stream"] = True
            echo = Echo(stream if callable(stream) else print_output)
        return self._call("execute", targets, block, args=args, listener=echo, frames=frames,
                          describe=f"execute({shown(lines)})",
                          finish=lambda values: ResultList(values, echo and echo.shown),
                          timeout=timeout)

    def run(self, filename: str, targets: Any = None, block: Any = None,
            *, timeout: float | None = None) -> Any:
        """Execute a local file's source on the engines (syntax errors raise here)."""
        with open(filename) as f:
            source = f.read()
        compile(source, filename, "exec")
        return self.execute(source, targets, block, timeout=timeout)

    def push(self, namespace: dict, targets: Any = None, block: Any = None,
             *, timeout: float | None = None) -> Any:
        """Update each target's namespace with ``namespace`` (name -> object)."""
        check_namespace(namespace, "push")
        return self._push("push", namespace, targets, block, timeout=timeout)

    def push_serialized(self, namespace: dict, targets: Any = None, block: Any = None,
                        *, timeout: float | None = None) -> Any:
        """``push`` of values serialized already (``serialized.serialize(obj)``): their
        bytes go out as they are, with no pickling here, as often as you push them.
        Raises TypeError for a value that is not a Serialized."""
        if not isinstance(namespace, dict) or not all(
                isinstance(v, Serialized) for v in namespace.values()):
            raise TypeError("push_serialized needs a dict of names to Serialized values")
        metas = [s.meta for s in namespace.values()]
        frames = [f for s in namespace.values() for f in s.frames]
        return self._push("push", namespace, targets, block, (metas, frames), timeout=timeout)

    def push_function(self, namespace: dict, targets: Any = None, block: Any = None,
                      *, timeout: float | None = None) -> Any:
        """Push functions; on the engines their global names resolve in the engine's
        namespace, as in IPython 0.10 (closures and defaults are kept, too)."""
        check_namespace(namespace, "push_function")
        for name, func in namespace.items():
            if not callable(func):
                raise TypeError(f"push_function: {name!r} is a {type(func).__name__}, "
                                f"not a function")
        return self._push("push_function", namespace, targets, block, timeout=timeout)

    def _push(self, verb: str, namespace: dict, targets: Any, block: Any,
              encoded: tuple[list, list] | None = None, *, timeout: float | None = None) -> Any:
        targets, block = self._resolve(targets, block)
        names = list(namespace)
        metas, frames = encoded or serialize.encode_many(list(namespace.values()))
        # an empty push sends one empty frame: the registry's push verb takes frames
        return self._call(verb, targets, block, args={"names": names, "metas": metas},
                          frames=frames or [b""], describe=f"{verb}({shown(names)})",
                          finish=lambda values: [None] * len(values), timeout=timeout)

    def pull(self, keys: str | Sequence[str], targets: Any = None, block: Any = None,
             *, timeout: float | None = None) -> Any:
        """Each target's value of ``keys``: a str gives the value, a list or tuple a list
        of values per engine.  A missing name raises NameError (in a CompositeError)."""
        return self._pull("pull", keys, targets, block, timeout=timeout)

    def pull_function(self, keys: str | Sequence[str], targets: Any = None,
                      block: Any = None, *, timeout: float | None = None) -> Any:
        """Pull functions back (they travel whole, with cloudpickle)."""
        return self._pull("pull_function", keys, targets, block, timeout=timeout)

    def pull_serialized(self, keys: str | Sequence[str], targets: Any = None,
                        block: Any = None, *, timeout: float | None = None) -> Any:
        """``pull``, with each value as a Serialized, ready for ``push_serialized``.  The
        values are rebuilt here and serialized again (a NumPy array's bytes are not
        copied), so their classes must be importable here."""
        targets, block = self._resolve(targets, block)
        single = isinstance(keys, str) or len(keys) == 1

        def serialized(values: list) -> list:
            return [to_serialized(v) if single else [to_serialized(x) for x in v]
                    for v in values]
        return then(self.pull(keys, targets, block=block, timeout=timeout), block, serialized)

    def _pull(self, method: str, keys: Any, targets: Any, block: Any,
              *, timeout: float | None = None) -> Any:
        targets, block = self._resolve(targets, block)
        names, single = check_names(keys)
        single = single or len(names) == 1
        return self._call("pull", targets, block, args={"keys": names}, method=method,
                          describe=f"{method}({shown(keys)})",
                          finish=lambda values: [v[0] if single else v for v in values],
                          timeout=timeout)

    def zip_pull(self, keys: Sequence[str], targets: Any = None, block: Any = None,
                 *, timeout: float | None = None) -> Any:
        """pull, transposed: ``zip_pull(('a', 'b'))`` gives ``[(a0, a1..), (b0, b1..)]``."""
        check_names(keys)
        targets, block = self._resolve(targets, block)
        single_target = isinstance(targets, int)

        def transpose(values: list) -> Any:
            if single_target:
                return values
            return list(zip(*values)) if not isinstance(keys, str) and len(keys) > 1 \
                else values
        return then(self.pull(keys, targets, block=block, timeout=timeout), block, transpose)

    def __setitem__(self, key: str, value: Any) -> None:
        """``mec['a'] = x`` is ``mec.push({'a': x})`` (TypeError for a non-str key)."""
        check_name(key, "key")
        self.push({key: value})

    def __getitem__(self, key: str) -> Any:
        """``mec['a']`` is ``mec.pull('a')`` (TypeError for a non-str key)."""
        check_name(key, "key")
        return self.pull(key)

    def scatter(self, key: str, seq: Sequence, dist: str = "b", flatten: bool = False,
                targets: Any = None, block: Any = None, *, timeout: float | None = None) -> Any:
        """Partition ``seq`` in blocks and push part *i* to the *i*-th target as ``key``.

        Parts keep the sequence's type; NumPy arrays are split along axis 0 and travel
        raw over MPI Scatterv.  Raises TypeError for a non-sequence.
        """
        check_name(key, "key")
        check_dist(dist)
        check_flag(flatten, "flatten")
        targets, block = self._resolve(targets, block)
        ids = self._ids(targets)
        values = partition(seq, len(ids), flatten)
        parts, frames, metas = [], [], {}
        for engine_id, value in zip(ids, values):
            meta, more = serialize.encode(value)
            metas[str(engine_id)] = [meta]
            parts.append(len(more))
            frames.extend(more)
        return self._call("push", ids, block, args={"names": [key], "parts": metas},
                          frames=frames, parts=parts, method="scatter",
                          describe=f"scatter({key!r})",
                          finish=lambda values: [None] * len(values), timeout=timeout)

    def gather(self, key: str, dist: str = "b", targets: Any = None, block: Any = None,
               *, timeout: float | None = None) -> Any:
        """Pull ``key`` from each target and join the parts: arrays concatenate (built in
        place, with no copy, when the parts agree in dtype and trailing shape; masked
        arrays keep their masks), lists, tuples and ranges flatten into one list, other
        values come back as a list.  ValueError when the parts do not join."""
        check_name(key, "key")
        check_dist(dist)
        targets, block = self._resolve(targets, block)
        return self._call("gather", targets, block, args={"key": key},
                          describe=f"gather({key!r})", decode=gathered,
                          finish=lambda value: value, timeout=timeout)

    def map(self, func: Callable | str, *sequences: Sequence) -> Any:
        """Parallel ``map`` over all engines (not load balanced): block partitioned, one
        chunk per engine, results in input order.  ``func`` may name a function defined
        on the engines.  Honours ``block``; ignores ``targets``, as IPython 0.10 did."""
        return self.mapper().map(func, *sequences)

    def raw_map(self, func: Callable | str, seqs: Sequence[Sequence], dist: str = "b",
                targets: Any = None, block: Any = None, *, timeout: float | None = None) -> Any:
        """``map`` with the sequences given as one list: ``raw_map(f, [s1, s2])``."""
        if not isinstance(seqs, (list, tuple)):
            raise TypeError(f"raw_map needs a list or tuple of sequences, not "
                            f"{type(seqs).__name__}")
        check_dist(dist)
        check_function(func, "map", named=True)
        check_sequences(seqs, "map")
        targets, block = self._resolve(targets, block)
        ids = self._ids(targets)
        chunks = partition(list(zip(*seqs)), len(ids))
        parts, frames = [], []
        for chunk in chunks:
            more = serialize.dumps(chunk if isinstance(func, str) else (func, chunk))
            parts.append(len(more))
            frames.extend(more)
        args = {"name": func} if isinstance(func, str) else {}
        name = func if isinstance(func, str) else getattr(func, "__name__", "function")
        return self._call("apply", ids, block, args=args, frames=frames, parts=parts,
                          method="map", describe=f"map({name})",
                          finish=lambda values: [x for chunk in values for x in chunk],
                          timeout=timeout)

    def mapper(self, dist: str = "b", targets: Any = "all",
               block: Any = None) -> "MultiEngineMapper":
        """A mapper whose ``map(func, *seqs)`` uses these settings."""
        return MultiEngineMapper(self, dist, targets, block)

    def parallel(self, dist: str = "b", targets: Any = None, block: Any = None) -> Callable:
        """Decorator: ``@mec.parallel()`` turns ``f`` into ``pf(*seqs) = mapper.map(f, *seqs)``.
        targets and block are taken from the client when decorating."""
        check_dist(dist)
        targets, block = self._resolve(targets, block)

        def decorate(func: Callable | str) -> Callable:
            mapper = self.mapper(dist, targets, block)

            def parallel_function(*sequences: Sequence) -> Any:
                return mapper.map(func, *sequences)
            parallel_function.__name__ = getattr(func, "__name__", str(func))
            parallel_function.__doc__ = getattr(func, "__doc__", None)
            return parallel_function
        return decorate

    def get_result(self, i: int | None = None, targets: Any = None, block: Any = None,
                   *, timeout: float | None = None) -> Any:
        """Re-fetch execute record ``i`` (default: the latest) of each target.  Records
        count from 1: IndexError for a smaller ``i``, TypeError for a non-int."""
        if i is not None:
            check_record(i)
        targets, block = self._resolve(targets, block)
        return self._call("get_result", targets, block, args={"number": i}, finish=ResultList,
                          describe=f"get_result({i})", timeout=timeout)

    def reset(self, targets: Any = None, block: Any = None,
              *, timeout: float | None = None) -> Any:
        """Clear each target's namespace and properties (seeded names come back)."""
        targets, block = self._resolve(targets, block)
        return self._call("reset", targets, block, timeout=timeout)

    def keys(self, targets: Any = None, block: Any = None, *, timeout: float | None = None) -> Any:
        """The names in each target's namespace."""
        targets, block = self._resolve(targets, block)
        return self._call("keys", targets, block, timeout=timeout)

    def kill(self, controller: bool = False, targets: Any = None, block: Any = None,
             *, timeout: float | None = None) -> Any:
        """Stop the target engines; with ``controller=True``, the whole cluster.

        A stopped engine leaves ``get_ids()``; its MPI rank stays parked, at no CPU cost,
        until the job ends, since an MPI job cannot shrink.
        """
        check_flag(controller, "controller")
        targets, block = self._resolve(targets, block)
        if controller:
            return self._session.call("shutdown")
        return self._call("kill", targets, block, timeout=timeout)

    def interrupt(self, targets: Any = None) -> list[int]:
        """Raise KeyboardInterrupt in the code the target engines run now (it does not
        queue behind that code); each interrupted call then fails with a CompositeError
        naming KeyboardInterrupt, and the engines keep their namespaces.  Returns the ids
        of the engines that were running something.  Code blocked in a C call that
        ignores signals does not stop: kill that engine (docs/interactive.md)."""
        targets, _ = self._resolve(targets, None)
        return self._session.call("interrupt", targets=targets)

    def _interrupt_call(self, pending: PendingResult) -> CallInterrupted:
        """Ctrl-C in a blocking call: interrupt it on its engines (it leaves the queues
        where it has not started), wait up to INTERRUPT_WAIT seconds for it to end (a
        second Ctrl-C stops waiting), and say how that went."""
        what, told = pending.describe or pending.result_id, []
        try:
            told = self._session.call("interrupt", request=pending.result_id)
            message = self._session.wait(pending.result_id, timeout=INTERRUPT_WAIT)
        except KeyboardInterrupt:
            message = None
        except RequestLost:   # Ctrl-C came while it was being written: it never ran
            return CallInterrupted(f"{what} was interrupted before the controller had it; "
                                   f"it did not run")
        if message is not None:
            pending.settle(message)
            where = f" on engines {told}" if told else " before it started"
            return CallInterrupted(f"{what} was interrupted{where}")
        return CallInterrupted(
            f"{what} still runs on engines {told or pending.targets}: it did not stop within "
            f"{INTERRUPT_WAIT:g} s (blocked in a C call that ignores signals?); "
            f"mec.interrupt() again, or kill those engines")

    def clear_queue(self, targets: Any = None, block: Any = None) -> None:
        """Drop the commands still queued (not running) for the targets; each fails with
        QueueCleared."""
        targets, _ = self._resolve(targets, block)
        self._session.call("clear_queue", targets=targets)

    def queue_status(self, targets: Any = None, block: Any = None) -> list:
        """``[(id, {'queue': [...], 'pending': ...}), ...]`` for the targets."""
        targets, _ = self._resolve(targets, block)
        return [tuple(entry) for entry in self._session.call("queue_status", targets=targets)]

    def status(self) -> dict:
        """The controller's view: engines, what each is running, uptime, end time."""
        return self._session.call("status")

    # engine properties, used by task dependencies

    def set_properties(self, properties: dict, targets: Any = None, block: Any = None,
                       *, timeout: float | None = None) -> Any:
        """Update each target's properties (used by task ``depend`` functions)."""
        if not isinstance(properties, dict):
            raise TypeError(f"set_properties needs a dict, not {type(properties).__name__}")
        check_property_keys(list(properties))
        targets, block = self._resolve(targets, block)
        return self._call("set_properties", targets, block, frames=serialize.dumps(properties),
                          timeout=timeout)

    def get_properties(self, keys: Sequence[str] | None = None, targets: Any = None,
                       block: Any = None, *, timeout: float | None = None) -> Any:
        """Each target's properties: all of them, or those named by ``keys``."""
        keys = None if keys is None else check_property_keys(keys)
        targets, block = self._resolve(targets, block)
        return self._call("get_properties", targets, block, args={"keys": keys}, timeout=timeout)

    def has_properties(self, keys: Sequence[str], targets: Any = None, block: Any = None,
                       *, timeout: float | None = None) -> Any:
        """For each target, whether it has each of ``keys``."""
        keys = check_property_keys(keys)
        targets, block = self._resolve(targets, block)
        return self._call("has_properties", targets, block, args={"keys": keys}, timeout=timeout)

    def del_properties(self, keys: Sequence[str], targets: Any = None, block: Any = None,
                       *, timeout: float | None = None) -> Any:
        """Delete properties ``keys`` on each target (KeyError if one is missing)."""
        keys = check_property_keys(keys)
        targets, block = self._resolve(targets, block)
        return self._call("del_properties", targets, block, args={"keys": keys}, timeout=timeout)

    def clear_properties(self, targets: Any = None, block: Any = None,
                         *, timeout: float | None = None) -> Any:
        """Remove every property of each target."""
        targets, block = self._resolve(targets, block)
        return self._call("clear_properties", targets, block, timeout=timeout)

    # pending results

    def barrier(self, pending_results: Iterable[PendingResult]) -> None:
        """Wait for every PendingResult; their exceptions are raised later, on fetch."""
        pending = list(pending_results)
        for p in pending:
            if not isinstance(p, PendingResult):
                raise NotAPendingResult(f"barrier needs PendingResults, not {p!r}")
        for p in sorted(pending):
            try:
                p.get_result(block=True)
            except Exception:
                pass

    def flush(self) -> None:
        """Forget results that arrived but were never fetched."""
        self._session.replies.clear()

    clear_pending_results = flush

    def get_pending_deferred(self, result_id: str, block: bool = True,
                             timeout: float | None = None) -> Any:
        """Fetch a result by its id (a PendingResult's ``result_id``): raw per-engine
        values, or None if ``block`` is False and it is not ready.  Works from another
        connection or process too.  Raises InvalidDeferredID, saying why, for an id the
        controller does not hold (never submitted, or released), and TimeoutError after
        ``timeout`` seconds (default ``call_timeout``)."""
        session = self._session
        if result_id not in session.replies and result_id not in session.outstanding:
            found = session.call("result", ids=[result_id])
            if result_id in found["unknown"]:
                raise InvalidDeferredID(f"no result has id {result_id!r}: "
                                        f"{found['unknown'][result_id]}")
            session.outstanding[result_id] = None
        timeout = self.call_timeout if timeout is None else timeout
        message = session.wait(result_id, timeout if block else 0)
        if message is None and block:
            raise TimeoutError(f"result {result_id} did not come within {timeout:g} s")
        return None if message is None else engine_values(message, "get_pending_deferred")

    def benchmark(self, push_size: int = 10000) -> dict:
        """Latency of ``execute('pass')`` on one and on all engines (ms), and push
        throughput of a float64 array of ``push_size`` items (MB/s)."""
        check_count(push_size, "push_size")
        ids = self.get_ids()
        data = np.random.rand(push_size)
        figures = {}
        for label, targets in (("single", ids[0]), ("all", "all")):
            start = time.perf_counter()
            self.execute("pass", targets=targets, block=True)
            figures[f"{label}_engine_latency_ms"] = (time.perf_counter() - start) * 1e3
            start = time.perf_counter()
            self.push({"_benchmark": data}, targets=targets, block=True)
            figures[f"{label}_engine_push_MBps"] = data.nbytes / 1e6 / (
                time.perf_counter() - start)
        return figures

    def activate(self) -> None:
        """Make this client the one the %px, %result and %autopx magics use."""
        magics.activate(self)

    def close(self) -> None:
        """Close the connection (results still running are kept on the controller); the
        magics, if they used this client, use none now."""
        magics.forget(self)
        self._session.close()

    def __enter__(self) -> "MultiEngineClient":
        """``with mec: remote(); <code>`` runs <code> on the engines (IPython 0.10's
        idiom; the result is kept in ``_with_context_result``).  Otherwise the block
        is ordinary and the connection closes at its end."""
        from .remoteblock import remote_body, skip_block
        frame = sys._getframe(1)
        code = remote_body(frame)
        self._remote_block = code is not None
        if code is not None:
            self._with_context_result = self.execute(code)
            self._remote_trace = skip_block(frame)
        return self

    def __exit__(self, etype: Any, value: Any, tb: Any) -> bool:
        if getattr(self, "_remote_block", False):
            self._remote_block = False
            if self._remote_trace:
                sys.settrace(None)
            return etype is StopLocalExecution
        self.close()
        return False


class MultiEngineMapper:
    """``map`` bound to a client, distribution, targets and block."""

    def __init__(self, client: MultiEngineClient, dist: str = "b", targets: Any = "all",
                 block: Any = None) -> None:
        check_dist(dist)
        check_targets(targets)
        if block is not None:
            check_block(block)
        self.client, self.dist, self.targets, self.block = client, dist, targets, block

    def map(self, func: Callable | str, *sequences: Sequence) -> Any:
        return self.client.raw_map(func, sequences, self.dist, self.targets, self.block)


# -- helpers ------------------------------------------------------------------------

def print_output(engine_id: int, name: str, text: str) -> None:
    """Print streamed output, each line labelled with its engine: ``[stdout:0] ...``."""
    stream = sys.stderr if name == "stderr" else sys.stdout
    for line in text.splitlines():
        print(f"[{name}:{engine_id}] {line}", file=stream, flush=True)


def then(result: Any, block: bool, f: Callable[[Any], Any]) -> Any:
    """``f(result)`` if the call blocked, else ``result`` (a PendingResult) with ``f``
    chained onto it."""
    if block:
        return f(result)
    result.add_callback(f)
    return result


class Echo:
    """The listener of a streaming execute: passes each piece of output to
    ``callback(engine_id, name, text)`` and counts, in ``shown``, the characters passed
    per ``(engine_id, name)``, so the Results List does not show them again."""

    def __init__(self, callback: Callable[[int, str, str], None]) -> None:
        self.callback = callback
        self.shown: dict[tuple[int, str], int] = {}

    def __call__(self, output: dict) -> None:
        key = (output["engine"], output["name"])
        self.callback(*key, output["text"])
        self.shown[key] = self.shown.get(key, 0) + len(output["text"])


def connection_argument(where: Any, furl_or_file: Any) -> Any:
    """The connection a client was given: ``where``, or IPython 0.10's keyword
    ``furl_or_file`` (``''`` means the default profile, as it did).  Raises TypeError
    when both are given, and ValueError for a FURL (``pb://...``): pympec connects with
    a connection file, not Foolscap."""
    if furl_or_file is not None:
        if where is not None:
            raise TypeError("give the connection as where or as furl_or_file, not both")
        where = furl_or_file
    if isinstance(where, str) and where.startswith(("pb://", "pbu://")):
        raise ValueError("not a pympec connection file: FURLs were IPython 0.10's; give a "
                         "connection file path or a profile name")
    return where


def engine_values(message: Any, method: str) -> list:
    """Per-engine values of a reply, in target order; raises CompositeError if any
    engine failed."""
    values, errors = [], []
    frames = message.frames
    i = 0
    for result in message.header["results"]:
        n = result["nframes"]
        mine = frames[i:i + n]
        i += n
        if "span" in result:
            start, length = result["span"]
            mine = [frames[message.header["joined"]][start:start + length]]
        if result["status"] == "ok":
            values.append(serialize.decode(result["metas"][0], mine) if result["metas"]
                          else None)
            continue
        if result.get("metas"):   # a failed execute's record comes first: its output
            n = serialize.nframes(result["metas"][0])
            record = serialize.decode(result["metas"][0], mine[:n])
            result = {**result, "stdout": record.get("stdout", ""),
                      "stderr": record.get("stderr", "")}
            mine = mine[n:]
        errors.append(rebuild(result, mine, {"engineid": result["engine"], "method": method}))
    if errors:
        raise CompositeError.from_exceptions(method, errors)
    return values


def gathered(message: Any, method: str) -> Any:
    """Join a gather reply.  Parts gathered into one buffer that agree in dtype and
    trailing shape become one array on that buffer: concatenated with no copy."""
    header = message.header
    results = header["results"]
    if "joined" in header and all(r["status"] == "ok" for r in results):
        metas = [r["metas"][0] for r in results]
        if all(m["kind"] == "array" for m in metas) and _stackable(metas):
            buf = message.frames[header["joined"]]
            shape = [sum(m["shape"][0] for m in metas)] + metas[0]["shape"][1:]
            return serialize.array_from({**metas[0], "shape": shape}, buf)
    values = engine_values(message, method)
    return join([_aligned(v) for v in values])


def _stackable(metas: list[dict]) -> bool:
    first = metas[0]
    return all(m["dtype"] == first["dtype"] and len(m["shape"]) >= 1
               and m["shape"][1:] == first["shape"][1:] and "order" not in m
               for m in metas)


def _aligned(value: Any) -> Any:
    if isinstance(value, np.ndarray) and not value.flags.aligned:
        return value.copy()
    return value
