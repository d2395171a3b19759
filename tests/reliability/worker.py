"""One of many client processes making checked calls at once (test_concurrent_clients.py).

    python worker.py CONNECTION_FILE INDEX CALLS SEED

Connects a MultiEngineClient and a TaskClient, prints "ready", waits for a line on
stdin ("go"), then makes CALLS seeded, mixed calls, each checked against what this
process knows it sent: execute (its output), push and pull, scatter and gather of
arrays and lists, tasks (MapTask, StringTask), and map (on the engines and as tasks).
Its names start with w<INDEX>_, so processes never touch each other's values.  Each
call is bounded: what does not come back within LIMIT seconds is lost.  At the end it
prints one JSON line: {"calls", "lost", "mismatched", "kinds", "failures"}.
"""
from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter

import numpy as np

from pympec import client
from pympec.errors import ClusterError, RequestLost

LIMIT = 60.0
ENGINES = 4


def square(x):
    return x * x


class Worker:
    def __init__(self, path: str, index: int, seed: int) -> None:
        self.mec = client.MultiEngineClient(path, timeout=LIMIT)
        self.tc = client.TaskClient(path, timeout=LIMIT)
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.prefix = f"w{index}_"
        self.kinds: Counter = Counter()
        self.lost = self.mismatched = 0
        self.failures: list[str] = []

    def targets(self) -> list[int]:
        return sorted(self.rng.sample(range(ENGINES), self.rng.randint(1, ENGINES)))

    def get(self, pending):
        return pending.get_result(timeout=LIMIT)

    # each returns (what came back, what was expected)

    def execute(self):
        targets, value = self.targets(), self.rng.randrange(10 ** 9)
        records = self.get(self.mec.execute(f"print({value})", targets=targets, block=False))
        return [r["stdout"] for r in records], [f"{value}\n"] * len(targets)

    def push_pull(self):
        targets, name = self.targets(), self.prefix + "v"
        value = self.rng.choice([self.rng.randrange(-10 ** 12, 10 ** 12), str(self.rng.random()),
                                 [self.rng.random() for _ in range(5)],
                                 {"k": self.rng.randrange(100), "t": (1, "x")}])
        self.get(self.mec.push({name: value}, targets=targets, block=False))
        return self.get(self.mec.pull(name, targets=targets, block=False)), [value] * len(targets)

    def push_pull_array(self):
        targets, name = self.targets(), self.prefix + "a"
        array = self.np_rng.standard_normal(self.rng.randint(0, 300))
        self.get(self.mec.push({name: array}, targets=targets, block=False))
        pulled = self.get(self.mec.pull(name, targets=targets, block=False))
        return ([a.tobytes() + str(a.dtype).encode() for a in pulled],
                [array.tobytes() + b"float64"] * len(targets))

    def scatter_gather(self):
        name = self.prefix + "s"
        n = self.rng.randint(0, 400)
        data = (self.np_rng.integers(-1000, 1000, n) if self.rng.random() < 0.7
                else [self.rng.randrange(1000) for _ in range(n)])
        self.get(self.mec.scatter(name, data, block=False))
        back = self.get(self.mec.gather(name, block=False))
        if isinstance(data, np.ndarray):
            return back.tobytes() + str(back.dtype).encode(), data.tobytes() + b"int64"
        return back, data

    def map(self):
        seq = [self.rng.randrange(1000) for _ in range(self.rng.randint(1, 20))]
        return self.mec.map(square, seq), [x * x for x in seq]

    def map_task(self):
        x = self.rng.randrange(10 ** 6)
        tid = self.tc.run(client.MapTask(square, (x,)))
        return self.tc.get_task_result(tid, block=True), x * x

    def string_task(self):
        x = self.rng.randrange(10 ** 6)
        tid = self.tc.run(client.StringTask("y = x + 1", push={"x": x}, pull="y"))
        return self.tc.get_task_result(tid, block=True).ns.y, x + 1

    def task_map(self):
        seq = [self.rng.randrange(1000) for _ in range(self.rng.randint(1, 10))]
        return self.tc.map(square, seq), [x * x for x in seq]

    def run(self, calls: int) -> dict:
        kinds = [self.execute, self.push_pull, self.push_pull_array, self.scatter_gather,
                 self.map, self.map_task, self.string_task, self.task_map]
        for i in range(calls):
            kind = self.rng.choice(kinds)
            self.kinds[kind.__name__] += 1
            try:
                got, expected = kind()
            except (ClusterError, RequestLost, TimeoutError) as e:
                self.lost += 1
                self.failures.append(f"call {i} ({kind.__name__}) lost: {type(e).__name__}: {e}")
                continue
            except Exception as e:
                self.mismatched += 1
                self.failures.append(f"call {i} ({kind.__name__}) raised {type(e).__name__}: {e}")
                continue
            if got != expected:
                self.mismatched += 1
                self.failures.append(f"call {i} ({kind.__name__}): {got!r:.200} != {expected!r:.200}")
        return {"calls": calls, "lost": self.lost, "mismatched": self.mismatched,
                "kinds": dict(self.kinds), "failures": self.failures[:5]}


if __name__ == "__main__":
    path, index, calls, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    worker = Worker(path, index, seed)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    summary = worker.run(calls)
    summary["seconds"] = time.monotonic() - started
    print(json.dumps(summary), flush=True)
