"""Notebook hygiene: every lesson, solutions and exercise notebook is stored clean.

Stored without outputs (nbval executes them; outputs would only bloat diffs), opens with a
title that states what it is and its measured runtime, and names no path of the machine it
was written on.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(
    p for folder in ("notebooks", "solutions", "exercises") for p in (ROOT / folder).glob("[0-9][0-9]_*.ipynb")
)


def test_every_lesson_from_01_has_solutions_and_exercises():
    lessons = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb") if not p.stem.startswith("00")}
    assert lessons, "no lessons found"
    assert lessons <= {p.stem for p in (ROOT / "solutions").glob("*.ipynb")}
    assert lessons <= {p.stem for p in (ROOT / "exercises").glob("*.ipynb")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_is_stored_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i + 1} has stored outputs"
            assert cell.execution_count is None, f"cell {i + 1} has an execution count"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "the notebook opens with its title"
    assert re.search(r"\d+\s*s\b|minute", first.source), "the title cell states the measured runtime"
    text = path.read_text()
    for machine_path in ("/work/", "/home/", "/tmp/", "/root/"):
        assert machine_path not in text, f"{machine_path} appears in the notebook"


LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: a cell that names Fashion-MNIST classes must say what it does on the other datasets (COURSE_DATASET)
_GUARD = re.compile(r"\"[^\"]+\" in names|settings\.dataset\s*==|dataset\s*==\s*\"fashion_mnist\"")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_cells_that_name_fashion_classes_also_run_on_the_other_datasets(path):
    """README offers digits (offline) and MNIST in place of Fashion-MNIST: a lesson cell that picks classes by
    their Fashion-MNIST names needs a branch for the others. Three cells once lacked one and failed on digits
    (benchmarks/RESULTS.md); every lesson has since run whole with COURSE_DATASET=digits."""
    from course_lib.data import class_names

    fashion = set(class_names("fashion_mnist")) - set(class_names("mnist")) - set(class_names("digits"))
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        literals = set(re.findall(r"\"([^\"\n]*)\"|'([^'\n]*)'", cell.source))
        named = fashion & {text for pair in literals for text in pair}
        assert not named or _GUARD.search(cell.source), (
            f"cell {i + 1} names {sorted(named)} without a branch for the other datasets "
            "(`if \"Sneaker\" in names: … else: …`)"
        )
