"""Every hostile case (tests/hostile), each in a subprocess: totals and the worst offenders.

    python benchmarks/hostile.py [--only SUBSTRING] [--fast] [--inprocess] [--json out/hostile.json]

Prints: cases, clean exits (the expected code, nothing broken), tracebacks (goal 0), data lost
(goal 0), hangs (goal 0), other problems, the peak RSS of the worst case, and one line per case
that has a problem. Writes the per-case rows as JSON (default benchmarks/out/hostile.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hostile.cases import all_cases  # noqa: E402
from hostile.harness import run_case, to_row  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run the cases whose name contains this")
    ap.add_argument("--fast", action="store_true", help="only the cases of the default test run")
    ap.add_argument("--inprocess", action="store_true", help="run cases in this process (faster, no RSS figures)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "hostile.json"))
    args = ap.parse_args(argv)

    cases = [c for c in all_cases() if (not args.only or args.only in c.name) and not (args.fast and c.slow)]
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EDGEPASS_CACHE"] = str(Path(tmp) / "cache")   # one cache for the run, never the user's
        for i, case in enumerate(cases, 1):
            verdict = run_case(case, Path(tmp), isolate=not args.inprocess)
            rows.append(to_row(verdict))
            mark = "ok" if not verdict.problems else "PROBLEM"
            print(f"[{i}/{len(cases)}] {mark:7s} {case.name} ({verdict.outcome.seconds:.1f} s)", file=sys.stderr)
    totals = summarize(rows)
    totals["seconds"] = round(time.perf_counter() - t0, 1)
    print_table(totals, rows)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"totals": totals, "cases": rows}, indent=2, sort_keys=True))
    print(f"\nwrote {out}")
    return 0 if not totals["with_problems"] else 1


def summarize(rows: list) -> dict:
    with_rss = [r for r in rows if r["rss_mb"] is not None]
    worst = max(with_rss, key=lambda r: r["rss_mb"], default=None)
    return {"cases": len(rows),
            "clean": sum(not r["problems"] for r in rows),
            "clean_errors": sum(not r["problems"] and r["rc"] != 0 for r in rows),
            "tracebacks": sum(r["traceback"] for r in rows),
            "data_lost": sum(r["lost"] for r in rows),
            "hangs": sum(r["hung"] for r in rows),
            "with_problems": sum(bool(r["problems"]) for r in rows),
            "peak_rss_mb": worst and worst["rss_mb"], "peak_rss_case": worst and worst["case"]}


def print_table(t: dict, rows: list) -> None:
    print("| cases | clean | of which errors | tracebacks | data lost | hangs | other problems | peak RSS (case) |")
    print("|---|---|---|---|---|---|---|---|")
    rss = f"{t['peak_rss_mb']:.0f} MB ({t['peak_rss_case']})" if t["peak_rss_mb"] else "-"
    others = t["with_problems"] - t["tracebacks"] - t["data_lost"] - t["hangs"]
    print(f"| {t['cases']} | {t['clean']} | {t['clean_errors']} | {t['tracebacks']} | {t['data_lost']} | "
          f"{t['hangs']} | {max(others, 0)} | {rss} |")
    bad = [r for r in rows if r["problems"]]
    if bad:
        print("\ncases with problems:")
        for r in bad:
            print(f"  {r['case']}: {'; '.join(r['problems'])[:300]}")


if __name__ == "__main__":
    sys.exit(main())
