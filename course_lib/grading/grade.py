"""Grading submissions: rebuild from the template, run in a fresh kernel, judge outside it.

For each submission :func:`grade_submission`

1. reads the notebook (a file that is not a notebook still gets a row: ``unreadable``);
2. finds its lesson (the metadata ``build-exercises`` wrote, else its exercise tags, else
   its file name) and the released exercise notebook of that lesson, the template;
3. rebuilds it: every cell from the template, except each exercise cell, which comes from
   the submission's cell with the same tag (the last one if the learner duplicated it;
   the template's stub if they deleted it: ``missing``), and each check cell, which
   becomes a capture cell (:mod:`course_lib.grading.capture`). Deleted, reordered, edited
   or duplicated check cells therefore neither break nor fool grading;
4. runs the rebuilt notebook in its own kernel process, in a temporary folder, on the CPU
   unless told otherwise, under a wall-clock limit (:mod:`course_lib.grading.worker`);
5. judges what the capture cells recorded against the reference, in this process.

:func:`grade_many` does that for a class (``--jobs`` at a time) and writes
``gradebook.csv``, ``<submission>.json`` and ``<submission>.md`` as each one finishes, so an
interrupted run keeps every row graded so far.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from course_lib.grading.build import (
    BuildError,
    check_id,
    defined_names,
    defines_quietly,
    exercise_id,
    release_id,
    repo_folder,
)
from course_lib.grading.capture import WORKDIR_VARIABLE
from course_lib.grading.encode import load_observations
from course_lib.grading.exercise import (
    ExerciseResult,
    Outcome,
    all_exercises,
    error_hint,
    exercises_for,
    failed_messages,
    inputs_digest,
    judge_outcomes,
)

__all__ = ["GradeOptions", "grade_submission", "grade_many", "format_table", "write_gradebook"]

_LESSON_RE = re.compile(r"(?<![0-9])([0-9]{2})_[a-z]")


@dataclass
class GradeOptions:
    """How to grade. timeout: seconds for a whole submission; cell_timeout: for any one cell."""

    timeout: float = 300.0
    cell_timeout: float = 30.0
    call_timeout: float | None = None  # per call of the learner's answer (default: the exercise's)
    jobs: int = 1
    seed: int | None = None
    device: str = "cpu"
    exercises_dir: Path | None = None
    lesson: str | None = None
    keep_work: bool = False
    extra_env: dict = field(default_factory=dict)
    #: a seed per lesson, which wins over ``seed`` (a late submission gets the seed its lesson was graded with)
    lesson_seeds: dict = field(default_factory=dict)
    #: a file from another folder whose name an earlier row holds replaces that row (a resubmission), instead of
    #: getting a row of its own beside it (``name-2``)
    replace: bool = False

    def resolved_seed(self) -> int:
        if self.seed is None:
            self.seed = random.randrange(2**31)
        return self.seed


# ---------------------------------------------------------------------------------------------
# Reading and rebuilding
# ---------------------------------------------------------------------------------------------


def _templates(options: GradeOptions) -> dict[str, Path]:
    folder = Path(options.exercises_dir or repo_folder("exercises"))
    return {p.stem: p for p in sorted(folder.glob("[0-9][0-9]_*.ipynb"))}


def _code_lines(source: str) -> list[str]:
    """A cell's code for comparing answers: each line stripped, without blank lines, comments and the
    solution markers (so re-indenting or re-commenting a copy does not hide it)."""
    lines = (line.strip() for line in source.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


#: the flag on an answer that is the released solution's code
COPY_FLAG = "the answer is the released solution's code, line for line (solutions/)"
#: a released answer shorter than this (code lines between the solution markers) is not compared: two people
#: writing ``return 10 * torch.log10(snr)`` from the same formula is no sign of copying
COPY_MIN_LINES = 4


def _solution_lines(options: GradeOptions, lesson: str) -> dict[str, list[str]]:
    """exercise id → the released solution's code lines (``solutions/`` beside ``exercises/``), for the
    solutions of at least :data:`COPY_MIN_LINES` lines; {} when the solutions are not there (a course installed
    without them)."""
    folder = Path(options.exercises_dir or repo_folder("exercises")).parent / "solutions"
    try:
        nb = nbformat.read(folder / f"{lesson}.ipynb", as_version=4)
    except (OSError, ValueError):
        return {}
    out = {}
    for cell in nb.cells:
        ex_id, source = exercise_id(cell), _text(cell.source)
        body = re.search(r"### BEGIN SOLUTION(.*?)### END SOLUTION", source, re.S)
        if ex_id is not None and body and len(_code_lines(body.group(1))) >= COPY_MIN_LINES:
            out[ex_id] = _code_lines(source)
    return out


def _lesson_of(nb, path: Path, templates: dict[str, Path], default: str | None) -> str | None:
    """The lesson stem a submission belongs to, or None if nothing says: ``default`` (``--lesson``), the notebook's
    metadata, its exercise tags, its file name, and last the exercise functions its cells define (a notebook whose
    metadata and tags were stripped, saved as "Copy of notebook.ipynb"). A lesson the course registers is returned
    even where ``templates`` lacks it, so the caller can say that its release is missing."""
    lessons = {e.lesson for e in all_exercises()}
    by_number = {stem[:2]: stem for stem in sorted(lessons)} | {stem[:2]: stem for stem in templates}
    if default:
        return by_number.get(default[:2], default) if default[:2].isdigit() else default
    meta = nb.metadata.get("course", {}) if nb is not None else {}
    if isinstance(meta, dict) and isinstance(meta.get("lesson"), str) and meta["lesson"] in (lessons | set(templates)):
        return meta["lesson"]
    if nb is not None:
        numbers = {exercise_id(c).split(".")[0] for c in nb.cells if exercise_id(c)}
        if len(numbers) == 1:
            number = numbers.pop()
            if number in by_number:
                return by_number[number]
    stems = [stem for stem in by_number.values() if stem in path.name]
    if len(stems) == 1:
        return stems[0]
    numbers = {m.group(1) for m in _LESSON_RE.finditer(path.name)} & set(by_number)
    if len(numbers) == 1:
        return by_number[numbers.pop()]
    return _lesson_by_functions(nb, set(by_number.values())) if nb is not None else None


def _lesson_by_functions(nb, lessons: set[str]) -> str | None:
    """The one lesson whose exercise functions the notebook's code cells define the most of (None on a tie)."""
    defined: set[str] = set()
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            try:
                defined |= defined_names(_text(cell.get("source")))
            except BuildError:
                continue
    counts = {lesson: len({e.name for e in exercises_for(lesson)} & defined) for lesson in lessons}
    best = max(counts.values(), default=0)
    winners = [lesson for lesson, n in counts.items() if n == best]
    return winners[0] if best and len(winners) == 1 else None


def _text(source) -> str:
    return source if isinstance(source, str) else "".join(source) if isinstance(source, list) else ""


#: Code that reaches for the answer key: the grader's references live in course_lib.grading.
# what reaches the grader's references (importing `check`, as every exercise notebook's setup cell does, does not)
_ANSWER_KEY = re.compile(
    r"course_lib\.grading\.(?!exercise import check\b)|course_lib\.grading import (?!check\b)"
    r"|\bget_exercise\b|\ball_exercises\b|\bexercises_for\b|\.reference\b|_REGISTRY"
)


def _learner_cell(ex_id: str, stub: str, submission, template_sources: set[str]) -> tuple[Any, str, bool]:
    """The submission's cell that answers exercise ``ex_id``: (cell or None, a note for the learner, whether it was
    found without its tag). Preference: the last tagged code cell changed from the stub (a stub pasted again
    below an answer must not win), then the last tagged cell of another type (turned into Markdown by mistake:
    graded as code), then, with the tags lost, the last untagged code cell that defines the exercise's name."""
    from course_lib.grading.exercise import get_exercise

    tagged = [c for c in submission.cells if exercise_id(c) == ex_id]
    code = [c for c in tagged if c.get("cell_type") == "code"]
    name = get_exercise(ex_id).name
    defining = [
        c for c in submission.cells
        if c.get("cell_type") == "code" and exercise_id(c) is None and check_id(c) is None
        and _text(c.get("source")).strip() not in template_sources and defines_quietly(_text(c.get("source")), name)
    ]
    if code:
        answered = [c for c in code if _text(c.get("source")).strip() != stub.strip()]
        if not answered and any(_text(c.get("source")).strip() != stub.strip() for c in defining):
            # the stub left in its tagged cell and the answer written in a new cell (the notebook's check passes)
            return defining[-1], (f"the cell tagged exercise:{ex_id} still holds the stub; the cell of yours that "
                                  f"defines {name} was graded instead. Write the answer in the tagged cell"), True
        note = ""
        if len(code) > 1:
            which = "the last one changed from the stub" if answered else "the last one"
            note = f"{len(code)} cells are tagged exercise:{ex_id}; {which} was graded"
        return (answered or code)[-1], note, False
    if tagged:
        kind = tagged[-1].get("cell_type", "another kind of")
        return tagged[-1], (f"the cell tagged exercise:{ex_id} is a {kind} cell; it was graded as code: change "
                            "it back to a code cell"), False
    if defining:
        # the untouched stub, untagged, is graded (not_implemented) but is no answer for the teacher to look at
        is_stub = _text(defining[-1].get("source")).strip() == stub.strip()
        return defining[-1], (f"no cell is tagged exercise:{ex_id}; the cell that defines {name} was graded "
                              "instead. Keep the exercise cells' tags (in Jupyter: the cell's property "
                              "inspector, Tags) so that each answer is found"), not is_stub
    return None, "", False


def rebuild(
    template, submission, seed: int, token: str, call_timeout: float | None = None,
    solutions: dict[str, list[str]] | None = None,
) -> tuple[Any, dict]:
    """The notebook to run, and the plan: which cell is which exercise and capture. ``solutions``: each exercise's
    released solution as code lines, to flag an answer that is a copy of it."""
    nb = nbformat.v4.new_notebook(metadata=template.metadata)
    template_sources = {_text(c.source).strip() for c in template.cells if exercise_id(c) is None}
    plan: dict[str, Any] = {"exercise_cells": {}, "captures": {}, "missing": [], "notes": {}, "flags": {},
                            "released": [exercise_id(c) for c in template.cells if exercise_id(c) is not None]}
    for cell in template.cells:
        ex_id, ck_id = exercise_id(cell), check_id(cell)
        index = len(nb.cells)
        if ex_id is not None:
            mine, note, untagged = _learner_cell(ex_id, _text(cell.source), submission, template_sources)
            if mine is None:
                plan["missing"].append(ex_id)
                source = _text(cell.source)
            else:
                source = _text(mine.get("source"))
                if note:
                    plan["notes"][ex_id] = note
                flags = [f"answer found in an untagged cell ({note.split(';')[0]})"] if untagged else []
                if _ANSWER_KEY.search(source):
                    flags.append("the exercise cell uses course_lib.grading, where the grader's reference answers live")
                released = (solutions or {}).get(ex_id)
                if released and _code_lines(source) == released:
                    flags.append(COPY_FLAG)
                if flags:
                    plan["flags"][ex_id] = "; ".join(flags)
            nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": [f"exercise:{ex_id}"]}))
            plan["exercise_cells"][ex_id] = index
        elif ck_id is not None:
            stem = f"{ck_id}-{token}"
            src = (
                "from course_lib.grading.capture import capture as _course_capture\n"
                f"_course_capture({ck_id!r}, globals(), seed={seed}, out='.grading/{stem}.json', "
                f"time_limit={call_timeout!r})"
            )
            nb.cells.append(nbformat.v4.new_code_cell(src, metadata={"tags": [f"check:{ck_id}"]}))
            plan["captures"][ck_id] = {"index": index, "stem": stem}
        elif cell.cell_type == "code":
            nb.cells.append(nbformat.v4.new_code_cell(cell.source, metadata=dict(cell.metadata)))
        else:
            nb.cells.append(nbformat.v4.new_markdown_cell(cell.source))
    return nb, plan


# ---------------------------------------------------------------------------------------------
# Running and judging one submission
# ---------------------------------------------------------------------------------------------


def _kernel_env(options: GradeOptions) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"COURSE_QUICK": "1", "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    threads = str(max(1, (os.cpu_count() or 1) // max(1, options.jobs)))
    env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    if options.device == "cpu":
        env.update({"CUDA_VISIBLE_DEVICES": "", "COURSE_DEVICE": "cpu"})
    else:
        env["COURSE_DEVICE"] = options.device
    env.update({k: str(v) for k, v in options.extra_env.items()})
    return env


def platform_problem(os_name: str = os.name) -> str | None:
    """Why grading cannot run on this system, or None. The worker is watched through a pipe with ``select`` and
    stopped with its process group (``os.killpg``): POSIX only. The check cells inside a notebook do not need
    either, so a learner on Windows still gets them."""
    if os_name == "posix":
        return None
    return ("grading runs each notebook in a worker process that needs a POSIX system (Linux, macOS, or WSL on "
            "Windows); the check cells inside your notebook work here as they are")


class Worker:
    """A ``course_lib.grading.worker --serve`` process: runs one job at a time, restarts if lost."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile(mode="w+")

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "course_lib.grading.worker", "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.log,
                text=True,
                start_new_session=True,
            )
        return self.proc

    def _log_tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        lines = [ln for ln in self.log.read().splitlines() if ln.strip()]
        self.log.seek(0, 2)
        return lines[-1][:300] if lines else ""

    def run(self, job_path: Path, limit: float) -> tuple[str, str]:
        """("done" | "failed" | "stopped" | "crashed", message) for one job."""
        import select

        proc = self._start()
        proc.stdin.write(f"{job_path}\n")
        proc.stdin.flush()
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            ready = select.select([proc.stdout], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                self.stop()
                return "stopped", f"the run was stopped after {limit:g} s"
            line = proc.stdout.readline()
            if not line:  # the worker died
                self.stop()
                return "crashed", self._log_tail()
            word, _, rest = line.strip().partition(" ")
            if rest.split(" ", 1)[0] != str(job_path):
                continue
            return word, rest.partition(" ")[2]

    def stop(self) -> None:
        if self.proc is not None:
            import signal

            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.stop()
        self.proc = None
        self.log.close()


def _run(nb, plan: dict, options: GradeOptions, work: Path, worker: Worker) -> tuple[list[dict], str]:
    """Execute the rebuilt notebook through ``worker``; returns its cell log and a run note."""
    kernel_dir, vault = work / "kernel", work / "vault"
    kernel_dir.mkdir()
    vault.mkdir()
    nb_path = work / "rebuilt.ipynb"
    nbformat.write(nb, nb_path)
    job = {
        "notebook": str(nb_path),
        "workdir": str(kernel_dir),
        "vault": str(vault),
        "log": str(work / "cells.jsonl"),
        "timeout": options.timeout,
        "cell_timeout": options.cell_timeout,
        "captures": {str(c["index"]): c["stem"] for c in plan["captures"].values()},
        "learner_cells": sorted(plan["exercise_cells"].values()),
        "env": _kernel_env(options) | {WORKDIR_VARIABLE: str(kernel_dir)},
    }
    (work / "job.json").write_text(json.dumps(job))
    # the worker enforces the limit cell by cell and kills a kernel that ignores interrupts;
    # this backstop also allows for starting and stopping the kernel
    outcome, message = worker.run(work / "job.json", options.timeout + 90)
    log = []
    log_path = work / "cells.jsonl"
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            try:
                log.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    died = any(r.get("status") == "dead" for r in log)
    if outcome in ("failed", "crashed") and not died:
        raise RuntimeError(f"the grader's worker failed: {message}")  # not the submission's doing
    return log, (message if outcome == "stopped" else "")


_UNREADABLE = ("SyntaxError", "IndentationError", "TabError")


def _error_text(ename, evalue) -> str:
    """``ename: evalue``, where a syntax error's "(8840.py, line 14)", the kernel's name for the cell, becomes
    "(line 14 of the exercise cell)", which a learner can find."""
    text = str(evalue or "")
    if ename in _UNREADABLE:
        text = re.sub(r"\s*\((?:[^()]*?\.py|<[^<>]*>), line (\d+)\)", r" (line \1 of the exercise cell)", text)
    return f"{ename}: {text}"


def _judge(lesson: str, plan: dict, log: list[dict], vault: Path, seed: int, run_note: str) -> list[ExerciseResult]:
    by_index = {r["index"]: r for r in log if "index" in r}
    died = any(r.get("status") == "dead" for r in log)
    # a kernel killed after ignoring the interrupt at the time limit: the cells after it never ran
    cell_of = {i: ex_id for ex_id, i in plan["exercise_cells"].items()}
    last = max(by_index, default=None)
    killed_in = cell_of.get(last) if last is not None and by_index[last].get("status") == "timeout" else None
    results = []
    for ex in exercises_for(lesson):
        if ex.id not in plan["released"]:
            continue  # left out of this release
        res = ExerciseResult(ex.id, ex.title, "error", 0.0, float(ex.points), hint=ex.hint)
        results.append(res)
        if ex.id in plan["missing"]:
            res.status = "missing"
            res.detail = (
                f"no cell is tagged exercise:{ex.id}. If you wrote your answer in a new cell, put it back "
                "into the exercise's own cell (or give the new cell that tag)"
            )
            continue
        cell_log = by_index.get(plan["exercise_cells"].get(ex.id), {})
        cap = plan["captures"].get(ex.id)
        cap_log = by_index.get(cap["index"], {}) if cap else {}
        path = vault / f"{cap['stem']}.json" if cap else None
        cell_error = None
        if cell_log.get("status") == "error":
            cell_error = _error_text(cell_log.get("ename"), cell_log.get("evalue"))
            what_to_do = error_hint(cell_error)  # input(), a NameError …: the same advice as for an answer's call
            cell_error += f" — {what_to_do}" if what_to_do else ""
        records = None
        if path is not None and path.exists():
            try:
                records = load_observations(path)
            except Exception as e:  # a damaged capture is the run's fault, not a crash
                res.detail = f"could not read the recorded results ({type(e).__name__})"
        if cell_log.get("status") == "dead":
            res.status = "error"
            res.detail = (
                "the kernel died while running this exercise's cell (did your code call exit(), crash Python, or "
                "ignore the time limit, as a bare `except:` inside a loop does?); any exercises after it were run "
                "again without this cell"
            )
        elif records and "undefined" not in records[0]:
            outcomes = _outcomes(records)
            judged = judge_outcomes(ex, seed, outcomes)
            res.__dict__.update(judged.__dict__)
            differ = _inputs_differ(ex, seed, records)
            if differ:
                res.flag = (res.flag + "; " if res.flag else "") + (
                    f"the check's inputs in this notebook's kernel differed from the grader's on {differ}: code in "
                    "the notebook changed how torch makes them (a patched torch function, a changed default?), so "
                    "the answer was judged on other inputs than the reference"
                )
            if cell_error and res.status != "not_implemented":
                res.detail = (res.detail + "; " if res.detail else "") + f"the exercise cell raised {cell_error}"
            elif cell_log.get("status") == "timeout" and res.status != "not_implemented":
                # the answer was defined before the cell hung (a test loop after the def): it was graded as it
                # stood, and the learner should still hear that the cell never finished
                res.detail = (res.detail + "; " if res.detail else "") + (
                    f"the exercise cell ran past its time limit after defining {ex.name} and was stopped there; "
                    f"{ex.name} was graded as defined at that point (move slow tests out of the exercise cell)"
                )
        elif cell_log.get("status") == "timeout" or cap_log.get("status") == "timeout":
            res.status = "timeout"
            res.detail = (
                "your code ran past the time limit and was interrupted"
                + (f" before the cell defined {ex.name} (a loop or slow code at the cell's top level, outside the "
                   "function?)" if cell_log.get("status") == "timeout" else " (a call of your function)")
            )
        elif cell_error and cell_log.get("ename") == "NotImplementedError":
            res.status, res.detail = "not_implemented", cell_error
        elif cell_error:
            res.status, res.detail = "error", f"the exercise cell raised {cell_error}"
            if cell_log.get("ename") in _UNREADABLE:  # the maths hint cannot help before the cell runs at all
                res.hint = "Python could not read the cell: fix the line the error names, then run it and its check"
        elif records and "undefined" in records[0]:
            res.status, res.detail = "error", f"the exercise cell ran but did not define {ex.name}"
        elif cap_log.get("status") == "error":
            res.status = "error"
            res.detail = f"checking raised {cap_log.get('ename')}: {cap_log.get('evalue')}"
        elif cap_log.get("status") == "skipped" or cell_log.get("status") == "skipped":
            res.status = "timeout"
            res.detail = "the notebook ran out of time before this exercise"
        elif killed_in is not None and not cell_log and plan["exercise_cells"].get(ex.id, -1) > last:
            res.status = "timeout"
            res.detail = (
                f"not run: the time limit ran out in exercise {killed_in}'s cell, whose code did not stop when "
                "interrupted, so the grader had to end the run there"
            )
        elif died:
            res.status, res.detail = "error", "the kernel died (did your code exit or crash Python?)"
        else:
            res.status, res.detail = "error", run_note or "no result was recorded for this exercise"
        if ex.id in plan["notes"]:
            res.detail = (res.detail + "; " if res.detail else "") + plan["notes"][ex.id]
        if ex.id in plan.get("flags", {}):
            res.flag = "; ".join(f for f in (plan["flags"][ex.id], res.flag) if f)
    return results


def _is_script(path: Path) -> bool:
    """Whether the file is Python source rather than a notebook (``.py``, or jupytext's header)."""
    if path.suffix == ".py":
        return True
    try:
        head = path.read_bytes()[:200].decode("utf-8", "replace")
    except OSError:
        return False
    return head.startswith("# ---") and "jupyter" in head or head.startswith("# %%")


def _release_note(submission, template, options: GradeOptions) -> tuple[str, str] | None:
    """(for the learner, for the teacher) where the submission was made from another release of the lesson than
    the one it is graded against, as the fingerprint :func:`~course_lib.grading.build.release_id` stamped by
    ``course build-exercises`` says; None where they agree or the submission's metadata lost it."""
    mine = submission.metadata.get("course", {})
    theirs = template.metadata.get("course", {})
    if not isinstance(mine, dict) or not isinstance(theirs, dict):
        return None
    ours, released = mine.get("release"), theirs.get("release") or release_id(template)
    if not isinstance(ours, str) or ours == released:
        return None
    where = f"the release in {options.exercises_dir}" if options.exercises_dir else "the course's own exercises/"
    return (
        f"this notebook was made from another release of the lesson's exercises than the one it was checked "
        f"against ({where}): its other cells differ. Your answers are graded all the same; if the course was "
        "updated since you copied the notebook, nothing needs doing, and if your teacher handed out their own "
        "version, check against that one (`course check --exercises FOLDER`)",
        "made from another release than the one it was graded against: was --exercises forgotten, or did the "
        "release change after it was handed out? A cell the release lacks is not run",
    )


def _inputs_differ(ex, seed: int, records: list[dict]) -> str:
    """'' when every recorded case was built from the same inputs as the grader's, else which cases were not."""
    cases = list(ex.cases(seed))
    bad = [
        r["case"] for r in records
        if isinstance(r.get("case"), int) and 0 <= r["case"] < len(cases) and "inputs" in r
        and r["inputs"] != inputs_digest(cases[r["case"]])
    ]
    if not bad:
        return ""
    return f"{len(bad)} of {len(cases)} cases" if len(bad) > 1 else f"case {bad[0] + 1} of {len(cases)}"


def _outcomes(records: list[dict]) -> list[Outcome]:
    outcomes = []
    for r in records:
        if r.get("timeout"):
            outcomes.append(Outcome(timed_out=True))
        elif r.get("error") is not None:
            outcomes.append(Outcome(error=str(r["error"])))
        else:
            changed = r.get("changed")
            changed = [str(n) for n in changed] if isinstance(changed, list) else []
            called = r.get("library_calls")
            called = [str(n) for n in called] if isinstance(called, list) else []
            outcomes.append(Outcome(value=r.get("value"), changed=changed, kind=r.get("kind"), library_calls=called))
    return outcomes


def grade_submission(
    path: Path, options: GradeOptions, name: str | None = None, worker: Worker | None = None
) -> dict[str, Any]:
    """Grade one notebook; never raises for anything the submission contains."""
    if worker is None:
        worker = Worker()
        try:
            return grade_submission(path, options, name, worker)
        finally:
            worker.close()
    path = Path(path)
    seed = options.resolved_seed()
    row: dict[str, Any] = {
        "submission": name or path.stem,
        "file": os.path.abspath(path),  # absolute: a later run from another directory reads the same folders
        "lesson": None,
        "status": "graded",
        "seed": seed,
        "seconds": 0.0,
        "exercises": [],
        "total": 0.0,
        "max_total": 0.0,
        "notes": [],  # for the learner and the teacher
        "teacher_notes": [],  # for the teacher only: in the gradebook, not in the learner's .md
    }
    start = time.perf_counter()
    templates = _templates(options)
    try:
        submission = nbformat.read(path, as_version=4)
        if not isinstance(submission.get("cells"), list):
            raise ValueError("no cells")
    except Exception as e:  # anything that is not a readable notebook
        submission = None
        row["status"] = "unreadable"
        first = (str(e).splitlines() or [""])[0][:120]
        empty = path.exists() and path.stat().st_size == 0
        row["notes"].append(
            ("not a readable notebook: the file is empty (0 bytes). " if empty else
             "not a readable notebook: the file is not valid notebook JSON (truncated, corrupt, or another kind of "
             f"file; {type(e).__name__}: {first}). ")
            + ("It looks like a Python script (a jupytext .py?): open it in Jupyter and save it as a notebook "
               "(.ipynb)." if _is_script(path) else
               "Save it again from Jupyter (File → Download) and hand it in again.")
        )
    lesson = _lesson_of(submission, path, templates, options.lesson)
    row["lesson"] = lesson
    if lesson in options.lesson_seeds:
        seed = row["seed"] = int(options.lesson_seeds[lesson])
    if lesson is None or lesson not in templates:
        if lesson is None:
            row["notes"].append("the grader could not tell which lesson this notebook is for; your teacher will "
                                "look at it")
            row["teacher_notes"].append("grade it again with --lesson NN")
        else:
            folder = Path(options.exercises_dir or repo_folder("exercises"))
            row["notes"].append(f"no released exercise notebook for lesson {lesson} in {folder}")
        if row["status"] != "unreadable":
            row["status"] = "grader_error" if lesson is not None else "unreadable"
        row["seconds"] = round(time.perf_counter() - start, 2)
        return row
    if options.exercises_dir:
        row["exercises_dir"] = str(options.exercises_dir)  # the feedback's `course check` names it
    try:
        template = nbformat.read(templates[lesson], as_version=4)
    except Exception as e:
        row["status"] = "grader_error"
        row["notes"].append(f"the released notebook {templates[lesson]} could not be read ({type(e).__name__}: "
                            f"{str(e)[:200]})")
        row["seconds"] = round(time.perf_counter() - start, 2)
        return row
    released = {exercise_id(c) for c in template.cells} - {None}
    if submission is not None:
        extra = sorted({exercise_id(c) for c in submission.cells} - {None} - released)
        if extra:  # an author's new exercise, or a notebook of a fuller release than the one it is checked against
            row["notes"].append(f"cells tagged {', '.join('exercise:' + e for e in extra)} are not in the release "
                                f"this notebook is checked against ({templates[lesson]}): not graded")
    # a teacher's release may leave exercises out: only those it holds are graded and counted
    exercises = [e for e in exercises_for(lesson) if e.id in released]
    row["max_total"] = float(sum(e.points for e in exercises))
    if submission is not None:
        note = _release_note(submission, template, options)
        if note:
            row["notes"].append(note[0])
            row["teacher_notes"].append(note[1])
            row["other_release"] = True  # for the summary and the "to look at" column
    if submission is None:
        row["exercises"] = [
            ExerciseResult(
                e.id, e.title, "unreadable", 0.0, float(e.points), detail="the file could not be read (see the note)"
            ).to_dict()
            for e in exercises
        ]
        row["seconds"] = round(time.perf_counter() - start, 2)
        return row
    work = Path(tempfile.mkdtemp(prefix="course-grade-"))
    try:
        nb, plan = rebuild(template, submission, seed, secrets.token_hex(8), options.call_timeout,
                           _solution_lines(options, lesson))
        log, note = _run(nb, plan, options, work, worker)
        vault = work / "vault"
        # an exercise cell that kills the kernel (exit(), a crash) ends the run: run it again without that cell,
        # so the exercises after it are still graded
        # (the kernel may die in the exercise's cell or in its check, which calls the learner's code)
        culprit = {i: i for i in plan["exercise_cells"].values()}
        cells = plan["exercise_cells"]
        culprit |= {cap["index"]: cells[ex] for ex, cap in plan["captures"].items() if ex in cells}
        handled: dict[int, dict] = {}
        while True:
            dead = [r for r in log if r.get("status") == "dead" and culprit.get(r.get("index")) not in (None, *handled)]
            if not dead:
                break
            cell = culprit[dead[0]["index"]]
            handled[cell] = {"index": cell, "status": "dead"}
            for i in handled:
                nb.cells[i].source = "raise RuntimeError('not run again: this cell stopped the kernel')"
            again = work / f"again-{len(handled)}"
            again.mkdir()
            log, note = _run(nb, plan, options, again, worker)
            log = [r for r in log if r.get("index") not in handled] + list(handled.values())
            vault = again / "vault"
        if note:
            row["notes"].append(note)
        learner = set(plan["exercise_cells"].values()) | {c["index"] for c in plan["captures"].values()}
        for r in log:
            if r.get("index") not in learner and r.get("status") in ("error", "timeout"):
                row["notes"].append(
                    f"the released notebook's cell {r['index'] + 1} failed ({r.get('ename') or r['status']}: "
                    f"{(r.get('evalue') or '')[:200]}); results after it may suffer"
                )
        results = _judge(lesson, plan, log, vault, seed, note)
        row["exercises"] = [r.to_dict() for r in results]
        row["total"] = round(sum(r.points for r in results), 2)
    except Exception as e:  # a fault of the grader itself: keep the row, say so, exit non-zero later
        row["status"] = "grader_error"
        row["notes"].append(f"grader error: {type(e).__name__}: {e}")
        row["traceback"] = traceback.format_exc()
    finally:
        if options.keep_work:
            row["work"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


# ---------------------------------------------------------------------------------------------
# A class: many submissions, the gradebook
# ---------------------------------------------------------------------------------------------


_LESSON_STEM = re.compile(r"\d\d_")  # the exercise files' names: 02_forward_noising, …


def _names(paths: list[Path], taken: set[str] | None = None) -> list[str]:
    """One distinct, file-safe name per submission: its path below the folder common to all of them, folders
    joined by "__" (``alice/02_x.ipynb`` → ``alice__02_x``; a flat folder gives the stems), -2, -3 … where two
    still collide or a name is already ``taken`` (rows of an earlier run kept in the gradebook). A bare lesson
    file name (``02_x``) says nothing about who handed it in, so it keeps its folder's name: grading
    ``late/dave/02_x.ipynb`` alone gives ``dave__02_x``, as it would have in the class's run."""
    resolved = [Path(p).resolve() for p in paths]
    common = Path(os.path.commonpath([str(r.parent) for r in resolved])) if resolved else Path()
    names, used = [], set(taken or ())
    for r in resolved:
        rel = r.relative_to(common)
        at = rel.name.lower().find(".ipynb")  # "x.ipynb", but also "x.ipynb.txt", "x.ipynb (1)"
        stem = rel.name[:at] if at > 0 else rel.stem
        folders = list(rel.parts[:-1]) or ([r.parent.name] if _LESSON_STEM.match(stem) and r.parent.name else [])
        # Moodle's folder "Alice Smith_4242_assignsubmission_file_" → "Alice Smith_4242" (the id tells two apart)
        folders = [f"{m.group('student')}_{m.group('user')}" if (m := _MOODLE_FOLDER.match(f)) else f for f in folders]
        raw = "__".join([*folders, stem])
        # letters of any script stay (zoë and zoé are two students); only what a file name cannot hold goes
        base = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFC", raw)).strip("._") or "submission"
        name, k = base, 2
        while name in used or name == "gradebook":
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        names.append(name)
    return names


def earlier_rows(out: Path) -> list[dict]:
    """The rows an earlier ``course grade --out out`` wrote (``out/<submission>.json``), so that grading a late
    submission into the same folder adds it to the gradebook instead of replacing the gradebook."""
    rows = []
    for path in sorted(Path(out).glob("*.json")) if Path(out).is_dir() else []:
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(row, dict) and isinstance(row.get("submission"), str) and "exercises" in row:
            rows.append(row)
    return rows


def _exercise_ids(rows: list[dict]) -> list[str]:
    ids = {e["id"] for r in rows for e in r["exercises"]}
    return sorted(ids, key=lambda s: [int(p) for p in s.split(".")])


def write_gradebook(rows: list[dict], out: Path) -> Path:
    """``out/gradebook.csv``: a row per submission; points and status per exercise, total."""
    ids = _exercise_ids(rows)
    header = (
        ["submission", "student", "lesson", "status"]
        + ids
        + ["total", "max"]
        + [f"{i} status" for i in ids]
        + ["file", "seed", "seconds", "notes", "to look at"]
    )
    # a student's folder holding several files of one lesson: each of those rows says so
    extra = {id(r): f"one of {n} files of this lesson from {who}" for r, who, n in _several_files_rows(rows)}
    for r in rows:
        if _marked_late(r):
            extra[id(r)] = "; ".join(filter(None, [extra.get(id(r)), "marked late by Canvas"]))
    students = _students(rows)  # the folder's name, where each student has one, or Canvas's
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for r in sorted(rows, key=lambda r: r["submission"]):
        by_id = {e["id"]: e for e in r["exercises"]}
        writer.writerow(
            [r["submission"], students.get(id(r), ""), r["lesson"] or "", r["status"]]
            + [f"{by_id[i]['points']:g}" if i in by_id else "" for i in ids]
            + [f"{r['total']:g}", f"{r['max_total']:g}"]
            + [by_id[i]["status"] if i in by_id else "" for i in ids]
            + [r.get("file", ""), r.get("seed", ""), r.get("seconds", ""), "; ".join(_all_notes(r)),
               "; ".join(filter(None, [_look_at(r), extra.get(id(r), "")]))]
        )
    path = out / "gradebook.csv"
    tmp = out / ".gradebook.csv.tmp"
    tmp.write_text(buf.getvalue())
    tmp.replace(path)
    # the terminal's summary, kept: for the whole gradebook, so a late regrade does not lose the class overview
    summary = out / ".summary.txt.tmp"
    summary.write_text(class_summary(rows) + "\n")
    summary.replace(out / "summary.txt")
    _write_students(rows, out)
    return path


def student_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the class by student, for a spreadsheet or a learning platform: a row per student (by
    folder name or Canvas's file name, :func:`_students`), each lesson's points, the total and the most there is.
    Where a student handed in several files of a lesson, the highest score stands, and a column names those lessons
    (which file counts is the teacher's to say: the gradebook has each); the last names the lessons with a file that
    Canvas marked late. Rows with no student (another flat folder) are left out."""
    students = _students(rows)
    lessons = sorted({r["lesson"] for r in rows if r.get("lesson") and students.get(id(r))})
    best: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        if r.get("lesson") and students.get(id(r)):
            best.setdefault(students[id(r)], {}).setdefault(r["lesson"], []).append(r)
    top = {lesson: max((r["max_total"] for r in rows if r.get("lesson") == lesson), default=0.0) for lesson in lessons}
    table = []
    for student in sorted(best):
        mine = best[student]
        points = {lesson: max(r["total"] for r in mine[lesson]) for lesson in mine}
        several = [lesson for lesson in lessons if len(mine.get(lesson, [])) > 1]
        late = [lesson for lesson in lessons if any(_marked_late(r) for r in mine.get(lesson, []))]
        table.append(
            [student]
            + [f"{points[lesson]:g}" if lesson in points else "" for lesson in lessons]
            + [f"{sum(points.values()):g}", f"{sum(top.values()):g}", " ".join(several), " ".join(late)]
        )
    return ["student", *lessons, "total", "max", "several files (best counted)", "marked late by Canvas"], table


def _write_students(rows: list[dict], out: Path) -> None:
    """``out/students.csv`` (see :func:`student_table`), when the submissions say who handed each in (per-student
    folders, Canvas names)."""
    header, table = student_table(rows)
    if not table:
        (out / "students.csv").unlink(missing_ok=True)  # a flat folder now: no stale roll-up of an earlier run
        return
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(table)
    tmp = out / ".students.csv.tmp"
    tmp.write_text(buf.getvalue())
    tmp.replace(out / "students.csv")


def feedback_markdown(row: dict) -> str:
    """The Markdown a learner gets back: a table, then what to fix."""
    lines = [f"# Feedback: {row['submission']}", ""]
    lines.append(f"Lesson {row['lesson'] or '?'}: **{row['total']:g} / {row['max_total']:g}** points.")
    for note in row["notes"]:  # the teacher's own notes (row["teacher_notes"]) stay in the gradebook
        lines.append(f"\n> {note}")
    if row["exercises"]:
        lines += ["", "| exercise | status | points | hint |", "|---|---|---|---|"]
        for e in row["exercises"]:
            hint = e["hint"] if e["status"] != "pass" else ""
            lines.append(f"| {e['id']} {e['title']} | {e['status']} | {e['points']:g}/{e['max_points']:g} | {hint} |")
        for e in row["exercises"]:
            # the copy flag is the teacher's to raise (gradebook, summary), not a line in the learner's feedback
            flags = [f for f in (e.get("flag") or "").split("; ") if f and f != COPY_FLAG]
            if e["status"] == "pass" and not flags and not e["detail"]:
                continue  # a pass with a note (its cell hung or raised after the answer) still shows the note
            lines += ["", f"## {e['id']}: {e['title']} ({e['status']})"]
            if e["detail"]:
                lines.append(f"- {e['detail']}")
            if flags:
                lines.append(f"- for your teacher: {'; '.join(flags)}")
            messages = _failed(e)
            lines += [f"- {m}" for m in messages[:8]]
            if len(messages) > 8:
                lines.append(f"- … and {len(messages) - 8} more")
    if row["exercises"] and isinstance(row.get("seed"), int):
        if row.get("exercises_dir"):  # a teacher's own release: the learner needs it to see the same table
            lines += ["", f"_Checked on the inputs of seed {row['seed']}, against your teacher's release of the "
                          f"exercises: `course check --seed {row['seed']} --exercises FOLDER YOUR_NOTEBOOK.ipynb`, "
                          "FOLDER holding that release, shows this table again._"]
        else:
            lines += ["", f"_Checked on the inputs of seed {row['seed']}: `course check --seed {row['seed']} "
                          "YOUR_NOTEBOOK.ipynb` shows this table again._"]
    return "\n".join(lines) + "\n"


def _failed(e: dict) -> list[str]:
    """An exercise row's failed sub-check messages, grouped, as the check cell shows them."""
    return failed_messages(e["detail"], [(c["passed"], c["message"]) for c in e["checks"]], e.get("case_labels", []))


def _all_notes(row: dict) -> list[str]:
    """The row's notes for the teacher: the learner's and the teacher's own (rows of older runs have none)."""
    return list(row["notes"]) + list(row.get("teacher_notes", []))


def _write_row(row: dict, out: Path) -> None:
    name = row["submission"]
    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(row, indent=2) + "\n"), (".md", feedback_markdown(row))):
        tmp = out / f".{name}{suffix}.tmp"
        tmp.write_text(text)
        tmp.replace(out / f"{name}{suffix}")


def _save(rows: list[dict], all_rows: list[dict], out: Path) -> str:
    """Write ``rows``' files and the gradebook of ``all_rows``; '' or what went wrong. The rows stay in memory,
    so a folder emptied or removed meanwhile (by a submission's code, which runs as the same user) is written
    again whole at the next call, and one failed write costs no submission."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for row in rows:
            _write_row(row, out)
        write_gradebook(all_rows, out)
        return ""
    except OSError as e:
        return f"{type(e).__name__}: {e}"


@dataclass
class _Naming:
    """Who gets which row: ``names`` and ``lessons`` (one per path), the earlier rows ``kept``, the names whose row
    stands ``beside`` earlier rows of the same student and lesson, and those that ``replaced`` earlier rows (both:
    name → [(earlier name, its file)]), the names of ``stale`` rows whose .json and .md must go, and each path's
    ``student`` as the gradebook will read it (None where the files do not say)."""

    names: list[str]
    lessons: list[str | None]
    kept: list[dict]
    beside: dict[str, list[tuple[str, str]]]
    replaced: dict[str, list[tuple[str, str]]]
    stale: list[str]
    student: list[str | None]


def _lessons(paths: list[Path], options: GradeOptions) -> list[str | None]:
    """Each file's lesson, as grading will read it (None where it cannot be read)."""
    templates = _templates(options)
    lessons = []
    for path in paths:
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:
            nb = None
        try:
            lessons.append(_lesson_of(nb, Path(path), templates, options.lesson))
        except Exception:
            lessons.append(None)
    return lessons


def _naming(paths: list[Path], out: Path, options: GradeOptions) -> _Naming:
    # rows from an earlier run into this folder stay in the gradebook; a file graded again replaces its own row
    files = [str(Path(p).resolve()) for p in paths]
    graded_now = set(files)
    earlier = [(str(Path(r.get("file", "")).resolve()), r) for r in earlier_rows(out)]
    kept = [r for f, r in earlier if f not in graded_now]
    regraded = {f: r["submission"] for f, r in earlier if f in graded_now}
    names = _names([Path(p) for p in paths], taken={r["submission"] for r in kept} | set(regraded.values()))
    names = [regraded.get(f, n) for f, n in zip(files, names)]
    lessons = _lessons(paths, options)
    # the same student's earlier rows of the same lesson: most likely a resubmission. Two ways to tell: a name that
    # had to take -2 because an earlier row holds it (alice/02_x.ipynb graded again from another folder), and the
    # student the gradebook reads from the files (Canvas names each resubmission anew: smithjohn_1234_<new id>_…)
    new = [{"file": f, "lesson": lesson} for f, lesson in zip(files, lessons)]
    students = _students(kept + new)
    student = [students.get(id(q)) for q in new]
    earlier_of: dict[str, list[dict]] = {}
    for n, q, who in zip(names, new, student):
        base = re.sub(r"-\d+$", "", n)
        same = [r for r in kept if (base != n and r["submission"] == base)
                or (who and q["lesson"] and students.get(id(r)) == who and r.get("lesson") == q["lesson"])]
        if same:
            earlier_of[n] = same
    pairs = {n: [(r["submission"], r.get("file", "")) for r in rows] for n, rows in earlier_of.items()}
    stale: list[str] = []
    if not options.replace:
        return _Naming(names, lessons, kept, pairs, {}, stale, student)
    # --replace: those earlier rows go (their .json and .md too); a "-2" name takes its base back where it is free
    gone = {r["submission"] for rows in earlier_of.values() for r in rows}
    kept = [r for r in kept if r["submission"] not in gone]
    stale += sorted(gone)
    taken = set(names)
    for i, n in enumerate(names):
        base = re.sub(r"-\d+$", "", n)
        if n in pairs and base != n and base in gone and base not in taken:
            names[i] = base
            taken.add(base)
            pairs[base] = pairs.pop(n)
    # a file graded before under another name (its "-2" row) must leave no .json or .md behind
    for f, name in zip(files, names):
        old = regraded.get(f)
        if old and old != name:
            stale.append(old)
    stale = [s for s in dict.fromkeys(stale) if s not in names]
    return _Naming(names, lessons, kept, {}, pairs, stale, student)


def plan_names(paths: list[Path], out: Path, options: GradeOptions) -> list[tuple[Path, str, str | None, str]]:
    """What ``grade_many`` would do, without grading or writing: (path, row name, lesson, what the gradebook will
    read: the student, a Canvas late mark, and what happens to earlier rows), for ``course grade --dry-run``."""
    plan = _naming(paths, out, options)
    by_file = {str(Path(r.get("file", "")).resolve()) for r in earlier_rows(out)}
    listed = []
    for path, name, lesson, who in zip(paths, plan.names, plan.lessons, plan.student):
        said = [f"student {who}" if who else "no student (the file and its folder do not say)"]
        if _marked_late({"file": str(path)}):
            said.append("marked late by Canvas")
        if name in plan.replaced:
            said.append("replaces the earlier row of " + _listed(plan.replaced[name]))
        elif name in plan.beside:
            said.append("a new row beside the earlier row of " + _listed(plan.beside[name])
                        + " (--replace would replace it)")
        elif str(Path(path).resolve()) in by_file:
            said.append("graded again, its row replaced")
        listed.append((Path(path), name, lesson, "; ".join(said)))
    return listed


def _listed(pairs: list[tuple[str, str]]) -> str:
    """``name (file), name (file)`` of earlier rows."""
    return ", ".join(f"{n} ({f})" for n, f in pairs)


def grade_many(paths: list[Path], out: Path, options: GradeOptions, progress=None) -> list[dict]:
    """Grade every submission (``options.jobs`` at a time); write the gradebook as rows arrive."""
    out.mkdir(parents=True, exist_ok=True)
    options.resolved_seed()
    plan = _naming(paths, out, options)
    names, kept, beside, replaced = plan.names, plan.kept, plan.beside, plan.replaced
    for old in plan.stale:
        for suffix in (".json", ".md"):
            (out / f"{old}{suffix}").unlink(missing_ok=True)
    rows: list[dict] = []
    local = threading.local()
    workers: list[Worker] = []
    lock = threading.Lock()

    def one(item):
        path, name = item
        if not hasattr(local, "worker"):
            local.worker = Worker()
            with lock:
                workers.append(local.worker)
        try:
            row = grade_submission(Path(path), options, name, local.worker)
        except Exception as e:  # never lose a submission, even to a grader bug
            row = {
                "submission": name,
                "file": os.path.abspath(path),
                "lesson": None,
                "status": "grader_error",
                "seed": options.seed,
                "seconds": 0.0,
                "exercises": [],
                "total": 0.0,
                "max_total": 0.0,
                "notes": [f"grader error: {type(e).__name__}: {e}"],
                "teacher_notes": [],
                "traceback": traceback.format_exc(),
            }
        if name in beside:
            row["teacher_notes"] = row.get("teacher_notes", []) + [
                f"the earlier row of {_listed(beside[name])} is kept beside this one, from the same student and "
                "lesson: if this is a resubmission that replaces it, grade this file again with --replace (or "
                f"delete {beside[name][0][0]}.json and {name}.json and grade it again)"
            ]
        if name in replaced:
            row["teacher_notes"] = row.get("teacher_notes", []) + [
                f"replaces the earlier row of {_listed(replaced[name])}, the same student and lesson (--replace)"
            ]
        return row

    try:
        with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
            for row in pool.map(one, zip(paths, names)):
                rows.append(row)
                _save([row], kept + rows, out)
                if progress is not None:
                    progress(row, len(rows), len(paths))
    finally:
        for w in workers:
            w.close()
    # every file of this run and of the kept rows once more, in case the folder was changed meanwhile
    problem = _save(kept + rows, kept + rows, out)
    if problem:
        raise OSError(f"could not write the gradebook in {out}: {problem}")
    return rows


#: exercise statuses where the grader could not judge the answer, so a teacher should look
_NEEDS_A_LOOK = ("timeout", "error", "missing")


def class_summary(rows: list[dict]) -> str:
    """A teacher's summary of a grading run: per lesson, the submissions (and the students, where each has a
    folder), the mean score and how the exercises ended; rows checked with different seeds; then the
    submissions to look at and the students with several files of one lesson."""
    lines = []
    how: dict[int, str] = {}
    doubts: dict[int, str] = {}
    students = _students(rows, how, doubts)
    for lesson in sorted({r["lesson"] or "?" for r in rows}):
        group = [r for r in rows if (r["lesson"] or "?") == lesson]
        graded = [r for r in group if r["status"] == "graded" and r["max_total"]]
        mean = sum(r["total"] for r in graded) / len(graded) if graded else 0.0
        top = max(r["max_total"] for r in graded) if graded else 0.0
        counts: dict[str, int] = {}
        for r in group:
            for e in r["exercises"]:
                counts[e["status"]] = counts.get(e["status"], 0) + 1
        by_status = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        names = {students[id(r)] for r in group if students.get(id(r))}
        # by folder name: alice/ under submissions/ and under late/ is one student
        by = " or ".join(sorted({how[id(r)] for r in group if id(r) in how}))
        who = f" from {len(names)} student{'' if len(names) == 1 else 's'} (by {by})" if names else ""
        not_read = len(group) - len(graded)
        skipped = f"; {not_read} not graded (0 in the gradebook)" if not_read else ""
        seeds: dict[Any, int] = {}
        for r in group:
            seeds[r.get("seed")] = seeds.get(r.get("seed"), 0) + 1
        # the seed repeats the grade: `course grade --seed K` (or `course check --seed K`) sees the same inputs
        one_seed = f"; checked with seed {next(iter(seeds))}" if len(seeds) == 1 and None not in seeds else ""
        lines.append(
            f"lesson {lesson}: {len(group)} submission{'' if len(group) == 1 else 's'}{who}, "
            f"mean {mean:.2f}/{top:g} over the {len(graded)} graded{skipped}; "
            f"exercise results: {by_status or 'none'}{one_seed}"
        )
        tops = sorted({r["max_total"] for r in graded})
        if len(tops) > 1:  # a teacher's release that leaves exercises out, beside the whole lesson
            lines.append(f"  graded against releases with different exercises (the most there is: "
                         f"{', '.join(f'{t:g}' for t in tops)}): their totals do not compare; grade them again with "
                         "one --exercises")
        if len(seeds) > 1:
            shown = ", ".join(f"seed {k}: {v} row{'' if v == 1 else 's'}" for k, v in sorted(seeds.items(), key=str))
            lines.append(f"  checked with different seeds ({shown}): those rows saw different check inputs; "
                         "grade them again with one --seed to compare them")
    attention = [r for r in rows if _look_at(r, copies=False)]
    if attention:
        lines.append("to look at (not graded; an exercise that raised, timed out or went missing; or a flagged "
                     "answer): " + ", ".join(_why(r) for r in attention))
    doubtful = sorted(f"{r['submission']} ({students[id(r)]}; the file names {doubts[id(r)]})"
                      for r in rows if id(r) in doubts)
    if doubtful:
        lines.append("student taken from the folder's name, though the file names another (students.csv counts it "
                     "under the folder; to count it under the student, move the file into a folder of the student's "
                     "name, delete its row's .json and grade it again): " + ", ".join(doubtful))
    late = sorted(r["submission"] for r in rows if _marked_late(r))
    if late:
        lines.append(f"marked late by Canvas ({len(late)}): " + ", ".join(late))
    copies = [f"{r['submission']} ({', '.join(_copied(r))})" for r in rows if _copied(r)]
    if copies:
        lines.append(f"answers that are the released solution's code, line for line ({len(copies)} submission"
                     f"{'' if len(copies) == 1 else 's'}): " + ", ".join(copies))
    twice = sorted({f"{folder} ({r['lesson']}: {n} files)" for r, folder, n in _several_files_rows(rows)})
    if twice:
        lines.append("several files for one student and lesson (each graded; students.csv counts the best, but which "
                     "one counts is yours to say): "
                     + ", ".join(twice))
    return "\n".join(lines)


#: Canvas's "Download Submissions" names every file ``<student>[_LATE]_<user id>_<submission id>_<file name>`` in
#: one flat folder (``smithjohn_LATE_1234_56789_02_forward_noising.ipynb``)
_CANVAS_NAME = re.compile(r"^(?P<student>[^_]+?)(?P<late>_late)?_(?P<user>\d+)_\d+_.", re.I)
#: Moodle's gives every student a folder ``<full name>_<id>_assignsubmission_<plugin>_``
_MOODLE_FOLDER = re.compile(r"^(?P<student>.+?)_(?P<user>\d+)_assignsubmission_[a-z]+_?$", re.I)
#: what a file name may carry before the lesson's number and is not a name (Google Drive's "Copy of …")
_NOT_A_NAME = re.compile(r"^(copy( of)?|kopie( von)?|copie de|lesson|exercises?|homework|hw|notebook)$", re.I)


def _name_in_file(row: dict) -> str | None:
    """The text before the lesson's number in the file's name, where it could be who handed it in:
    ``amy_02_forward_noising.ipynb`` → ``amy``, ``Ben Lee - 02.ipynb`` → ``Ben Lee``; None for the released name
    (``02_forward_noising.ipynb``), for a name without the lesson's number, and for "Copy of" and the like."""
    name = Path(row.get("file") or "").name
    at = name.lower().find(".ipynb")
    stem = name[:at] if at > 0 else Path(name).stem
    lesson = row.get("lesson")
    number = lesson[:2] if isinstance(lesson, str) and lesson[:2].isdigit() else r"\d\d"
    found = re.match(rf"^(?P<name>.*?[^\W_])[\W_]+{number}(?!\d)", stem)
    if not found or _NOT_A_NAME.match(found.group("name").strip()):
        return None
    return found.group("name").strip()


def _students(rows: list[dict], how: dict[int, str] | None = None,
              doubts: dict[int, str] | None = None) -> dict[int, str]:
    """``id(row) → student``, where the submissions say who handed each in:

    - a file Canvas named: the name Canvas puts first (``smithjohn_1234_56789_02_x.ipynb`` → ``smithjohn``),
      whatever folder it lies in (a second download graded into the same gradebook lies in another);
    - a Moodle folder (``Alice Smith_4242_assignsubmission_file_/``): the name before its id;
    - a folder of the class, where the files carry the names (``late/amy_02_x.ipynb`` → ``amy``, see
      :func:`_name_in_file`): the folder common to all rows, a folder holding files of two or more names, and, in a
      gradebook whose files carry names and whose folders never hold a bare lesson file, every such folder;
    - otherwise per-student folders: the name of the folder holding the file (``…/alice/02_x.ipynb`` → ``alice``,
      wherever that folder lies, and graded on its own too, where it holds one released file per lesson). A named
      file in another folder still goes to its name where that name is a student already (``late/bob_02_x.ipynb``
      beside ``bob/01_x.ipynb``).

    A file of the common folder whose name carries none has no student; rows without a ``file`` leave every row
    without one. ``how``, if given, receives ``id(row) → "folder name"``, ``"file name"`` or
    ``"Canvas's file name"``; ``doubts`` receives ``id(row) → the other name`` where a folder's name was taken but
    the file names someone else (``late/dan_02_x.ipynb``, dan's only file: "late", or dan?)."""
    how = {} if how is None else how
    doubts = {} if doubts is None else doubts
    parents = [Path(os.path.abspath(r["file"])).parent if r.get("file") else None for r in rows]
    if not rows or None in parents:
        return {}
    common = Path(os.path.commonpath([str(p) for p in parents]))
    students: dict[int, str] = {}
    # the platforms first: their names are certain, and their ids tell namesakes apart
    platform: dict[int, tuple[str, str, str | None]] = {}  # id(row) → (name, platform's id, lesson)
    rest = []
    for r, parent in zip(rows, parents):
        if canvas := _CANVAS_NAME.match(Path(r["file"]).name):
            platform[id(r)], how[id(r)] = (canvas["student"], canvas["user"], r.get("lesson")), "Canvas's file name"
        elif moodle := _MOODLE_FOLDER.match(parent.name):
            platform[id(r)], how[id(r)] = (moodle["student"], moodle["user"], r.get("lesson")), "folder name"
        else:
            rest.append((r, parent, _name_in_file(r)))
    # a name with two ids in one lesson is two people (Moodle's id is the assignment's, so only there it tells)
    ids: dict[tuple[str, str | None], set[str]] = {}
    for name, user, lesson in platform.values():
        ids.setdefault((name, lesson), set()).add(user)
    namesakes = {name for (name, _), users in ids.items() if len(users) > 1}
    for key, (name, user, _) in platform.items():
        students[key] = f"{name} ({user})" if name in namesakes else name
    # which folders name their files' students in the file names, and which are a student's own: a folder holding
    # files of two or more names is the class's, unless its name is one of theirs (alice/alice_01…, Alice Smith_02…)
    in_folder: dict[Path, list[str | None]] = {}
    for _, parent, name in rest:
        in_folder.setdefault(parent, []).append(name)

    def owned(folder: Path) -> bool:
        return any(n and _same_person(n, folder.name) for n in in_folder[folder])

    # a folder named after a lesson (02/, 02_forward_noising/) sorts the class by lesson: it is nobody's
    by_lesson = {f for f in in_folder if re.match(r"\d\d(_|$)", f.name)}
    named = by_lesson | {f for f, names in in_folder.items()
                         if f == common or (len({n for n in names if n}) > 1 and not owned(f))}
    # one student's folder graded on its own (course grade subs/dan/): released names only, one file per lesson
    mine = [r for r, parent, _ in rest if parent == common]
    released = all(_LESSON_STEM.match(Path(r["file"]).name) for r in mine)
    if mine and released and len({r.get("lesson") for r in mine}) == len(mine) and common.name \
            and common not in by_lesson:
        named.discard(common)
    bare = any(f != common and None in names for f, names in in_folder.items())
    if not bare and any(any(in_folder[f]) for f in named):
        named |= {f for f, names in in_folder.items() if all(names) and not owned(f)}
    known = {n for f in named for n in in_folder[f] if n} | {f.name for f in in_folder if f not in named}
    known |= {name for name, _, _ in platform.values()}
    for r, parent, name in rest:
        if parent in named or (name and name in known and not _same_person(name, parent.name)):
            if name:
                students[id(r)], how[id(r)] = name, "file name"
        else:
            students[id(r)], how[id(r)] = parent.name, "folder name"
            if name and not _same_person(name, parent.name):
                doubts[id(r)] = name
    return students


def _letters(name: str) -> str:
    """A name's letters and digits, lower case, without accents: "Zoë Müller" → "zoemuller"."""
    decomposed = unicodedata.normalize("NFKD", name).casefold()
    return "".join(c for c in decomposed if c.isalnum() and not unicodedata.combining(c))


def _same_person(a: str, b: str) -> bool:
    """Whether two names could be one person's: one's letters hold the other's ("alice" and "Alice Smith")."""
    x, y = _letters(a), _letters(b)
    return bool(x and y) and (x in y or y in x)


def _marked_late(row: dict) -> bool:
    """Whether Canvas marked the file late (``_LATE_`` after the student's name)."""
    canvas = _CANVAS_NAME.match(Path(row.get("file") or "").name)
    return bool(canvas and canvas.group("late"))


def _several_files_rows(rows: list[dict]) -> list[tuple[dict, str, int]]:
    """(row, student, n) for each row whose student (by folder name) handed in n > 1 files of its lesson."""
    students = _students(rows)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r.get("lesson") and students.get(id(r)):
            groups.setdefault((students[id(r)], r["lesson"]), []).append(r)
    return [(r, folder, len(g)) for (folder, _), g in sorted(groups.items()) if len(g) > 1 for r in g]


def _look_at(row: dict, copies: bool = True) -> str:
    """What a teacher should look at in this row, '' when nothing: the file's status if it was not graded, else the
    exercises that errored, timed out or went missing, and the flags (the gradebook's column, the summary's reason).
    ``copies=False`` leaves out the flag of a copied solution (the summary lists those on a line of their own)."""
    if row["status"] != "graded":
        return row["status"]
    odd = [f"{e['id']} {e['status']}" for e in row["exercises"] if e["status"] in _NEEDS_A_LOOK]
    if row.get("other_release"):
        odd.append("made from another release than the one it was graded against")
    for e in row["exercises"]:
        flags = [f for f in (e.get("flag") or "").split("; ") if f and (copies or f != COPY_FLAG)]
        if flags:
            odd.append(f"{e['id']}: {'; '.join(flags)}")
    return ", ".join(odd)


def _copied(row: dict) -> list[str]:
    """The ids of the row's exercises whose answer is the released solution, line for line."""
    return [e["id"] for e in row["exercises"] if COPY_FLAG in (e.get("flag") or "").split("; ")]


def _why(row: dict) -> str:
    """``name (what needs a look)``, for the summary (copied solutions apart)."""
    return f"{row['submission']} ({_look_at(row, copies=False)})"


def format_table(row: dict) -> str:
    """A learner's table: exercise, status, points, hint."""
    exs = row["exercises"]
    if not exs:
        return f"{row['submission']}: {row['status']} ({'; '.join(row['notes'])})"
    w = max(len("exercise"), *(len(f"{e['id']} {e['title']}") for e in exs))
    lines = [f"{'exercise':<{w}}  {'status':<15}  {'points':>7}  hint"]
    for e in exs:
        hint = e["hint"] if e["status"] != "pass" else ""
        pts = f"{e['points']:g}/{e['max_points']:g}"
        lines.append(f"{e['id'] + ' ' + e['title']:<{w}}  {e['status']:<15}  {pts:>7}  {hint}")
    lines.append(f"{'total':<{w}}  {'':<15}  {row['total']:g}/{row['max_total']:g}".rstrip())
    details = []
    for e in exs:
        # the copy flag is the teacher's (the gradebook's), as in the learner's .md
        flags = [f for f in (e.get("flag") or "").split("; ") if f and f != COPY_FLAG]
        if e["status"] == "pass" and not flags:
            continue
        msgs = [f"for your teacher: {'; '.join(flags)}"] if flags else []
        msgs += [e["detail"]] if e["detail"] else []
        msgs += _failed(e)
        msgs = [m for m in dict.fromkeys(msgs) if m]
        details += [f"  {e['id']}: {m}" for m in msgs[:8]]
        if len(msgs) > 8:  # as the check cell says it: nothing left out without a word
            details.append(f"  {e['id']}: … and {len(msgs) - 8} more")
    if details:
        lines += ["", "Details:"] + details
    if _all_notes(row):
        lines += [""] + [f"Note: {n}" for n in _all_notes(row)]
    return "\n".join(lines)
