"""How long `course grade` takes for a class: 30 submissions of one lesson.

The class is made from tests/grading_fixtures.py: every awkward case once (a wrong answer, a
syntax error, infinite loops, a deleted and a duplicated cell, edited checks, claims instead
of answers, a kernel that dies, a corrupted and an empty file, an untouched notebook), and
the rest correct or partly wrong answers. It runs the real command, with its default limits:

    python benchmarks/grading_speed.py [--lesson 01_noise_schedules] [--n 30] [--jobs 2]

and prints the wall-clock time, seconds per submission and the status counts.
"""

from __future__ import annotations

import argparse
import collections
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from grading_fixtures import write_fixtures  # noqa: E402


def make_class(lesson: str, n: int, folder: Path) -> list[Path]:
    fixtures_dir = folder / "fixtures"
    write_fixtures(lesson, fixtures_dir)
    awkward = sorted(fixtures_dir.glob("*.ipynb"))
    good = [p for p in awkward if p.name.startswith(("solution-", "wrong_answer-", "deleted_cell-"))]
    out = folder / "class"
    out.mkdir()
    paths = []
    for i in range(n):
        src = awkward[i] if i < len(awkward) else good[i % len(good)]
        dst = out / f"student{i + 1:02d}_{src.name}"
        shutil.copy(src, dst)
        paths.append(dst)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lesson", default="01_noise_schedules")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_class(args.lesson, args.n, folder)
        start = time.perf_counter()
        cmd = ["course", "grade", str(folder / "class"), "--out", str(folder / "out"), "--jobs", str(args.jobs)]
        rc = subprocess.run(cmd, stderr=subprocess.DEVNULL).returncode
        seconds = time.perf_counter() - start
        with open(folder / "out" / "gradebook.csv") as f:
            rows = list(csv.DictReader(f))
    statuses = collections.Counter(
        row[key] for row in rows for key in row if key.endswith(" status") and row[key]
    )
    print(f"{' '.join(cmd[:2])} {args.n} submissions of {args.lesson}, --jobs {args.jobs}: exit {rc}")
    print(f"rows: {len(rows)}; wall clock {seconds:.1f} s; {seconds / args.n:.2f} s per submission")
    print("exercise statuses:", dict(sorted(statuses.items())))


if __name__ == "__main__":
    main()
