"""Assertions shared by the per-lesson grading tests (tests/test_grading_lessonNN.py)."""

from __future__ import annotations

from course_lib.grading.exercise import get_exercise, grade_answer

#: Every known-wrong answer is graded on these seeds: a mistake must show on each of them.
SEEDS = [0, 1, 12345]


def grade_all_seeds(ex_id, answer, seeds=SEEDS):
    return [grade_answer(ex_id, answer, seed) for seed in seeds]


def assert_wrong(ex_id, answer, message, partial=None, seeds=SEEDS):
    """Not a pass on any seed, fewer points, ``message`` in the feedback; ``partial``: the status."""
    ex = get_exercise(ex_id)
    for result in grade_all_seeds(ex_id, answer, seeds):
        assert result.status != "pass", result.feedback()
        assert result.points < ex.points
        assert message in result.feedback(), result.feedback()
        if partial is not None:
            assert result.status == partial, result.feedback()
            if partial == "partial":
                assert 0 < result.points < ex.points


def assert_library_values_right_but_nothing_earned(ex_id, answer, seeds=SEEDS):
    """An answer that hands the work to the library's own version: every value check passes (the checks agree
    with the library), yet it earns nothing, is told why and is flagged for the teacher."""
    for result in grade_all_seeds(ex_id, answer, seeds):
        assert all(c.passed for c in result.checks if c.name != "written by you"), result.feedback()
        assert result.status == "fail" and result.points == 0, result.feedback()
        assert "the library's own version" in result.feedback() and result.flag


def assert_known_wrong(exercise_id, answer, message, status, seed):
    """One known-wrong answer on one seed: exactly ``status`` ("partial" keeps some points), fewer
    points than the exercise's, and both ``message`` and the exercise's hint in the feedback."""
    ex = get_exercise(exercise_id)
    result = grade_answer(ex, answer, seed)
    feedback = result.feedback()
    assert result.status == status, feedback
    assert result.points < ex.points
    if status == "partial":
        assert result.points > 0
    assert message in feedback, feedback
    assert ex.hint in feedback


def assert_right_but_changes_inputs(exercise_id, answer, names, seeds=SEEDS):
    """Right values written into the caller's tensors: every sub-check but "inputs unchanged" passes (the
    grader judged the values on what came back), the status is partial, and the feedback names ``names``."""
    ex = get_exercise(exercise_id)
    for result in grade_all_seeds(exercise_id, answer, seeds):
        failed = [c for c in result.checks if not c.passed]
        feedback = result.feedback()
        assert failed and all(c.name.startswith("inputs unchanged") for c in failed), feedback
        assert result.status == "partial" and 0 < result.points < ex.points, feedback
        assert "in place" in feedback, feedback
        for name in names:
            assert f"`{name}`" in feedback, feedback
