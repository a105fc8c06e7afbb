"""One table for every benchmark row: figure, baseline measured in the same run, ratio, goal."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def print_rows(rows: list[dict[str, Any]]) -> None:
    header = ("benchmark", "value", "unit", "baseline", "ratio", "goal")
    table = [header] + [
        (
            r["name"],
            _fmt(r["value"]),
            r.get("unit", ""),
            _fmt(r.get("baseline")),
            _fmt(r.get("ratio")),
            str(r.get("goal", "")),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for n, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
