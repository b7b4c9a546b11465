"""exercises/ from solutions/: one source, answers replaced by stubs.

A solutions notebook marks each exercise with two cells:

* the exercise cell, tagged ``exercise:NN.k``, defines the global the exercise names and
  holds the answer between a line ``### BEGIN SOLUTION`` and a line ``### END SOLUTION``;
* the check cell, tagged ``check:NN.k``, whose source is ``check("NN.k")``.

:func:`build_exercise_notebook` replaces every marked block, markers included, by
``raise NotImplementedError("Exercise NN.k: <title>")`` at the marker's indentation, tags the
exercise cell ``raises-exception`` (so nbval accepts a stub that raises when run) and records
the lesson and its exercises in the notebook's metadata, which the grader reads back.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import re
from pathlib import Path

import nbformat

from course_lib.grading.exercise import exercises_for, get_exercise, house_rules

__all__ = [
    "BuildError",
    "EXERCISE_TAG",
    "CHECK_TAG",
    "exercise_id",
    "check_id",
    "stub_source",
    "build_exercise_notebook",
    "build_exercises",
    "stale_exercises",
    "repo_folder",
    "release_id",
]

EXERCISE_TAG = "exercise:"
CHECK_TAG = "check:"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)" + re.escape(BEGIN) + r"[ \t]*\n.*?^[ \t]*" + re.escape(END) + r"[ \t]*(\n|$)",
    re.MULTILINE | re.DOTALL,
)


class BuildError(ValueError):
    """A solutions notebook that does not follow the format (says which cell and why)."""


def _tags(cell) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def exercise_id(cell) -> str | None:
    """``"01.2"`` for a cell tagged ``exercise:01.2``, else None."""
    return next((t[len(EXERCISE_TAG) :] for t in _tags(cell) if t.startswith(EXERCISE_TAG)), None)


def check_id(cell) -> str | None:
    """``"01.2"`` for a cell tagged ``check:01.2``, else None."""
    return next((t[len(CHECK_TAG) :] for t in _tags(cell) if t.startswith(CHECK_TAG)), None)


def stub_source(source: str, message: str) -> str:
    """Replace each BEGIN/END SOLUTION block with a ``raise NotImplementedError(message)``."""
    if BEGIN not in source:
        raise BuildError(f"no '{BEGIN}' line in the exercise cell")

    def stub(m: re.Match) -> str:
        return f"{m.group('indent')}raise NotImplementedError({message!r})\n"

    out, n = _BLOCK.subn(stub, source)
    if n == 0 or BEGIN in out or END in out:
        raise BuildError(f"unbalanced '{BEGIN}' / '{END}' lines in the exercise cell")
    return out.rstrip("\n")


def defined_names(source: str) -> set[str]:
    """The globals a cell defines at its top level: functions, classes and plain assignments."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as e:  # ValueError: a null byte, before Python 3.12
        raise BuildError(f"the cell does not parse: {e}") from None
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def defines(source: str, name: str) -> bool:
    return name in defined_names(source)


def defines_quietly(source: str, name: str) -> bool:
    """:func:`defines`, with a cell that does not parse defining nothing."""
    try:
        return defines(source, name)
    except BuildError:
        return False


_CHECK_CALL = re.compile(r"""\bcheck\(\s*["']([^"']*)["']""")


def release_id(nb: nbformat.NotebookNode) -> str:
    """A fingerprint of a released notebook: every cell's kind and text (the stubs included), so that a submission
    made from one release can tell it is graded against another (a teacher's edited copy, a later course)."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        digest.update(f"{cell.cell_type}\0{source}\0".encode())
    return digest.hexdigest()[:16]


def build_exercise_notebook(solution: nbformat.NotebookNode, lesson: str) -> nbformat.NotebookNode:
    """The released exercise notebook for a solutions notebook of ``lesson`` (its stem). A teacher's copy may leave
    exercises out (the release then grades only those it holds), but never an answer in a cell without a tag."""
    nb = copy.deepcopy(solution)
    seen_ex: dict[str, int] = {}
    seen_check: dict[str, int] = {}
    tagged = {exercise_id(c): i for i, c in enumerate(nb.cells) if exercise_id(c) is not None}
    for i, cell in enumerate(nb.cells):
        where = f"{lesson}, cell {i + 1}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        ex_id, ck_id = exercise_id(cell), check_id(cell)
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        if ex_id is None and (BEGIN in source or END in source):
            lost = [e for e in exercises_for(lesson) if e.id not in tagged and defines_quietly(source, e.name)]
            if lost:
                raise BuildError(f"{where}: the cell defines {lost[0].name}, the answer of exercise {lost[0].id}, "
                                 f"but is not tagged exercise:{lost[0].id}: give it that tag (View → Cell Toolbar → "
                                 "Tags in Jupyter)")
            raise BuildError(
                f"{where}: a '{BEGIN}' block in a cell not tagged exercise:NN.k would be released with its answer; "
                "tag the cell as a registered exercise, or keep an ungraded answer out of the solutions notebook"
            )
        if ex_id is not None:
            if cell.cell_type != "code":
                raise BuildError(f"{where}: the cell of exercise {ex_id} is a {cell.cell_type} cell; make it a code "
                                 "cell")
            if ex_id in seen_ex:
                raise BuildError(f"{where}: exercise {ex_id} is tagged twice (first in cell {seen_ex[ex_id] + 1})")
            seen_ex[ex_id] = i
            if ex_id != ex_id.strip():
                raise BuildError(f"{where}: the tag 'exercise:{ex_id}' has a space in it: write "
                                 f"exercise:{ex_id.strip()}")
            try:
                ex = get_exercise(ex_id)
            except KeyError:
                module = f"course_lib/grading/lesson{ex_id[:2]}.py" if ex_id[:2].isdigit() else "course_lib/grading/"
                known = ", ".join(e.id for e in exercises_for(lesson)) or "none"
                raise BuildError(f"{where}: exercise {ex_id} is not registered: register it in {module} "
                                 f"(see README, 'For course authors'); this lesson registers {known}") from None
            if problems := house_rules(ex):
                raise BuildError(f"{where}: exercise {ex_id} breaks the course's rules: " + "; ".join(problems))
            if ex.lesson != lesson:
                raise BuildError(f"{where}: exercise {ex_id} belongs to lesson {ex.lesson}, not {lesson}")
            if not defines(cell.source, ex.name):
                raise BuildError(f"{where}: the cell of exercise {ex_id} must define {ex.name}")
            try:
                cell.source = stub_source(cell.source, f"Exercise {ex.id}: {ex.title}")
            except BuildError as e:
                raise BuildError(f"{where}: {e}") from None
            defines(cell.source, ex.name)  # the stubbed cell must still parse
            tags = [t for t in _tags(cell) if t != "raises-exception"] + ["raises-exception"]
            cell.metadata["tags"] = tags
        if ck_id is not None:
            if ck_id in seen_check:
                raise BuildError(f"{where}: check {ck_id} is tagged twice")
            seen_check[ck_id] = i
            if ck_id not in tagged:
                raise BuildError(f"{where}: the check cell of {ck_id} has no exercise: no cell is tagged "
                                 f"exercise:{ck_id}")
            if ck_id not in seen_ex:
                raise BuildError(f"{where}: the check cell of {ck_id} must come after its exercise cell (cell "
                                 f"{tagged[ck_id] + 1})")
            called = _CHECK_CALL.findall(source)
            if cell.cell_type != "code" or called != [ck_id]:
                raise BuildError(f"{where}: the cell tagged check:{ck_id} must be a code cell whose source is "
                                 f"check({ck_id!r})" + (f", not check({called[0]!r})" if called else ""))
    registered = [e.id for e in exercises_for(lesson)]
    if not seen_ex:
        raise BuildError(f"{lesson}: no cell is tagged exercise:NN.k (the lesson registers {registered})")
    if sorted(seen_check) != sorted(seen_ex):
        raise BuildError(f"{lesson}: every exercise needs one check cell; checks found for {sorted(seen_check)}")
    # exercises left out of a teacher's release: no kept cell may use their function, which is no longer defined
    left_out = [e for e in exercises_for(lesson) if e.id not in seen_ex]
    for e in left_out:
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and _uses(cell.source, e.name):
                raise BuildError(f"{lesson}, cell {i + 1}: uses {e.name}, the answer of exercise {e.id}, which this "
                                 f"release leaves out; keep {e.id}, or leave this cell out too")
    nb.metadata["course"] = {
        "lesson": lesson,
        "exercises": sorted(seen_ex, key=lambda s: [int(p) for p in s.split(".")]),
        "generated_from": f"solutions/{lesson}.ipynb",
        "note": "Generated by `course build-exercises`; edit the solutions notebook instead.",
    }
    if left_out:
        nb.metadata["course"]["left_out"] = [e.id for e in left_out]
    nb.metadata["course"]["release"] = release_id(nb)
    return nb


def _uses(source, name: str) -> bool:
    """Whether a cell's code reads the global ``name`` (a cell that does not parse reads nothing we can see)."""
    text = source if isinstance(source, str) else "".join(source)
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return name in text
    return any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load) for n in ast.walk(tree))


def repo_folder(name: str) -> Path:
    """``solutions`` or ``exercises`` beside the installed course_lib (an editable install)."""
    import course_lib

    return Path(course_lib.__file__).resolve().parent.parent / name


def _render(solution_path: Path) -> str:
    solution = nbformat.read(solution_path, as_version=4)
    nb = build_exercise_notebook(solution, solution_path.stem)
    return nbformat.writes(nb) + "\n"


def solution_notebooks(solutions: Path) -> list[Path]:
    """The solutions notebooks of a folder: ``NN_topic.ipynb``, named after a registered lesson. Any other
    notebook there is an error that says what to do, rather than a file passed over in silence."""
    from course_lib.grading.exercise import all_exercises

    lessons = {e.lesson for e in all_exercises()}
    found, odd = [], []
    for path in sorted(Path(solutions).glob("*.ipynb")):
        (found if path.stem in lessons else odd).append(path)
    for path in odd:
        near = [stem for stem in sorted(lessons) if path.stem.startswith(stem) or stem[:2] == path.stem[:2]]
        hint = (f"a solutions notebook is named after its lesson, {near[0]}.ipynb (Jupyter's Duplicate adds "
                "-Copy1): rename it, or move the copy out of the folder") if near else (
                "a solutions notebook is named after its lesson (NN_topic.ipynb, as in the course's solutions/); "
                "rename it, or move it out of the folder")
        raise BuildError(f"{path.name} in {solutions}: {hint}")
    if not found:
        raise BuildError(f"no solutions notebooks (NN_topic.ipynb) in {solutions}")
    return found


def build_exercises(solutions: Path | None = None, exercises: Path | None = None,
                    notes: list[str] | None = None) -> list[Path]:
    """Write exercises/NN_topic.ipynb for every solutions/NN_topic.ipynb; returns those changed. Every notebook is
    built before any is written, so a notebook that fails leaves the folder as it was. The course's own release
    must hold every registered exercise; a teacher's (other folders) may leave some out, and ``notes`` receives a
    line per notebook that does."""
    own = solutions is None or Path(solutions).resolve() == repo_folder("solutions").resolve()
    solutions = Path(solutions or repo_folder("solutions"))
    exercises = Path(exercises or repo_folder("exercises"))
    rendered = [(path, _render(path)) for path in solution_notebooks(solutions)]
    for path, text in rendered:
        left_out = nbformat.reads(text, as_version=4).metadata["course"].get("left_out", [])
        if left_out and own:
            raise BuildError(f"{path.name}: no cell is tagged exercise:{left_out[0]}, which the course registers "
                             f"(every registered exercise of {path.stem}: tag its cell, or unregister it); a "
                             "teacher's copy built with --solutions may leave exercises out")
        if left_out and notes is not None:
            notes.append(f"{path.stem} leaves out {', '.join(left_out)} (registered, no cell tagged): graded "
                         "without it")
    exercises.mkdir(parents=True, exist_ok=True)
    changed = []
    for path, text in rendered:
        target = exercises / path.name
        if not target.exists() or target.read_text() != text:
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_text(text)
            tmp.replace(target)
            changed.append(target)
    return changed


def stale_exercises(solutions: Path | None = None, exercises: Path | None = None) -> list[str]:
    """Names of exercise notebooks missing or out of date with solutions/ (empty: all fresh)."""
    solutions = Path(solutions or repo_folder("solutions"))
    exercises = Path(exercises or repo_folder("exercises"))
    stale = []
    for path in solution_notebooks(solutions):
        target = exercises / path.name
        if not target.exists() or target.read_text() != _render(path):
            stale.append(path.name)
    extra = {p.name for p in exercises.glob("[0-9][0-9]_*.ipynb")} - {
        p.name for p in solutions.glob("[0-9][0-9]_*.ipynb")
    }
    return stale + sorted(f"{name} (no solutions notebook)" for name in extra)
