"""Exercises and their grading.

* :mod:`.exercise` — what an exercise is (cases, probe, judge, points) and :func:`check`,
  the ✓/✗ cell after each exercise;
* ``lessonNN`` — the exercises of each lesson, with their reference answers;
* :mod:`.build` — exercises/ generated from solutions/ (``course build-exercises``);
* :mod:`.grade`, :mod:`.worker`, :mod:`.capture` — ``course check`` and ``course grade``:
  a submission rebuilt from the released notebook, run in its own kernel, judged outside it;
* :mod:`.encode` — observations written and read back without pickles.
"""

from course_lib.grading.exercise import (
    STATUSES,
    Case,
    Exercise,
    ExerciseResult,
    SubCheck,
    all_exercises,
    check,
    compare,
    exercises_for,
    get_exercise,
    grade_answer,
    register,
)

__all__ = [
    "STATUSES",
    "Case",
    "Exercise",
    "ExerciseResult",
    "SubCheck",
    "all_exercises",
    "check",
    "compare",
    "exercises_for",
    "get_exercise",
    "grade_answer",
    "register",
]
