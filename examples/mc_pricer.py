"""A parallel Monte Carlo option pricer: load-balanced StringTasks over a (K, sigma) grid.

After IPython 0.10's ``mcdriver.py``/``mcpricer.py``.  The pricer (vanilla and Asian
calls and puts on a geometric Brownian motion) is defined on every engine with the
MultiEngineClient, the common parameters are pushed once, and then the TaskClient
farms out one ``StringTask`` per (strike K, volatility sigma) pair, pushing that pair
and pulling the four prices.  A progress bar shows tasks done; the prices are drawn
as four contour plots::

    python examples/mc_pricer.py [--grid 5] [--paths 20000] [--png prices.png]
                                 [--cluster FILE_OR_PROFILE] [--engines 2]

It uses the cluster named by ``--cluster``, else the running default one, else starts
a local cluster of ``--engines`` engines (and stops it at the end).  Needs matplotlib
(``pip install pympec[examples]``).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import pympec
from pympec import client
from pympec.client import progress

PRICES = ("vcall", "vput", "acall", "aput")
TITLES = {"vcall": "vanilla call", "vput": "vanilla put",
          "acall": "Asian call", "aput": "Asian put"}


# -- the kernel: runs on the engines --------------------------------------------------

def price_options(S=100.0, K=100.0, sigma=0.25, r=0.05, days=260, paths=10000, seed=0):
    """Monte Carlo prices of European and Asian options expiring in one year.

    Returns (vanilla call, vanilla put, Asian call, Asian put), discounted.
    """
    rng = np.random.default_rng(seed)
    h = 1.0 / days
    drift = np.exp((r - 0.5 * sigma ** 2) * h)
    vol = sigma * np.sqrt(h)
    steps = drift * np.exp(vol * rng.standard_normal((paths, days)))
    prices = S * np.cumprod(steps, axis=1)
    final, average = prices[:, -1], prices.mean(axis=1)
    discount = np.exp(-r)
    return (discount * np.maximum(final - K, 0).mean(),
            discount * np.maximum(K - final, 0).mean(),
            discount * np.maximum(average - K, 0).mean(),
            discount * np.maximum(K - average, 0).mean())


# -- the client side -------------------------------------------------------------------

def black_scholes_call(S: float, K: float, sigma: float, r: float, T: float = 1.0) -> float:
    """The closed-form price of a European call, to check the vanilla call against."""
    d1 = (math.log(S / K) + (r + sigma ** 2 / 2) * T) / (sigma * math.sqrt(T))
    d2 = d1 - sigma * math.sqrt(T)
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    return S * cdf(d1) - K * math.exp(-r * T) * cdf(d2)


def price_grid(mec: client.MultiEngineClient, tc: client.TaskClient, strikes: np.ndarray,
               sigmas: np.ndarray, *, S: float = 100.0, r: float = 0.05, days: int = 260,
               paths: int = 10000, show_progress: bool = True) -> dict[str, np.ndarray]:
    """The four prices for every (K, sigma), as arrays of shape (len(sigmas), len(strikes)).

    Defines ``price_options`` on all engines, pushes the common parameters, submits one
    StringTask per grid point and waits for all of them (with a progress bar).
    Raises the first task's failure, if any failed.
    """
    mec.execute("import numpy as np", targets="all")
    mec.push_function({"price_options": price_options}, targets="all")
    mec.push({"S": S, "r": r, "days": days, "paths": paths}, targets="all")
    code = ("vcall, vput, acall, aput = "
            "price_options(S, K, sigma, r, days, paths, seed)")
    taskids = {}
    for i, sigma in enumerate(sigmas):
        for j, K in enumerate(strikes):
            task = client.StringTask(code, push={"K": float(K), "sigma": float(sigma),
                                                 "seed": i * len(strikes) + j},
                                     pull=PRICES)
            taskids[i, j] = tc.run(task)
    if show_progress:
        progress.wait_tasks(tc, list(taskids.values()))
    tc.barrier(list(taskids.values()))
    grid = {name: np.empty((len(sigmas), len(strikes))) for name in PRICES}
    for (i, j), taskid in taskids.items():
        result = tc.get_task_result(taskid)
        for name in PRICES:
            grid[name][i, j] = result.ns[name]     # re-raises a failed task's error
    return grid


def plot(grid: dict[str, np.ndarray], strikes: np.ndarray, sigmas: np.ndarray,
         path: str) -> None:
    """Four contour plots (price against K and sigma), as an 800x600 PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(8, 6), dpi=100, sharex=True, sharey=True)
    for ax, name in zip(axes.flat, PRICES):
        contours = ax.contourf(strikes, sigmas, grid[name], levels=12, cmap="viridis")
        fig.colorbar(contours, ax=ax)
        ax.set_title(TITLES[name])
    for ax in axes[1]:
        ax.set_xlabel("strike K")
    for ax in axes[:, 0]:
        ax.set_ylabel("volatility sigma")
    fig.suptitle("Monte Carlo option prices (S=100, r=0.05, one year)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=int, default=5, help="grid points per axis")
    parser.add_argument("--paths", type=int, default=20000, help="paths per price")
    parser.add_argument("--days", type=int, default=260, help="time steps in the year")
    parser.add_argument("--png", default="prices.png", help="where to write the plot")
    parser.add_argument("--cluster", help="connection file or profile of a running cluster")
    parser.add_argument("--engines", type=int, default=2, help="engines of a started cluster")
    args = parser.parse_args(argv)

    strikes = np.linspace(90.0, 110.0, args.grid)
    sigmas = np.linspace(0.1, 0.4, args.grid)
    with pympec.running_cluster(args.cluster, args.engines) as where:
        with client.MultiEngineClient(where) as mec:
            tc = client.TaskClient(where)
            try:
                start = time.perf_counter()
                grid = price_grid(mec, tc, strikes, sigmas, paths=args.paths,
                                  days=args.days)
                elapsed = time.perf_counter() - start
            finally:
                tc.close()
    print(f"{args.grid * args.grid} tasks of {args.paths} paths in {elapsed:.2f} s")
    i, j = args.grid // 2, args.grid // 2
    exact = black_scholes_call(100.0, strikes[j], sigmas[i], 0.05)
    print(f"K={strikes[j]:g}, sigma={sigmas[i]:g}: vanilla call {grid['vcall'][i, j]:.3f} "
          f"(Black-Scholes {exact:.3f}), Asian call {grid['acall'][i, j]:.3f}")
    plot(grid, strikes, sigmas, args.png)
    print(f"wrote {args.png}")
    return {"grid": grid, "strikes": strikes, "sigmas": sigmas, "elapsed": elapsed}


if __name__ == "__main__":
    main()
