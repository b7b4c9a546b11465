"""What is true of every graded exercise and every solutions notebook, checked once for all.

Per exercise (every entry of ``all_exercises()``): the registry entry is sane, the reference
scores full marks on several seeds, the cases are deterministic for a seed and differ across
seeds, building the cases and grading leave torch's global random stream alone, and a stub that
raises NotImplementedError is "not_implemented".

Per solutions notebook (every ``solutions/NN_*.ipynb``): it is stored clean, each exercise has
one exercise cell followed by its check cell ``check("NN.k")``, no other cell uses the learner's
names, each exercise cell passes (after the setup cell, and on its own as the grader runs it),
stubbing its BEGIN/END SOLUTION block gives "not_implemented", and the build tool accepts it.

What is particular to a lesson (known-wrong answers, agreement with course_lib or diffusers,
claims about one notebook) stays in tests/test_grading_lessonNN.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from course_lib.grading.build import build_exercise_notebook, stub_source
from course_lib.grading.exercise import all_exercises, exercises_for, get_exercise, grade_answer, house_rules

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
LESSONS = [p.stem for p in SOLUTIONS]
EXERCISES = all_exercises()
EXERCISE_IDS = [e.id for e in EXERCISES]
SEEDS = [0, 1, 7, 2024, 12345, 2**31 - 1]
NOTEBOOK_SEEDS = [0, 1, 77, 99, 12345]
#: BEGIN/END SOLUTION blocks in an exercise cell: one, except where listed (03.2, 10.5: __init__ and forward)
SOLUTION_BLOCKS = {"03.2": 2, "10.5": 2}

exercise_ids = pytest.mark.parametrize("exercise_id", EXERCISE_IDS)
lessons = pytest.mark.parametrize("lesson", LESSONS)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _flat(obj) -> list:
    """A comparable, exact description of a case's arguments (tensors by dtype, shape and bytes)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        return [("tensor", str(t.dtype), tuple(t.shape), t.numpy().tobytes())]
    if isinstance(obj, np.ndarray):
        return [("array", str(obj.dtype), obj.shape, np.ascontiguousarray(obj).tobytes())]
    if isinstance(obj, torch.nn.Module):
        return [("module", type(obj).__name__), *_flat(obj.state_dict())]
    if isinstance(obj, dict):
        return [("dict", len(obj))] + [x for k in obj for x in (repr(k), *_flat(obj[k]))]
    if isinstance(obj, (list, tuple)):
        return [(type(obj).__name__, len(obj))] + [x for v in obj for x in _flat(v)]
    if obj is None or isinstance(obj, (bool, int, float, str, complex)):
        return [repr(obj)]
    return [("object", type(obj).__name__)]


def _flat_cases(cases) -> list:
    return [(c.label, c.weight, _flat(c.args), _flat(c.kwargs)) for c in cases]


def _notebook(lesson: str):
    return nbformat.read(ROOT / "solutions" / f"{lesson}.ipynb", as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _tagged(nb, prefix: str) -> dict:
    """``{"NN.k": cell}`` for the cells tagged ``prefix + "NN.k"``; each tag on exactly one cell."""
    found: dict = {}
    for cell in nb.cells:
        for tag in _tags(cell):
            if tag.startswith(prefix):
                key = tag[len(prefix) :]
                assert key not in found, f"two cells are tagged {tag}"
                found[key] = cell
    return found


def _setup_source(nb) -> str:
    first = _code_cells(nb)[0]
    assert not _tags(first), "the first code cell is the setup cell: it carries no tag"
    return first.source


def _exec(source: str, setup: str | None = None) -> dict:
    ns: dict = {"__name__": "__main__"}
    if setup is not None:
        exec(compile(setup, "<setup>", "exec"), ns)
    exec(compile(source, "<exercise>", "exec"), ns)
    return ns


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------


def test_every_lesson_with_exercises_has_a_solutions_notebook_and_back():
    assert LESSONS, "no solutions notebooks found"
    assert sorted({e.lesson for e in EXERCISES}) == LESSONS
    assert len(set(EXERCISE_IDS)) == len(EXERCISE_IDS)
    assert len({e.name for e in EXERCISES}) == len(EXERCISES)


@exercise_ids
def test_registry_entry_is_sane(exercise_id):
    ex = get_exercise(exercise_id)
    assert ex.id == exercise_id and re.fullmatch(r"\d\d\.\d+", ex.id)
    number = ex.id.split(".")[0]
    assert ex.lesson in LESSONS and ex.lesson.startswith(f"{number}_")
    assert ex in exercises_for(ex.lesson)
    assert [e.id for e in exercises_for(number)] == [e.id for e in exercises_for(ex.lesson)]
    assert not house_rules(ex), "\n".join(house_rules(ex))  # every broken rule at once, said as its fix


# ---------------------------------------------------------------------------------------------
# the references and the cases
# ---------------------------------------------------------------------------------------------


@exercise_ids
@pytest.mark.parametrize("seed", SEEDS)
def test_reference_scores_full_marks(exercise_id, seed):
    ex = get_exercise(exercise_id)
    result = grade_answer(ex, ex.reference, seed)
    assert result.status == "pass", result.feedback()
    assert result.points == ex.points


@exercise_ids
def test_cases_are_deterministic_and_depend_on_the_seed(exercise_id):
    ex = get_exercise(exercise_id)
    a, b, c = _flat_cases(ex.cases(3)), _flat_cases(ex.cases(3)), _flat_cases(ex.cases(4))
    assert a == b
    assert a != c
    assert [x.label for x in ex.cases(3)] == [x.label for x in ex.cases(3)]
    assert repr(ex.expected(3)[1]) == repr(ex.expected(3)[1])
    assert repr(ex.expected(3)[1]) != repr(ex.expected(4)[1])


@exercise_ids
def test_cases_and_grading_leave_the_global_random_stream_alone(exercise_id):
    ex = get_exercise(exercise_id)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ex.cases(5)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(0)
    grade_answer(ex, ex.reference, 5)
    assert torch.equal(torch.rand(3), expected)


@exercise_ids
def test_stub_is_not_implemented(exercise_id):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise {exercise_id}: stub")

    result = grade_answer(exercise_id, stub, 0)
    assert result.status == "not_implemented", result.feedback()
    assert result.points == 0


#: Exercises whose answer never gets the case's own float tensors, so writing into them cannot be seen:
#: no float tensors at all, a class built from sizes, or an update that is in place by design.
CANNOT_WRITE_INTO_INPUTS = {
    *("01.2", "01.3", "03.1", "03.2", "03.3", "04.2"),
    *("05.3", "08.2", "09.1", "09.3", "10.5"),
}


def _writes_into_its_inputs(reference):
    """The reference's answer, after which every float tensor it was given is scaled in place."""

    def answer(*args, **kwargs):
        out = reference(*args, **kwargs)
        out = out.clone() if isinstance(out, torch.Tensor) else out  # keep the returned values right
        for x in [*args, *kwargs.values()]:
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                with torch.no_grad():
                    x.mul_(1.5)
        return out

    return answer


def test_the_exercises_blind_to_inputs_written_into_exist():
    assert CANNOT_WRITE_INTO_INPUTS <= set(EXERCISE_IDS)


@pytest.mark.parametrize("exercise_id", [i for i in EXERCISE_IDS if i not in CANNOT_WRITE_INTO_INPUTS])
def test_an_answer_that_writes_into_its_inputs_loses_points_and_is_told(exercise_id):
    ex = get_exercise(exercise_id)
    result = grade_answer(ex, _writes_into_its_inputs(ex.reference), 3)
    flagged = [c for c in result.checks if c.name.startswith("inputs unchanged") and not c.passed]
    assert flagged, result.feedback()
    assert result.status == "partial" and result.points < ex.points, result.feedback()
    assert "in place" in result.feedback()


def test_the_graders_capture_records_inputs_written_into(tmp_path):
    """What ``course grade`` runs in the learner's kernel finds the same, and the verdict says so."""
    from course_lib.grading.capture import capture
    from course_lib.grading.encode import load_observations
    from course_lib.grading.exercise import judge_outcomes
    from course_lib.grading.grade import _outcomes

    ex = get_exercise("08.1")

    def ddim_update(abar_t, abar_prev, x_t, eps, eta, noise):
        right = ex.reference(abar_t, abar_prev, x_t, eps, eta, noise)
        return x_t.copy_(right)  # the right step, written over the caller's x_t

    out = tmp_path / "obs.json"
    capture("08.1", {"ddim_update": ddim_update}, seed=4, out=str(out))
    records = load_observations(out)
    assert all(r.get("changed") == ["x_t"] for r in records)
    result = judge_outcomes(ex, 4, _outcomes(records))
    assert result.status == "partial" and "`x_t`" in result.feedback(), result.feedback()
    clean = tmp_path / "clean.json"
    capture("08.1", {"ddim_update": ex.reference}, seed=4, out=str(clean))
    assert not any("changed" in r for r in load_observations(clean))
    assert judge_outcomes(ex, 4, _outcomes(load_observations(clean))).status == "pass"


@pytest.mark.parametrize("exercise_id", [e.id for e in EXERCISES if e.library_versions])
def test_the_library_versions_resolve_and_the_checks_own_probe_calls_none(exercise_id):
    """Every name points to a Python function, and the probe run on the reference records no call: a probe that
    used the library itself would charge every learner for it."""
    from course_lib.grading.exercise import _library_codes, isolated, probe_case

    ex = get_exercise(exercise_id)
    assert len(_library_codes(ex.library_versions)) == len(ex.library_versions)
    for case in ex.cases(5):
        assert probe_case(ex, ex.reference, isolated(case))[3] == []


def _calls_the_library(exercise_id: str):
    """Answers that hand the work to the library's own version (directly, renamed, or through another function)."""
    import course_lib.flow as flow
    from course_lib.guidance import cfg_combine as library_cfg
    from course_lib.nn.blocks import timestep_embedding
    from course_lib.nn.dit import patchify

    answers = {
        "03.1": lambda t, dim: timestep_embedding(t, dim),
        "07.1": library_cfg,  # the answer *is* the library's function
        "10.1": lambda x, p: patchify(x, p).clone(),
        "10.4": lambda velocity, x1, steps, shift=1.0: flow.euler_sample(velocity, x1, steps, shift),
    }
    return answers[exercise_id]


@pytest.mark.parametrize("exercise_id", ["03.1", "07.1", "10.1", "10.4"])
def test_an_answer_that_calls_the_librarys_own_version_earns_nothing_and_is_flagged(exercise_id):
    ex = get_exercise(exercise_id)
    result = grade_answer(ex, _calls_the_library(exercise_id), 3)
    assert result.status == "fail" and result.points == 0, result.feedback()
    assert "the library's own version" in result.feedback() and ex.library_versions[0] in result.feedback()
    assert ex.library_versions[0] in result.flag
    # the values themselves were right: only the call costs
    assert all(c.passed for c in result.checks if c.name != "written by you"), result.feedback()


def test_the_graders_capture_records_a_call_to_the_librarys_version(tmp_path):
    from course_lib.grading.capture import capture
    from course_lib.grading.encode import load_observations
    from course_lib.grading.exercise import judge_outcomes
    from course_lib.grading.grade import _outcomes

    ex = get_exercise("10.1")
    out = tmp_path / "obs.json"
    capture("10.1", {"patchify": _calls_the_library("10.1")}, seed=2, out=str(out))
    records = load_observations(out)
    assert all(r.get("library_calls") == ["course_lib.nn.dit.patchify"] for r in records)
    result = judge_outcomes(ex, 2, _outcomes(records))
    assert result.status == "fail" and "course_lib.nn.dit.patchify" in result.flag
    clean = tmp_path / "clean.json"
    capture("10.1", {"patchify": ex.reference}, seed=2, out=str(clean))
    assert not any("library_calls" in r for r in load_observations(clean))


# ---------------------------------------------------------------------------------------------
# the solutions notebooks
# ---------------------------------------------------------------------------------------------


@lessons
def test_notebook_is_stored_clean(lesson):
    nb = _notebook(lesson)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# Exercises {lesson[:2]}:")
    assert "RUNTIME" not in first.source
    for cell in _code_cells(nb):
        assert cell.outputs == [] and cell.execution_count is None


@lessons
def test_each_exercise_is_headed_by_its_id_title_and_points(lesson):
    """One heading style in every notebook, "## 02.1 Title (2 points)", before its exercise cell, with the
    registry's points (the teacher's gradebook counts those)."""
    nb = _notebook(lesson)
    exercises = _tagged(nb, "exercise:")
    for ex in exercises_for(lesson):
        heads = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(f"## {ex.id} ")]
        assert len(heads) == 1, ex.id
        first = heads[0].source.splitlines()[0]
        assert first.endswith(f" ({ex.points:g} point{'s' if ex.points != 1 else ''})"), first
        assert nb.cells.index(heads[0]) < nb.cells.index(exercises[ex.id])


@lessons
def test_notebook_has_an_exercise_and_a_check_cell_per_exercise(lesson):
    nb = _notebook(lesson)
    ids = sorted(e.id for e in exercises_for(lesson))
    exercises, checks = _tagged(nb, "exercise:"), _tagged(nb, "check:")
    assert sorted(exercises) == ids and sorted(checks) == ids
    for exercise_id in ids:
        exercise, check = exercises[exercise_id], checks[exercise_id]
        assert exercise.cell_type == "code" and check.cell_type == "code"
        assert check.source == f'check("{exercise_id}")'
        assert nb.cells.index(check) == nb.cells.index(exercise) + 1
        blocks = SOLUTION_BLOCKS.get(exercise_id, 1)
        assert exercise.source.count("### BEGIN SOLUTION") == blocks
        assert exercise.source.count("### END SOLUTION") == blocks


@lessons
def test_no_other_cell_uses_the_learners_names(lesson):
    nb = _notebook(lesson)
    names = [e.name for e in exercises_for(lesson)]
    for cell in _code_cells(nb):
        if any(t.startswith("exercise:") for t in _tags(cell)):
            continue
        for name in names:
            assert name not in cell.source, f"a cell outside the exercise cells uses {name}: {cell.source[:80]!r}"


@exercise_ids
def test_solution_cell_passes_after_the_setup_cell(exercise_id):
    ex = get_exercise(exercise_id)
    nb = _notebook(ex.lesson)
    ns = _exec(_tagged(nb, "exercise:")[exercise_id].source, _setup_source(nb))
    for seed in NOTEBOOK_SEEDS:
        result = grade_answer(exercise_id, ns[ex.name], seed)
        assert result.status == "pass", result.feedback()


@exercise_ids
def test_solution_cell_passes_on_its_own(exercise_id):
    """The grader takes only the tagged cells: each must import what it needs."""
    ex = get_exercise(exercise_id)
    ns = _exec(_tagged(_notebook(ex.lesson), "exercise:")[exercise_id].source)
    for seed in (0, 1):
        result = grade_answer(exercise_id, ns[ex.name], seed)
        assert result.status == "pass", result.feedback()


@exercise_ids
def test_stubbed_cell_is_not_implemented(exercise_id):
    ex = get_exercise(exercise_id)
    nb = _notebook(ex.lesson)
    message = f"Exercise {ex.id}: {ex.title}"
    stubbed = stub_source(_tagged(nb, "exercise:")[exercise_id].source, message)
    assert "SOLUTION" not in stubbed and "raise NotImplementedError" in stubbed
    ns = _exec(stubbed, _setup_source(nb))
    result = grade_answer(exercise_id, ns[ex.name], 0)
    assert result.status == "not_implemented", result.feedback()
    assert result.points == 0
    assert message in result.detail


@lessons
def test_the_build_tool_accepts_the_notebook(lesson):
    nb = _notebook(lesson)
    released = build_exercise_notebook(nb, lesson)
    registered = exercises_for(lesson)
    assert released.metadata["course"]["exercises"] == [e.id for e in registered]
    text = nbformat.writes(released)
    assert "BEGIN SOLUTION" not in text and "raise NotImplementedError" in text
    cells = _tagged(released, "exercise:")
    assert sorted(cells) == sorted(e.id for e in registered)
    setup = _setup_source(released)
    for ex in registered:
        cell = cells[ex.id]
        assert "SOLUTION" not in cell.source
        assert "raises-exception" in cell.metadata["tags"]
        for ns in (_exec(cell.source), _exec(cell.source, setup)):
            result = grade_answer(ex.id, ns[ex.name], 0)
            assert result.status == "not_implemented", result.feedback()


def _answer_returns_a_tensor(exercise_id) -> bool:
    """Whether the reference, as the probe calls it, returns a tensor on every case of a seed."""
    ex = get_exercise(exercise_id)
    if isinstance(ex.reference, type):
        return False
    kinds = []

    def spy(*args, **kwargs):
        out = ex.reference(*args, **kwargs)
        kinds.append(isinstance(out, torch.Tensor))
        return out

    for case in ex.cases(2):
        try:
            ex.probe(spy, case)
        except Exception:  # noqa: BLE001 - an invalid case the reference refuses
            pass
    return bool(kinds) and all(kinds)


TENSOR_EXERCISES = [i for i in EXERCISE_IDS if _answer_returns_a_tensor(i) and not get_exercise(i).judges_type]


def test_the_exercises_that_return_a_tensor_are_the_expected_ones():
    assert {"01.1", "02.1", "04.3", "04.4", "05.1", "07.1", "08.1", "09.2", "10.1"} <= set(TENSOR_EXERCISES)


@pytest.mark.parametrize("exercise_id", TENSOR_EXERCISES)
def test_a_list_an_array_or_another_dtype_in_place_of_the_tensor_costs_a_little_and_is_told(exercise_id):
    """Observations reach the judge as numpy arrays, so what came back is recorded beside them."""
    ex = get_exercise(exercise_id)
    variants = (
        (lambda out: out.detach().numpy(), "return a torch tensor, got a numpy array"),
        (lambda out: out.tolist(), "return a torch tensor, got a "),  # a list, or a Python float from a scalar
        (lambda out: out.double() if out.dtype != torch.float64 else out.float(), "the dtype the reference keeps"),
    )
    if ex.any_float:  # a measurement: another float dtype is as right (test_any_float_…), the rest still costs
        variants = variants[:2]
    for convert, words in variants:
        result = grade_answer(ex, lambda *args, c=convert, **kw: c(ex.reference(*args, **kw)), 2)
        failed = {c.name for c in result.checks if not c.passed}
        assert result.status in ("partial", "fail") and result.points < ex.points, result.feedback()
        assert words in result.feedback(), result.feedback()
        assert failed & {"a torch tensor", "dtype"}, result.feedback()
        if words.endswith("array"):
            assert result.feedback().count(words) == 1  # said once, not once per case


@pytest.mark.parametrize("exercise_id", [i for i in EXERCISE_IDS if get_exercise(i).any_float])
def test_any_float_dtype_will_do_for_a_measurement(exercise_id):
    """A PSNR or a mean distance kept in another floating dtype is as right: full points on every seed."""
    ex = get_exercise(exercise_id)

    def other_float(out):
        if isinstance(out, dict):
            return {k: other_float(v) for k, v in out.items()}
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            return out.double() if out.dtype != torch.float64 else out.float()
        return out

    for seed in (0, 1, 2):
        result = grade_answer(ex, lambda *args, **kw: other_float(ex.reference(*args, **kw)), seed)
        assert result.status == "pass", result.feedback()


def test_any_float_is_the_exception():
    """Only measurements accept any float dtype: a tensor fed onwards (x_t, x̂0, ε̃) keeps the reference's."""
    assert {e.id for e in map(get_exercise, EXERCISE_IDS) if e.any_float} == {"05.4", "07.3"}


def _error_of(fn) -> str:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the error text is what is tested
        return f"{type(e).__name__}: {e}"
    raise AssertionError("expected an error")


@pytest.mark.parametrize(
    "make_error, words",
    [
        (lambda: torch.ones(4) * torch.ones(4, 1, 3, 3), ".view(-1, 1, 1, 1) for N×C×H×W"),
        (lambda: bool(torch.tensor([1, 0]) > 0), "decide element by element"),
        (lambda: torch.ones(3).item(), "take a single number"),
        (lambda: float(torch.ones(3)), "take a single number"),
        (lambda: __import__("math").log10(torch.ones(3)), "use torch functions"),
        (lambda: torch.ones(2, requires_grad=True).add_(1), "build a new tensor instead"),
        (lambda: torch.sqrt(0.5), "use math.sqrt"),
        (lambda: __import__("math").sqrt(-1.0), "check which term goes on top"),
        (lambda: torch.ones(5)[torch.tensor([7])], "count from 0 to len − 1"),
        (lambda: [1, 2][5], "count from 0 to len − 1"),
        (lambda: torch.ones(2, 2, dtype=torch.float64) @ torch.ones(2, 2), "make them one"),
        (lambda: torch.nn.Conv2d(1, 1, 1)(torch.ones(1, 1, 2, 2, dtype=torch.float64)), "make them one"),
        (lambda: undefined_name_in_a_cell, "inside its exercise cell"),  # noqa: F821
    ],
)
def test_the_errors_of_a_first_attempt_come_with_what_to_do(make_error, words):
    """The hints match the errors this torch really raises (their texts change between versions)."""
    from course_lib.grading.exercise import error_hint

    assert words in error_hint(_error_of(make_error))


def test_an_error_on_every_case_is_explained_once():
    def x0_without_view(abar, x_t, eps, t):
        a = abar[t]  # (N,): does not broadcast against N×C×H×W
        return ((x_t - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)

    feedback = grade_answer("04.4", x0_without_view, 0).feedback()
    assert feedback.count(".view(-1, 1, 1, 1) for N×C×H×W") == 1, feedback
    assert "raised the same RuntimeError on other cases too" in feedback
    assert len(feedback.splitlines()) <= 4  # verdict, the error with its hint, "the same … too", the hint


def test_kind_records_of_any_shape_never_crash_the_judge():
    """A submission's capture file is the learner's kernel's doing: whatever its kind records hold, judging goes on."""
    from course_lib.grading.exercise import Outcome, _kind_check

    odd = [None, "x", 3, [1], ["Tensor"], ("Tensor", "float32", 1), {"a": 5}, {"a": [1, 2, 3]}, {"item 0": "Tensor"}]
    refs = [
        ("Tensor", "float64"),
        ("int", None),
        {"a": ("int", None)},
        {"item 0": ("Tensor", "float32")},
        ("dict", None),
    ]
    for got in odd:
        for ref in refs:
            result = _kind_check(Outcome(kind=got), ref, 1.0)
            assert result is None or result.passed is False


def test_whole_numbers_returned_as_floats_cost_a_little_and_are_told():
    ex = get_exercise("09.3")

    def cost_with_true_division(*args, **kwargs):
        out = dict(ex.reference(*args, **kwargs))
        out["values_per_call"] = out["values_per_call"] / 1  # a float now, the same number
        return out

    result = grade_answer(ex, cost_with_true_division, 0)
    assert result.status == "partial" and "return `values_per_call` as an int, not a float" in result.feedback()
    start = get_exercise("09.1")
    result = grade_answer(start, lambda steps, strength: tuple(float(v) for v in start.reference(steps, strength)), 0)
    assert result.status == "partial" and "as ints, not floats" in result.feedback()


def test_a_list_of_counts_returned_as_floats_is_told():
    ex = get_exercise("05.3")

    def sides_as_floats(*args, **kwargs):
        out = dict(ex.reference(*args, **kwargs))
        out["latent_side"] = [float(v) for v in out["latent_side"]]  # true division: 8.0, not 8
        return out

    result = grade_answer(ex, sides_as_floats, 0)
    assert result.status == "partial" and "return `latent_side` as ints, not floats" in result.feedback()


def test_counts_as_float_tensors_mixed_lists_or_strings_are_told_too():
    """09.3: each of these passed with full points before; an int64 tensor still does."""
    ex = get_exercise("09.3")

    def variant(change):
        def answer(*args, **kwargs):
            return change(dict(ex.reference(*args, **kwargs)))

        return answer

    wrong = [
        ("not a float32 tensor", lambda o: o | {"unet_calls": torch.tensor(float(o["unet_calls"]))}),
        ("not a list of mixed types", lambda o: o | {"latent_shape": [o["latent_shape"][0], o["latent_shape"][1] / 1,
                                                                     o["latent_shape"][2]]}),
        ("not a list of mixed types", lambda o: o | {"latent_shape": [str(v) for v in o["latent_shape"]]}),
    ]
    for words, change in wrong:
        result = grade_answer(ex, variant(change), 0)
        assert result.status == "partial" and words in result.feedback(), (words, result.feedback())
    fine = grade_answer(ex, variant(lambda o: o | {"unet_calls": torch.tensor(o["unet_calls"])}), 0)
    assert fine.status == "pass", fine.feedback()


def test_a_diagnosis_names_every_slip_that_gives_the_same_values():
    """Two slips that coincide on a case are both named, the first first; one that gives the right answer on the
    case is never named; a slip listed under two messages of the same text is said once."""
    from course_lib.grading.checks import diagnose

    right, wrong = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0])
    candidates = {"doubled": wrong, "right here": right, "added itself": wrong.clone(), "other": wrong + 1}
    both = "doubled (another slip gives the same values here: added itself)"
    assert diagnose(wrong, candidates, expected=right) == both
    assert diagnose(wrong, {"doubled": wrong}, expected=right) == "doubled"
    assert diagnose(right + 5, candidates, expected=right) == ""


def test_a_value_that_differs_beyond_6_figures_is_shown_with_more():
    """"expected -0.0143839, got -0.0143839" told a learner nothing: such pairs get 10 figures and a hint."""
    from course_lib.grading.exercise import compare

    exp = np.array([0.1, -0.014383912345])
    got = exp.astype(np.float32).astype(np.float64)  # a float32 rounding: equal to 6 figures, not to 1e-9
    msg = next(c.message for c in compare(got, exp, rtol=1e-9, atol=0.0) if not c.passed)
    assert "got 0.1000000015" in msg and "equal to 6 figures" in msg, msg
    plain = next(c.message for c in compare(exp + 1e-3, exp) if not c.passed)
    assert "equal to 6 figures" not in plain and "expected 0.1, got 0.101" in plain, plain


def test_the_check_cell_grades_under_torchs_default_dtype_as_the_grader_does():
    """A notebook that set float64 as the default must get the verdict `course grade` gives (it resets the
    default for the calls): 08.3's answer building its tensor without dtype= loses the dtype point in both."""
    ex = get_exercise("08.3")
    reference = ex.reference

    def errors_built_with_the_default_dtype(*args, **kwargs):
        out = reference(*args, **kwargs)
        return out | {"errors": torch.tensor(out["errors"].tolist())}

    plain = grade_answer("08.3", errors_built_with_the_default_dtype, 2)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        under_float64 = grade_answer("08.3", errors_built_with_the_default_dtype, 2)
        assert torch.get_default_dtype() == torch.float64  # the learner's setting is back afterwards
    finally:
        torch.set_default_dtype(previous)
    assert plain.status == "partial" and "float32" in plain.feedback(), plain.feedback()
    assert (under_float64.status, under_float64.points) == (plain.status, plain.points), under_float64.feedback()


@lessons
def test_each_exercise_notebook_names_the_library_versions_that_earn_nothing(lesson):
    """The 'How to work' cell lists, per exercise, what the grader treats as the library's own version."""
    intro = next(c.source for c in nbformat.read(ROOT / "exercises" / f"{lesson}.ipynb", as_version=4).cells
                 if "How to work" in c.source)
    for ex in exercises_for(lesson):
        for name in ex.library_versions:
            short = name.split(".")[-2] if name.endswith((".forward", ".__init__")) else name.split(".")[-1]
            assert f"{ex.id}: " in intro and f"{short}`" in intro, (ex.id, name)


def test_the_check_cell_applies_the_graders_time_limit(monkeypatch, capsys):
    """A slow answer gets the verdict `course grade` gives it (timeout), not a ✓ after a long wait."""
    import time

    from course_lib.grading.exercise import check

    reference = get_exercise("01.1").reference

    def slow(abar):
        time.sleep(0.5)
        return reference(abar)

    result = grade_answer("01.1", slow, 0, time_limit=0.1)
    assert result.status == "timeout" and result.points == 0, result.feedback()
    monkeypatch.setattr(get_exercise("01.1"), "time_limit", 0.1)
    check("01.1", slow, seed=0)
    assert "timeout" in capsys.readouterr().out
    assert grade_answer("01.1", slow, 0).status == "pass"  # tests and other callers: no limit unless asked


def _as_a_notebook_cell(source: str, number: int) -> dict:
    """Run ``source`` as IPython runs a cell: compiled under a file name of its own, its lines in linecache."""
    import linecache

    name = f"/tmp/ipykernel_0/{number}.py"
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    ns: dict = {}
    exec(compile(source, name, "exec"), ns)
    return ns


@exercise_ids
def test_the_check_finds_no_borrowed_names_in_a_solution_cell(exercise_id):
    from course_lib.grading.exercise import names_from_other_cells

    ex = get_exercise(exercise_id)
    ns = _as_a_notebook_cell(_tagged(_notebook(ex.lesson), "exercise:")[exercise_id].source, 1)
    assert names_from_other_cells(ns[ex.name]) == []


def test_the_check_names_what_an_answer_borrows_from_other_cells(capsys):
    """check() in a notebook: the grader runs the exercise cell alone, so a helper or an import from another cell is
    a NameError there; the check cell says so (before, it showed ✓ and the grade was 0)."""
    from course_lib.grading.exercise import check

    reference = get_exercise("01.1").reference
    ns = _as_a_notebook_cell("def snr_db(abar):\n    return helper(abar)\n", 2)
    ns["helper"] = reference
    check("01.1", ns["snr_db"], seed=0)
    out = capsys.readouterr().out
    assert "pass" in out and "uses `helper`" in out and "NameError" in out, out


def test_names_from_the_released_notebooks_setup_cell_are_not_borrowed(capsys):
    """The grader runs the released notebook's own cells above the exercise (the setup cell's imports), so an answer
    may use them: no warning for `torch` or `math` from lesson 01's setup cell."""
    from course_lib.grading.exercise import check

    ns = _as_a_notebook_cell("def snr_db(abar):\n    return 10 * torch.log10(abar / (1 - abar)) + 0 * math.pi\n", 3)
    ns["torch"], ns["math"] = torch, __import__("math")
    check("01.1", ns["snr_db"], seed=0)
    out = capsys.readouterr().out
    assert "pass" in out and "⚠" not in out, out


def test_names_from_an_earlier_exercise_cell_are_not_borrowed(capsys):
    """The grader runs the exercise cells in order, so 10.2 may use a helper that 10.1's cell defined; a helper from a
    cell of the learner's own is still named. Told apart by IPython's input history, `In`."""
    from course_lib.grading.exercise import check

    reference = get_exercise("10.2").reference
    exercise_cell = "def _order(p):\n    return p\n\ndef patchify(x, p):\n    return x\n"
    own_cell = "def _spare(p):\n    return p\n"
    answer = (
        "def unpatchify(tokens, p, channels, height, width):\n"
        "    return _ref(tokens, _order(_spare(p)), channels, height, width)\n"
    )
    ns = _as_a_notebook_cell(exercise_cell, 4) | _as_a_notebook_cell(own_cell, 5) | _as_a_notebook_cell(answer, 6)
    ns |= {"_ref": reference, "check": check, "In": ["", exercise_cell, own_cell, answer]}
    ns["unpatchify"].__globals__.update(ns)
    exec("check('10.2', seed=0)", ns)
    out = capsys.readouterr().out
    assert "uses `_ref`, `_spare`" in out and "_order" not in out, out


@pytest.mark.parametrize("exercise_id", ["06.1", "09.2", "10.1", "10.2", "10.3", "10.4"])
def test_an_answer_that_keeps_results_by_the_inputs_shapes_is_caught(exercise_id):
    """A cache keyed by the shapes of the tensor arguments: some case repeats an earlier one's shapes with other
    values, so the kept result is wrong there (06.1 catches it in its own second call)."""
    ex = get_exercise(exercise_id)
    kept: dict = {}

    def shape_of(a):
        return tuple(a.shape) if isinstance(a, torch.Tensor) else a if isinstance(a, (int, float, str)) else None

    def cached(*args, **kwargs):
        key = tuple(shape_of(a) for a in args) + tuple(sorted((k, shape_of(v)) for k, v in kwargs.items()))
        if key not in kept:
            kept[key] = ex.reference(*args, **kwargs)
        return kept[key]

    assert grade_answer(exercise_id, cached, 4).status != "pass"


def test_a_slip_made_on_every_case_is_said_once_with_how_many_cases_it_fits():
    from course_lib.grading.exercise import group_messages

    def imagen_convention(eps_uncond, eps_cond, scale):
        s = scale.view(-1, *[1] * (eps_cond.dim() - 1)) if isinstance(scale, torch.Tensor) else scale
        return eps_cond + s * (eps_cond - eps_uncond)

    feedback = grade_answer("07.1", imagen_convention, 0).feedback()
    assert feedback.count("this is the (1 + s) convention") == 2, feedback  # once alone, once beside another slip
    assert "other cases alike]" in feedback, feedback
    # a label that holds another label is taken out whole
    grouped = group_messages(["wrong (a, b): fix", "wrong (a): fix", "wrong (c): other"], ["a", "a, b", "c"])
    assert grouped == ["wrong (a, b): fix [and 1 other case alike]", "wrong (c): other"]


def test_an_error_names_the_line_of_the_learners_cell_it_came_from():
    """Raised inside torch, called from a notebook cell: the message points at the cell's line, not torch's."""
    import linecache

    from course_lib.grading.exercise import error_text

    source = "def f(x):\n    m = torch.ones(3)\n    return x * m\n\ndef g():\n    raise NotImplementedError('stub')\n"
    cell = "/tmp/ipykernel_4242/1234567.py"  # where ipykernel keeps a cell's code
    linecache.cache[cell] = (len(source), None, source.splitlines(True), cell)
    ns = {"torch": torch}
    exec(compile(source, cell, "exec"), ns)
    with pytest.raises(RuntimeError) as raised:
        ns["f"](torch.ones(4))
    assert error_text(raised.value).endswith("[line 3 of your cell: return x * m]"), error_text(raised.value)
    with pytest.raises(NotImplementedError) as stub:
        ns["g"]()
    assert error_text(stub.value) == "NotImplementedError: stub"  # the stub's own raise needs no pointer
    try:  # code that is not a notebook cell (a test, the library) gets no pointer
        torch.ones(2) * torch.ones(3)
    except RuntimeError as e:
        assert "your cell" not in error_text(e)


def test_house_rules_name_every_broken_rule_as_its_fix():
    """A new exercise with the defaults (1 point, 2 cases, no docstring) hears of all three at once."""
    import dataclasses

    from course_lib.grading.exercise import Case

    ex = get_exercise("02.1")
    assert house_rules(ex) == []
    bare = dataclasses.replace(ex, id="02.9", points=1.0, reference=lambda x: x,
                               cases=lambda seed: [Case((1,)), Case((2,))])
    problems = house_rules(bare)
    assert len(problems) == 3, problems
    assert "points=1: an exercise is worth 2 to 4 points" in problems[0]
    assert "the reference needs a docstring" in problems[1]
    assert "cases(seed) gives 2 cases: give 4 to 14" in problems[2]
