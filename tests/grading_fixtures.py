"""Submissions a grader must handle, made from the released exercise notebook of a lesson.

Each fixture is the exercise notebook with some cells changed the way a learner (or a
clumsy or cunning one) would change them, paired with what the grader must report. They are
generated rather than stored so that they follow the solutions notebook as it changes.
Used by tests/test_grading.py and benchmarks/grading_speed.py.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from course_lib.grading.build import check_id, exercise_id, repo_folder


@dataclass
class Fixture:
    name: str
    expect: dict[str, str]  # exercise id -> status ("*" -> status of every other exercise)
    file_status: str = "graded"
    total: str = ""  # "full", "zero" or ""
    notes: list[str] = field(default_factory=list)


def _load(lesson: str):
    sol = nbformat.read(repo_folder("solutions") / f"{lesson}.ipynb", as_version=4)
    ex = nbformat.read(repo_folder("exercises") / f"{lesson}.ipynb", as_version=4)
    answers = {exercise_id(c): c.source for c in sol.cells if exercise_id(c)}
    return ex, answers


def _index(nb, ex_id: str, kind=exercise_id) -> int:
    return next(i for i, c in enumerate(nb.cells) if kind(c) == ex_id)


def _answered(ex_nb, answers, skip=()):
    nb = copy.deepcopy(ex_nb)
    for c in nb.cells:
        i = exercise_id(c)
        if i and i not in skip:
            c.source = answers[i]
    return nb


def _def_line(source: str) -> str:
    return next(ln for ln in source.splitlines() if ln.startswith(("def ", "class ")))


def write_fixtures(lesson: str, folder: Path) -> list[Fixture]:
    """Write one notebook per fixture into ``folder``; return what each must grade as."""
    folder.mkdir(parents=True, exist_ok=True)
    ex_nb, answers = _load(lesson)
    ids = list(answers)
    a, b, c = ids[0], ids[1], ids[-1]
    fixtures: list[tuple[Fixture, object]] = []

    fixtures.append((Fixture("solution", {"*": "pass"}, total="full"), _answered(ex_nb, answers)))
    fixtures.append((Fixture("untouched", {"*": "not_implemented"}, total="zero"), copy.deepcopy(ex_nb)))

    # a wrong answer: the function returns its inputs' shape of garbage
    nb = _answered(ex_nb, answers)
    src = answers[a]
    nb.cells[_index(nb, a)].source = (
        src
        + "\n\n_right_"
        + a.replace(".", "_")
        + " = "
        + _name(src)
        + "\n"
        + (
            f"def {_name(src)}(*args, **kwargs):\n"
            f"    out = _right_{a.replace('.', '_')}(*args, **kwargs)\n"
            "    return _scramble(out)\n\n"
            "def _scramble(x):\n"
            "    import torch\n"
            "    if isinstance(x, dict):\n"
            "        return {k: _scramble(v) for k, v in x.items()}\n"
            "    if isinstance(x, (list, tuple)):\n"
            "        return type(x)(_scramble(v) for v in x)\n"
            "    if isinstance(x, torch.Tensor) and x.dtype.is_floating_point:\n"
            "        return x * 1.5 + 0.25\n"
            "    if isinstance(x, (int, float)) and not isinstance(x, bool):\n"
            "        return x + 7\n"
            "    return x\n"
        )
    )
    fixtures.append((Fixture("wrong_answer", {a: "fail|partial", "*": "pass"}), nb))

    nb = _answered(ex_nb, answers)
    nb.cells[_index(nb, b)].source = answers[b].replace("def ", "def (", 1)
    fixtures.append((Fixture("syntax_error", {b: "error", "*": "pass"}), nb))

    # an infinite loop inside the answer of a, one at the top level of c's cell before its answer, and one after
    # b's answer (b is defined, so graded, and told that its cell never finished)
    nb = _answered(ex_nb, answers)
    nb.cells[_index(nb, a)].source = _def_line(answers[a]) + "\n    while True:\n        pass\n"
    nb.cells[_index(nb, b)].source = answers[b] + "\n\nwhile True:\n    pass\n"
    nb.cells[_index(nb, c)].source = "while True:\n    pass\n\n" + answers[c]
    fixtures.append((Fixture("infinite_loop", {a: "timeout", b: "pass", c: "timeout", "*": "pass"}), nb))

    nb = _answered(ex_nb, answers)
    del nb.cells[_index(nb, b)]
    fixtures.append((Fixture("deleted_cell", {b: "missing", "*": "pass"}), nb))

    # the learner duplicated an exercise cell: the stub first, their answer below it
    nb = copy.deepcopy(ex_nb)
    i = _index(nb, a)
    dup = copy.deepcopy(nb.cells[i])
    dup.source = answers[a]
    if "id" in dup:
        dup["id"] = uuid.uuid4().hex[:8]
    nb.cells.insert(i + 1, dup)
    fixtures.append((Fixture("duplicated_cell", {a: "pass", "*": "not_implemented"}), nb))

    # check cells deleted, edited or reordered do not matter; exercise cells moved to the end
    nb = _answered(ex_nb, answers)
    for cell in nb.cells:
        if check_id(cell):
            cell.source = 'print("✓ all checks passed")'
    moved = [cell for cell in nb.cells if exercise_id(cell)]
    nb.cells = [cell for cell in nb.cells if not exercise_id(cell) and check_id(cell) != a] + moved[::-1]
    fixtures.append((Fixture("edited_checks_reordered", {"*": "pass"}, total="full"), nb))

    # claims instead of answers: prints "all checks passed", redefines check and the judge
    nb = copy.deepcopy(ex_nb)
    nb.cells[_index(nb, a)].source = (
        (
            "import course_lib.grading as G\n"
            "import course_lib.grading.exercise as E\n"
            "def check(*args, **kwargs):\n"
            "    print('✓ all checks passed')\n"
            "G.check = E.check = check\n"
            "E.compare = lambda *args, **kwargs: []\n"
            "E.judge_outcomes = lambda *args, **kwargs: None\n"
            "print('✓ all checks passed')\n"
        )
        + "\n"
        + nb.cells[_index(nb, a)].source
    )
    for cell in nb.cells:
        if check_id(cell):
            cell.source = "check()"
    fixtures.append((Fixture("claims_instead_of_answers", {"*": "not_implemented"}, total="zero"), nb))

    # the answer to c kills the kernel: exercises before it keep their grades
    nb = _answered(ex_nb, answers)
    nb.cells[_index(nb, c)].source = "import os\nos._exit(3)\n"
    fixtures.append((Fixture("kills_kernel", {c: "error", "*": "pass"}), nb))

    for fixture, notebook in fixtures:
        nbformat.write(notebook, folder / f"{fixture.name}-{lesson}.ipynb")

    text = (folder / f"solution-{lesson}.ipynb").read_text()
    (folder / f"corrupted-{lesson}.ipynb").write_text(text[: len(text) // 2])
    (folder / f"empty-{lesson}.ipynb").write_text("")
    extra = [
        Fixture("corrupted", {"*": "unreadable"}, file_status="unreadable", total="zero"),
        Fixture("empty", {"*": "unreadable"}, file_status="unreadable", total="zero"),
    ]
    return [f for f, _ in fixtures] + extra


def _name(source: str) -> str:
    line = _def_line(source)
    return line.split()[1].split("(")[0].rstrip(":")
