"""Random matrices: eigenvalue spacings of the Gaussian Orthogonal Ensemble, in parallel.

The tutorial's "Random matrices" section, which was never written.  A GOE matrix is a
standard-normal N x N matrix plus its transpose.  The gap between its two middle
eigenvalues, divided by the mean gap over many matrices, follows Wigner's surmise
``p(s) = (pi s / 2) exp(-pi s^2 / 4)`` closely.  Each engine computes the spacings of
its share of the matrices; the client pushes the sizes, runs one ``execute`` and
``gather``s the spacings, then draws a histogram against the surmise::

    python examples/random_matrices.py [--num 2000] [--N 60] [--png goe.png]
                                       [--cluster FILE_OR_PROFILE] [--engines 2]

It uses the cluster named by ``--cluster``, else the running default one, else starts
a local cluster of ``--engines`` engines (and stops it at the end).  It prints the
serial and parallel times.  Needs matplotlib (``pip install pympec[examples]``).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import pympec
from pympec import client


# -- the kernels: these run on the engines ---------------------------------------------

def goe(n, rng):
    """One N x N matrix of the Gaussian Orthogonal Ensemble."""
    a = rng.standard_normal((n, n))
    return a + a.T


def center_eigval_diff(mat):
    """The gap between the two middle eigenvalues of a symmetric matrix."""
    eigenvalues = np.linalg.eigvalsh(mat)       # ascending
    middle = len(eigenvalues) // 2
    return eigenvalues[middle] - eigenvalues[middle - 1]


def ensemble_diffs(num, n, rng):
    """Middle-eigenvalue gaps of ``num`` random GOE matrices of size ``n``."""
    return np.array([center_eigval_diff(goe(n, rng)) for _ in range(num)])


# -- the client side -------------------------------------------------------------------

def normalize_diffs(diffs: np.ndarray) -> np.ndarray:
    """Spacings divided by their mean (so the mean spacing is 1)."""
    return diffs / diffs.mean()


def wigner_dist(s: np.ndarray) -> np.ndarray:
    """Wigner's surmise for the GOE spacing density."""
    return (np.pi * s / 2) * np.exp(-np.pi * s ** 2 / 4)


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts that differ by at most one."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def parallel_diffs(mec: client.MultiEngineClient, num: int, n: int, seed: int = 0) -> np.ndarray:
    """Spacings of ``num`` matrices of size ``n``, computed across all engines.

    Defines the kernels on the engines, scatters each engine's matrix count, runs one
    execute and gathers the spacings (a NumPy array, assembled in place).
    """
    mec.execute("import numpy as np", targets="all")
    mec.push_function({"goe": goe, "center_eigval_diff": center_eigval_diff,
                       "ensemble_diffs": ensemble_diffs}, targets="all")
    ids = mec.get_ids()
    mec.scatter("num_per_engine", shares(num, len(ids)), flatten=True, targets=ids)
    mec.push({"N": n, "seed": seed}, targets=ids)
    mec.execute("rng = np.random.default_rng([seed, id])\n"
                "diffs = ensemble_diffs(num_per_engine, N, rng)", targets=ids)
    return mec.gather("diffs", targets=ids)


def plot(spacings: np.ndarray, path: str, n: int) -> None:
    """Histogram of the normalised spacings against Wigner's surmise, as a 640x480 PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    ax.hist(spacings, bins=40, range=(0, 4), density=True, alpha=0.6,
            label=f"{len(spacings)} GOE matrices, N={n}")
    s = np.linspace(0, 4, 400)
    ax.plot(s, wigner_dist(s), "r-", lw=2, label=r"Wigner: $\frac{\pi s}{2}e^{-\pi s^2/4}$")
    ax.set_xlabel("normalised spacing s")
    ax.set_ylabel("density")
    ax.set_title("Middle eigenvalue spacings of the GOE")
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def histogram_distance(spacings: np.ndarray, bins: int = 20) -> float:
    """Mean absolute difference between the spacing histogram and the surmise on [0, 4]."""
    density, edges = np.histogram(spacings, bins=bins, range=(0, 4), density=True)
    centres = (edges[:-1] + edges[1:]) / 2
    return float(np.mean(np.abs(density - wigner_dist(centres))))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=2000, help="number of matrices")
    parser.add_argument("--N", type=int, default=60, help="matrix size")
    parser.add_argument("--png", default="goe.png", help="where to write the plot")
    parser.add_argument("--cluster", help="connection file or profile of a running cluster")
    parser.add_argument("--engines", type=int, default=2, help="engines of a started cluster")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    ensemble_diffs(args.num, args.N, np.random.default_rng(args.seed))   # timed only
    serial_time = time.perf_counter() - start
    print(f"serial:   {args.num} matrices of {args.N}x{args.N} in {serial_time:.3f} s")

    with pympec.running_cluster(args.cluster, args.engines) as path, \
            client.MultiEngineClient(path) as mec:
        engines = len(mec)
        start = time.perf_counter()
        diffs = parallel_diffs(mec, args.num, args.N, args.seed)
        parallel_time = time.perf_counter() - start
    print(f"parallel: {len(diffs)} matrices on {engines} engines in {parallel_time:.3f} s "
          f"(speedup {serial_time / parallel_time:.2f})")

    spacings = normalize_diffs(diffs)
    distance = histogram_distance(spacings)
    print(f"mean |histogram - Wigner surmise| = {distance:.3f}")
    plot(spacings, args.png, args.N)
    print(f"wrote {args.png}")
    return {"spacings": spacings, "serial_time": serial_time,
            "parallel_time": parallel_time, "distance": distance, "engines": engines}


if __name__ == "__main__":
    main()
