"""Write docs/settings.md, the table of pympec's environment variables, from
pympec/settings.py (where each is declared once).

    python docs/make_settings.py            # rewrite docs/settings.md
    python docs/make_settings.py --stdout   # print it instead

``tests/test_settings.py`` fails when docs/settings.md differs from what this prints.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pympec.cluster.batch.config import FIELDS, SECTIONS
from pympec.settings import SETTINGS

HERE = Path(__file__).resolve().parent

INTRO = """\
# Settings

<!-- Generated from pympec/settings.py by `python docs/make_settings.py`;
     edit the declarations there, not this file (tests/test_settings.py checks it). -->

pympec reads these environment variables where it uses them, each time, so a value set in
the process (or by `monkeypatch.setenv` in a test) takes effect at once. Unset or blank
means the default. Set the ones the cluster reads in the environment of `mpiexec` (or of
the batch job), so every rank sees them.

Byte counts are integers, or take a suffix `K`, `M`, `G` or `T` (powers of 1024: `2G` is
2147483648). Seconds are decimal numbers (`0.5`, `1e-3`). A bad value raises
`pympec.settings.SettingError` (a `ValueError`) naming the variable, the value and what is
expected. Importing pympec never fails because of one; a cluster's ranks check them all
when they start.
"""


def markdown() -> str:
    """docs/settings.md: the intro, then one table row per setting and the batch family."""
    rows = ["| Variable | Type | Default | Range | What it does |", "|---|---|---|---|---|"]
    for s in sorted(SETTINGS, key=lambda s: s.name):
        rows.append(f"| `{s.name}` | {s.kind.name} | {s.default_text()} | {s.span()} | {s.doc} |")
    schedulers = ", ".join(name.upper() for name in SECTIONS if name != "batch")
    rows.append(f"| `PYMPEC_BATCH__<KEY>`, `PYMPEC_<SCHEDULER>__<KEY>` | per key | unset | "
                f"per key | Site defaults for batch jobs, for every scheduler or for one "
                f"({schedulers}); see below. |")
    keys = ", ".join(f"`{key.upper()}`" for key in FIELDS)
    lists = " and ".join(f"`{key.upper()}`" for key, kind in FIELDS.items() if kind is list)
    family = (f"\n## Batch defaults\n\n`PYMPEC_BATCH__<KEY>` (every scheduler) and "
              f"`PYMPEC_<SCHEDULER>__<KEY>` (one scheduler) set the same keys as "
              f"`config.toml`'s `[batch]` and `[slurm]`/`[sge]`/`[pbs]` tables, and override "
              f"them; the command line overrides both. {lists} take a JSON list, or one item. Keys: "
              f"{keys}. See docs/batch.md.\n")
    return INTRO + "\n" + "\n".join(rows) + "\n" + family


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stdout", action="store_true", help="print instead of writing")
    text = markdown()
    if parser.parse_args(argv).stdout:
        sys.stdout.write(text)
    else:
        (HERE / "settings.md").write_text(text)


if __name__ == "__main__":
    main()
