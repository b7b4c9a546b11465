"""The grading machinery: building exercises/, ``course check`` and ``course grade``.

The lesson-specific checks (reference passes, known-wrong variants fail) live in
tests/test_grading_lessonNN.py. Here: the stubs, the freshness of exercises/, and a class of
awkward submissions (tests/grading_fixtures.py) graded in real kernels, in one batch.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
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
from course_lib.grading.grade import COPY_FLAG, GradeOptions, grade_many

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
    # keys that are neither strings nor ints are kept under their repr, beside the others
    odd = roundtrip({"a": 1, (1, 2): 2, None: 3, "None": 4, 5: 6})
    assert odd == {"a": 1, "(1, 2)": 2, "None'": 3, "None": 4, 5: 6}
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


def test_a_cell_that_hangs_after_a_right_answer_is_graded_and_told(graded):
    rows, _, out, _ = graded
    b = exercises_for(LESSONS[0])[1]
    row = next(e for e in rows[f"infinite_loop-{LESSONS[0]}"]["exercises"] if e["id"] == b.id)
    assert row["status"] == "pass" and "ran past its time limit after defining" in row["detail"], row
    markdown = (out / f"infinite_loop-{LESSONS[0]}.md").read_text()  # the learner's feedback file says it too
    assert "ran past its time limit after defining" in markdown, markdown


def test_a_syntax_error_is_told_by_its_line_in_the_cell(graded):
    rows, _, out, _ = graded
    bad = next(e for e in rows[f"syntax_error-{LESSONS[0]}"]["exercises"] if e["status"] == "error")
    assert "SyntaxError" in bad["detail"] and "of the exercise cell)" in bad["detail"], bad["detail"]
    assert ".py" not in bad["detail"] and "fix the line the error names" in bad["hint"]
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
    assert "pass" in out and "total" in out and "course check --seed" in out
    # --seed fixes the inputs: the row records it and says how to repeat it
    assert cli.main(["check", str(sub), "--seed", "11"]) == 0
    assert "inputs of seed 11 (`course check --seed 11`" in capsys.readouterr().out
    # --strict: a full notebook exits 0, an untouched one 1 (the table is printed either way)
    assert cli.main(["check", str(sub), "--strict", "--seed", "11"]) == 0
    untouched = tmp_path / "untouched_01.ipynb"
    untouched.write_text((EXERCISES / f"{LESSONS[0]}.ipynb").read_text())
    assert cli.main(["check", str(untouched), "--seed", "11"]) == 0
    assert cli.main(["check", str(untouched), "--strict", "--seed", "11"]) == 1
    assert "not_implemented" in capsys.readouterr().out
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


#: the flag on an answer that is the released solution's code (most of this file's right answers are)
SOLUTION_COPY = COPY_FLAG


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
    assert "roster.csv" in (out / "summary.txt").read_text()  # kept with the summary, not only on the terminal
    look = ("to look at (not graded; an exercise that raised, timed out or went missing; or a flagged answer)")
    assert f"{look}: bob__{lesson} ({first} error)" in captured.out
    # the rest of bob's notebook and alice's are the released solution, line for line: flagged for the teacher,
    # on a line of their own, where the solution is long enough for a copy to mean something (01.1 is two lines)
    copies = next(line for line in captured.out.splitlines() if line.startswith("answers that are the released"))
    assert f"alice__{lesson} ({', '.join(rest)})" in copies and f"bob__{lesson} ({', '.join(rest)})" in copies
    assert first not in copies.split(":", 1)[1].replace(lesson, "")

    def table():
        with open(out / "gradebook.csv") as f:
            return {row["submission"]: row for row in csv.DictReader(f)}

    rows = table()
    assert SOLUTION_COPY in rows[f"alice__{lesson}"]["to look at"]  # the gradebook's column has every flag
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


# ---------------------------------------------------------------------------------------------
# What a fresh-eyes teacher found: global state, lost tags, a stub pasted again, tampering, the answer key
# ---------------------------------------------------------------------------------------------


def _cell_of(nb, ex_id: str):
    return next(c for c in nb.cells if f"exercise:{ex_id}" in c.get("metadata", {}).get("tags", []))


def _untagged(nb):
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        cell.metadata["tags"] = [t for t in tags if not t.startswith("exercise:")]
    return nb


@pytest.fixture(scope="module")
def odd_class(tmp_path_factory):
    """Lesson 02 (its 02.1 inputs depend on torch's default dtype), one submission per odd habit, graded at once."""
    lesson = "02_forward_noising"
    text = (SOLUTIONS / f"{lesson}.ipynb").read_text()
    stub = nbformat.reads((EXERCISES / f"{lesson}.ipynb").read_text(), as_version=4)
    folder = tmp_path_factory.mktemp("odd")

    def write(name, change):
        nb = nbformat.reads(text, as_version=4)
        nb.metadata = stub.metadata  # as handed out: the released notebook's metadata names the lesson
        change(nb)
        nbformat.write(nb, folder / f"{name}.ipynb")

    def prepend(ex_id, code):
        def change(nb):
            cell = _cell_of(nb, ex_id)
            cell.source = code + "\n" + cell.source
        return change

    def append(ex_id, code):
        def change(nb):
            cell = _cell_of(nb, ex_id)
            cell.source = cell.source + "\n" + code
        return change

    write("float64", prepend("02.1", "import torch\ntorch.set_default_dtype(torch.float64)"))
    write("chdir", prepend("02.1", "import os\nos.makedirs('my_data', exist_ok=True)\nos.chdir('my_data')"))
    write("patched_randn", prepend(
        "02.1", "import torch\n_randn = torch.randn\ntorch.randn = lambda *a, **k: _randn(*a, **k) + 1.0"))
    # NotImplementedError on one call of several: the other cases keep their points
    write("one_case_unwritten", append("02.2", (
        "_done = forward_by_steps\n_calls = []\n"
        "def forward_by_steps(*args, **kwargs):\n"
        "    _calls.append(1)\n"
        "    if len(_calls) == 1:\n"
        "        raise NotImplementedError('this case is not handled yet')\n"
        "    return _done(*args, **kwargs)\n")))

    def stub_below(nb):  # the released stub pasted again below the answer
        i = nb.cells.index(_cell_of(nb, "02.1"))
        nb.cells.insert(i + 1, nbformat.from_dict(dict(_cell_of(stub, "02.1"), id="stubagain")))
    write("stub_below", stub_below)

    def answer_in_a_new_cell(nb):  # the tagged cell left as the stub, the answer in an untagged cell below it
        cell = _cell_of(nb, "02.1")
        answer = nbformat.v4.new_code_cell(cell.source)
        cell.source = _cell_of(stub, "02.1").source
        nb.cells.insert(nb.cells.index(cell) + 1, answer)
    write("answer_in_a_new_cell", answer_in_a_new_cell)
    write("no_tags", _untagged)
    # the untouched exercise notebook with its tags lost: stubs, not answers for the teacher to look at
    nbformat.write(_untagged(nbformat.reads((EXERCISES / f"{lesson}.ipynb").read_text(), as_version=4)),
                   folder / "no_tags_stub.ipynb")

    def markdown(nb):
        cell = _cell_of(nb, "02.1")
        cell.cell_type = "markdown"
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
    write("markdown", markdown)
    # a later exercise cell rewrites whatever recorded results it can find beside its folder
    write("tamper", prepend("02.3", (
        "import pathlib\n"
        "for _p in pathlib.Path('..').rglob('*.json'):\n"
        "    _p.write_text('{}')\n")))
    write("answer_key", append("02.1", (
        "from course_lib.grading import get_exercise\nq_sample_closed_form = get_exercise('02.1').reference")))
    # what every setup cell imports, copied into the exercise cell as the notebooks advise: no suspicion
    write("imports_check", prepend("02.1", "from course_lib.grading import check"))
    out = tmp_path_factory.mktemp("odd_grades")
    options = GradeOptions(jobs=2, timeout=120, cell_timeout=20, seed=77)
    rows = grade_many(sorted(folder.glob("*.ipynb")), out, options)
    return {r["submission"]: r for r in rows}, out


def _by_id(row):
    return {e["id"]: e for e in row["exercises"]}


def test_a_learners_global_state_does_not_change_the_questions(odd_class):
    rows, _ = odd_class
    for name in ("float64", "chdir"):  # right answers: full marks, nothing to flag but the copied solution
        row = rows[name]
        assert row["total"] == row["max_total"], (name, _statuses(row), [e["detail"] for e in row["exercises"]])
        assert all(e.get("flag", "") in ("", SOLUTION_COPY) for e in row["exercises"]), name
    # a patched torch.randn changes the inputs themselves: the grade may be off, and the teacher is told
    flag = _by_id(rows["patched_randn"])["02.1"].get("flag", "")
    assert "inputs" in flag and "differed from the grader's" in flag, _by_id(rows["patched_randn"])["02.1"]


def test_one_unwritten_case_costs_that_case_not_the_exercise(odd_class):
    rows, _ = odd_class
    e = _by_id(rows["one_case_unwritten"])["02.2"]
    assert e["status"] == "partial" and 0 < e["points"] < e["max_points"], e
    assert any("NotImplementedError" in c["message"] for c in e["checks"] if not c["passed"])


def test_the_answer_is_found_past_a_pasted_stub_a_lost_tag_or_a_markdown_cell(odd_class):
    rows, out = odd_class
    for name in ("stub_below", "no_tags", "markdown"):
        row = rows[name]
        assert row["total"] == row["max_total"], (name, _statuses(row))
    assert "changed from the stub" in _by_id(rows["stub_below"])["02.1"]["detail"]
    assert "is a markdown cell; it was graded as code" in _by_id(rows["markdown"])["02.1"]["detail"]
    untagged = _by_id(rows["no_tags"])
    assert all("no cell is tagged" in e["detail"] and "untagged" in e.get("flag", "") for e in untagged.values())
    # flagged answers are listed for the teacher, and the learner's feedback says why
    from course_lib.grading.grade import class_summary

    summary = class_summary(list(rows.values()))
    assert "no_tags (02.1: answer found in an untagged cell" in summary
    assert "for your teacher:" in (out / "no_tags.md").read_text()
    below = _by_id(rows["answer_in_a_new_cell"])["02.1"]
    assert below["status"] == "pass" and "still holds the stub" in below["detail"] and below.get("flag"), below
    stubs = _by_id(rows["no_tags_stub"])
    assert all(e["status"] == "not_implemented" and not e.get("flag") for e in stubs.values()), stubs


def test_later_code_cannot_change_recorded_results_and_the_answer_key_is_flagged(odd_class):
    rows, _ = odd_class
    assert rows["tamper"]["total"] == rows["tamper"]["max_total"], _statuses(rows["tamper"])
    key = _by_id(rows["answer_key"])["02.1"]
    assert key["status"] == "pass" and "course_lib.grading" in key.get("flag", ""), key
    assert not _by_id(rows["imports_check"])["02.1"].get("flag")


def test_a_removed_gradebook_folder_is_written_again_and_no_row_is_lost(tmp_path, monkeypatch):
    """A submission's code runs as the teacher's user and may delete --out mid-run: the rows are in memory."""
    from course_lib.grading import grade as grade_module

    lesson = LESSONS[0]
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("a", "b", "c"):
        (subs / f"{name}.ipynb").write_text((EXERCISES / f"{lesson}.ipynb").read_text())
    out = tmp_path / "grades"
    real = grade_module.grade_submission
    calls = []

    def deleting(path, options, name=None, worker=None):
        calls.append(name)
        if len(calls) == 2:
            import shutil

            shutil.rmtree(out)  # what a hostile submission's code could do
        return real(path, options, name, worker)

    monkeypatch.setattr(grade_module, "grade_submission", deleting)
    rows = grade_many(sorted(subs.glob("*.ipynb")), out, GradeOptions(jobs=1, timeout=60, seed=3))
    assert len(rows) == 3
    with open(out / "gradebook.csv") as f:
        assert {r["submission"] for r in csv.DictReader(f)} == {"a", "b", "c"}
    assert all((out / f"{n}.json").exists() and (out / f"{n}.md").exists() for n in "abc")


def test_names_keep_letters_of_any_script_and_mac_zip_junk_is_skipped(tmp_path, capsys):
    from course_lib.grading.grade import _names

    assert _names([tmp_path / "zoë" / "01_x.ipynb", tmp_path / "zoé" / "01_x.ipynb"]) == ["zoë__01_x", "zoé__01_x"]
    # Moodle's folders give short names, their ids kept (two Alice Smiths stay apart)
    moodle = [tmp_path / f"Alice Smith_{i}_assignsubmission_file_" / "01_x.ipynb" for i in (42, 43)]
    assert _names(moodle) == ["Alice_Smith_42__01_x", "Alice_Smith_43__01_x"]
    subs = tmp_path / "subs"
    (subs / "__MACOSX" / "alice").mkdir(parents=True)
    (subs / "alice").mkdir()
    (subs / "alice" / "01_noise_schedules.ipynb").write_text("{}")
    (subs / "__MACOSX" / "alice" / "._01_noise_schedules.ipynb").write_bytes(b"\x00\x05\x16\x07")
    (subs / "alice" / "._01_noise_schedules.ipynb").write_bytes(b"\x00\x05\x16\x07")
    assert cli._submissions([subs]) == [subs / "alice" / "01_noise_schedules.ipynb"]
    assert "skipped 2 file(s)" in capsys.readouterr().err


def test_several_files_of_one_student_and_lesson_are_pointed_out():
    from course_lib.grading.grade import class_summary

    def row(path, lesson="02_forward_noising"):
        return {"submission": path, "file": f"/class/{path}", "lesson": lesson, "status": "graded", "total": 1.0,
                "max_total": 9.0, "exercises": []}

    rows = [row("oscar/02.ipynb"), row("oscar/02 (1).ipynb"), row("alice/02.ipynb"), row("alice/01.ipynb", "01_x")]
    assert "oscar (02_forward_noising: 2 files)" in class_summary(rows)
    assert "alice" not in class_summary(rows).split("several files")[1]
    # the per-lesson line counts students by folder name beside files: three files of lesson 02 from two students
    assert "lesson 02_forward_noising: 3 submissions from 2 students (by folder name)," in class_summary(rows)
    assert "lesson 01_x: 1 submission from 1 student (by folder name)," in class_summary(rows)
    # alice's folder under submissions/ and under late/ is one student, with two files of the lesson
    late = rows + [{**row("late/alice/02.ipynb"), "seed": 9}]
    for r in rows:
        r["seed"] = 5
    summary = class_summary(late)
    assert "lesson 02_forward_noising: 4 submissions from 2 students (by folder name)," in summary, summary
    assert "alice (02_forward_noising: 2 files)" in summary
    assert "checked with different seeds (seed 5: 3 rows, seed 9: 1 row)" in summary, summary
    by_lesson = {line.split(":")[0]: line for line in summary.splitlines() if line.startswith("lesson ")}
    assert "checked with seed" not in by_lesson["lesson 02_forward_noising"]  # no one seed to name
    assert by_lesson["lesson 01_x"].endswith("; checked with seed 5"), summary
    flat = [row("a.ipynb"), row("b.ipynb")]  # one folder for the class: no student has two files
    assert "several files" not in class_summary(flat)
    assert "lesson 02_forward_noising: 2 submissions, mean" in class_summary(flat)


def test_canvas_and_moodle_downloads_name_their_students(tmp_path):
    """A learning platform's bulk download: Canvas puts every file in one folder, named after the student (and LATE
    where it was late); Moodle gives each student a folder with an id and the plugin's name after it."""
    from course_lib.grading.grade import class_summary, student_table, write_gradebook

    def row(path, lesson="02_x", total=1.0):
        return {"submission": Path(path).stem, "file": f"/dl/{path}", "lesson": lesson, "status": "graded",
                "total": total, "max_total": 9.0, "exercises": [], "notes": [], "seed": 1}

    canvas = [row("smithjohn_1234_56789_02_forward_noising.ipynb", total=4.0),
              row("smithjohn_LATE_1234_56790_02_forward_noising-1.ipynb", total=6.0),
              row("doejane_late_98_76_02_forward_noising.ipynb"),
              row("notes_for_me.ipynb")]  # not Canvas's pattern: no student
    summary = class_summary(canvas)
    assert "lesson 02_x: 4 submissions from 2 students (by Canvas's file name)," in summary, summary
    assert "smithjohn (02_x: 2 files)" in summary, summary
    late = summary.split("marked late by Canvas (2): ")[1].splitlines()[0]
    assert late == "doejane_late_98_76_02_forward_noising, smithjohn_LATE_1234_56790_02_forward_noising-1", late
    assert student_table(canvas)[1] == [["doejane", "1", "1", "9", "", "02_x"],
                                        ["smithjohn", "6", "6", "9", "02_x", "02_x"]]
    # a second download graded into the same gradebook lies in another folder: the Canvas names still hold (they
    # became the two folders' names when a flat folder was decided for the whole gradebook)
    later = [{**row("x.ipynb"), "submission": "late_one", "file": "/dl2/later/smithjohn_1234_56791_x.ipynb"}]
    assert "lesson 02_x: 4 submissions from 2 students (by Canvas's file name)," in class_summary(canvas[:3] + later)
    assert [r[0] for r in student_table(canvas[:3] + later)[1]] == ["doejane", "smithjohn"]
    write_gradebook(canvas, tmp_path)
    with open(tmp_path / "gradebook.csv") as f:
        book = {r["submission"]: r for r in csv.DictReader(f)}
    assert book["notes_for_me"]["student"] == ""
    assert book["doejane_late_98_76_02_forward_noising"]["student"] == "doejane"
    first = book["smithjohn_1234_56789_02_forward_noising"]["to look at"]
    assert first == "one of 2 files of this lesson from smithjohn", first
    assert "marked late by Canvas" in book["smithjohn_LATE_1234_56790_02_forward_noising-1"]["to look at"]
    assert "marked late" not in book["smithjohn_1234_56789_02_forward_noising"]["to look at"]

    moodle = [row("Alice Smith_4242_assignsubmission_file_/02_forward_noising.ipynb"),
              row("Bob Lee_4243_assignsubmission_file_/02_forward_noising.ipynb"),
              row("Bob Lee_4243_assignsubmission_file_/02_forward_noising (1).ipynb")]
    summary = class_summary(moodle)
    assert "lesson 02_x: 3 submissions from 2 students (by folder name)," in summary, summary
    assert "Bob Lee (02_x: 2 files)" in summary and "marked late" not in summary, summary
    assert [r[0] for r in student_table(moodle)[1]] == ["Alice Smith", "Bob Lee"]


@pytest.mark.parametrize("paths, expected", [
    # a flat folder whose files carry names: those are the students; the released name and "Copy of" carry none
    (["amy_02_x.ipynb", "Ben Lee - 02.ipynb", "02_x.ipynb", "Copy of 02_x.ipynb", "notes.ipynb"],
     ["amy", "Ben Lee", None, None, None]),
    # per-student folders, and a flat late/ folder beside them: the late files go to their names, not to "late"
    (["alice/02_x.ipynb", "bob/02_x.ipynb", "late/bob_02_x.ipynb", "late/cat_02_x.ipynb"],
     ["alice", "bob", "bob", "cat"]),
    # one late file named after a student the gradebook knows by her folder
    (["alice/02_x.ipynb", "bob/02_x.ipynb", "late/alice_02_x.ipynb"], ["alice", "bob", "alice"]),
    # the same word before the number in every student's folder is not a name: the folders stand
    (["alice/my_02_x.ipynb", "bob/my_02_x.ipynb"], ["alice", "bob"]),
    # a class folder of named files, and a late and a resubmitted folder with one file each
    (["class/amy_02_x.ipynb", "class/cat_02.ipynb", "late/ben_02_x.ipynb", "resubmitted/amy_02_x.ipynb"],
     ["amy", "cat", "ben", "amy"]),
    # Moodle's folder wins over the file's name, even graded alone
    (["Alice Smith_4242_assignsubmission_file_/ally_02_x.ipynb"], ["Alice Smith"]),
    # namesakes: two ids under one name in one lesson are two students (Canvas's user id, Moodle's folder id)
    (["dl1/smithjohn_1234_500_02_x.ipynb", "dl2/smithjohn_5678_600_02_x.ipynb", "dl2/smithjohn_1234_700_02_x.ipynb"],
     ["smithjohn (1234)", "smithjohn (5678)", "smithjohn (1234)"]),
    (["Alice Smith_4242_assignsubmission_file_/02_x.ipynb", "Alice Smith_4343_assignsubmission_file_/02_x.ipynb"],
     ["Alice Smith (4242)", "Alice Smith (4343)"]),
    # folders that sort the class by lesson are nobody's: the file names say who, or nothing does
    (["02/amy_02_x.ipynb", "02/02_x.ipynb", "03_unet/ben_02_x.ipynb"], ["amy", None, "ben"]),
    # per-student folders whose files carry their owners' names, however written: the folders stand
    (["alice/alice_02_x.ipynb", "alice/Alice Smith_02_x (1).ipynb", "bob/Bob_Jones_02_x.ipynb"],
     ["alice", "alice", "bob"]),
])
def test_students_are_read_from_file_names_where_a_folder_holds_the_class(paths, expected):
    from course_lib.grading.grade import _students

    rows = [{"submission": p, "file": f"/dl/{p}", "lesson": "02_x"} for p in paths]
    students = _students(rows)
    assert [students.get(id(r)) for r in rows] == expected


def test_a_folder_taken_as_the_student_against_the_files_name_is_pointed_out():
    from course_lib.grading.grade import class_summary

    def row(path):
        return {"submission": path.replace("/", "__"), "file": f"/dl/{path}", "lesson": "02_x", "status": "graded",
                "total": 1.0, "max_total": 9.0, "exercises": [], "seed": 4}

    rows = [row(p) for p in ("alice/02_x.ipynb", "bob/02_x.ipynb", "late/dan_02_x.ipynb",
                             "carol/Carol Smith 02.ipynb", "Zoë Müller/zoe_02_x.ipynb")]
    summary = class_summary(rows)
    doubt = summary.split("though the file names another")[1].splitlines()[0]
    # carol's and zoë's own names (accents aside) are no doubt
    assert doubt.endswith(": late__dan_02_x.ipynb (late; the file names dan)"), doubt
    assert "though the file names" not in class_summary(rows[:2] + rows[3:])
    # summary.txt says which seed repeats the grade, as the terminal did
    assert summary.splitlines()[0].endswith("; checked with seed 4"), summary
    assert "different exercises" not in summary
    # one row graded against a teacher's release that left an exercise out: the totals do not compare
    rows[0]["max_total"] = 6.0
    summary = class_summary(rows)
    assert "graded against releases with different exercises (the most there is: 6, 9)" in summary, summary


def test_a_canvas_resubmission_replaces_the_students_earlier_row(tmp_path, capsys):
    """Canvas names each submission anew (a new submission id), so a second download's file shares no name with the
    first: --replace matches it by student and lesson instead."""
    lesson = LESSONS[0]
    out = tmp_path / "grades"
    first, second = tmp_path / "download1", tmp_path / "download2"
    first.mkdir()
    second.mkdir()
    for name in ("smithjohn_1234_500_", "doejane_98_501_"):
        (first / f"{name}{lesson}.ipynb").write_text((EXERCISES / f"{lesson}.ipynb").read_text())
    assert cli.main(["grade", str(first), "--out", str(out), "--seed", "3"]) == 0
    again = second / f"smithjohn_LATE_1234_777_{lesson}.ipynb"
    again.write_text((SOLUTIONS / f"{lesson}.ipynb").read_text())
    capsys.readouterr()
    # without --replace: a row beside the earlier one, said; with it, the earlier row goes
    assert cli.main(["grade", str(again), "--out", str(out), "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert (f"(lesson {lesson}): student smithjohn; marked late by Canvas; a new row beside the earlier row of "
            f"smithjohn_1234_500_{lesson} (") in said, said
    assert "(--replace would replace it)" in said
    assert cli.main(["grade", str(again), "--out", str(out), "--replace", "--dry-run"]) == 0
    assert f"replaces the earlier row of smithjohn_1234_500_{lesson} (" in capsys.readouterr().out
    assert cli.main(["grade", str(again), "--out", str(out), "--replace"]) == 0
    assert not (out / f"smithjohn_1234_500_{lesson}.json").exists()
    assert not (out / f"smithjohn_1234_500_{lesson}.md").exists()
    with open(out / "gradebook.csv") as f:
        book = {r["submission"]: r for r in csv.DictReader(f)}
    assert sorted(book) == [f"doejane_98_501_{lesson}", f"smithjohn_LATE_1234_777_{lesson}"]
    row = book[f"smithjohn_LATE_1234_777_{lesson}"]
    assert row["student"] == "smithjohn" and row["total"] == row["max"] and "(--replace)" in row["notes"]
    with open(out / "students.csv") as f:
        students = {r["student"]: r for r in csv.DictReader(f)}
    assert students["smithjohn"]["several files (best counted)"] == ""  # one row left, not two
    assert students["smithjohn"]["marked late by Canvas"] == lesson
    # a namesake (another Canvas user id) is another student: --replace leaves the first smithjohn's row alone
    namesake = second / f"smithjohn_5678_800_{lesson}.ipynb"
    namesake.write_text((EXERCISES / f"{lesson}.ipynb").read_text())
    capsys.readouterr()
    assert cli.main(["grade", str(namesake), "--out", str(out), "--replace", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "student smithjohn (5678)" in said and "replaces" not in said and "beside" not in said, said


def test_a_late_submission_gets_its_own_lessons_seed(tmp_path, capsys):
    """Lessons graded with different seeds into one folder: a late file of lesson 01 is checked with 01's seed."""
    first, second = LESSONS[0], LESSONS[1]
    out = tmp_path / "grades"
    for lesson, seed, who in ((first, "5", ("amy", "cat")), (second, "6", ("amy",))):
        subs = [tmp_path / "class" / f"{name}_{lesson}.ipynb" for name in who]
        for sub in subs:
            sub.parent.mkdir(exist_ok=True)
            sub.write_text((EXERCISES / f"{lesson}.ipynb").read_text())
        assert cli.main(["grade", *map(str, subs), "--out", str(out), "--seed", seed]) == 0
    late = tmp_path / "late" / f"ben_{first}.ipynb"
    late.parent.mkdir()
    late.write_text((EXERCISES / f"{first}.ipynb").read_text())
    capsys.readouterr()
    assert cli.main(["grade", str(late), "--out", str(out)]) == 0
    assert f"{first} 5, {second} 6" in capsys.readouterr().err
    assert json.loads((out / f"ben_{first}.json").read_text())["seed"] == 5
    # the summary covers the whole gradebook, printed and kept in summary.txt, not only the late file
    summary = (out / "summary.txt").read_text()
    # the class folder holds files named after two students, so late/ben_… is ben's, not a student called "late"
    assert f"lesson {first}: 3 submissions from 3 students (by file name)," in summary, summary
    assert f"lesson {second}: 1 submission from 1 student (by file name)," in summary, summary
    # a resubmission of amy's lesson from another folder gets a row of its own, and a note saying which to drop
    again = tmp_path / "resubmitted" / f"amy_{first}.ipynb"
    again.parent.mkdir()
    again.write_text((SOLUTIONS / f"{first}.ipynb").read_text())
    assert cli.main(["grade", str(again), "--out", str(out)]) == 0
    row = json.loads((out / f"amy_{first}-2.json").read_text())
    # the note is the teacher's: in the gradebook, not in the learner's feedback
    assert any(f"the earlier row of amy_{first} (" in n and "--replace" in n for n in row["teacher_notes"]), row
    assert "the earlier row" not in (out / f"amy_{first}-2.md").read_text()
    with open(out / "gradebook.csv") as f:
        table = {r["submission"]: r for r in csv.DictReader(f)}
    assert "the earlier row of" in table[f"amy_{first}-2"]["notes"]
    # the copy of the released solution is flagged for the teacher, whatever its score, and not in the learner's .md
    # (a teacher who sends the files on unread would tell the learner so)
    assert "the released solution's code" in table[f"amy_{first}-2"]["to look at"]
    assert "released solution" not in (out / f"amy_{first}-2.md").read_text()
    # the file column holds absolute paths: a later run from another directory reads the same folders
    assert all(Path(r["file"]).is_absolute() for r in table.values())
    assert "the released solution's code" not in table[f"amy_{first}"]["to look at"]
    # the learner's feedback says which seed reproduces it
    assert f"course check --seed {row['seed']}" in (out / f"amy_{first}-2.md").read_text()
    # --dry-run says what --replace would do, and writes nothing
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert cli.main(["grade", str(again), "--out", str(out), "--replace", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert f"→ amy_{first} (lesson {first}): student amy; replaces the earlier row of amy_{first} (" in said, said
    assert sorted(p.name for p in out.iterdir()) == before
    # --replace: the resubmission takes the row, and neither the earlier row nor the '-2' files stay
    assert cli.main(["grade", str(again), "--out", str(out), "--replace"]) == 0
    assert not (out / f"amy_{first}-2.json").exists() and not (out / f"amy_{first}-2.md").exists()
    row = json.loads((out / f"amy_{first}.json").read_text())
    assert row["file"] == str(again) and any("replaces the earlier row" in n for n in row["teacher_notes"])
    assert row["total"] == row["max_total"]  # the solution, where the first file was the bare exercise
    with open(out / "gradebook.csv") as f:
        table = {r["submission"]: r for r in csv.DictReader(f)}
    assert sorted(table) == sorted([f"amy_{first}", f"amy_{second}", f"ben_{first}", f"cat_{first}"])
    assert table[f"ben_{first}"]["student"] == "ben" and table[f"amy_{first}"]["student"] == "amy"
    header = (out / "gradebook.csv").read_text().splitlines()[0]
    assert header.endswith("notes,to look at")


SWALLOWS_EVERYTHING = '''
import os, sys, time
from course_lib.grading.capture import capture

def cfg_combine(eps_uncond, eps_cond, scale):
    while True:  # a retry loop with a bare except: it swallows the time limit's CallTimeout too
        try:
            time.sleep(0.05)
        except BaseException:
            continue

capture("07.1", {"cfg_combine": cfg_combine}, 0, sys.argv[1], time_limit=0.5)
print("returned")
'''


def test_a_call_that_swallows_the_time_limit_ends_the_grading_kernel(tmp_path):
    """In a grader's kernel the capture ends the process ESCALATE_AFTER seconds after its CallTimeout was
    swallowed, so the worker sees a dead kernel (its exercise marked, the rest run again) instead of a kernel
    that holds the whole submission until the watchdog."""
    import subprocess

    from course_lib.grading.capture import ESCALATE_AFTER, WORKDIR_VARIABLE

    script = tmp_path / "swallow.py"
    script.write_text(SWALLOWS_EVERYTHING)
    env = {**os.environ, WORKDIR_VARIABLE: str(tmp_path)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "out.json")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 70 and "returned" not in proc.stdout, proc.stderr[-500:]
    assert time.monotonic() - start < 0.5 + ESCALATE_AFTER + 20


def test_outside_a_grading_kernel_the_time_limit_never_ends_the_process(monkeypatch):
    """A learner's own check() in Jupyter: CallTimeout only, no second alarm that would end their kernel."""
    import signal

    from course_lib.grading import capture as C

    monkeypatch.delenv(C.WORKDIR_VARIABLE, raising=False)
    with pytest.raises(C.CallTimeout):
        C._on_alarm(signal.SIGALRM, None)
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0


def test_a_notebook_of_no_known_lesson_tells_the_learner_and_the_teacher_apart(tmp_path):
    """The learner's .md says the teacher will look; the teacher's gradebook says how to grade it."""
    sub = tmp_path / "ivan" / "homework.ipynb"
    sub.parent.mkdir()
    sub.write_text(nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])))
    out = tmp_path / "grades"
    (row,) = grade_many([sub], out, GradeOptions(jobs=1, timeout=60, seed=3))
    assert row["status"] == "unreadable" and row["lesson"] is None
    feedback = (out / f"{row['submission']}.md").read_text()
    assert "your teacher will look at it" in feedback and "--lesson" not in feedback
    with open(out / "gradebook.csv") as f:
        (line,) = list(csv.DictReader(f))
    assert "grade it again with --lesson NN" in line["notes"] and line["to look at"] == "unreadable"


def test_course_checks_table_groups_alike_messages_and_says_how_many_it_left_out():
    from course_lib.grading.grade import format_table

    labels = [f"case {i}" for i in range(12)]
    checks = [{"name": "values", "passed": False, "weight": 1, "message": f"values differ ({lab}): slip {i}"}
              for i, lab in enumerate(labels)]
    alike = [{"name": "dtype", "passed": False, "weight": 1, "message": f"return float32 ({lab})"} for lab in labels]
    row = {"submission": "x", "status": "graded", "total": 0.0, "max_total": 3.0, "notes": [],
           "exercises": [{"id": "09.9", "title": "t", "status": "fail", "points": 0.0, "max_points": 3.0,
                          "hint": "h", "detail": "", "checks": checks + alike, "case_labels": labels}]}
    table = format_table(row)
    # the line true of every case comes first, once; of the 12 different slips 7 fit in the 8 lines, the rest counted
    assert table.count("return float32") == 1 and "[and 11 other cases alike]" in table, table
    assert table.index("return float32") < table.index("slip 0") and "slip 6" in table and "slip 7" not in table
    assert "09.9: … and 5 more" in table, table


def test_the_class_by_student_takes_each_lessons_best_file_and_names_the_choice(tmp_path):
    from course_lib.grading.grade import student_table, write_gradebook

    def row(path, lesson, total, top=9.0):
        return {"submission": path.replace("/", "__"), "file": f"/class/{path}", "lesson": lesson, "status": "graded",
                "total": total, "max_total": top, "exercises": [], "notes": [], "seed": 1}

    rows = [row("alice/02.ipynb", "02_x", 3.0), row("late/alice/02.ipynb", "02_x", 7.0),
            row("alice/01.ipynb", "01_y", 5.0, 6.0), row("bob/02.ipynb", "02_x", 9.0)]
    header, table = student_table(rows)
    assert header == ["student", "01_y", "02_x", "total", "max", "several files (best counted)",
                      "marked late by Canvas"]
    assert table == [["alice", "5", "7", "12", "15", "02_x", ""], ["bob", "", "9", "9", "15", "", ""]]
    write_gradebook(rows, tmp_path)
    with open(tmp_path / "students.csv") as f:
        assert [r["student"] for r in csv.DictReader(f)] == ["alice", "bob"]
    # a flat folder names no students: no roll-up, and none left from an earlier run
    write_gradebook([row("a.ipynb", "02_x", 1.0), row("b.ipynb", "02_x", 2.0)], tmp_path)
    assert student_table([row("a.ipynb", "02_x", 1.0), row("b.ipynb", "02_x", 2.0)])[1] == []
    assert not (tmp_path / "students.csv").exists()
