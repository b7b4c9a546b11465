"""Every lesson's runtime, each in a fresh kernel, as a Markdown table.

    python benchmarks/lesson_runtimes.py --quick            # quick mode (a CPU)
    python benchmarks/lesson_runtimes.py                    # full mode (a GPU)
    python benchmarks/lesson_runtimes.py --quick 05 06      # some lessons only

By default the cache is a fresh empty folder, so each lesson's one-off training (its models,
the evaluator) is inside its time, in lesson order: what a learner meets on a first run.
``--keep-cache`` uses the usual cache instead (the runtimes of a second run).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lessons", nargs="*", help="lesson names or numbers (default: all)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep-cache", action="store_true")
    ap.add_argument("--timeout", type=float, default=None, help="limit per cell, seconds")
    args = ap.parse_args(argv)
    if not args.keep_cache:
        os.environ["COURSE_CACHE_DIR"] = tempfile.mkdtemp(prefix="course-bench-cache-")
    from course_lib.cli import resolve_notebooks, run_notebook

    paths = resolve_notebooks(args.lessons, ROOT / "notebooks")
    out = Path(tempfile.mkdtemp(prefix="course-bench-run-"))
    rows = []
    for path in paths:
        row = run_notebook(path, out, quick=args.quick, timeout=args.timeout)
        rows.append(row)
        print(f"{row['lesson']}: {row['status']} in {row['seconds']:.1f} s", file=sys.stderr, flush=True)
    mode = "quick" if args.quick else "full"
    cache = "usual cache" if args.keep_cache else "empty cache"
    print(f"| lesson | {mode} mode, {cache}: seconds | status |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r['lesson']} | {r['seconds']:.1f} | {r['status']} |")
    print(
        f"| **all** | **{sum(r['seconds'] for r in rows):.1f}** "
        f"| {sum(r['status'] == 'ok' for r in rows)}/{len(rows)} ok |"
    )
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
