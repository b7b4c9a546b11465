"""The grading machinery: building exercises/, ``course check`` and ``course grade``.

The lesson-specific checks (reference passes, known-wrong variants fail) live in
tests/test_grading_lessonNN.py. Here: the stubs, the freshness of exercises/, and a class of
awkward submissions (tests/grading_fixtures.py) graded in real kernels, in one batch.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from course_lib import cli
from course_lib.grading import all_exercises, exercises_for
from course_lib.grading.build import (
    BuildError,
    build_exercise_notebook,
    check_id,
    exercise_id,
    repo_folder,
    stale_exercises,
    stub_source,
)
from course_lib.grading.encode import load_observations, roundtrip, save_observations
from course_lib.grading.grade import GradeOptions, grade_many

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures import write_fixtures  # noqa: E402

SOLUTIONS = repo_folder("solutions")
EXERCISES = repo_folder("exercises")
LESSONS = sorted(p.stem for p in SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))


# ---------------------------------------------------------------------------------------------
# One source: exercises/ from solutions/
# ---------------------------------------------------------------------------------------------


def test_stub_replaces_each_block_at_its_indentation():
    src = (
        "class Thing:\n"
        "    def a(self, x):\n"
        '        """doc"""\n'
        "        ### BEGIN SOLUTION\n"
        "        y = x + 1\n"
        "        return y\n"
        "        ### END SOLUTION\n"
        "\n"
        "    def b(self):\n"
        "        ### BEGIN SOLUTION\n"
        "        return 2\n"
        "        ### END SOLUTION\n"
    )
    out = stub_source(src, "Exercise 09.1: write Thing")
    assert out.count("raise NotImplementedError('Exercise 09.1: write Thing')") == 2
    assert "        raise NotImplementedError" in out and "x + 1" not in out and "return 2" not in out
    compile(out, "<stub>", "exec")


@pytest.mark.parametrize(
    "src",
    [
        "def f():\n    return 1\n",  # no markers
        "def f():\n    ### BEGIN SOLUTION\n    return 1\n",  # no end
        "def f():\n    ### END SOLUTION\n    return 1\n",  # no begin
    ],
)
def test_stub_rejects_unmarked_or_unbalanced_cells(src):
    with pytest.raises(BuildError):
        stub_source(src, "Exercise 09.1: x")


def _solution_nb(lesson: str):
    return nbformat.read(SOLUTIONS / f"{lesson}.ipynb", as_version=4)


def test_build_rejects_a_solution_that_breaks_the_format():
    lesson = LESSONS[0]
    nb = _solution_nb(lesson)
    first = next(c for c in nb.cells if exercise_id(c))
    ex_id = exercise_id(first)
    # the check cell removed
    broken = nbformat.from_dict(json.loads(json.dumps(nb)))
    broken.cells = [c for c in broken.cells if check_id(c) != ex_id]
    with pytest.raises(BuildError, match="check cell"):
        build_exercise_notebook(broken, lesson)
    # the exercise cell no longer defines the exercise's name
    broken = nbformat.from_dict(json.loads(json.dumps(nb)))
    cell = next(c for c in broken.cells if exercise_id(c) == ex_id)
    cell.source = "def something_else():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n"
    with pytest.raises(BuildError, match="must define"):
        build_exercise_notebook(broken, lesson)
    # an exercise tagged under the wrong lesson
    with pytest.raises(BuildError):
        build_exercise_notebook(nb, "99_nothing")


def test_exercises_folder_is_up_to_date_with_solutions():
    stale = stale_exercises()
    assert not stale, f"exercises/ is out of date for {stale}: run `course build-exercises`"


def test_lessons_01_to_04_have_at_least_three_exercises_each():
    for number in ("01", "02", "03", "04"):
        ids = [e.id for e in exercises_for(number)]
        assert len(ids) >= 3, f"lesson {number} has exercises {ids}"
    lessons = {e.lesson for e in all_exercises()}
    assert lessons <= set(LESSONS), f"exercises registered without a solutions notebook: {lessons - set(LESSONS)}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_released_notebook_holds_stubs_not_answers(lesson):
    nb = nbformat.read(EXERCISES / f"{lesson}.ipynb", as_version=4)
    assert nb.metadata["course"]["lesson"] == lesson
    ids = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "exercise notebooks are stored without outputs"
        ex_id = exercise_id(cell)
        if ex_id is None:
            assert "### BEGIN SOLUTION" not in cell.source
            continue
        ids.append(ex_id)
        ex = next(e for e in exercises_for(lesson) if e.id == ex_id)
        assert "BEGIN SOLUTION" not in cell.source and "END SOLUTION" not in cell.source
        assert f"NotImplementedError({f'Exercise {ex_id}: {ex.title}'!r})" in cell.source
        assert "raises-exception" in cell.metadata["tags"]
    assert ids == nb.metadata["course"]["exercises"]


@pytest.mark.parametrize("lesson", LESSONS)
def test_running_an_exercise_notebook_raises_only_not_implemented_in_exercise_cells(lesson, tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(EXERCISES / f"{lesson}.ipynb", as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True, resources=resources).execute()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                assert exercise_id(cell) is not None, f"a non-exercise cell raised {out.ename}: {cell.source[:80]}"
                assert out.ename == "NotImplementedError", f"{exercise_id(cell)} raised {out.ename}"
    # and every check cell said ✗ for the stub, without raising
    outputs = ["".join(o.get("text", "") for o in c.outputs) for c in nb.cells if check_id(c)]
    assert outputs and all("✗" in text and "not_implemented" in text for text in outputs)


# ---------------------------------------------------------------------------------------------
# Observations cross from the learner's kernel to the grader without pickles
# ---------------------------------------------------------------------------------------------


def test_observations_roundtrip_without_pickles(tmp_path):
    import torch

    value = {"abar": torch.linspace(0, 1, 5, dtype=torch.float16), "steps": (3, 4), "nan": float("nan"), "x": object()}
    save_observations(tmp_path / "o.json", [{"case": 0, "value": value}])
    back = load_observations(tmp_path / "o.json")[0]["value"]
    assert back["abar"].dtype == np.float64 and np.allclose(back["abar"], np.linspace(0, 1, 5), atol=1e-3)
    assert back["steps"] == [3, 4] and np.isnan(back["nan"]) and back["x"] == {"__object__": "object"}
    assert roundtrip(value)["steps"] == [3, 4]
    # an .npz holding a pickled object array is refused, not unpickled
    np.savez(tmp_path / "o.npz", a0=np.array([object()], dtype=object))
    (tmp_path / "o.json").write_text(json.dumps([{"case": 0, "value": {"__array__": "a0"}}]))
    with pytest.raises(ValueError):
        load_observations(tmp_path / "o.json")


# ---------------------------------------------------------------------------------------------
# A class of awkward submissions, graded in real kernels
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Lesson 01's fixtures plus every lesson's solution and untouched exercise notebook."""
    folder = tmp_path_factory.mktemp("submissions")
    fixtures = write_fixtures(LESSONS[0], folder)
    for lesson in LESSONS:
        (folder / f"ref-{lesson}.ipynb").write_text((SOLUTIONS / f"{lesson}.ipynb").read_text())
        (folder / f"stub-{lesson}.ipynb").write_text((EXERCISES / f"{lesson}.ipynb").read_text())
    out = tmp_path_factory.mktemp("gradebook")
    paths = sorted(folder.glob("*.ipynb"))
    options = GradeOptions(jobs=2, timeout=120, cell_timeout=8, call_timeout=3, seed=1234)
    rows = grade_many(paths, out, options)
    return {r["submission"]: r for r in rows}, fixtures, out, paths


def _statuses(row):
    return {e["id"]: e["status"] for e in row["exercises"]}


def test_every_solution_scores_full_marks_and_every_stub_zero(graded):
    rows, _, _, _ = graded
    for lesson in LESSONS:
        ref, stub = rows[f"ref-{lesson}"], rows[f"stub-{lesson}"]
        assert ref["status"] == "graded" and ref["total"] == ref["max_total"] > 0, _statuses(ref)
        assert set(_statuses(ref).values()) == {"pass"}
        assert stub["total"] == 0 and set(_statuses(stub).values()) == {"not_implemented"}, _statuses(stub)


def test_awkward_submissions_grade_as_they_should(graded):
    rows, fixtures, _, _ = graded
    lesson = LESSONS[0]
    for fx in fixtures:
        row = rows[f"{fx.name}-{lesson}"]
        assert row["status"] == fx.file_status, (fx.name, row["notes"])
        got = _statuses(row)
        assert set(got) == {e.id for e in exercises_for(lesson)}, fx.name
        for ex_id, status in got.items():
            want = fx.expect.get(ex_id, fx.expect.get("*"))
            assert status in want.split("|"), f"{fx.name}: {ex_id} is {status}, expected {want} ({row['exercises']})"
        if fx.total == "full":
            assert row["total"] == row["max_total"]
        if fx.total == "zero":
            assert row["total"] == 0


def test_a_syntax_error_is_told_by_its_line_in_the_cell(graded):
    rows, _, out, _ = graded
    bad = next(e for e in rows[f"syntax_error-{LESSONS[0]}"]["exercises"] if e["status"] == "error")
    assert "SyntaxError" in bad["detail"] and "of the exercise cell)" in bad["detail"], bad["detail"]
    assert ".py" not in bad["detail"] and "fix the line named above" in bad["hint"]
    assert "of the exercise cell)" in (out / f"syntax_error-{LESSONS[0]}.md").read_text()


def test_partial_credit_and_helpful_feedback_for_a_wrong_answer(graded):
    rows, _, out, _ = graded
    row = rows[f"wrong_answer-{LESSONS[0]}"]
    first = row["exercises"][0]
    assert 0 <= first["points"] < first["max_points"]
    assert any(c["passed"] for c in first["checks"]) and any(not c["passed"] for c in first["checks"])
    md = (out / f"wrong_answer-{LESSONS[0]}.md").read_text()
    assert "values differ" in md and first["hint"] in md


def test_gradebook_has_a_row_per_submission_and_a_column_per_exercise(graded):
    rows, _, out, paths = graded
    with open(out / "gradebook.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(paths) == len(rows)
    ids = [e.id for e in all_exercises() if e.lesson in LESSONS]
    for ex_id in ids:
        assert ex_id in table[0] and f"{ex_id} status" in table[0]
    for line in table:
        name = line["submission"]
        assert (out / f"{name}.json").exists() and (out / f"{name}.md").exists()
        saved = json.loads((out / f"{name}.json").read_text())
        assert float(line["total"]) == pytest.approx(saved["total"])
        assert saved["seed"] == 1234
    unreadable = [line for line in table if line["status"] == "unreadable"]
    assert len(unreadable) == 2 and all(float(line["total"]) == 0 for line in unreadable)


def test_course_grade_and_check_commands(tmp_path, capsys):
    sub = tmp_path / "alice_01.ipynb"
    sub.write_text((SOLUTIONS / f"{LESSONS[0]}.ipynb").read_text())
    (tmp_path / "bob.ipynb").write_text("not json")
    assert cli.main(["check", str(sub)]) == 0
    out = capsys.readouterr().out
    assert "pass" in out and "total" in out
    # a folder of submissions, one unreadable and of no known lesson: still a row, exit 0
    assert cli.main(["grade", str(tmp_path), "--out", str(tmp_path / "out"), "--lesson", "01", "--seed", "7"]) == 0
    with open(tmp_path / "out" / "gradebook.csv") as f:
        table = {row["submission"]: row for row in csv.DictReader(f)}
    assert table["bob"]["status"] == "unreadable" and table["alice_01"]["status"] == "graded"
    # bad arguments are the user's error (2), not a crash
    assert cli.main(["grade", str(tmp_path / "nope.ipynb"), "--out", str(tmp_path / "o2")]) == 2
    assert cli.main(["grade", str(sub), "--out", str(tmp_path / "o3"), "--jobs", "0"]) == 2
    assert "no submission at" in capsys.readouterr().err


def test_the_lesson_is_told_by_metadata_tags_or_file_name(tmp_path):
    from course_lib.grading.grade import _lesson_of

    templates = {p.stem: p for p in EXERCISES.glob("[0-9][0-9]_*.ipynb")}
    first = LESSONS[0]
    nb = nbformat.read(EXERCISES / f"{first}.ipynb", as_version=4)
    assert _lesson_of(nb, tmp_path / "anything.ipynb", templates, None) == first  # metadata
    nb.metadata.pop("course")
    assert _lesson_of(nb, tmp_path / "anything.ipynb", templates, None) == first  # exercise tags
    # unreadable: only the name says; a student number before it must not confuse it
    assert _lesson_of(None, tmp_path / f"student06_empty-{first}.ipynb", templates, None) == first
    assert _lesson_of(None, tmp_path / f"student06_{first[:2]}_x.ipynb", templates, None) == first
    assert _lesson_of(None, tmp_path / "bob.ipynb", templates, None) is None
    assert _lesson_of(None, tmp_path / "bob.ipynb", templates, first[:2]) == first  # --lesson


def _with_cell(solution_text: str, exercise: str, source: str) -> str:
    nb = nbformat.reads(solution_text, as_version=4)
    cell = next(c for c in nb.cells if f"exercise:{exercise}" in c.get("metadata", {}).get("tags", []))
    cell.source = source
    return nbformat.writes(nb)


def test_a_class_in_student_folders_a_crashing_cell_and_a_late_submission(tmp_path, capsys):
    """Students' folders name the rows; a file saved as .ipynb.txt is graded, not skipped; a cell that kills the
    kernel costs only its own exercise; grading a late submission into the same folder keeps the class's rows."""
    lesson = LESSONS[0]
    first, *rest = [e.id for e in exercises_for(lesson)]
    solution = (SOLUTIONS / f"{lesson}.ipynb").read_text()
    subs = tmp_path / "subs"
    for student in ("alice", "bob", "carol"):
        (subs / student).mkdir(parents=True)
    (subs / "alice" / f"{lesson}.ipynb").write_text(solution)
    (subs / "bob" / f"{lesson}.ipynb").write_text(_with_cell(solution, first, "import os\nos._exit(3)\n"))
    (subs / "carol" / f"{lesson}.ipynb.txt").write_text(solution)
    (subs / "roster.csv").write_text("alice,bob,carol\n")
    out = tmp_path / "grades"
    assert cli.main(["grade", str(subs), "--out", str(out), "--seed", "5", "--jobs", "2"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 file(s)" in captured.err and "roster.csv" in captured.err
    assert f"to look at (the grader could not judge all of it): bob__{lesson} ({first} error)" in captured.out

    def table():
        with open(out / "gradebook.csv") as f:
            return {row["submission"]: row for row in csv.DictReader(f)}

    rows = table()
    assert set(rows) == {f"{s}__{lesson}" for s in ("alice", "bob", "carol")}
    assert rows[f"carol__{lesson}"]["status"] == "graded" and rows[f"carol__{lesson}"]["file"].endswith(".ipynb.txt")
    assert float(rows[f"alice__{lesson}"]["total"]) == float(rows[f"alice__{lesson}"]["max"])
    bob = json.loads((out / f"bob__{lesson}.json").read_text())
    by_id = {e["id"]: e for e in bob["exercises"]}
    assert by_id[first]["status"] == "error" and "kernel died" in by_id[first]["detail"]
    assert all(by_id[e]["status"] == "pass" for e in rest), {e: by_id[e]["status"] for e in rest}
    # a late submission, graded alone into the same folder, joins the gradebook; regrading bob replaces his row
    late = tmp_path / "late" / "dave"
    late.mkdir(parents=True)
    (late / f"{lesson}.ipynb").write_text((EXERCISES / f"{lesson}.ipynb").read_text())
    # graded alone, without --seed: it keeps dave's name and is checked on the class's inputs (seed 5)
    assert cli.main(["grade", str(late / f"{lesson}.ipynb"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "from an earlier run" in err and "using the earlier run's seed 5" in err
    assert cli.main(["grade", str(subs / "bob" / f"{lesson}.ipynb"), "--out", str(out), "--seed", "5"]) == 0
    rows = table()
    dave = rows[f"dave__{lesson}"]
    assert len(rows) == 4 and f"bob__{lesson}" in rows and dave["file"].endswith(f"dave/{lesson}.ipynb")
    assert float(dave["total"]) == 0 and dave["seed"] == "5"
    # a different seed on purpose is said out loud
    assert cli.main(["grade", str(late / f"{lesson}.ipynb"), "--out", str(out), "--seed", "6"]) == 0
    assert "checked with seed(s) 5, this run uses 6" in capsys.readouterr().err
