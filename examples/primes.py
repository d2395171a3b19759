"""The tutorial's prime-number example: serial ``map`` against ``mec.map``.

    python examples/primes.py [--n 5000] [--engines 2]

Uses the running default cluster, or starts a local one (and stops it at the end).
``sum_primes(n)`` is the sum of the primes below n, by trial division; the inputs are
interleaved evens/odds (the tutorial's "fake load balancing"), since ``mec.map`` gives
each engine one contiguous block and the large n are the slow ones.
"""
from __future__ import annotations

import argparse
import math
import time

import pympec
from pympec import client


def isprime(n: int) -> int:
    """1 if n is prime, else 0 (trial division up to sqrt(n))."""
    if not isinstance(n, int):
        raise TypeError("argument passed to is_prime is not of 'int' type")
    if n < 2:
        return 0
    if n == 2:
        return 1
    for i in range(2, int(math.ceil(math.sqrt(n))) + 1):
        if n % i == 0:
            return 0
    return 1


def sum_primes(n: int) -> int:
    """The sum of the primes below n."""
    return sum(x for x in range(2, n) if isprime(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="inputs are range(n)")
    parser.add_argument("--engines", type=int, default=2, help="engines of a started cluster")
    args = parser.parse_args()

    print("Check values:", [isprime(n) for n in range(20)], sum_primes(100))
    assert sum_primes(100) == 1060

    data = list(range(args.n))
    data = data[0::2] + data[1::2]

    start = time.perf_counter()
    serial = list(map(sum_primes, data))
    t_serial = time.perf_counter() - start
    print(f"Serial time:   {t_serial:.3f} s")

    with pympec.running_cluster(n=args.engines) as path, client.MultiEngineClient(path) as mec:
        start = time.perf_counter()
        parallel = mec.map(sum_primes, data)
        t_parallel = time.perf_counter() - start
        print(f"Parallel time: {t_parallel:.3f} s")
        assert parallel == serial, "parallel results differ from serial ones"
        print(f"Speedup of sum_primes on {len(mec)} cores: {t_serial / t_parallel:.3f}")


if __name__ == "__main__":
    main()
