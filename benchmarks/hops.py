"""Where the time of a one-engine no-op ``execute`` goes, hop by hop.

    python -m benchmarks.hops [CALLS]     # default 3000 calls, 4 engines, targets=0
    HOPS_TRY=orjson,capture,empty python -m benchmarks.hops    # with proposed changes

Runs a 4-engine cluster as ``mpiexec -n 5 python -m benchmarks.hops rank ...``: each
rank wraps a few pympec functions so that they note when they start and end
(``time.perf_counter_ns``: CLOCK_MONOTONIC, one clock for every process of a host), then
runs ``pympec.boot.main`` as usual.  This process makes CALLS ``mec.execute("pass",
targets=0)`` (noting the client's steps the same way), stops the cluster, and puts, for
each call, the notes of every rank that fall within it on one time line.  It prints the
median time between consecutive steps: what each hop costs.  The wrappers add about a
microsecond per note.  Nothing in pympec changes: this module patches it from outside.
"""
from __future__ import annotations

import bisect
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTES: list[tuple[str, int, int, int]] = []   # (label, start ns, end ns, CPU ns inside)

# The time line of one call: (label, "start" or "end" of that note, what it marks).
STEPS = [
    ("client.execute", "start", "client calls mec.execute"),
    ("client.send", "end", "client has built, signed and written the request"),
    ("controller.on_readable", "start", "controller wakes: its socket is readable"),
    ("controller.read", "end", "controller has read and checked it"),
    ("controller.submit", "end", "controller has queued it"),
    ("controller.send_command", "end", "controller has posted the command (Isend)"),
    ("controller.ring", "end", "controller has rung the engine's doorbell"),
    ("engine.woken", "end", "engine wakes: rung"),
    ("engine.recv_header", "end", "engine has the command (Iprobe, Recv, JSON)"),
    ("engine.run", "start", "engine starts the handler"),
    ("engine.run", "end", "engine has run it and built the record"),
    ("engine.send_reply", "end", "engine has sent the reply (JSON, Send, ring)"),
    ("controller.doorbell", "start", "controller wakes: rung"),
    ("controller.on_reply", "start", "controller has the reply (Iprobe, Recv, JSON)"),
    ("controller.deliver", "start", "controller has built the client's reply"),
    ("controller.deliver", "end", "controller has signed and written it"),
    ("client.read", "end", "client has read and checked it"),
    ("client.execute", "end", "client has decoded it: mec.execute returns"),
]


def note(owner, name: str, label: str, when=None, result=None) -> None:
    """Wrap ``owner.name`` to note its start and end under ``label``; only calls for
    which ``when(*args)`` (before) and ``result(returned)`` (after) hold, if given."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        wanted = when is None or when(*args, **kwargs)
        cpu, start = time.thread_time_ns(), time.perf_counter_ns()
        out = original(*args, **kwargs)
        if wanted and (result is None or result(out)):
            NOTES.append((label, start, time.perf_counter_ns(), time.thread_time_ns() - cpu))
        return out
    setattr(owner, name, wrapper)


def instrument_rank(rank: int) -> None:
    from pympec.protocol import doorbell, wire
    if rank == 0:
        from pympec.controller import engines, server
        note(server.Controller, "on_readable", "controller.on_readable")
        note(doorbell.Doorbell, "drain", "controller.doorbell")
        note(wire.MessageReader, "read", "controller.read", result=bool)
        note(engines.Dispatcher, "submit", "controller.submit")
        note(engines.Dispatcher, "send_command", "controller.send_command")
        note(engines.Dispatcher, "ring_unrung", "controller.ring",
             when=lambda self: bool(self.unrung))
        note(engines.Dispatcher, "on_reply", "controller.on_reply")
        note(server.Controller, "deliver", "controller.deliver")
    else:
        from pympec.engine import interpreter, loop
        note(interpreter.Interpreter, "execute", "engine.execute")
        note(doorbell.Doorbell, "wait", "engine.woken", result=bool)
        note(loop, "recv_header", "engine.recv_header")
        note(loop.Engine, "run", "engine.run")
        note(loop.Engine, "send_reply", "engine.send_reply")


def instrument_client() -> None:
    from pympec.client import multiengine, session
    from pympec.protocol import wire
    note(multiengine.MultiEngineClient, "execute", "client.execute")
    note(session.Session, "send", "client.send")
    note(wire.MessageReader, "read", "client.read", result=bool)


def speed_ups(engine: bool) -> None:
    """With HOPS_TRY (comma separated), apply proposed changes from outside, for an A/B
    run against the code as it is: ``orjson`` headers; the engine's ``capture`` set up
    once (benchmarks/micro.py's Reused); ``empty``: no buffer for frameless messages."""
    names = set(filter(None, os.environ.get("HOPS_TRY", "").split(",")))
    from pympec.protocol import mpiwire, wire
    if "orjson" in names:
        import types
        import orjson
        shim = types.SimpleNamespace(dumps=lambda obj, **_: orjson.dumps(obj).decode(),
                                     loads=orjson.loads)
        mpiwire.json = wire.json = shim
    if "capture" in names and engine:
        from pympec.engine import interpreter
        from benchmarks.micro import Reused
        for name in ("execute", "out", "err"):
            setattr(interpreter.Interpreter, name, getattr(Reused, name))
    if "empty" in names:
        allocate = wire.allocate
        wire.allocate = lambda n: allocate(n) if n else memoryview(bytearray(0))


def run_rank(argv: list[str]) -> None:
    """One rank of the instrumented cluster; its notes go to $HOPS_DIR/rank<N>.json."""
    from mpi4py import MPI
    import pympec.boot
    rank = MPI.COMM_WORLD.Get_rank()
    speed_ups(engine=rank > 0)
    instrument_rank(rank)
    pympec.boot.main(argv)
    Path(os.environ["HOPS_DIR"], f"rank{rank}.json").write_text(json.dumps(NOTES))


def timelines(notes: list, calls: list[tuple[int, int]]) -> list[dict]:
    """For each call (start, end), the first note of each label that starts within it."""
    by_label: dict[str, list] = {}
    for label, start, end, cpu in sorted(notes, key=lambda n: n[1]):
        by_label.setdefault(label, []).append((start, end, cpu))
    out = []
    for t0, t1 in calls:
        line = {}
        for label, spans in by_label.items():
            i = bisect.bisect_left(spans, (t0, 0, 0))
            if i < len(spans) and spans[i][0] <= t1:
                line[label] = spans[i]
        out.append(line)
    return out


def points(line: dict) -> list[int]:
    """The call's time line: each step's time, in STEPS order."""
    return [line[label][0 if edge == "start" else 1] for label, edge, _ in STEPS]


def main(calls: int) -> None:
    from pympec.cluster.local import Cluster

    class Instrumented(Cluster):
        def command(self) -> list[str]:
            return [self.mpiexec, "-n", str(self.n + 1), self.python, "-m", "benchmarks.hops",
                    "rank", "--connection-file", str(self.connection_file)]

    work = Path(tempfile.mkdtemp(prefix="pympec-hops-"))
    os.environ.setdefault("PYMPEC_DIR", str(work))
    env = dict(os.environ, HOPS_DIR=str(work))
    with Instrumented(n=4, connection_file=work / "cluster.json", cwd=str(ROOT), env=env,
                      timeout=120) as cluster:
        with cluster.client() as mec:
            for _ in range(200):   # warm up
                mec.execute("pass", targets=0)
            speed_ups(engine=False)
            instrument_client()
            for _ in range(calls):
                mec.execute("pass", targets=0)
        client = list(NOTES)
    notes = client + [n for r in range(5) for n in json.loads(
        (work / f"rank{r}.json").read_text())]
    windows = [(s, e) for label, s, e, _ in client if label == "client.execute"]
    lines = [l for l in timelines(notes, windows)
             if all(label in l for label, _, _ in STEPS)]
    lines_points = [points(l) for l in lines]
    ordered = sum(all(a <= b for a, b in zip(p, p[1:])) for p in lines_points)
    print(f"{len(lines)} of {len(windows)} calls with every step ({ordered} in this order); "
          f"load average {os.getloadavg()[0]:.2f}; HOPS_TRY={os.environ.get('HOPS_TRY', '')}\n")
    print("| step | median µs | p90 µs |\n|---|---|---|")
    for i, (_, _, what) in enumerate(STEPS[1:], 1):
        gaps = sorted((p[i] - p[i - 1]) / 1e3 for p in lines_points)
        print(f"| {what} | {statistics.median(gaps):.0f} | "
              f"{gaps[int(0.9 * (len(gaps) - 1))]:.0f} |")
    total = sorted((p[-1] - p[0]) / 1e3 for p in lines_points)
    print(f"| whole call | {statistics.median(total):.0f} | "
          f"{total[int(0.9 * (len(total) - 1))]:.0f} |")
    print("\n| inside one function | median µs, start to end | median µs on the CPU |"
          "\n|---|---|---|")
    for label in sorted({label for l in lines for label in l}):
        spans = [l[label] for l in lines if label in l]
        print(f"| {label} | {statistics.median((e - s) / 1e3 for s, e, _ in spans):.1f} | "
              f"{statistics.median(c / 1e3 for _, _, c in spans):.1f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["rank"]:
        run_rank(sys.argv[2:])
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
