"""Write docs/api.md, the API reference, from the docstrings.

    python docs/make_api.py            # rewrite docs/api.md
    python docs/make_api.py --stdout   # print it instead

``tests/test_docs.py`` fails when docs/api.md differs from what this prints, so the
reference follows the code: change a docstring, run this, commit both.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (module, names) in the order the reference presents them
SECTIONS = [
    ("Clients", "pympec.client", ["MultiEngineClient", "PendingResult", "ResultList",
                                  "TaskClient", "MapTask", "StringTask", "TaskResult"]),
    ("Clusters", "pympec", ["Cluster", "running_cluster"]),
    ("Errors", "pympec.errors", ["CompositeError", "KernelError", "InvalidEngineID",
                                 "NoEnginesRegistered", "QueueCleared", "ResultNotCompleted",
                                 "InvalidDeferredID", "NotAPendingResult", "TaskAborted",
                                 "TaskTimeout", "TaskRejectError", "InvalidProperty",
                                 "SecurityError", "ProtocolError", "ClusterError",
                                 "RemoteError"]),
    ("Async clients", "pympec.client.asyncclient", ["AsyncMultiEngineClient", "AsyncTaskClient",
                                                   "get_multiengine_client", "get_task_client"]),
    ("Serialized values", "pympec.client.serialized", ["Serialized", "serialize", "unserialize"]),
    ("IPython magics", "pympec.client.magics", ["load_ipython_extension", "activate", "deactivate",
                                         "active_client", "adopt", "forget", "px_execute",
                                         "parse_targets"]),
    ("The IPython extension", "pympec", ["load_ipython_extension", "unload_ipython_extension"]),
    ("Progress", "pympec.client.progress", ["wait_interactive", "wait_tasks", "make_bar",
                                     "have_tqdm"]),
]
DUNDERS = ("__len__", "__getitem__", "__setitem__")


def signature(obj) -> str:
    """The call signature without annotations (shorter, and the same on every Python)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def doc(obj) -> str:
    text = inspect.getdoc(obj)
    return text.strip() if text else "*No docstring.*"


def method_signature(func) -> str:
    text = signature(func)
    return text.replace("(self, ", "(", 1).replace("(self)", "()", 1)


def members(cls) -> list[tuple[str, object]]:
    """Public methods and properties defined by ``cls`` itself, in source order."""
    found = []
    for name, value in vars(cls).items():
        if name.startswith("_") and name not in DUNDERS:
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = getattr(cls, name)          # bound: no cls in the signature
        if callable(value) or isinstance(value, property):
            found.append((name, value))
    return found


def render() -> str:
    out = ["# pympec API reference", "",
           "Generated from the docstrings by `python docs/make_api.py`; "
           "`tests/test_docs.py` keeps the two in step. The tutorial is "
           "[tutorial.md](tutorial.md).", ""]
    for title, module_name, names in SECTIONS:
        module = importlib.import_module(module_name)
        out += [f"## {title}: `{module_name}`", ""]
        for name in names:
            obj = getattr(module, name, None)
            if obj is None:
                out += [f"### `{name}`", "", "*Not available in this build.*", ""]
                continue
            if inspect.isclass(obj):
                is_error = issubclass(obj, BaseException)
                bases = ", ".join(b.__name__ for b in obj.__bases__)
                head = f"class {name}({bases})" if is_error else f"class {name}{signature(obj)}"
                out += [f"### `{head}`", "", doc(obj), ""]
                if is_error and name != "CompositeError":
                    continue
                for member, value in members(obj):
                    if isinstance(value, property):
                        out += [f"#### `{name}.{member}` (property)", "", doc(value), ""]
                    else:
                        out += [f"#### `{name}.{member}{method_signature(value)}`", "",
                                doc(value), ""]
            else:
                out += [f"### `{name}{signature(obj)}`", "", doc(obj), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stdout", action="store_true", help="print instead of writing")
    args = parser.parse_args()
    text = render()
    if args.stdout:
        sys.stdout.write(text)
    else:
        (HERE / "api.md").write_text(text)
        print(f"wrote {HERE / 'api.md'}")


if __name__ == "__main__":
    main()
