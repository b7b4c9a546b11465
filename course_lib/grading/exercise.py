"""What an exercise is, and how one answer is judged.

An :class:`Exercise` names the global a learner defines (a function or a class), builds the
check inputs from a seed the learner does not choose (:attr:`Exercise.cases`), observes what
an answer does on each of them (:attr:`Exercise.probe`: by default it calls the answer with the
case's arguments) and compares that observation with the reference's (:attr:`Exercise.judge`),
sub-check by sub-check, each worth some weight. The score is

    points × (weight of the sub-checks passed) / (weight of all sub-checks),

so an answer with the right shape but wrong values earns partial credit.

The same three steps run in two places:

* in a notebook, :func:`check` runs them in the learner's kernel and prints ✓ or ✗ with hints;
* in ``course grade``, the learner's kernel only runs ``probe`` on the learner's answer and
  writes the observations to disk (:mod:`course_lib.grading.capture`); the grader rebuilds the
  cases from the same seed, runs ``probe`` on the reference and ``judge`` in its own process.
  A learner's code can therefore neither see the expected values nor change the judging.

Writing an exercise (one module per lesson, ``course_lib/grading/lessonNN.py``)::

    def _cases(seed):                      # deterministic from the seed
        g = torch.Generator().manual_seed(seed)
        return [Case((torch.rand(5, generator=g) * 0.98 + 0.01,), label="random abar"),
                Case((torch.tensor([0.5]),), label="abar = 1/2 is 0 dB")]

    register(Exercise(
        id="01.1", lesson="01_noise_schedules", name="snr_db", title="write snr_db",
        reference=_snr_db, cases=_cases, points=2,
        hint="SNR = abar / (1 - abar); decibels are 10·log10 of a power ratio"))

Observations pass through :mod:`course_lib.grading.encode`: numbers, strings, booleans,
None, lists, tuples, dicts with string keys, numpy arrays and torch tensors (compared as
float64 / int64 numpy arrays on the grader's side); anything else arrives as a description
``{"__object__": type name}`` and fails a type check.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "STATUSES",
    "Case",
    "SubCheck",
    "Outcome",
    "ExerciseResult",
    "Exercise",
    "register",
    "get_exercise",
    "exercises_for",
    "all_exercises",
    "compare",
    "judge_outcomes",
    "grade_answer",
    "check",
    "probe_case",
    "inputs_digest",
]

#: Status of one exercise in one submission, from best to worst.
#: pass / partial / fail: the answer ran on every case and earned all / some / none of the
#: points; error: the exercise cell or every call raised (not NotImplementedError), or the
#: name is not defined; timeout: the cell or a call ran past its time limit; missing: the
#: submission has no cell tagged for this exercise; not_implemented: the stub is still there;
#: unreadable: the submission file could not be read as a notebook at all.
STATUSES = ("pass", "partial", "fail", "error", "timeout", "missing", "not_implemented", "unreadable")


@dataclass
class Case:
    """One check input: positional and keyword arguments, and a label for messages."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str = ""
    weight: float = 1.0


@dataclass
class SubCheck:
    """One verdict: its name (shape, dtype, values …), whether it passed, its weight, a hint."""

    name: str
    passed: bool
    weight: float = 1.0
    message: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "weight": self.weight, "message": self.message}


@dataclass
class Outcome:
    """What running the answer on one case gave: an observation, or an error / timeout."""

    value: Any = None
    error: str | None = None  # "ValueError: ..." ; "NotImplementedError: ..." ; None if it returned
    timed_out: bool = False
    changed: list[str] = field(default_factory=list)  # the case's inputs the answer modified in place
    kind: Any = None  # what came back: "Tensor", "ndarray", "list", "float" … (None: not recorded)
    library_calls: list[str] = field(default_factory=list)  # the exercise's library_versions the call ran

    @property
    def not_implemented(self) -> bool:
        return self.error is not None and self.error.startswith("NotImplementedError")


@dataclass
class ExerciseResult:
    """The grade of one exercise: status, points out of max_points, sub-checks, feedback."""

    id: str
    title: str
    status: str
    points: float
    max_points: float
    checks: list[SubCheck] = field(default_factory=list)
    hint: str = ""
    detail: str = ""
    flag: str = ""  # something a teacher should look at, whatever the score (grade.class_summary lists it)
    case_labels: list[str] = field(default_factory=list)  # to say a message once for all the cases it fits

    @property
    def symbol(self) -> str:
        return "✓" if self.status == "pass" else "✗"

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "points": self.points,
            "max_points": self.max_points,
            "hint": self.hint,
            "detail": self.detail,
            "checks": [c.to_dict() for c in self.checks],
        } | ({"flag": self.flag} if self.flag else {}) | ({"case_labels": self.case_labels} if self.case_labels else {})

    def feedback(self) -> str:
        """Human-readable lines: the verdict, then each failed sub-check's message."""
        head = f"{self.symbol} Exercise {self.id} ({self.title}): {self.status}, {self.points:g}/{self.max_points:g}"
        lines = [head]
        if self.detail:
            lines.append(f"  {self.detail}")
        # sub-checks without a message failed only because an earlier one did (no values
        # without the right shape): the first message says it all
        messages = failed_messages(self.detail, [(c.passed, c.message) for c in self.checks], self.case_labels)
        lines += [f"  - {m}" for m in messages[:8]]
        if len(messages) > 8:
            lines.append(f"  - … and {len(messages) - 8} more")
        if self.status != "pass" and self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(ln for ln in lines if ln)


def failed_messages(detail: str, checks: Sequence[tuple[bool, str]], labels: Sequence[str]) -> list[str]:
    """What the failed sub-checks say, each once, grouped across cases (:func:`group_messages`), without the
    ``detail`` line that is shown above them. ``checks``: (passed, message) pairs; a failed sub-check without a
    message failed only because an earlier one did."""
    messages = dict.fromkeys(m for passed, m in checks if not passed and m)
    return _said_once(group_messages([m for m in messages if m != detail], labels))


def _said_once(messages: list[str]) -> list[str]:
    """Each diagnosis (the text after " — ") in full the first time only; later lines that end in it say "the same
    slip": seven cases of one slip read as seven mismatches and one explanation."""
    seen: set[str] = set()
    out = []
    for m in messages:
        body, dash, why = m.partition(" — ")
        if dash and why in seen:
            m = f"{body} — the same slip as above"
        elif dash:
            seen.add(why)
        out.append(m)
    return out


def group_messages(messages: Sequence[str], labels: Sequence[str]) -> list[str]:
    """The messages, those that differ only in their case's label (" (label)") said once, with how many other cases
    they fit: a slip made on every case reads as one line, not seven, and comes first (the lines are capped, and a
    message true of every case matters more than one case's own)."""
    groups: dict[str, list[str]] = {}
    ordered = sorted({lab for lab in labels if lab}, key=len, reverse=True)  # a label inside another: longest first
    for m in messages:
        key = m
        for lab in ordered:
            key = key.replace(f" ({lab})", "")
        groups.setdefault(key, []).append(m)
    return [
        ms[0] + (f" [and {len(ms) - 1} other case{'s' if len(ms) > 2 else ''} alike]" if len(ms) > 1 else "")
        for ms in sorted(groups.values(), key=len, reverse=True)  # stable: equal sizes keep their order
    ]


def _call(obj: Any, case: Case) -> Any:
    return obj(*case.args, **case.kwargs)


@dataclass
class Exercise:
    """One graded exercise. See the module docstring for how the pieces fit.

    id: "NN.k" (lesson number, exercise number); lesson: the notebook's stem
    ("01_noise_schedules"); name: the global the learner defines; title: what to do, short
    ("write snr_db"), used in the stub's message; reference: the correct answer (same kind
    of object as the learner's); cases(seed) -> list[Case]; probe(answer, case) -> an
    encodable observation (default: answer(*case.args, **case.kwargs)); judge(case, got,
    expected) -> list[SubCheck] (default: :func:`compare` with rtol/atol); points: the
    maximum score; hint: shown on any status but pass; time_limit: seconds per call;
    input_names: what to call the case's arguments where they are not the reference's parameters
    in order (messages such as "your code changed its input `x1` in place", see :func:`probe_case`);
    judges_type: the judge checks the returned type and dtype itself (otherwise, wherever the reference
    returns a tensor, a list, an array or another dtype weighs half a case's checks, see :func:`kind_of`);
    any_float: the result is a measurement (a PSNR, a mean distance), so any floating dtype will do in place of
    the reference's: its value is judged, not the precision it was kept in (a list or an array still costs).
    library_versions: dotted names of the library's own version of what the exercise asks for
    ("course_lib.nn.dit.patchify", "course_lib.nn.blocks.ResBlock.forward"); an answer that calls one, directly or
    through anything else, earns no points and the teacher is told (see :func:`probe_case`).
    """

    id: str
    lesson: str
    name: str
    title: str
    reference: Any
    cases: Callable[[int], Sequence[Case]]
    points: float = 1.0
    probe: Callable[[Any, Case], Any] = _call
    judge: Callable[[Case, Any, Any], list[SubCheck]] | None = None
    rtol: float = 1e-4
    atol: float = 1e-6
    hint: str = ""
    time_limit: float = 10.0
    input_names: tuple[str, ...] = ()
    judges_type: bool = False
    any_float: bool = False
    library_versions: tuple[str, ...] = ()

    def judge_case(self, case: Case, got: Any, expected: Any) -> list[SubCheck]:
        if self.judge is not None:
            return list(self.judge(case, got, expected))
        return compare(got, expected, rtol=self.rtol, atol=self.atol, label=case.label)

    def expected(self, seed: int) -> tuple[list[Case], list[Any]]:
        """The cases for ``seed`` and the reference's observations on them (grader side)."""
        cases, observations, _ = self.expected_with_kinds(seed)
        return cases, observations

    def expected_with_kinds(self, seed: int) -> tuple[list[Case], list[Any], list[Any]]:
        """:meth:`expected`, and what kind of object the reference returned on each case (see :func:`kind_of`)."""
        from course_lib.grading.encode import roundtrip

        cases = list(self.cases(seed))
        values = [self.probe(self.reference, c) for c in cases]
        return cases, [roundtrip(v) for v in values], [kind_of(v) for v in values]


# ---------------------------------------------------------------------------------------------
# The registry: lesson modules call register() when imported.
# ---------------------------------------------------------------------------------------------

_REGISTRY: dict[str, Exercise] = {}
_LOADED = False


def house_rules(ex: Exercise) -> list[str]:
    """What a registered exercise breaks of the course's rules, each said as the fix (empty: none). The tests and
    ``course build-exercises`` hold every exercise to them, and name them all at once."""
    problems = []
    if not re.fullmatch(r"\d\d\.\d+", ex.id):
        problems.append(f"the id {ex.id!r} must be NN.k, the lesson's number and the exercise's (02.4)")
    elif not ex.lesson.startswith(ex.id[:3].replace(".", "_")):
        problems.append(f"the lesson {ex.lesson!r} must be the notebook's stem and start with {ex.id[:2]}_")
    if not ex.name.isidentifier():
        problems.append(f"name {ex.name!r} must be the Python name the learner defines")
    if not ex.title or not ex.hint:
        problems.append("give a title (\"write snr_db\", the stub's message) and a hint (shown until it passes)")
    if not 2 <= ex.points <= 4:
        problems.append(f"points={ex.points:g}: an exercise is worth 2 to 4 points (Exercise.points defaults to 1)")
    if not (ex.reference.__doc__ or "").strip():
        problems.append("the reference needs a docstring: the equation, the shapes and the edge cases it handles")
    try:
        n = len(list(ex.cases(0)))
    except Exception as e:  # noqa: BLE001 - said, not raised: the author sees every problem at once
        problems.append(f"cases(0) raised {type(e).__name__}: {e}")
    else:
        if not 4 <= n <= 14:
            problems.append(f"cases(seed) gives {n} cases: give 4 to 14 (enough inputs to show a slip on several, "
                            "few enough to stay quick)")
    return problems


def register(exercise: Exercise) -> Exercise:
    if exercise.id in _REGISTRY and _REGISTRY[exercise.id] is not exercise:
        raise ValueError(f"exercise {exercise.id} is registered twice")
    _REGISTRY[exercise.id] = exercise
    return exercise


def _load_lessons() -> None:
    """Import every ``course_lib.grading.lessonNN`` module so its exercises register."""
    global _LOADED
    if _LOADED:
        return
    import importlib
    import pkgutil

    import course_lib.grading as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("lesson"):
            importlib.import_module(f"course_lib.grading.{info.name}")
    _LOADED = True


def all_exercises() -> list[Exercise]:
    _load_lessons()
    return sorted(_REGISTRY.values(), key=lambda e: tuple(int(p) for p in e.id.split(".")))


def get_exercise(exercise_id: str) -> Exercise:
    _load_lessons()
    try:
        return _REGISTRY[exercise_id]
    except KeyError:
        known = ", ".join(e.id for e in all_exercises()) or "none"
        raise KeyError(f"no exercise {exercise_id!r}; known exercises: {known}") from None


def exercises_for(lesson: str) -> list[Exercise]:
    """The exercises of a lesson, by stem ("01_noise_schedules") or number ("01")."""
    number = lesson.split("_", 1)[0]
    return [e for e in all_exercises() if e.lesson == lesson or e.id.split(".")[0] == number]


# ---------------------------------------------------------------------------------------------
# Comparing observations
# ---------------------------------------------------------------------------------------------


def _kind(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return "array"
    if isinstance(x, (bool, np.bool_)):
        return "bool"
    if isinstance(x, (int, float, np.integer, np.floating)):
        return "number"
    if isinstance(x, dict):
        return "object" if "__object__" in x else "dict"
    if isinstance(x, (list, tuple)):
        return "list"
    if x is None:
        return "None"
    return type(x).__name__


def _describe(x: Any) -> str:
    k = _kind(x)
    if k == "array":
        return f"an array of shape {tuple(x.shape)}"
    if k == "object":
        return f"a {x['__object__']}"
    if k == "dict":
        return f"a dict with keys {sorted(x)}"
    if k == "list":
        return f"a sequence of length {len(x)}"
    return f"{k} {x!r}" if k in ("number", "bool") else k


def _fmt(v: float) -> str:
    """Whole numbers in full (a parameter count off by 32 must show), others to 6 figures."""
    v = float(v)
    return f"{int(v)}" if v.is_integer() and abs(v) < 1e15 else f"{v:.6g}"


def _expected_got(exp: float, got: float) -> str:
    """"expected A, got B", with more figures where 6 would show the same number twice."""
    a, b = _fmt(exp), _fmt(got)
    if a != b:
        return f"expected {a}, got {b}"
    return (f"expected {float(exp):.10g}, got {float(got):.10g} (equal to 6 figures: a step through float32 "
            "somewhere, such as torch.tensor(...) of Python floats, rounds more than the check allows)")


def compare(got: Any, expected: Any, *, rtol: float = 1e-4, atol: float = 1e-6, label: str = "") -> list[SubCheck]:
    """Sub-checks that ``got`` matches ``expected`` (both decoded observations).

    Arrays: a ``shape`` check then a ``values`` check (``np.allclose`` with rtol/atol,
    NaN never equal). Numbers: ``values``. Dicts: a ``keys`` check, then each expected key
    recursively. Lists: a ``length`` check, then element-wise. Everything else: equality.
    Messages name the case label and the path inside the observation.
    """
    where = f" ({label})" if label else ""
    return _compare(got, expected, rtol, atol, "", where)


def _compare(got, expected, rtol, atol, path, where) -> list[SubCheck]:
    name_of = (lambda s: f"{path}: {s}") if path else (lambda s: s)
    at = f" at {path}" if path else ""
    ek, gk = _kind(expected), _kind(got)
    if ek == "array" or (ek == "number" and gk == "array"):
        exp = np.asarray(expected, dtype=np.float64)
        if gk not in ("array", "number", "bool", "list"):
            return [
                SubCheck(name_of("type"), False, 1, f"expected an array{at}, got {_describe(got)}{where}"),
                SubCheck(name_of("values"), False, 2, ""),
            ]
        try:
            g = np.asarray(got, dtype=np.float64)
        except (TypeError, ValueError):
            return [SubCheck(name_of("type"), False, 1, f"could not read {_describe(got)} as numbers{at}{where}")]
        if ek == "number":
            g = g.reshape(-1) if g.size == 1 else g
            exp = exp.reshape(-1)
        shape_ok = g.shape == exp.shape
        checks = [
            SubCheck(
                name_of("shape"),
                shape_ok,
                1,
                "" if shape_ok else f"expected shape {tuple(exp.shape)}{at}, got {tuple(g.shape)}{where}",
            )
        ]
        if not shape_ok:
            return checks + [SubCheck(name_of("values"), False, 2, "")]
        close = np.isclose(g, exp, rtol=rtol, atol=atol)
        ok = bool(close.all())
        msg = ""
        if not ok:
            bad = np.argwhere(~close)
            i = tuple(int(v) for v in bad[0]) if exp.ndim else ()
            pos = f" at index {i if len(i) != 1 else i[0]}" if exp.ndim else ""
            msg = (
                f"values differ{at}{where}: {len(bad)} of {exp.size} wrong{pos}; {_expected_got(exp[i], g[i])}"
            )
        return checks + [SubCheck(name_of("values"), ok, 2, msg)]
    if ek == "number":
        if isinstance(expected, int):  # counts and indices are exact: no relative tolerance
            rtol, atol = 0.0, 0.0
        ok = gk == "number" and math.isclose(got, expected, rel_tol=rtol, abs_tol=atol)
        if gk not in ("number", "bool") and not (gk == "array" and np.size(got) == 1):
            msg = f"expected a number{at}, got {_describe(got)}{where}"
        elif not ok:
            g = float(np.asarray(got).reshape(-1)[0]) if gk == "array" else got
            ok = math.isclose(g, expected, rel_tol=rtol, abs_tol=atol)
            msg = "" if ok else f"{_expected_got(expected, g)}{at}{where}"
        else:
            msg = ""
        return [SubCheck(name_of("value"), ok, 2, msg)]
    if ek == "dict":
        if gk != "dict":
            return [SubCheck(name_of("type"), False, 1, f"expected a dict{at}, got {_describe(got)}{where}")] + [
                SubCheck(name_of(f"{k}"), False, 2, "") for k in expected
            ]
        missing = [k for k in expected if k not in got]
        checks = [
            SubCheck(
                name_of("keys"),
                not missing,
                1,
                "" if not missing else f"missing keys{at}: {missing} (expected keys {sorted(expected)}){where}",
            )
        ]
        for k in expected:
            sub = f"{path}.{k}" if path else str(k)
            if k in got:
                checks += _compare(got[k], expected[k], rtol, atol, sub, where)
            else:
                checks.append(SubCheck(f"{sub}: values", False, 2, ""))
        return checks
    if ek == "list":
        if gk not in ("list", "array") or (gk == "array" and np.ndim(got) == 0):  # a 0-d array holds no items
            return [
                SubCheck(name_of("type"), False, 1, f"expected a sequence{at}, got {_describe(got)}{where}"),
                SubCheck(name_of("values"), False, 2, ""),
            ]
        got_list = list(got)
        ok_len = len(got_list) == len(expected)
        checks = [
            SubCheck(
                name_of("length"),
                ok_len,
                1,
                "" if ok_len else f"expected {len(expected)} items{at}, got {len(got_list)}{where}",
            )
        ]
        if not ok_len:
            return checks + [SubCheck(name_of("values"), False, 2, "")]
        for i, (g, e) in enumerate(zip(got_list, expected)):
            checks += _compare(g, e, rtol, atol, f"{path}[{i}]", where)
        return checks
    ok = got == expected and gk == ek
    return [SubCheck(name_of("value"), bool(ok), 2, "" if ok else f"expected {expected!r}{at}, got {got!r}{where}")]


# ---------------------------------------------------------------------------------------------
# From outcomes to a grade
# ---------------------------------------------------------------------------------------------


#: where a notebook cell's code lives for Python: ipykernel's "/tmp/ipykernel_123/456.py" or IPython's older
#: "<ipython-input-7-…>"; frames of the learner's own cells, not of torch or the course
_CELL_FILE = re.compile(r"(ipykernel_\d+[/\\]\d+\.py$)|(^<ipython-input-)")


def error_text(e: BaseException) -> str:
    """``"Type: message"`` of the learner's error, and where in their cell it was raised, when the traceback
    passes through a notebook cell: ``… [line 4 of your cell: x = mask * scores]``. The error's own line is
    often inside torch; the last line of the learner's cell on the way there is the one to look at."""
    import linecache

    text = f"{type(e).__name__}: {e}"
    where = None
    tb = e.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if _CELL_FILE.search(filename):
            where = (tb.tb_lineno, linecache.getline(filename, tb.tb_lineno).strip())
        tb = tb.tb_next
    if where is not None and not isinstance(e, NotImplementedError):  # the stub's raise says nothing new
        line = where[1] if len(where[1]) <= 100 else where[1][:97] + "…"
        text += f" [line {where[0]} of your cell" + (f": {line}]" if line else "]")
    return text


#: sub-checks on the form of a right answer, not its values (see :func:`_kind_mismatch`, :func:`_changed_check`)
_FORM_CHECKS = ("a torch tensor", "dtype", "ints")


def judge_outcomes(exercise: Exercise, seed: int, outcomes: Sequence[Outcome]) -> ExerciseResult:
    """Grade the learner's outcomes (one per case, in order) against the reference."""
    cases, expected, ref_kinds = exercise.expected_with_kinds(seed)
    result = ExerciseResult(exercise.id, exercise.title, "fail", 0.0, float(exercise.points), hint=exercise.hint,
                            case_labels=[c.label for c in cases])
    if len(outcomes) != len(cases):
        result.status, result.detail = "error", f"expected {len(cases)} results, the run recorded {len(outcomes)}"
        return result
    if outcomes and all(o.not_implemented for o in outcomes):  # the stub; one case left unwritten is an error
        result.status, result.detail = "not_implemented", outcomes[0].error
        return result
    total = passed = 0.0
    n_errors = n_timeouts = 0
    told: set[tuple[str, str]] = set()
    for case, outcome, exp, ref_kind in zip(cases, outcomes, expected, ref_kinds):
        label = f" ({case.label})" if case.label else ""
        if outcome.timed_out or outcome.error is not None:
            # after a call runs past the limit, the capture stops calling: the later cases were never run
            not_run = outcome.timed_out and n_timeouts > 0
            n_timeouts += outcome.timed_out
            n_errors += not outcome.timed_out
            what = f"ran past {exercise.time_limit:g} s" if outcome.timed_out else f"raised {outcome.error}"
            hint = "" if outcome.timed_out else error_hint(outcome.error)
            # a failed case is worth what a complete set of sub-checks on the reference is
            weight = sum(c.weight for c in exercise.judge_case(case, exp, exp)) * case.weight
            message = f"your code {what}{label}" + (f" — {hint}" if hint else "")
            kind = "timeout" if outcome.timed_out else str(outcome.error).split(":", 1)[0]
            if hint and (kind, hint) in told:  # the same error again: one short line for all the other cases
                message = f"your code raised the same {kind} on other cases too"
            if not_run:
                message = "the other cases were not run: grading stops calling your code after one call runs too long"
            told.add((kind, hint))
            result.checks.append(SubCheck(f"runs{label}", False, weight, message))
            total += weight
            continue
        for c in exercise.judge_case(case, outcome.value, exp):
            c.weight *= case.weight
            result.checks.append(c)
            total += c.weight
            passed += c.weight if c.passed else 0.0
        if outcome.changed:  # right values bought by writing into the caller's tensors still cost a point
            result.checks.append(_changed_check(outcome.changed, label, case.weight))
            total += case.weight
        kind_check = (
            None if exercise.judges_type else _kind_check(outcome, ref_kind, case.weight / 2, exercise.any_float)
        )
        if kind_check is not None:  # a cost, not a prize: returning a tensor earns nothing by itself
            result.checks.append(kind_check)
            total += kind_check.weight
    score = exercise.points * passed / total if total else 0.0
    result.points = round(score, 2)
    if n_timeouts == len(cases):
        result.status = "timeout"
    elif n_errors + n_timeouts == len(cases):
        result.status = "error"
        result.detail = next(c.message for c in result.checks if not c.passed)
    elif passed == total:
        result.status = "pass"
    elif passed > 0:
        result.status = "partial"
    else:
        result.status = "fail"
    failed = [c for c in result.checks if not c.passed]
    if failed and all(c.name in _FORM_CHECKS or c.name.startswith("inputs unchanged") for c in failed):
        # the maths is right: a hint about the maths would send the learner looking for a slip that is not there
        result.hint = ("your values are right on every case: what costs points is the form named in the details "
                       "(what you return, its dtype, or an input written into)")
    called = sorted({name for o in outcomes for name in o.library_calls})
    if called:  # the library's answer, not the learner's: right values earn nothing
        names = ", ".join(f"`{n}`" for n in called)
        message = (
            f"your answer calls {names} (directly, or through another library function), the library's own "
            "version of what this exercise asks you to write: write it yourself (compare with the library "
            "afterwards, outside the answer)"
        )
        result.checks.insert(0, SubCheck("written by you", False, total or 1.0, message))
        result.points = 0.0
        result.status = "fail" if result.status in ("pass", "partial") else result.status
        result.detail = message
        result.flag = f"the answer calls the library's {', '.join(called)} instead of writing it"
    return result


#: What the common errors of a first attempt mean here: (a piece of the error's text, what to do).
ERROR_HINTS = (
    (
        "must match the size of tensor",
        "the shapes do not broadcast: print the shapes that meet on that line. A value per item, shape (N,), "
        "needs trailing 1s to scale an N×… tensor (.view(-1, 1, 1, 1) for N×C×H×W, .view(-1, 1) for N×D); a mask "
        "must line up with what it multiplies or fills (mask[:, None, :] repeats an N×L mask for every query row)",
    ),
    (
        "Boolean value of Tensor with more than one value is ambiguous",
        "`if`, `and`, `or` or `not` on a tensor of several values cannot decide for all of them: decide element "
        "by element with a mask, e.g. (t > 0).to(x.dtype), or torch.where",
    ),
    *(
        (
            piece,
            ".item(), float(), int() and the math module take a single number, and this tensor holds several: use "
            "torch functions (torch.sqrt, torch.log10, torch.cos …) and keep the tensor",
        )
        for piece in ("cannot be converted to Scalar", "only one element tensors can be converted")
    ),
    (
        "must be Tensor, not",
        "torch functions take tensors: for a Python number use math.sqrt, math.log …, or make it a tensor first",
    ),
    ("math domain error", "math.sqrt or math.log got a negative number or zero: check which term goes on top"),
    *(
        (piece, "an index past the end: count from 0 to len − 1 (timesteps from 0 to T − 1)")
        for piece in ("is out of bounds for dimension", "index out of range")
    ),
    *(
        (piece, "tensors of two dtypes meet here: make them one, e.g. other.to(x.dtype)")
        for piece in ("expected scalar type", "to have the same dtype", "should be the same")
    ),
    (
        "a leaf Variable that requires grad is being used in an in-place operation",
        "an input was changed in place (x += …, x.mul_(…)): build a new tensor instead, z = x + …",
    ),
    (
        "NameError",
        "the grader runs only the released notebook's own cells and the exercise cells, in order (not a cell you "
        "added): import or define everything the answer uses inside its exercise cell",
    ),
    (
        "got an unexpected keyword argument",
        "the checks pass some arguments by name, the names of the exercise's stub: keep its parameter names "
        "(and their defaults) as they are",
    ),
    (
        "StdinNotImplementedError",
        "grading has no keyboard: remove input() (and any other prompt for typing) from the exercise cell",
    ),
)


def error_hint(error: str | None) -> str:
    """What to do about an error a learner's code raised (``"Type: message"``), or '' when it is not a common one."""
    return next((hint for piece, hint in ERROR_HINTS if error and piece in error), "")


def inputs_digest(case: Case) -> str:
    """A fingerprint of a case's inputs: tensors and arrays by dtype, shape and bytes, numbers and strings by
    value, other objects by type. The learner's kernel and the grader build the cases from the same seed, so
    their digests agree unless code in the submission changed how inputs are made (``torch.set_default_dtype``,
    a patched ``torch.randn`` …); then the grade compares answers to other questions, and the teacher is told."""
    import hashlib

    import torch

    h = hashlib.sha256()

    def feed(x: Any, depth: int = 0) -> None:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            x = x.float() if x.dtype == torch.bfloat16 else x  # numpy has no bfloat16
            x = x.numpy()
        if isinstance(x, np.ndarray):
            h.update(f"{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif x is None or isinstance(x, (bool, int, float, str, np.generic)):
            h.update(repr(x).encode())
        elif depth < 4 and isinstance(x, (list, tuple)):
            h.update(f"[{len(x)}".encode())
            for v in x:
                feed(v, depth + 1)
        elif depth < 4 and isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                feed(x[k], depth + 1)
        else:
            h.update(type(x).__qualname__.encode())

    feed(list(case.args))
    feed(dict(case.kwargs))
    return h.hexdigest()[:16]


def _input_names(exercise: Exercise, case: Case) -> list[str]:
    """Names for the case's positional arguments, in messages: the exercise's ``input_names``, else
    the reference function's parameter names (probes pass the case's arguments in their order),
    else "argument k"."""
    import inspect

    n = len(case.args)
    if len(exercise.input_names) >= n:
        return list(exercise.input_names[:n])
    if callable(exercise.reference) and not isinstance(exercise.reference, type):
        try:
            params = [
                p.name
                for p in inspect.signature(exercise.reference).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            if len(params) >= n:
                return params[:n]
        except (TypeError, ValueError):
            pass
    return [f"argument {i + 1}" for i in range(n)]


def _arrays_in(name: str, x: Any, depth: int = 0) -> list[tuple[str, Any]]:
    """The tensors and numpy arrays inside an argument (lists, tuples and dicts two levels deep)."""
    import torch

    if isinstance(x, (torch.Tensor, np.ndarray)):
        return [(name, x)]
    if depth < 2 and isinstance(x, (list, tuple)):
        return [a for i, v in enumerate(x) for a in _arrays_in(f"{name}[{i}]", v, depth + 1)]
    if depth < 2 and isinstance(x, dict):
        return [a for k, v in x.items() for a in _arrays_in(f"{name}[{k!r}]", v, depth + 1)]
    return []


def _snapshot(exercise: Exercise, case: Case) -> list[tuple[str, Any, Any]]:
    """(name, the object, a copy of its values) for every tensor or array the case passes."""
    import torch

    named = list(zip(_input_names(exercise, case), case.args)) + list(case.kwargs.items())
    out = []
    for name, arg in named:
        if isinstance(arg, list) and arg and all(type(v) in (int, float, bool, str) for v in arg):
            out.append((name, arg, list(arg)))  # a list of plain values (scales, steps): sort() or append() show
            continue
        for where, x in _arrays_in(name, arg):
            copy = x.detach().clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True)
            out.append((where, x, copy))
    return out


def _same_values(now: Any, before: Any) -> bool:
    """Same shape, dtype and values, NaN equal to NaN (a list of plain values: the same items, in order)."""
    import torch

    if isinstance(before, list):
        same = len(now) == len(before) and all(a == b or (a != a and b != b) for a, b in zip(now, before))
        return isinstance(now, list) and same
    if isinstance(before, torch.Tensor):
        now = now.detach()
        if now.shape != before.shape or now.dtype != before.dtype:
            return False
        if now.is_floating_point() or now.is_complex():
            return bool(torch.equal(now.isnan(), before.isnan()) and torch.equal(now.nan_to_num(), before.nan_to_num()))
        return bool(torch.equal(now, before))
    if now.shape != before.shape or now.dtype != before.dtype:
        return False
    return bool(np.array_equal(now, before, equal_nan=now.dtype.kind in "fc"))


def isolated(case: Case) -> Case:
    """A deep copy of ``case`` (the case itself where it cannot be copied). Cases of one exercise may share
    tensors; an answer that writes into its inputs, or returns one of them and writes into it on the next call,
    must not change another case's question or an answer already recorded. Within the copy, objects shared
    between its arguments stay shared (deepcopy's memo)."""
    try:
        return copy.deepcopy(case)
    except Exception:  # a generator, a lock, an object that refuses: keep the original
        return case


def probe_case(exercise: Exercise, answer: Any, case: Case) -> tuple[Any, list[str], Any, list[str]]:
    """``exercise.probe(answer, case)``, the names of the case's inputs the call changed in place,
    what kind of object came back (:func:`kind_of`), and which of the exercise's ``library_versions``
    the call ran.

    The inputs are compared value by value before and after (the same objects: an answer that
    rebinds ``x = x + 1`` changes nothing; one that writes ``x += 1`` or ``x[0] = 0`` does). An answer
    must leave its inputs as they were, since its caller may still need them; a probe that hands
    the answer copies (where changing them is the exercise, as in an EMA update) cannot see it.

    The library's versions are seen by their code objects, with a profiler hook on every Python call
    while the probe runs: an answer that imported the function under another name, subclassed the
    library's class or reached it through another library function is caught as well as a direct call."""
    before = _snapshot(exercise, case)
    codes = _library_codes(exercise.library_versions)
    called: set[str] = set()
    if codes:
        import sys

        def on_event(frame, event, arg):
            if event == "call":
                name = codes.get(frame.f_code)
                if name is not None:
                    called.add(name)

        previous = sys.getprofile()
        sys.setprofile(on_event)
        try:
            value = exercise.probe(answer, case)
        finally:
            sys.setprofile(previous)
    else:
        value = exercise.probe(answer, case)
    changed = [name for name, x, copy in before if not _same_values(x, copy)]
    return value, changed, kind_of(value), sorted(called)


_LIBRARY_CODES: dict[tuple[str, ...], dict[Any, str]] = {}


def _library_codes(names: tuple[str, ...]) -> dict[Any, str]:
    """{code object: dotted name} for the functions (a method, a property's getter, a classmethod) that
    ``names`` point to, unwrapped from decorators such as ``torch.no_grad``."""
    if names not in _LIBRARY_CODES:
        import importlib
        import inspect

        codes: dict[Any, str] = {}
        for name in names:
            parts = name.split(".")
            for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                for attr in parts[cut:]:
                    obj = inspect.getattr_static(obj, attr)
                break
            else:
                raise ValueError(f"library_versions: cannot import {name!r}")
            obj = obj.fget if isinstance(obj, property) else obj
            obj = obj.__func__ if isinstance(obj, (classmethod, staticmethod)) else obj
            code = getattr(inspect.unwrap(obj), "__code__", None)
            if code is None:
                raise ValueError(f"library_versions: {name!r} is not a Python function or method")
            codes[code] = name
        _LIBRARY_CODES[names] = codes
    return _LIBRARY_CODES[names]


def _one_kind(value: Any) -> tuple[str, str | None]:
    import torch

    if isinstance(value, torch.Tensor):
        return "Tensor", str(value.dtype).removeprefix("torch.")
    def whole(v: Any) -> bool:  # an int, or a one-element integer tensor (it prints and indexes as one)
        if isinstance(v, torch.Tensor):
            return v.numel() == 1 and not v.is_floating_point() and not v.is_complex() and v.dtype != torch.bool
        return type(v) is int or isinstance(v, np.integer)  # numpy's ints too (a list built from an array)

    seq = "tuple" if isinstance(value, tuple) else "list"  # which of the two, for the message
    if isinstance(value, (list, tuple)) and value and all(whole(v) for v in value):
        return "int", seq  # a list of whole numbers: judged as ints
    if isinstance(value, (list, tuple)) and value and all(type(v) is float for v in value):
        return "float", seq
    return type(value).__name__, None


def kind_of(value: Any, depth: int = 0) -> Any:
    """What kind of object an answer returned: ("Tensor", its dtype) or (its type's name, None); for a
    probe's dict of observations or a short tuple (a pair, a triple), {key: that pair} for each part, a dict
    inside a dict by "outer.inner" keys (so that a list deep in a returned dict is seen too)."""
    if isinstance(value, dict):
        kinds = {}
        for k, v in value.items():
            if isinstance(v, dict) and v and depth < 2:
                inner = kind_of(v, depth + 1)
                kinds |= {f"{k}.{key}": kind for key, kind in inner.items()}
            else:
                kinds[str(k)] = _one_kind(v)
        return kinds
    if isinstance(value, (list, tuple)) and 0 < len(value) <= 8:
        if not any(isinstance(v, (dict, list, tuple)) for v in value):
            return {"__type__": _one_kind(value)} | {f"item {i}": _one_kind(v) for i, v in enumerate(value)}
    return _one_kind(value)


KIND_WORDS = {"ndarray": "a numpy array", "list": "a list", "tuple": "a tuple", "float": "a Python float"}


def _kind_check(outcome: Outcome, ref_kind: Any, weight: float, any_float: bool = False) -> SubCheck | None:
    """Where the reference returns a tensor, the answer must too, of the same dtype (observations reach the
    judge as numpy arrays, so without this a list or a float32 result would pass), or of any floating dtype
    where the reference's is floating and ``any_float``. None: nothing to say."""
    try:
        return _kind_mismatch(outcome.kind, ref_kind, weight, any_float)
    except (TypeError, ValueError, KeyError, AttributeError):  # a kind record of an odd shape: say nothing
        return None


_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _kind_mismatch(got: Any, ref_kind: Any, weight: float, any_float: bool = False) -> SubCheck | None:
    if got is None:
        return None
    if isinstance(ref_kind, dict):  # a probe's observations: each part the reference holds as a tensor
        if not isinstance(got, dict):
            return None
        parts = [(ref_kind[k], got.get(k), k) for k in ref_kind if k in got]
    else:  # a short sequence where a tensor belongs is recorded part by part: its own type is the one to judge
        parts = [(ref_kind, got.get("__type__") if isinstance(got, dict) else got, "")]
    for ref_part, part, key in parts:
        if not isinstance(ref_part, (list, tuple)) or len(ref_part) != 2:
            continue
        ref, ref_dtype = ref_part
        if ref not in ("Tensor", "int") or not isinstance(part, (list, tuple)) or len(part) != 2 or part[0] is None:
            continue
        kind, dtype = part
        if kind == "NoneType" and key and not key.startswith(("item", "__")):
            continue  # a probe's None: what it could not observe (its own checks say why), not a returned None
        what = "the result" if not key or key.startswith("__") else (key if key.startswith("item") else f"`{key}`")
        if ref == "int":
            # a float, a float tensor, a list of mixed numbers or strings where counts belong (an int tensor passes)
            float_tensor = kind == "Tensor" and str(dtype).startswith(("float", "bfloat"))
            wrong = {"float": "a float", "float64": "a float", "float32": "a float", "list": "a list of mixed types",
                     "tuple": "a tuple of mixed types", "str": "a string"}.get(kind)
            if float_tensor or wrong:
                got_words = f"a {dtype} tensor" if float_tensor else wrong
                if ref_dtype in ("list", "tuple") and kind == "float":
                    got_words = "floats"
                return SubCheck(
                    "ints",
                    False,
                    weight,
                    f"return {what} as {'ints' if ref_dtype in ('list', 'tuple') else 'an int'}, not {got_words}: "
                    "counts and sizes are whole numbers (use // rather than /, or int(…) once the value is exact)",
                )
            continue
        if kind != "Tensor":
            words = KIND_WORDS[dtype] if dtype in ("list", "tuple") else KIND_WORDS.get(kind, kind)
            # one message for every case (no label), so the feedback says it once
            return SubCheck(
                "a torch tensor",
                False,
                weight,
                f"return a torch tensor, got {words}: compute with "
                "torch and return the tensor itself (the code around it calls .shape, .to and tensor "
                "maths on it)",
            )
        if dtype != ref_dtype and not (any_float and dtype in _FLOAT_DTYPES and ref_dtype in _FLOAT_DTYPES):
            if str(ref_dtype).startswith(("int", "uint")) and dtype in _FLOAT_DTYPES:
                cause = "floor(), round() and / keep or give a float dtype: end with .long() once the value is whole"
            else:
                cause = "a .float() or .double(), or a tensor made without dtype=, changes it"
            return SubCheck(
                "dtype",
                False,
                weight,
                f"return {'an' if str(ref_dtype)[:1] in 'aeiou' else 'a'} {ref_dtype} tensor, the dtype the reference "
                f"keeps for these inputs, got {dtype} for {what}: {cause}",
            )
    return None


def _changed_check(changed: list[str], label: str, weight: float) -> SubCheck:
    what = ", ".join(f"`{n}`" for n in changed[:4]) + (" …" if len(changed) > 4 else "")
    return SubCheck(
        f"inputs unchanged{label}",
        False,
        weight,
        # no case label: the same line for every case, so the feedback says it once
        f"your code changed its input {what} in place: the caller still needs it as it was "
        "(write `x = x * a` rather than `x *= a`, or work on `x.clone()`)",
    )


def run_cases(exercise: Exercise, answer: Any, seed: int, time_limit: float | None = None) -> list[Outcome]:
    """Run ``probe`` on the learner's answer for every case; errors become outcomes. With ``time_limit``
    (seconds per call, as ``course grade`` applies it), a call that runs past it is a timeout and the later
    cases are not run."""
    from course_lib.grading.capture import CallTimeout, _run_limited
    from course_lib.grading.encode import roundtrip

    outcomes: list[Outcome] = []
    for case in exercise.cases(seed):
        if outcomes and outcomes[-1].timed_out:
            outcomes.append(Outcome(timed_out=True))
            continue
        try:
            def call(case=case):
                return probe_case(exercise, answer, isolated(case))

            value, changed, kind, called = call() if time_limit is None else _run_limited(call, time_limit)
            outcomes.append(Outcome(roundtrip(value), changed=changed, kind=kind, library_calls=called))
        except CallTimeout:
            outcomes.append(Outcome(timed_out=True))
        except (Exception, SystemExit) as e:  # the learner's code: any failure (exit() too) is a verdict
            outcomes.append(Outcome(error=error_text(e)))
    return outcomes


def grade_answer(
    exercise: Exercise | str, answer: Any, seed: int = 0, time_limit: float | None = None
) -> ExerciseResult:
    """Grade an answer in this process (tests, and :func:`check` in a notebook, which passes the exercise's
    per-call ``time_limit`` so that a slow answer gets the verdict ``course grade`` gives it)."""
    import torch

    ex = get_exercise(exercise) if isinstance(exercise, str) else exercise
    # under torch's default dtype, as `course grade` runs the answer and the reference: a notebook's
    # torch.set_default_dtype(torch.float64) must not make its check cell and the grader disagree
    learner_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        return judge_outcomes(ex, seed, run_cases(ex, answer, seed, time_limit))
    finally:
        torch.set_default_dtype(learner_dtype)


def check(exercise_id: str, answer: Any = None, seed: int | None = None) -> None:
    """The check cell after an exercise: grade ``answer`` and print ✓ or ✗ with hints.

    ``answer`` defaults to the global the exercise names, looked up in the caller's
    notebook. The seed is fresh each time, so the inputs are ones you did not choose.
    """
    import inspect
    import random

    ex = get_exercise(exercise_id)
    frame = inspect.currentframe().f_back
    notebook = frame.f_globals if frame is not None else {}
    if answer is None:
        answer = notebook.get(ex.name)
        if answer is None:
            result = ExerciseResult(
                ex.id, ex.title, "error", 0.0, float(ex.points), hint=ex.hint, detail=f"{ex.name} is not defined"
            )
            print(result.feedback())
            return
    seed = random.randrange(2**31) if seed is None else seed
    print(grade_answer(ex, answer, seed, time_limit=ex.time_limit).feedback())
    elsewhere = [
        n for n in names_from_other_cells(answer)
        if n not in _names_the_grader_runs(ex.lesson, ex.id) and not _from_an_exercise_cell(n, ex, notebook)
    ]
    if elsewhere:
        names = ", ".join(f"`{n}`" for n in elsewhere)
        print(f"  ⚠ your answer uses {names}, defined in a cell the grader does not run (it runs the released "
              "notebook's own cells and the exercise cells, in order), so there it would raise NameError. Import or "
              "define them inside this exercise's cell.")


def _from_an_exercise_cell(name: str, ex: Exercise, notebook: dict) -> bool:
    """Whether the last cell the learner ran that defines ``name`` (IPython's ``In`` history) is the cell of an
    earlier exercise of the lesson: the grader runs those cells too, before this one."""
    import symtable

    history = notebook.get("In")
    if not isinstance(history, list):
        return False
    earlier = {e.name for e in exercises_for(ex.lesson) if _order(e.id) < _order(ex.id)}
    for source in reversed(history):
        try:
            table = symtable.symtable(source, "<cell>", "exec")
            defined = _defined_names(table)
        except (SyntaxError, TypeError, ValueError):
            continue
        if name in defined:
            return bool(defined & earlier)
    return False


def _order(exercise_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in exercise_id.split("."))


def _cell_lines(answer: Any) -> list[str]:
    """The source lines of the notebook cell that defined ``answer`` (IPython keeps each cell in linecache under a
    file name of its own), or [] outside a notebook."""
    import linecache

    code = getattr(answer, "__code__", None)
    if code is None and isinstance(answer, type):  # a class: any method of its own tells the cell
        code = next((f.__code__ for f in vars(answer).values() if hasattr(f, "__code__")), None)
    name = getattr(code, "co_filename", "")
    if not name or name.endswith(".py") and "ipykernel" not in name:
        return []
    return linecache.getlines(name)


_GRADER_NAMES: dict[tuple[str, str], set[str]] = {}


def _names_the_grader_runs(lesson: str, ex_id: str) -> set[str]:
    """What the released notebook's own code cells above the exercise (the setup cell, and any other that is no
    exercise and no check) define: the grader runs those before the exercise's cell, so its answer may use them."""
    key = (lesson, ex_id)
    if key not in _GRADER_NAMES:
        import symtable

        import nbformat

        from course_lib.grading.build import check_id, exercise_id, repo_folder

        names: set[str] = set()
        try:
            nb = nbformat.read(repo_folder("exercises") / f"{lesson}.ipynb", as_version=4)
            for cell in nb.cells:
                if exercise_id(cell) == ex_id:
                    break
                if cell.cell_type == "code" and exercise_id(cell) is None and check_id(cell) is None:
                    table = symtable.symtable(cell.source, "<setup>", "exec")
                    names |= _defined_names(table)
        except (OSError, SyntaxError, ValueError):  # no released notebook here: judge by the cell alone
            pass
        _GRADER_NAMES[key] = names
    return _GRADER_NAMES[key]


def _defined_names(table: Any) -> set[str]:
    """The names a cell's top level (a ``symtable`` table) assigns, defines or imports."""
    return {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}


def names_from_other_cells(answer: Any) -> list[str]:
    """The global names that the cell defining ``answer`` reads but neither assigns, defines nor imports (nor are
    builtins): what that cell borrows from the rest of the notebook, which the grader does not run with it."""
    import builtins
    import symtable

    source = "".join(_cell_lines(answer))
    if not source:
        return []
    try:
        top = symtable.symtable(source, "<cell>", "exec")
    except SyntaxError:  # IPython magics (%time …) are not Python: say nothing
        return []
    own = _defined_names(top)
    used: set[str] = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    tables = list(top.get_children())
    while tables:
        table = tables.pop()
        tables += table.get_children()
        used |= {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
    ipython = {"__name__", "__file__", "display", "get_ipython", "In", "Out"}  # a kernel's own globals
    return sorted(used - own - set(dir(builtins)) - ipython)
