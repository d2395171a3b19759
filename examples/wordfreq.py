"""A parallel word-frequency count: scatter file names, count on the engines, merge dicts.

After IPython 0.10's ``pwordfreq.py``.  The client scatters the names of text files
(the engines share this host's file system, or a cluster's shared one), each engine
counts the words of its files into a dict, and the client pulls the dicts and merges
them::

    python examples/wordfreq.py [FILE ...] [--top 10] [--cluster FILE_OR_PROFILE]
                                [--engines 2]

With no files it counts the small public-domain texts in ``examples/data/wordfreq``.
It uses the cluster named by ``--cluster``, else the running default one, else starts
a local cluster of ``--engines`` engines (and stops it at the end).
"""
from __future__ import annotations

import argparse
import collections
import os
import re
from typing import Sequence

import pympec
from pympec import client

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "wordfreq")


# -- the kernels: these run on the engines ----------------------------------------------

def wordfreq(text):
    """How often each word (lower-cased letters and apostrophes) occurs in ``text``."""
    freqs = {}
    for word in re.findall(r"[a-z']+", text.lower()):
        word = word.strip("'")
        if word:
            freqs[word] = freqs.get(word, 0) + 1
    return freqs


def count_files(paths):
    """The merged word counts of the files ``paths``."""
    total = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for word, n in wordfreq(f.read()).items():
                total[word] = total.get(word, 0) + n
    return total


# -- the client side -------------------------------------------------------------------

def merge(dicts: Sequence[dict]) -> collections.Counter:
    """The sum of several word-count dicts."""
    total: collections.Counter = collections.Counter()
    for d in dicts:
        total.update(d)
    return total


def parallel_wordfreq(mec: client.MultiEngineClient, paths: Sequence[str]) -> collections.Counter:
    """Word counts of ``paths``: file names are scattered over all engines, each engine
    counts its share, and the per-engine dicts are pulled and merged here."""
    mec.execute("import re", targets="all")
    mec.push_function({"wordfreq": wordfreq, "count_files": count_files}, targets="all")
    mec.scatter("paths", [os.path.abspath(p) for p in paths], targets="all")
    mec.execute("freqs = count_files(paths)", targets="all")
    return merge(mec.pull("freqs", targets="all"))


def serial_wordfreq(paths: Sequence[str]) -> collections.Counter:
    """The same count, here, for comparison."""
    return collections.Counter(count_files(paths))


def default_files() -> list[str]:
    return sorted(os.path.join(DATA, f) for f in os.listdir(DATA) if f.endswith(".txt"))


def main(argv: list[str] | None = None) -> collections.Counter:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", help="text files (default: the bundled ones)")
    parser.add_argument("--top", type=int, default=10, help="how many words to show")
    parser.add_argument("--cluster", help="connection file or profile of a running cluster")
    parser.add_argument("--engines", type=int, default=2, help="engines of a started cluster")
    args = parser.parse_args(argv)
    files = args.files or default_files()

    with pympec.running_cluster(args.cluster, args.engines) as path, \
            client.MultiEngineClient(path) as mec:
        freqs = parallel_wordfreq(mec, files)
        engines = len(mec)
    if freqs != serial_wordfreq(files):
        raise SystemExit("the parallel count differs from the serial one")
    print(f"{sum(freqs.values())} words ({len(freqs)} distinct) in {len(files)} files, "
          f"counted on {engines} engines")
    width = max(len(w) for w, _ in freqs.most_common(args.top))
    for word, n in freqs.most_common(args.top):
        print(f"  {word:<{width}} {n:>5}")
    return freqs


if __name__ == "__main__":
    main()
