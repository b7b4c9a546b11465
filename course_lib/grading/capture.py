"""The grader's side of a learner's kernel: record what an answer does, judge nothing.

``course grade`` replaces each check cell of a submission with a call to :func:`capture`.
It rebuilds the exercise's cases from the grader's seed, runs the exercise's probe on the
learner's answer for each case under a time limit, and writes the observations (or the
error, or the timeout) to a file in the run's folder. The grader reads the file back and
judges it in its own process (:mod:`course_lib.grading.grade`); nothing here knows the
expected values.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["capture", "CallTimeout", "WORKDIR_VARIABLE"]

#: The kernel's starting folder, set by the grader: a relative ``out`` is resolved against it.
WORKDIR_VARIABLE = "COURSE_GRADING_WORKDIR"


class CallTimeout(BaseException):
    """Raised inside a learner's call that ran too long (a BaseException, so that a learner's
    ``except Exception`` does not swallow it)."""


#: Seconds a grading kernel waits, after raising CallTimeout, for the call to end before it ends itself.
ESCALATE_AFTER = 5.0


def _on_alarm(signum, frame):
    if os.environ.get(WORKDIR_VARIABLE):
        # in a grader's kernel: a call that swallows CallTimeout too (`while True: try: … except: continue`) would
        # hold the kernel until the worker's watchdog, and the run would lose every grade; exiting instead lets the
        # grader mark this exercise and run the rest of the notebook again without it
        signal.signal(signal.SIGALRM, _on_second_alarm)
        signal.setitimer(signal.ITIMER_REAL, ESCALATE_AFTER)
    raise CallTimeout()


def _on_second_alarm(signum, frame):
    os._exit(70)


def _run_limited(fn, limit: float):
    """fn() with a wall-clock limit (SIGALRM where this is the main thread, else no limit)."""
    use_alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not use_alarm:
        return fn()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(limit, 0.01))
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def capture(exercise_id: str, namespace: dict, seed: int, out: str, time_limit: float | None = None) -> None:
    """Record the answer ``namespace[exercise.name]`` on every case into ``out`` (.json + .npz).

    Records are ``{"case": i, "value": observation, "kind": exercise.kind_of(the value)}`` (with
    ``"changed": [names]`` when the answer modified some of the case's inputs in place, and
    ``"library_calls": [names]`` when it ran the library's own version of the exercise),
    ``{"case": i, "error": "Type: msg"}``
    or ``{"case": i, "timeout": true}``; a single ``{"undefined": name}`` when the answer is
    missing. After a timeout the remaining cases are recorded as timed out without running.
    """
    import torch

    from course_lib.grading.encode import roundtrip, save_observations
    from course_lib.grading.exercise import (
        _library_codes,
        error_text,
        get_exercise,
        inputs_digest,
        isolated,
        probe_case,
    )

    # where the grader asked, whatever folder the learner's code moved the kernel to (os.chdir)
    path = Path(out)
    if not path.is_absolute() and os.environ.get(WORKDIR_VARIABLE):
        path = Path(os.environ[WORKDIR_VARIABLE]) / path
    ex = get_exercise(exercise_id)
    limit = float(time_limit if time_limit is not None else ex.time_limit)
    records: list[dict[str, Any]] = []
    answer = namespace.get(ex.name)
    # the cases are made, and the answer called, under torch's defaults, as the grader's reference is: a learner's
    # torch.set_default_dtype(torch.float64) elsewhere in the notebook must not change the questions
    learner_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        if answer is None:
            records.append({"undefined": ex.name})
        else:
            cases = list(ex.cases(seed))
            _library_codes(ex.library_versions)  # imported now, outside the calls' time limit
            timed_out = False
            for i, case in enumerate(cases):
                if timed_out:
                    records.append({"case": i, "timeout": True})
                    continue
                case = isolated(case)  # cases may share tensors: one call must not reach another case
                digest = inputs_digest(case)  # before the call: an answer may change its inputs in place
                start = time.perf_counter()
                try:
                    value, changed, kind, called = _run_limited(
                        lambda case=case: probe_case(ex, answer, case), limit
                    )
                    # recorded now, as the grader will read it (and fail here, as the learner's error, if it cannot
                    # be): a later call must not change a returned tensor that is still one of the inputs
                    value = roundtrip(value)
                    record = {"case": i, "value": value, "kind": kind}
                    record |= {"changed": changed} if changed else {}
                    records.append(record | ({"library_calls": called} if called else {}))
                except CallTimeout:
                    timed_out = True
                    records.append({"case": i, "timeout": True})
                except (Exception, SystemExit) as e:  # the learner's code failing (exit() too) is a result
                    records.append({"case": i, "error": error_text(e)[:2000]})
                records[-1]["seconds"] = round(time.perf_counter() - start, 4)
                records[-1]["inputs"] = digest
    finally:
        torch.set_default_dtype(learner_dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_observations(path, records)
