#!/usr/bin/env python
"""Build edgepass's shipped public training table from the collected public data.

    python scripts/build_training_set.py [--data /work/shared/data] [--out edgepass/data/dataset/public.npz]
                                         [--limit N] [--json]

Reads HELP (NB201, FBNet, OFA), OneProxy, BRP-NAS, Accel-NASBench, mobile-ml-benchmark and
MLPerf Tiny (see each folder's PROVENANCE.md), maps every data column to its device id through
the embedded device database, keeps each row whose architecture the zoo can build, drops
duplicates of devices measured by two collections, and writes ``public.npz``
(``edgepass.training-set/1``; docs/training-set.md). Prints the per-source share of rows that
could not be built (also stored in the file's header as ``meta.report``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    default_data = ROOT.parent / "shared" / "data"
    if not default_data.exists():
        default_data = Path("/work/shared/data")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data)
    ap.add_argument("--out", type=Path, default=ROOT / "edgepass" / "data" / "dataset" / "public.npz")
    ap.add_argument("--limit", type=int, default=None, help="only the first N rows of each CSV (a slice)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)

    from edgepass.dataset.build import SOURCE_INFO, build_public, print_report

    t0 = time.time()
    table, report = build_public(args.data, limit=args.limit)
    table.meta = {"report": report, "sources": {k: v for k, v in SOURCE_INFO.items() if k in report["sources"]},
                  "generator": "scripts/build_training_set.py", "limit": args.limit}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.save(args.out)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
        print(f"{len(table)} rows, {len(table.specs)} architectures {table.spaces()}, {len(table.devices)} devices "
              f"-> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
