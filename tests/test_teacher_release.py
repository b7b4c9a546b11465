"""A teacher's own release of the exercises, and what `course check` tells a learner about theirs.

A teacher edits solutions/ (text, an extra cell, fewer exercises), rebuilds with `course build-exercises`, and
grades against that release with `--exercises`. These tests hold the builder to refusing what would leak an answer
or break grading, and the grader to grading what the release holds and saying when a submission came from another.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from course_lib import cli
from course_lib.grading.build import (
    BuildError,
    build_exercise_notebook,
    build_exercises,
    check_id,
    exercise_id,
    release_id,
    repo_folder,
)
from course_lib.grading.grade import (
    COPY_FLAG,
    GradeOptions,
    _lesson_of,
    _templates,
    feedback_markdown,
    format_table,
    grade_submission,
)

SOLUTIONS = repo_folder("solutions")
EXERCISES = repo_folder("exercises")
LESSON = "01_noise_schedules"


def _copy(nb):
    return nbformat.from_dict(json.loads(json.dumps(nb)))


@pytest.fixture
def solution():
    return nbformat.read(SOLUTIONS / f"{LESSON}.ipynb", as_version=4)


def _index(nb, ex_id, kind=exercise_id):
    return next(i for i, c in enumerate(nb.cells) if kind(c) == ex_id)


def test_an_answer_in_an_untagged_cell_is_refused_not_released(solution):
    nb = _copy(solution)
    nb.cells.insert(3, nbformat.v4.new_code_cell(
        "def bonus(x):\n    ### BEGIN SOLUTION\n    return x * 42  # TEACHER_SECRET\n    ### END SOLUTION\n"))
    with pytest.raises(BuildError, match=r"cell 4: .*not tagged exercise:NN.k would be released with its answer"):
        build_exercise_notebook(nb, LESSON)


def test_format_errors_name_their_real_cause(solution):
    # the exercise tag deleted: the cell is named as the lost exercise, not "the check must come after it"
    nb = _copy(solution)
    i = _index(nb, "01.2")
    del nb.cells[i].metadata["tags"]
    with pytest.raises(BuildError, match=rf"cell {i + 1}: the cell defines \w+, the answer of exercise 01.2, but is "
                                         "not tagged exercise:01.2: give it that tag"):
        build_exercise_notebook(nb, LESSON)
    # the exercise cell deleted: its check cell says there is no such exercise
    del nb.cells[i]
    with pytest.raises(BuildError, match=r"the check cell of 01.2 has no exercise: no cell is tagged exercise:01.2"):
        build_exercise_notebook(nb, LESSON)
    # a check cell that checks another exercise than its tag says
    nb = _copy(solution)
    nb.cells[_index(nb, "01.1", check_id)].source = 'check("01.2")'
    with pytest.raises(BuildError, match=r"check:01.1 must be a code cell whose source is check\('01.1'\), not "
                                         r"check\('01.2'\)"):
        build_exercise_notebook(nb, LESSON)
    # an exercise cell turned into Markdown would be released as text holding the stub
    nb = _copy(solution)
    i = _index(nb, "01.3")
    cell = nb.cells[i]
    nb.cells[i] = nbformat.v4.new_markdown_cell(cell.source, metadata=cell.metadata)
    with pytest.raises(BuildError, match="the cell of exercise 01.3 is a markdown cell; make it a code cell"):
        build_exercise_notebook(nb, LESSON)


def test_a_release_may_leave_exercises_out_unless_a_kept_cell_needs_them(solution):
    nb = _copy(solution)
    nb.cells = [c for c in nb.cells if exercise_id(c) != "01.3" and check_id(c) != "01.3"]
    out = build_exercise_notebook(nb, LESSON)
    assert out.metadata["course"]["exercises"] == ["01.1", "01.2"]
    assert out.metadata["course"]["left_out"] == ["01.3"]
    # a kept cell that calls the left-out exercise's function would fail in every learner's notebook
    name = next(c for c in solution.cells if exercise_id(c) == "01.3").source.split("def ")[1].split("(")[0]
    nb.cells.append(nbformat.v4.new_code_cell(f"print({name}(3))"))
    with pytest.raises(BuildError, match=f"uses {name}, the answer of exercise 01.3, which this release leaves out"):
        build_exercise_notebook(nb, LESSON)


def test_the_release_fingerprint_follows_the_text(solution):
    stock = build_exercise_notebook(solution, LESSON)
    assert stock.metadata["course"]["release"] == release_id(stock)
    edited = _copy(solution)
    edited.cells.insert(1, nbformat.v4.new_markdown_cell("Due Friday."))
    assert build_exercise_notebook(edited, LESSON).metadata["course"]["release"] != release_id(stock)
    # outputs and execution counts are not the release: running the solution changes nothing
    ran = _copy(solution)
    for c in ran.cells:
        if c.cell_type == "code":
            c.execution_count = 7
    assert build_exercise_notebook(ran, LESSON).metadata["course"]["release"] == stock.metadata["course"]["release"]


def test_build_refuses_odd_notebook_names_before_writing_anything(tmp_path, solution):
    sols, out = tmp_path / "mysol", tmp_path / "myex"
    sols.mkdir()
    nbformat.write(solution, sols / f"{LESSON}.ipynb")
    nbformat.write(solution, sols / f"{LESSON}-Copy1.ipynb")  # Jupyter's Duplicate
    with pytest.raises(BuildError, match=rf"{LESSON}-Copy1.ipynb in .*named after its lesson, {LESSON}.ipynb"):
        build_exercises(sols, out)
    assert not out.exists() or not any(out.iterdir()), "a failed build must leave the release folder as it was"
    (sols / f"{LESSON}-Copy1.ipynb").unlink()
    nbformat.write(solution, sols / "lesson01.ipynb")
    with pytest.raises(BuildError, match="lesson01.ipynb in .*NN_topic.ipynb"):
        build_exercises(sols, out)
    (sols / "lesson01.ipynb").unlink()
    (sols / f"{LESSON}.ipynb").unlink()
    with pytest.raises(BuildError, match="no solutions notebooks"):
        build_exercises(sols, out)
    # through the command: a usage error (exit 2) naming the file, not "exercises/ is up to date"
    nbformat.write(solution, sols / "lesson01.ipynb")
    assert cli.main(["build-exercises", "--solutions", str(sols), "--exercises", str(out)]) == 2
    # a teacher's solutions without --exercises would write over the course's own release: refused
    before = {p.name: p.read_text() for p in EXERCISES.glob("*.ipynb")}
    (sols / "lesson01.ipynb").unlink()
    nbformat.write(solution, sols / f"{LESSON}.ipynb")
    assert cli.main(["build-exercises", "--solutions", str(sols)]) == 2
    assert {p.name: p.read_text() for p in EXERCISES.glob("*.ipynb")} == before


def test_a_teachers_release_grades_what_it_holds_and_says_when_a_submission_came_from_another(tmp_path, solution):
    """The teacher added a cell, left 01.3 out and graded with --exercises; the learner's notebook came from the
    course's own release. Only 01.1 and 01.2 are graded and counted, and both sides are told of the mismatch."""
    sols, release = tmp_path / "mysol", tmp_path / "myex"
    sols.mkdir()
    nb = _copy(solution)
    nb.cells = [c for c in nb.cells if exercise_id(c) != "01.3" and check_id(c) != "01.3"]
    nb.cells.insert(1, nbformat.v4.new_markdown_cell("Hand in by Friday; 01.3 is not part of this week."))
    nbformat.write(nb, sols / f"{LESSON}.ipynb")
    build_exercises(sols, release)
    # the learner's notebook: the course's release (its metadata), answered with the solution's code
    stock = nbformat.read(EXERCISES / f"{LESSON}.ipynb", as_version=4)
    mine = _copy(solution)
    mine.metadata["course"] = stock.metadata["course"]
    path = tmp_path / f"ann_{LESSON}.ipynb"
    nbformat.write(mine, path)
    options = GradeOptions(seed=3, timeout=120, exercises_dir=release)
    row = grade_submission(path, options)
    assert [e["id"] for e in row["exercises"]] == ["01.1", "01.2"]
    assert row["total"] == row["max_total"] > 0, row
    assert any("made from another release" in n for n in row["notes"]), row["notes"]
    assert any("was --exercises forgotten" in n for n in row["teacher_notes"]), row["teacher_notes"]
    from course_lib.grading.grade import class_summary

    assert "made from another release" in class_summary([row]).split("to look at")[1]  # where a teacher reads
    assert "--exercises FOLDER YOUR_NOTEBOOK.ipynb" in feedback_markdown(row)
    assert any(n.startswith("cells tagged exercise:01.3 are not in the release") for n in row["notes"]), row["notes"]
    # against its own release: no such note, and the whole lesson is graded
    row = grade_submission(path, GradeOptions(seed=3, timeout=120))
    assert not any("another release" in n for n in row["notes"] + row["teacher_notes"])
    assert [e["id"] for e in row["exercises"]] == ["01.1", "01.2", "01.3"]
    assert "--exercises" not in feedback_markdown(row)


def test_a_notebook_stripped_of_its_metadata_is_known_by_its_functions(tmp_path):
    nb = nbformat.read(SOLUTIONS / "03_unet_blocks.ipynb", as_version=4)
    nb.metadata = {}
    for c in nb.cells:
        c.metadata = {}
    templates = _templates(GradeOptions())
    assert _lesson_of(nb, Path("Copy of notebook.ipynb"), templates, None) == "03_unet_blocks"
    # a notebook that defines nothing of any lesson stays unknown
    assert _lesson_of(nbformat.v4.new_notebook(), Path("Untitled.ipynb"), templates, None) is None


def test_a_lesson_missing_from_the_release_folder_is_named(tmp_path):
    release = tmp_path / "myex"
    release.mkdir()
    (release / f"{LESSON}.ipynb").write_text((EXERCISES / f"{LESSON}.ipynb").read_text())
    path = tmp_path / "bob.ipynb"
    path.write_text((EXERCISES / "02_forward_noising.ipynb").read_text())
    row = grade_submission(path, GradeOptions(seed=1, exercises_dir=release))
    assert row["lesson"] == "02_forward_noising"
    assert f"no released exercise notebook for lesson 02_forward_noising in {release}" in row["notes"], row


def test_course_check_tells_the_learner_what_to_do(tmp_path, capsys):
    # a notebook whose lesson nothing tells: the learner is told how to say it
    empty = tmp_path / "Untitled.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), empty)
    assert cli.main(["check", str(empty)]) == 0
    out = capsys.readouterr().out
    assert f"course check --lesson NN {empty}" in out, out
    # a jupytext script is named as such
    script = tmp_path / "02_forward_noising.py"
    script.write_text("# ---\n# jupyter:\n#   jupytext:\n# ---\nx = 1\n")
    assert cli.main(["check", str(script)]) == 0
    assert "looks like a Python script (a jupytext .py?)" in capsys.readouterr().out
    # the copy flag is the teacher's: course check leaves it out, as the learner's .md does
    sol = tmp_path / "mine.ipynb"
    sol.write_text((SOLUTIONS / "03_unet_blocks.ipynb").read_text())
    row = grade_submission(sol, GradeOptions(seed=2, timeout=120))
    assert any(COPY_FLAG in (e.get("flag") or "") for e in row["exercises"]), row  # the gradebook has it
    table = format_table(row)
    assert "released solution" not in table and "total" in table, table


def test_grading_says_it_needs_a_posix_system_instead_of_failing_inside():
    from course_lib.grading.grade import platform_problem

    assert platform_problem("posix") is None
    assert "needs a POSIX system (Linux, macOS, or WSL" in platform_problem("nt")


def test_an_authors_slips_are_named_with_their_fix(tmp_path, solution, monkeypatch):
    """A course author adding exercise 01.9: a tag with a space, an exercise not registered yet, one that breaks
    the house rules, and one registered but without cells in the course's own solutions."""
    import dataclasses

    from course_lib.grading import build
    from course_lib.grading import exercise as registry

    nb = _copy(solution)
    i = _index(nb, "01.1")
    nb.cells[i].metadata["tags"] = ["exercise: 01.1"]
    with pytest.raises(BuildError, match=r"the tag 'exercise: 01.1' has a space in it: write exercise:01.1"):
        build_exercise_notebook(nb, LESSON)
    nb.cells[i].metadata["tags"] = ["exercise:01.9"]
    with pytest.raises(BuildError, match=r"exercise 01.9 is not registered: register it in "
                                         r"course_lib/grading/lesson01.py .*this lesson registers 01.1, 01.2, 01.3"):
        build_exercise_notebook(nb, LESSON)
    # registered with the dataclass's defaults: every broken rule is named at once
    new = dataclasses.replace(registry.get_exercise("01.1"), id="01.9", points=1.0)
    monkeypatch.setitem(registry._REGISTRY, "01.9", new)
    with pytest.raises(BuildError, match=r"exercise 01.9 breaks the course's rules: points=1: an exercise is worth "
                                         r"2 to 4 points"):
        build_exercise_notebook(nb, LESSON)
    # registered and sound, but the course's own solutions have no cell for it: the course's release refuses;
    # a teacher's folder builds without it, and says so
    monkeypatch.setitem(registry._REGISTRY, "01.9", dataclasses.replace(new, points=2.0))
    own = tmp_path / "course"
    (own / "solutions").mkdir(parents=True)
    nbformat.write(solution, own / "solutions" / f"{LESSON}.ipynb")
    monkeypatch.setattr(build, "repo_folder", lambda name: own / name)
    with pytest.raises(BuildError, match=r"no cell is tagged exercise:01.9, which the course registers"):
        build_exercises()
    assert not (own / "exercises").exists()
    notes: list[str] = []
    mine = tmp_path / "mysol"
    mine.mkdir()
    nbformat.write(solution, mine / f"{LESSON}.ipynb")
    build_exercises(mine, tmp_path / "myex", notes)
    assert notes == [f"{LESSON} leaves out 01.9 (registered, no cell tagged): graded without it"]
