"""The pickles of task functions (pympec.client.functions): kept only while nothing a
function captured can have changed, so a task always sees what it captured as it was
when submitted.  Unit tests, one process, and one against a real cluster."""
from __future__ import annotations

import pickle

from pympec import client
from pympec.client.functions import pickled

SCALE = 3
SETTINGS = {"scale": 3}


def importable(x):
    return x


def test_an_importable_function_goes_by_name():
    data = pickled(importable)
    assert pickle.loads(data) is importable and len(data) < 100


def test_a_lambda_capturing_immutables_is_pickled_once():
    f = lambda x: x * SCALE   # noqa: E731
    assert pickled(f) is pickled(f)
    assert pickle.loads(pickled(f))(2) == 6


def test_rebinding_a_captured_global_pickles_it_again():
    global SCALE
    f = lambda x: x * SCALE   # noqa: E731
    first = pickled(f)
    SCALE = 5
    try:
        assert pickled(f) is not first and pickle.loads(pickled(f))(2) == 10
    finally:
        SCALE = 3


def test_a_function_capturing_mutable_state_is_pickled_every_time():
    f = lambda x: x * SETTINGS["scale"]   # noqa: E731
    first = pickled(f)
    SETTINGS["scale"] = 7
    try:
        again = pickled(f)
        assert again is not first and pickle.loads(again)(2) == 14
    finally:
        SETTINGS["scale"] = 3


def test_a_changed_closure_cell_pickles_it_again():
    k = 1
    f = lambda x: x + k   # noqa: E731
    assert pickle.loads(pickled(f))(1) == 2
    k = 10   # noqa: F841  (f's cell sees it)
    assert pickle.loads(pickled(f))(1) == 11


def test_each_task_sees_what_it_captured_when_submitted(cluster):
    tc = cluster.task_client()
    f = lambda x: x * SETTINGS["scale"]   # noqa: E731  (one function, its global changing)
    ids = []
    for value in range(5):
        SETTINGS["scale"] = value
        ids.append(tc.run(client.MapTask(f, (1,))))
    SETTINGS["scale"] = 3
    tc.barrier(ids, timeout=60)
    assert [tc.get_task_result(t) for t in ids] == [0, 1, 2, 3, 4]
