"""Every lesson's runtime and its kernel's peak memory, each in a fresh kernel, as a Markdown table.

    python benchmarks/lesson_runtimes.py --quick            # quick mode (a CPU)
    python benchmarks/lesson_runtimes.py                    # full mode (a GPU)
    python benchmarks/lesson_runtimes.py --quick 05 06      # some lessons only

By default the cache is a fresh empty folder, so each lesson's one-off training (its models,
the evaluator) is inside its time, in lesson order: what a learner meets on a first run.
``--keep-cache`` uses the usual cache instead (the runtimes of a second run). ``--outputs FILE`` writes
what each executed lesson printed (streams and text results, cell by cell, no images) to FILE: on a
borrowed GPU machine, where Jupyter is carried in, that is how the full-mode figures come back.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def text_outputs(row: dict) -> str:
    """The executed notebook's printed text, cell by cell (execution count, then streams, text results and
    errors; images are left out), under a heading with the lesson's status and seconds."""
    import nbformat

    lines = [f"===== {row['lesson']}: {row['status']} in {row['seconds']:.1f} s"]
    if row.get("error"):
        lines.append(f"error: {row['error']}")
    if row.get("output"):
        nb = nbformat.read(row["output"], as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code" or not cell.get("outputs"):
                continue
            lines.append(f"--- [{cell.get('execution_count')}] {cell.source.splitlines()[0] if cell.source else ''}")
            for out in cell.outputs:
                if out.output_type == "stream":
                    lines.append(out.text.rstrip("\n"))
                elif out.output_type in ("execute_result", "display_data") and "text/plain" in out.get("data", {}):
                    if not any(k.startswith("image/") for k in out["data"]):
                        lines.append(out["data"]["text/plain"])
                elif out.output_type == "error":
                    lines.append(f"{out.ename}: {out.evalue}")
    return "\n".join(lines) + "\n\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lessons", nargs="*", help="lesson names or numbers (default: all)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep-cache", action="store_true")
    ap.add_argument("--timeout", type=float, default=None, help="limit per cell, seconds")
    ap.add_argument("--outputs", type=Path, help="write each lesson's printed output (text only) to this file")
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
        if args.outputs:
            with open(args.outputs, "a") as f:
                f.write(text_outputs(row))
    mode = "quick" if args.quick else "full"
    cache = "usual cache" if args.keep_cache else "empty cache"
    print(f"| lesson | {mode} mode, {cache}: seconds | kernel's peak memory (MiB) | status |\n"
          "| --- | --- | --- | --- |")
    for r in rows:
        peak = "" if r.get("peak_mib") is None else f"{r['peak_mib']:.0f}"
        print(f"| {r['lesson']} | {r['seconds']:.1f} | {peak} | {r['status']} |")
    peaks = [r["peak_mib"] for r in rows if r.get("peak_mib") is not None]
    print(
        f"| **all** | **{sum(r['seconds'] for r in rows):.1f}** | {f'max {max(peaks):.0f}' if peaks else ''} "
        f"| {sum(r['status'] == 'ok' for r in rows)}/{len(rows)} ok |"
    )
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
