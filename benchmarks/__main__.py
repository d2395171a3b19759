"""``python -m benchmarks``: run the suite, print the table, write the JSON.

    python -m benchmarks                  # everything, full sizes (about 4 min, 2 cores)
    python -m benchmarks --quick          # fewer repeats, scaling only to 8 engines
    python -m benchmarks --only latency   # one topic (repeatable, or comma separated)
    python -m benchmarks --only tasks     # task-farm throughput (TaskClient), ~20 s
    python -m benchmarks --only executor,pipelined   # beside mpi4py.futures, ~1.5 min
    python -m benchmarks --scale 0.1      # data sizes x 0.1 (40 MB scatter, 10 MB push)

Writes ``benchmarks/results/latest.json`` (or ``--output``) and a Markdown table beside
it (``latest.md``).  Clusters run with PYMPEC_DIR in a temporary directory, so nothing
touches ``~/.pympec``, and every cluster is stopped before the run ends.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

TOPICS = ("latency", "bandwidth", "idle", "coldstart", "scaling", "tasks", "executor",
          "pipelined")
HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats; scaling to 8 engines")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help=f"run only these topics: {', '.join(TOPICS)}")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply data sizes (400 MB scatter, 100 MB push) by this")
    p.add_argument("--output", type=Path, default=HERE / "results" / "latest.json")
    args = p.parse_args(argv)
    args.topics = [t for item in args.only for t in item.split(",") if t] or list(TOPICS)
    bad = [t for t in args.topics if t not in TOPICS]
    if bad:
        p.error(f"unknown topic(s) {bad}; choose from {', '.join(TOPICS)}")
    return args


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.0f} µs"
        return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "B/s":
        return f"{value / 1e9:.2f} GB/s"
    if unit.endswith("/s"):   # tasks/s, calls/s
        return f"{value:,.0f} {unit}"
    if unit == "core":
        return f"{value * 100:.2f}%"
    return f"{value:.3g} {unit}"


def rows(results: list) -> list[list[str]]:
    out = []
    for r in results:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        out.append([r.name, fmt(r.value, r.unit),
                    f"{fmt(r.baseline, r.unit)} ({r.baseline_name})" if r.baseline else "-",
                    ratio, r.goal, met, r.note])
    return out


HEAD = ["figure", "pympec", "baseline (same run)", "ratio", "goal", "met", "note"]


def markdown(results: list, meta: dict) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |"
              for row in rows(results)]
    lines.append("")
    lines.append(f"Ratio: pympec's time / baseline time (or baseline rate / pympec's rate), "
                 f"so 1.00x is baseline speed and higher is slower.  Run {meta['date']} on "
                 f"{meta['cpus']} CPUs, load average before/after "
                 f"{meta['load_before'][0]:.2f} / {meta['load_after'][0]:.2f}, "
                 f"scale {meta['scale']}{', quick' if meta['quick'] else ''}.")
    return "\n".join(lines) + "\n"


def table(results: list) -> str:
    body = [HEAD] + [row[:6] for row in rows(results)]
    widths = [max(len(r[i]) for r in body) for i in range(6)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["PYMPEC_DIR"] = tempfile.mkdtemp(prefix="pympec-bench-")
    sys.path.insert(0, str(HERE.parent))
    from .context import Context
    ctx = Context(args.quick, args.scale)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
            "python": platform.python_version(), "quick": args.quick, "scale": args.scale,
            "load_before": list(os.getloadavg()), "topics": args.topics}
    results, failed = [], []
    started = time.perf_counter()
    try:
        for topic in args.topics:
            t0 = time.perf_counter()
            print(f"[{topic}] ...", flush=True)
            try:
                got = importlib.import_module(f"benchmarks.{topic}").run(ctx)
            except Exception:
                traceback.print_exc()
                failed.append(topic)
                continue
            results.extend(got)
            print(f"[{topic}] done in {time.perf_counter() - t0:.1f} s", flush=True)
            print(table(got), flush=True)
    finally:
        ctx.close()
    meta["load_after"] = list(os.getloadavg())
    meta["seconds"] = time.perf_counter() - started
    meta["baselines"] = {k: v for k, v in ctx._cache.items()
                         if k in ("tcp", "tls", "memcpy", "tcp_rtt")}
    if "mpi_bw" in ctx._cache:
        meta["baselines"]["mpi_bandwidth_seconds"] = ctx._cache["mpi_bw"]
    if "mpi_taskfarm" in ctx._cache:
        meta["baselines"]["mpi_taskfarm_tasks_per_second"] = ctx._cache["mpi_taskfarm"]
    if "futures" in ctx._cache:
        meta["baselines"]["mpi4py_futures_tasks_per_second"] = ctx._cache["futures"]
    print()
    print(table(results))
    print(f"\nsuite took {meta['seconds']:.0f} s; load average {meta['load_before'][0]:.2f} "
          f"before, {meta['load_after'][0]:.2f} after")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"meta": meta, "results": [r.as_dict() for r in results],
                                       "failed": failed}, indent=1))
    args.output.with_suffix(".md").write_text(markdown(results, meta))
    print(f"wrote {args.output} and {args.output.with_suffix('.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
