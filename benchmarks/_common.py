"""Helpers shared by the benchmark scripts: table printing, JSON output, quiet ONNX export."""
from __future__ import annotations

import json
from pathlib import Path

from edgepass.export import export_onnx  # noqa: F401  (re-exported for the scripts)

OUT = Path(__file__).resolve().parent / "out"


def print_table(rows: list[dict], columns: list[str]) -> None:
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return "-" if v is None else str(v)


def write_json(name: str, payload) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path
