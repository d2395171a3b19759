"""User code that misbehaves on the engines, through every kind of call: exceptions whose
__str__ and __repr__ raise, KeyboardInterrupt, SystemExit and GeneratorExit raised by the
user's code, objects that cannot be pickled or unpickled, or whose pickling raises
KeyboardInterrupt.  Each comes back as a clear error naming what was raised, and every
engine goes on serving with its namespace intact (issue 12: "a task or execute raising
an exception whose __str__ raises kills the engine's loop", "KeyboardInterrupt raised by
user code in any verb other than execute does the same")."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from pympec import client
from pympec.errors import CompositeError

from conftest import ENGINES

BROKEN = """
class Broken(Exception):
    def __str__(self):
        raise RuntimeError("no str")
    def __repr__(self):
        raise RuntimeError("no repr")
"""


def raising(kind: str):
    """A function raising ``kind`` ("Broken", or a builtin BaseException's name)."""
    def f(x):
        if kind == "Broken":
            class Broken(Exception):
                def __str__(self):
                    raise RuntimeError("no str")

                def __repr__(self):
                    raise RuntimeError("no repr")
            raise Broken()
        raise {"KeyboardInterrupt": KeyboardInterrupt, "SystemExit": SystemExit,
               "GeneratorExit": GeneratorExit}[kind]()
    return f


class RaisesWhenUnpickled:
    """Pickles on the client; unpickling it on the engine raises KeyboardInterrupt."""

    def __reduce__(self):
        return (eval, ("(_ for _ in ()).throw(KeyboardInterrupt)",))


KINDS = ["Broken", "KeyboardInterrupt", "SystemExit", "GeneratorExit"]
CASES = (
    [(f"execute raising {k}", k) for k in KINDS] +
    [(f"map raising {k}", k) for k in KINDS] +
    [(f"MapTask raising {k}", k) for k in KINDS] +
    [(f"StringTask raising {k}", k) for k in KINDS] +
    [("pull of an object whose pickling raises KeyboardInterrupt", "KeyboardInterrupt"),
     ("pull of an object that cannot be pickled", "lock"),
     ("map returning an object that cannot be pickled", "lock"),
     ("push of an object whose unpickling raises KeyboardInterrupt", "KeyboardInterrupt"),
     ("MapTask returning an object that cannot be pickled", "lock")])


def call(mec, tc, case: str, kind: str):
    """Make the call; return the exception it raised (None if none)."""
    try:
        if case.startswith("execute"):
            code = BROKEN + "raise Broken()" if kind == "Broken" else f"raise {kind}()"
            mec.execute(code, targets=0)
        elif case.startswith("map raising"):
            mec.map(raising(kind), range(ENGINES))
        elif case.startswith("MapTask raising"):
            tc.get_task_result(tc.run(client.MapTask(raising(kind), (1,))), block=True,
                               timeout=60)
        elif case.startswith("StringTask"):
            code = BROKEN + "raise Broken()" if kind == "Broken" else f"raise {kind}()"
            tc.get_task_result(tc.run(client.StringTask(code)), block=True,
                               timeout=60).raise_exception()
        elif case.startswith("pull of an object whose"):
            mec.execute("class P:\n def __reduce__(self):\n  raise KeyboardInterrupt\np = P()")
            mec.pull("p")
        elif case.startswith("pull"):
            mec.execute("import threading; p = threading.Lock()")
            mec.pull("p")
        elif case.startswith("map returning"):
            mec.map(lambda x: threading.Lock(), range(ENGINES))
        elif case.startswith("push"):
            mec.push({"p": RaisesWhenUnpickled()})
        else:
            tc.get_task_result(tc.run(client.MapTask(threading.Lock)), block=True, timeout=60)
    except BaseException as e:   # (a KeyboardInterrupt coming back must not escape)
        return e
    return None


def described(error: BaseException) -> str:
    """What the client tells of ``error``: its type and text, and for a CompositeError
    each engine's exception's type and traceback text (str() of the user's own
    exception may raise)."""
    if isinstance(error, CompositeError):
        return "CompositeError " + " ".join(f"{etype.__name__}: {tb}"
                                            for etype, _, tb in error.elist)
    try:
        return f"{type(error).__name__}: {error}"
    except Exception:    # the user's Broken
        return type(error).__name__


@pytest.mark.parametrize("case,kind", CASES, ids=[c for c, _ in CASES])
def test_misbehaving_user_code_is_a_clear_error(cluster, mec, case, kind):
    """The call raises, naming what the user's code raised (a direct call: a
    CompositeError; a task: its own exception, as IPython 0.10 re-raised it); every
    engine then serves on with its namespace, and takes tasks."""
    tc = cluster.task_client()
    mec.execute("kept = id * 10")
    error = call(mec, tc, case, kind)
    assert mec.pull("kept", block=False).get_result(timeout=60) == [
        i * 10 for i in range(ENGINES)]
    assert tc.map(lambda x: x + 1, range(8)) == list(range(1, 9))
    tc.close()
    assert error is not None, f"{case}: no error"
    assert kind in described(error), f"{case}: {described(error)[:500]}"
    if "Task" not in case:
        assert isinstance(error, CompositeError), f"{case}: {described(error)}"


def test_a_composite_error_of_a_broken_exception_prints(mec):
    try:
        mec.execute(BROKEN + "raise Broken()", targets=0)
    except CompositeError as error:
        assert "[0:execute]: Broken" in str(error)


SYSTEM_EXIT_IN_A_TASK = """
import sys
from pympec import client
tc = client.TaskClient(PATH)
try:
    tc.get_task_result(tc.run(client.MapTask(sys.exit, (3,))), block=True, timeout=60)
except Exception as e:
    print("caught", type(e).__name__, flush=True)
print("the program goes on", flush=True)
"""


def test_system_exit_in_a_task_does_not_end_the_client(cluster, mec):
    script = SYSTEM_EXIT_IN_A_TASK.replace("PATH", repr(str(cluster.connection_file)))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert "the program goes on" in done.stdout, (done.returncode, done.stdout, done.stderr)
