"""Do a lesson's checks hang on one random draw?  Each lesson, run again with every seed shifted.

    python benchmarks/seed_robustness.py --shifts 1,2,3            # every lesson, quick mode
    python benchmarks/seed_robustness.py --shifts 1,2,3 06 07      # some lessons only

Every lesson seeds its draws (``seed_everything(0)``, ``torch.Generator().manual_seed(1)``, a training
config's ``seed``), so on one machine it shows the same numbers each time, and its asserting cells
were written against those numbers. On another device the draws differ: a CUDA generator gives
another stream than the CPU's for the same seed, so a learner's GPU trains another quick model and
samples other images. A check with a thin margin can then fail for a reason that is only chance.

This script runs each lesson with every seed moved by ``shift`` (each call of ``torch.manual_seed``,
``Generator.manual_seed``, ``random.seed``, ``numpy.random.seed`` and ``numpy.random.default_rng``
adds it), in a fresh kernel, from a cache that holds only the data, the evaluator and the caption
embeddings (none of which is a lesson's random draw), so every lesson model is trained anew with
the new seed. The notebooks themselves are not changed: a copy gets one extra first cell.
A table gives, per lesson and shift, ok or the first failing cell and its error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Kept by every shifted run: not a lesson's draw (the data files, the course evaluator, which the
# lessons only load, and the caption embeddings of the frozen encoder, which are deterministic).
SHARED_CACHE = ("data", "evaluator", "text")

SHIFT_CELL = """\
# Added by benchmarks/seed_robustness.py: every seed below is moved by SHIFT.
import random as _random
import numpy as _np
import torch as _torch

_SHIFT = {shift}
_manual_seed, _np_seed, _np_rng, _py_seed = _torch.manual_seed, _np.random.seed, _np.random.default_rng, _random.seed


def _moved(seed):
    return seed + _SHIFT if isinstance(seed, int) and not isinstance(seed, bool) else seed


class _ShiftedGenerator(_torch._C.Generator):
    def manual_seed(self, seed):
        return super().manual_seed(_moved(seed))


_torch.manual_seed = lambda seed: _manual_seed(_moved(seed))
_torch.random.manual_seed = _torch.manual_seed
_torch.Generator = _ShiftedGenerator
_np.random.seed = lambda seed=None: _np_seed(_moved(seed))
_np.random.default_rng = lambda seed=None: _np_rng(_moved(seed))
_random.seed = lambda a=None, version=2: _py_seed(_moved(a), version)
"""


def shifted_copy(path: Path, shift: int, folder: Path) -> Path:
    """A copy of the notebook at ``path`` in ``folder`` with the shift cell first."""
    nb = json.loads(path.read_text())
    cell = {"cell_type": "code", "id": f"seed-shift-{shift}", "execution_count": None, "metadata": {}, "outputs": [],
            "source": SHIFT_CELL.format(shift=shift)}
    nb["cells"].insert(0, cell)
    out = folder / path.name
    out.write_text(json.dumps(nb, indent=1))
    return out


def shifted_cache(shift: int, usual: Path) -> Path:
    """A fresh cache folder for one shift, linking the usual cache's data, evaluator and text embeddings."""
    cache = Path(tempfile.mkdtemp(prefix=f"course-seed{shift}-cache-"))
    for name in SHARED_CACHE:
        if (usual / name).is_dir():
            (cache / name).symlink_to(usual / name, target_is_directory=True)
    return cache


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lessons", nargs="*", help="lesson names or numbers (default: all)")
    ap.add_argument("--shifts", default="1,2,3", help="seed shifts to try, comma-separated (default 1,2,3)")
    ap.add_argument("--full", action="store_true", help="full mode instead of quick mode")
    ap.add_argument("--outputs", type=Path, help="write each run's printed output (text only) to this file")
    args = ap.parse_args(argv)
    try:
        args.shifts = [int(s) for s in args.shifts.split(",")]
    except ValueError:
        ap.error(f"--shifts takes comma-separated positive ints such as 1,2,3, got {args.shifts!r}")
    if any(s < 1 for s in args.shifts):
        ap.error("a shift must be a positive int (0 is the lessons' own seeds)")
    from course_lib.cli import resolve_notebooks, run_notebook
    from course_lib.settings import get_settings

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from lesson_runtimes import text_outputs

    usual = get_settings().cache_dir
    paths = resolve_notebooks(args.lessons, ROOT / "notebooks")
    results: dict[str, dict[int, str]] = {p.stem: {} for p in paths}
    for shift in args.shifts:
        os.environ["COURSE_CACHE_DIR"] = str(shifted_cache(shift, usual))
        folder = Path(tempfile.mkdtemp(prefix=f"course-seed{shift}-nb-"))
        out = Path(tempfile.mkdtemp(prefix=f"course-seed{shift}-run-"))
        for path in paths:
            row = run_notebook(shifted_copy(path, shift, folder), out, quick=not args.full)
            if row["status"] == "ok":
                verdict = f"ok ({row['seconds']:.0f} s)"
            else:
                err = row.get("error") or {}
                cell = err.get("cell")
                where = f"cell {cell - 1}" if isinstance(cell, int) else "?"  # minus the added cell
                verdict = f"**{row['status']}** {where}: {err.get('ename', '')}: {str(err.get('evalue', ''))[:120]}"
            results[path.stem][shift] = verdict
            print(f"shift {shift} {path.stem}: {verdict}", file=sys.stderr, flush=True)
            if args.outputs:
                with open(args.outputs, "a") as f:
                    f.write(f"##### shift {shift}\n" + text_outputs(row))
    mode = "full" if args.full else "quick"
    print(f"| lesson ({mode} mode) | " + " | ".join(f"seeds + {s}" for s in args.shifts) + " |")
    print("| --- |" + " --- |" * len(args.shifts))
    for lesson, row in results.items():
        print(f"| {lesson} | " + " | ".join(row[s] for s in args.shifts) + " |")
    ok = all(v.startswith("ok") for row in results.values() for v in row.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
