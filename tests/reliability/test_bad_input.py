"""Bad input to the public API, against a real cluster (issue 12, item 4).

Each case is one wrong call: wrong types, bad names, bad or empty targets, bad dist,
block and flatten, odd sequences, tasks with bad options, ids that do not exist.  Each
must raise its own exception with a message saying what was wrong: at the client,
before anything is sent, wherever the client can know; at once from the controller or
the engines where only they can (an engine id or task id nobody has, a name missing on
the engines).  After each, the cluster still serves: every engine answers a pull.

Then valid edge cases that must work, and a check that the client's checks accept no
more than the controller's registry does (so a request that passes one passes both).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from pympec import client
from pympec.client import checks
from pympec.errors import CompositeError, InvalidEngineID, NotAPendingResult
from pympec.protocol import commands

from conftest import ENGINES

pytestmark = pytest.mark.timeout(60)

BIG = 2 ** 70            # above any id the registry takes
ABSENT = 10 ** 9         # a task id no task has


@pytest.fixture(scope="module")
def tc(cluster):
    c = cluster.task_client()
    yield c
    c.close()


def serves(mec) -> None:
    assert mec.pull("id") == list(range(ENGINES))


def setter(mec, name, value):
    setattr(mec, name, value)


def gather_of(code):
    """Set ``x`` on each engine with ``code``, then gather it."""
    def call(mec, tc):
        mec.execute(code)
        return mec.gather("x")
    return call


def recovery_chain(n):
    task = client.MapTask(abs, (1,))
    for _ in range(n):
        task = client.MapTask(abs, (1,), recovery_task=task)
    return task


def recovery_loop():
    first = client.MapTask(abs, (1,))
    first.recovery_task = client.MapTask(abs, (1,), recovery_task=first)
    return first


def abort_done(tc):
    tid = tc.run(client.MapTask(abs, (-1,)))
    tc.barrier(tid)
    tc.abort(tid)


X = [1, 2, 3, 4]
M = client.MapTask
S = client.StringTask

# (id, call(mec, tc), exception, fragment of its message)
CASES = [
    # targets: wrong types, strings, empty, repeated, out of range, unknown
    ("targets=[]", lambda m, t: m.execute("1", targets=[]), InvalidEngineID, "empty list"),
    ("targets=()", lambda m, t: m.pull("id", targets=()), InvalidEngineID, "empty list"),
    ("targets=True", lambda m, t: m.execute("1", targets=True), InvalidEngineID, "True"),
    ("targets=[0,False]", lambda m, t: m.execute("1", targets=[0, False]), InvalidEngineID,
     "[0, False]"),
    ("targets='a'", lambda m, t: m.execute("1", targets="a"), InvalidEngineID, "'a'"),
    ("targets='ALL'", lambda m, t: m.execute("1", targets="ALL"), InvalidEngineID, "'ALL'"),
    ("targets=1.0", lambda m, t: m.execute("1", targets=1.0), InvalidEngineID, "1.0"),
    ("targets=[None]", lambda m, t: m.execute("1", targets=[None]), InvalidEngineID, "None"),
    ("targets={0}", lambda m, t: m.execute("1", targets={0}), InvalidEngineID, "{0}"),
    ("targets=dict", lambda m, t: m.execute("1", targets={0: 1}), InvalidEngineID,
     "an engine id"),
    ("targets=[0,0]", lambda m, t: m.execute("1", targets=[0, 0]), InvalidEngineID,
     "engine 0 twice"),
    ("targets=-1", lambda m, t: m.execute("1", targets=-1), InvalidEngineID,
     "count from 0"),
    ("targets=[0,-2]", lambda m, t: m.pull("id", targets=[0, -2]), InvalidEngineID,
     "no engine has id -2"),
    ("targets=2**70", lambda m, t: m.execute("1", targets=BIG), InvalidEngineID,
     f"no engine has id {BIG}"),
    ("targets unknown", lambda m, t: m.execute("1", targets=ENGINES + 10), InvalidEngineID,
     f"no engine has id {ENGINES + 10}"),
    ("targets [0,unknown]", lambda m, t: m.pull("id", targets=[0, ENGINES]),
     InvalidEngineID, f"no engine has id {ENGINES}"),
    ("setter targets='a'", lambda m, t: setter(m, "targets", "a"), InvalidEngineID, "'a'"),
    ("setter targets=[]", lambda m, t: setter(m, "targets", []), InvalidEngineID,
     "empty list"),
    ("setter targets=None", lambda m, t: setter(m, "targets", None), InvalidEngineID,
     "None"),
    ("queue_status targets", lambda m, t: m.queue_status(targets="x"), InvalidEngineID,
     "'x'"),
    ("clear_queue targets=[]", lambda m, t: m.clear_queue(targets=[]), InvalidEngineID,
     "empty list"),
    ("scatter targets=[]", lambda m, t: m.scatter("x", X, targets=[]), InvalidEngineID,
     "empty list"),
    ("gather targets=True", lambda m, t: m.gather("id", targets=True), InvalidEngineID,
     "True"),
    ("mapper targets", lambda m, t: m.mapper(targets="x"), InvalidEngineID, "'x'"),
    ("parallel targets=[]", lambda m, t: m.parallel(targets=[]), InvalidEngineID,
     "empty list"),
    # block
    ("block='yes'", lambda m, t: m.execute("1", block="yes"), ValueError,
     "block must be True or False, not 'yes'"),
    ("block=1", lambda m, t: m.pull("id", block=1), ValueError, "not 1"),
    ("setter block=None", lambda m, t: setter(m, "block", None), ValueError, "not None"),
    ("push block=0", lambda m, t: m.push({"a": 1}, block=0), ValueError, "not 0"),
    ("mapper block", lambda m, t: m.mapper(block="no"), ValueError, "not 'no'"),
    ("tc.run block", lambda m, t: t.run(M(abs, (1,)), block="yes"), ValueError,
     "block must be True or False"),
    ("get_task_result block", lambda m, t: t.get_task_result(0, block=2), ValueError,
     "not 2"),
    ("tc.mapper block=None", lambda m, t: t.mapper(block=None), ValueError, "not None"),
    # dist and flatten
    ("scatter dist='c'", lambda m, t: m.scatter("x", X, dist="c"), ValueError,
     "dist must be 'b'"),
    ("gather dist='r'", lambda m, t: m.gather("id", dist="r"), ValueError, "not 'r'"),
    ("mapper dist=1", lambda m, t: m.mapper(dist=1), ValueError, "not 1"),
    ("raw_map dist", lambda m, t: m.raw_map(abs, [X], dist="cyclic"), ValueError,
     "'cyclic'"),
    ("parallel dist", lambda m, t: m.parallel(dist=None), ValueError, "not None"),
    ("flatten='yes'", lambda m, t: m.scatter("x", X, flatten="yes"), TypeError,
     "flatten must be True or False"),
    ("flatten=None", lambda m, t: m.scatter("x", X, flatten=None), TypeError, "not None"),
    # names and keys
    ("push {'a b'}", lambda m, t: m.push({"a b": 1}), ValueError,
     "must be a Python identifier, not 'a b'"),
    ("push {1: 2}", lambda m, t: m.push({1: 2}), TypeError, "not int 1"),
    ("push {''}", lambda m, t: m.push({"": 1}), ValueError, "not ''"),
    ("push {'1a'}", lambda m, t: m.push({"1a": 1}), ValueError, "not '1a'"),
    ("push {None}", lambda m, t: m.push({None: 1}), TypeError, "not NoneType None"),
    ("push list", lambda m, t: m.push([("a", 1)]), TypeError, "dict of names"),
    ("push str", lambda m, t: m.push("a=1"), TypeError, "not str"),
    ("push unpicklable", lambda m, t: m.push({"lock": threading.Lock()}), TypeError,
     "cannot send lock"),
    ("push_function int", lambda m, t: m.push_function({"f": 3}), TypeError,
     "'f' is a int, not a function"),
    ("push_function {'f g'}", lambda m, t: m.push_function({"f g": len}), ValueError,
     "not 'f g'"),
    ("push_function func", lambda m, t: m.push_function(len), TypeError, "dict"),
    ("pull 'a b'", lambda m, t: m.pull("a b"), ValueError, "not 'a b'"),
    ("pull 1", lambda m, t: m.pull(1), TypeError, "not int 1"),
    ("pull ['a', 1]", lambda m, t: m.pull(["a", 1]), TypeError, "not int 1"),
    ("pull set", lambda m, t: m.pull({"a"}), TypeError, "list or tuple of names"),
    ("pull None", lambda m, t: m.pull(None), TypeError, "not NoneType"),
    ("pull missing", lambda m, t: m.pull("nothing_here"), CompositeError,
     "NameError: name 'nothing_here' is not defined"),
    ("pull_function 'x-y'", lambda m, t: m.pull_function("x-y"), ValueError, "'x-y'"),
    ("zip_pull ['a','b c']", lambda m, t: m.zip_pull(["a", "b c"]), ValueError, "'b c'"),
    ("zip_pull 5", lambda m, t: m.zip_pull(5), TypeError, "not int 5"),
    ("mec['a b']=1", lambda m, t: m.__setitem__("a b", 1), ValueError, "'a b'"),
    ("mec[1]=2", lambda m, t: m.__setitem__(1, 2), TypeError, "key must be a str"),
    ("mec[('a',)]", lambda m, t: m[("a",)], TypeError, "key must be a str"),
    ("mec['1x']", lambda m, t: m["1x"], ValueError, "'1x'"),
    ("scatter key 1", lambda m, t: m.scatter(1, X), TypeError, "key must be a str"),
    ("scatter key 'a.b'", lambda m, t: m.scatter("a.b", X), ValueError, "'a.b'"),
    ("gather 'a b'", lambda m, t: m.gather("a b"), ValueError, "'a b'"),
    ("gather None", lambda m, t: m.gather(None), TypeError, "key must be a str"),
    ("map 'not a name'", lambda m, t: m.map("not a name", X), ValueError,
     "function name must be a Python identifier"),
    ("map 42", lambda m, t: m.map(42, X), TypeError, "function or the name of one"),
    ("map undefined name", lambda m, t: m.map("undefined_fn", X), CompositeError,
     "NameError"),
    # sequences
    ("scatter 5", lambda m, t: m.scatter("x", 5), TypeError, "not int"),
    ("scatter set", lambda m, t: m.scatter("x", {1, 2}), TypeError, "not set"),
    ("scatter 0-d", lambda m, t: m.scatter("x", np.array(3)), TypeError, "0-d array"),
    ("scatter generator", lambda m, t: m.scatter("x", (i for i in X)), TypeError,
     "not generator"),
    ("scatter dict", lambda m, t: m.scatter("x", {"a": 1}), TypeError, "not dict"),
    ("map 5", lambda m, t: m.map(abs, 5), TypeError, "sequence 0 is int"),
    ("map nothing", lambda m, t: m.map(abs), TypeError, "at least one sequence"),
    ("map lengths", lambda m, t: m.map(pow, [1, 2], [1]), ValueError, "[2, 1]"),
    ("map iterator", lambda m, t: m.map(abs, iter(X)), TypeError, "list()"),
    ("raw_map str", lambda m, t: m.raw_map(abs, "notalist"), TypeError, "list or tuple"),
    ("raw_map [5]", lambda m, t: m.raw_map(abs, [5]), TypeError, "sequence 0 is int"),
    ("gather shapes", gather_of("import numpy; x = numpy.zeros((2, id + 1))"), ValueError,
     "cannot join the parts (ndarray (2, 1)"),
    ("gather 0-d", gather_of("import numpy; x = numpy.array(id)"), ValueError,
     "zero-dimensional"),
    ("gather list, int", gather_of("x = [1] if id == 0 else 5"), ValueError,
     "cannot join the parts (list (1,), int ()"),
    # execute records
    ("get_result(0)", lambda m, t: m.get_result(0), IndexError, "count from 1"),
    ("get_result(-1)", lambda m, t: m.get_result(-1), IndexError, "no execute record -1"),
    ("get_result('1')", lambda m, t: m.get_result("1"), TypeError, "not str '1'"),
    ("get_result(1.0)", lambda m, t: m.get_result(1.0), TypeError, "not float"),
    ("get_result(True)", lambda m, t: m.get_result(True), TypeError, "not bool"),
    ("get_result absent", lambda m, t: m.get_result(10 ** 6), CompositeError,
     "has no execute result number 1000000"),
    # properties
    ("set_properties list", lambda m, t: m.set_properties([1]), TypeError, "needs a dict"),
    ("set_properties {1: 2}", lambda m, t: m.set_properties({1: 2}), TypeError,
     "property keys must be str, not int 1"),
    ("get_properties 5", lambda m, t: m.get_properties(5), TypeError, "not int 5"),
    ("has_properties [1]", lambda m, t: m.has_properties([1]), TypeError, "not int 1"),
    ("del_properties dict", lambda m, t: m.del_properties({"a": 1}), TypeError,
     "not dict"),
    ("has_properties long", lambda m, t: m.has_properties("k" * 2000), ValueError,
     "at most 1024 characters"),
    ("del_properties missing", lambda m, t: m.del_properties("missing"), CompositeError,
     "KeyError"),
    # other MultiEngineClient arguments
    ("kill controller='no'", lambda m, t: m.kill(controller="no"), TypeError,
     "controller must be True or False"),
    ("execute 42", lambda m, t: m.execute(42), TypeError, "not int"),
    ("execute stream", lambda m, t: m.execute("1", stream="yes"), TypeError,
     "stream must be"),
    ("execute syntax", lambda m, t: m.execute("x = ("), CompositeError, "SyntaxError"),
    ("benchmark 0", lambda m, t: m.benchmark(push_size=0), ValueError,
     "push_size must be an int >= 1"),
    ("benchmark '10'", lambda m, t: m.benchmark("10"), TypeError, "not '10'"),
    ("run missing file", lambda m, t: m.run("/nonexistent/file.py"), FileNotFoundError,
     "/nonexistent/file.py"),
    ("barrier not pending", lambda m, t: m.barrier([1]), NotAPendingResult,
     "PendingResults, not 1"),
    # tasks with bad options
    ("MapTask 42", lambda m, t: M(42), TypeError, "a MapTask needs a function"),
    ("MapTask args=5", lambda m, t: M(abs, args=5), TypeError, "args must be a list"),
    ("MapTask kwargs=list", lambda m, t: M(abs, kwargs=[1]), TypeError,
     "kwargs must be a dict"),
    ("MapTask kwargs {1:2}", lambda m, t: M(abs, kwargs={1: 2}), TypeError,
     "keyword names"),
    ("retries=-1", lambda m, t: M(abs, (1,), retries=-1), ValueError,
     "retries must be an int in 0..1048576, not -1"),
    ("retries=1.5", lambda m, t: M(abs, (1,), retries=1.5), TypeError, "not 1.5"),
    ("retries=True", lambda m, t: M(abs, (1,), retries=True), TypeError, "not True"),
    ("retries=2**30", lambda m, t: M(abs, (1,), retries=2 ** 30), ValueError,
     "not 1073741824"),
    ("recovery_task str", lambda m, t: M(abs, recovery_task="no"), TypeError,
     "recovery_task must be a task"),
    ("depend=5", lambda m, t: M(abs, depend=5), TypeError, "depend must be a function"),
    ("clear_before='yes'", lambda m, t: M(abs, clear_before="yes"), TypeError,
     "clear_before must be True or False"),
    ("clear_after=None", lambda m, t: S("1", clear_after=None), TypeError,
     "clear_after must be True or False"),
    ("StringTask 42", lambda m, t: S(42), TypeError, "code as a str"),
    ("StringTask pull 'a b'", lambda m, t: S("1", pull="a b"), ValueError, "'a b'"),
    ("StringTask pull 5", lambda m, t: S("1", pull=5), TypeError, "not int 5"),
    ("StringTask push list", lambda m, t: S("1", push=[1]), TypeError, "dict"),
    ("StringTask push {'a b'}", lambda m, t: S("1", push={"a b": 1}), ValueError, "'a b'"),
    ("recovery too deep", lambda m, t: t.run(recovery_chain(5)), ValueError,
     "nest at most 4 deep"),
    ("recovery loop", lambda m, t: t.run(recovery_loop()), ValueError, "loops back"),
    ("run a function", lambda m, t: t.run(abs), TypeError, "MapTask or StringTask"),
    ("run_many [task, 5]", lambda m, t: t.run_many([M(abs, (1,)), 5]), TypeError,
     "not a task: 5"),
    # task ids
    ("get_task_result '0'", lambda m, t: t.get_task_result("0"), TypeError, "not str '0'"),
    ("get_task_result -1", lambda m, t: t.get_task_result(-1), IndexError,
     "task ID not registered: -1"),
    ("get_task_result True", lambda m, t: t.get_task_result(True), TypeError, "not bool"),
    ("get_task_result 1.0", lambda m, t: t.get_task_result(1.0), TypeError, "not float"),
    ("get_task_result absent", lambda m, t: t.get_task_result(ABSENT), IndexError,
     f"not registered: {ABSENT}"),
    ("get_task_result 2**70", lambda m, t: t.get_task_result(BIG), IndexError,
     f"not registered: {BIG}"),
    ("get_task_info -1", lambda m, t: t.get_task_info(-1), IndexError, "not registered"),
    ("abort 'x'", lambda m, t: t.abort("x"), TypeError, "not str 'x'"),
    ("abort -3", lambda m, t: t.abort(-3), IndexError, "not registered: -3"),
    ("abort absent", lambda m, t: t.abort(ABSENT), IndexError, "not registered"),
    ("abort done", lambda m, t: abort_done(t), IndexError, "Task Already Completed"),
    ("barrier 'x'", lambda m, t: t.barrier("x"), TypeError, "not str 'x'"),
    ("barrier [0, None]", lambda m, t: t.barrier([0, None]), TypeError, "not NoneType"),
    ("barrier [-1]", lambda m, t: t.barrier([-1]), IndexError, "not registered: -1"),
    ("clear 'x'", lambda m, t: t.clear("x"), TypeError, "not str 'x'"),
    ("clear [True]", lambda m, t: t.clear([True]), TypeError, "not bool"),
    ("clear absent", lambda m, t: t.clear([ABSENT]), KeyError, f"task {ABSENT}"),
    ("queue_status verbose", lambda m, t: t.queue_status(verbose="yes"), TypeError,
     "verbose must be True or False"),
    ("configure -1", lambda m, t: t.configure(result_cap=-1), ValueError,
     "result_cap must be an int >= 0"),
    ("configure 'big'", lambda m, t: t.configure(result_cap="big"), TypeError,
     "not 'big'"),
    # TaskClient map, mapper, imap, executor
    ("tc.map chunksize=0", lambda m, t: t.map(abs, X, chunksize=0), ValueError,
     "chunksize must be an int >= 1, not 0"),
    ("tc.map chunksize=1.5", lambda m, t: t.map(abs, X, chunksize=1.5), TypeError,
     "not 1.5"),
    ("tc.map 5", lambda m, t: t.map(abs, 5), TypeError, "sequence 0 is int"),
    ("tc.map 'abs'", lambda m, t: t.map("abs", X), TypeError, "needs a function"),
    ("tc.map nothing", lambda m, t: t.map(abs), TypeError, "at least one sequence"),
    ("tc.map lengths", lambda m, t: t.map(pow, X, [1]), ValueError, "same length"),
    ("tc.mapper retries", lambda m, t: t.mapper(retries=-1), ValueError, "not -1"),
    ("tc.mapper clear_before", lambda m, t: t.mapper(clear_before="x"), TypeError,
     "clear_before must be True or False"),
    ("tc.parallel recovery", lambda m, t: t.parallel(recovery_task=5), TypeError,
     "recovery_task must be a task"),
    ("imap chunksize=0", lambda m, t: t.imap(abs, X, chunksize=0), ValueError,
     "chunksize must be an int >= 1"),
    ("imap max_outstanding", lambda m, t: t.imap(abs, X, max_outstanding=0), ValueError,
     "max_outstanding must be an int >= 1"),
    ("imap 5", lambda m, t: t.imap(abs, 5), TypeError, "imap needs iterables, not int"),
    ("imap 'abs'", lambda m, t: t.imap("abs", X), TypeError, "imap needs a function"),
    ("executor max_outstanding", lambda m, t: t.executor(max_outstanding=0), ValueError,
     "max_outstanding must be an int >= 1"),
]


@pytest.mark.parametrize("call, error, fragment", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_raises_clearly(mec, tc, call, error, fragment):
    with pytest.raises(error) as info:
        call(mec, tc)
    assert fragment in str(info.value)
    serves(mec)


def test_bad_input_sends_nothing(mec):
    """What the client refuses never reaches the engines: nothing was pushed."""
    before = mec.keys()
    for namespace in ({"ok": 1, "a b": 2}, {"ok": 1, 3: 4}):
        with pytest.raises((TypeError, ValueError)):
            mec.push(namespace)
    with pytest.raises(ValueError):
        mec.scatter("ok", X, flatten=True, dist="c")
    assert mec.keys() == before


def test_run_compiles_locally(mec, tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("x = (\n")
    with pytest.raises(SyntaxError):
        mec.run(str(path))
    serves(mec)


# -- valid edge cases: accepted, and right -------------------------------------------

def test_valid_edges(mec, tc):
    assert mec.pull("id", targets=np.int64(1)) == [1]           # NumPy ints are ids
    assert mec.pull("id", targets=(2, 0)) == [2, 0]             # a tuple, in its order
    mec.targets = [np.int32(3)]
    assert mec.targets == [3] and mec.pull("id") == [3]
    mec.targets = "all"
    assert mec.pull([]) == [[]] * ENGINES                       # no names: empty lists
    assert mec.push({}) == [None] * ENGINES
    mec.push({"class": 1})                   # a keyword is an identifier (the registry's
    assert mec.pull("class") == [1] * ENGINES                   # rule too)
    mec.scatter("r", range(10))                                 # ranges gather as lists
    assert mec.gather("r") == list(range(10))
    mec.scatter("s", "abcdefgh")                                # str parts are not joined
    assert mec.gather("s") == ["ab", "cd", "ef", "gh"]
    mec.scatter("e", [1, 2])                                    # fewer items than engines
    assert mec.gather("e") == [1, 2]
    mec.scatter("f", [1, 2, 3, 4], flatten=True)
    assert mec.pull("f") == [1, 2, 3, 4]
    assert mec.map(abs, "") == []                               # an empty sequence
    assert mec.map(len, ["ab", "c"]) == [2, 1]
    assert mec.map(abs, {-1: "a", -2: "b"}) == [1, 2]           # any sized iterable
    assert tc.map(abs, []) == []
    assert tc.barrier([]) is None
    assert list(tc.imap(abs, [-1, -2], chunksize=2)) == [1, 2]
    assert tc.run(M(abs, (-3,), retries=0, clear_before=False), block=True) == 3
    assert tc.run(recovery_chain(4), block=True) == 1          # the deepest allowed
    result = tc.run(S("y = x * 2", push={"x": 3}, pull=("y",)), block=True)
    assert result.ns.y == 6


# -- the client accepts no more than the controller's registry ------------------------

NAMES = ["a", "_", "x1", "class", "ünïcode", "a b", "", "1a", "a.b", "a-b", " a", 1, None,
         b"a", "\u0660"]
TARGETS = ["all", 0, 3, [0, 1], (0, 1), [], "ALL", "a", True, [True], 1.0, -1, [0, 0],
           None, np.int64(2), BIG, -BIG]


def accepts(check, *args):
    try:
        check(*args)
    except (TypeError, ValueError, commands.BadRequest):
        return False
    return True


@pytest.mark.parametrize("name", NAMES, ids=repr)
def test_names_agree_with_the_registry(name):
    assert accepts(checks.check_name, name) == accepts(commands.name_, name, "name")


@pytest.mark.parametrize("targets", TARGETS, ids=repr)
def test_targets_pass_the_registry(targets):
    """What the client sends for targets, the controller's door takes (the door
    leaves empty, repeated and unknown ids to the controller, which names them)."""
    if accepts(checks.check_targets, targets):
        sent = checks.check_targets(targets)
        assert accepts(commands.targets, sent, "targets")
        assert type(sent) in (str, int, list)
