"""``make bench``: every benchmark in bench/, one table.

Each module's ``run()`` returns rows {name, value, unit, baseline, ratio, goal}; the baseline
is measured in the same run (raw numpy, raw pynacl, raw trio-websocket, ...). A module that
fails is reported in the table and does not stop the others.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import traceback
from typing import Any

from bench.report import print_rows

MODULES = (
    "bench.bench_trainer",
    "bench.bench_link",
    "bench.bench_network",
    "bench.bench_ledger_verify",
    "bench.bench_jobs",
    "bench.bench_ledger_network",
    "bench.bench_tui",
)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.ERROR)
    wanted = [m for m in MODULES if not argv or any(a in m for a in argv)]
    rows: list[dict[str, Any]] = []
    failed = 0
    for name in wanted:
        start = time.monotonic()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(name)
            got = module.run()
        except Exception:  # a broken benchmark is reported, not fatal to the table
            traceback.print_exc()
            failed += 1
            rows.append({"name": f"{name} FAILED", "value": None, "unit": "", "goal": ""})
            continue
        for row in got:
            row["name"] = f"[{name.removeprefix('bench.bench_')}] {row['name']}"
        rows.extend(got)
        print(f"  {name}: {time.monotonic() - start:.0f} s", file=sys.stderr)
    print_rows(rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
