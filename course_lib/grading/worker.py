"""Execute rebuilt submissions, each in its own fresh kernel.

``python -m course_lib.grading.worker JOB`` runs one job; ``--serve`` reads job paths from
stdin, one per line, and answers ``done JOB`` on stdout after each, so that a grader with
``--jobs N`` pays the start-up of this process (nbclient, zmq, …) N times, not once per
submission. Every job still gets a new kernel process and a new working folder.

For each code cell the worker appends one JSON line to the job's log: index, status (ok /
error / timeout / skipped / dead), the error's name and value, seconds. A cell gets the
time left; a learner's exercise cell at most ``cell_timeout`` (the released notebook's own cells,
such as the setup cell importing torch, are trusted and only bound by the job's limit, so a slow
machine does not cut an import in half). On a timeout the kernel is interrupted and the next cell
runs, so an infinite loop in one exercise does not cost the others their grade. A watchdog
kills the kernel outright if it ignores interrupts past the job's wall-clock limit. After a
capture cell the worker takes the capture files out of the kernel's working folder into its own
memory, and writes them to the job's vault only once the kernel has been shut down, so that later
learner code cannot read or change them. (This keeps an honest mistake from spoiling a grade; it is
no sandbox: the learner's code runs as the grader's user, see README's "Exercises and grading".)
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

#: Seconds a kernel may overrun the job's limit (ignoring interrupts) before it is killed.
GRACE = 10.0


def _error_of(cell) -> tuple[str | None, str | None]:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename"), str(out.get("evalue", ""))[:2000]
    return None, None


def _kernel_pid(client) -> int | None:
    km = getattr(client, "km", None)
    provisioner = getattr(km, "provisioner", None)
    pid = getattr(provisioner, "pid", None)
    if pid is None:
        process = getattr(provisioner, "process", None) or getattr(km, "kernel", None)
        pid = getattr(process, "pid", None)
    return pid


def run_job(job: dict) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    class ErrorsOnly(NotebookClient):
        """Keeps a cell's errors, drops everything else it prints or displays: the grader reads only the errors,
        and what a learner's cells print must not pile up in this process's memory from cell to cell (the peak
        while a cell prints is the messages in flight: about 1 GB here for 400 MB printed at once)."""

        def output(self, outs, msg, display_id, cell_index):
            if msg.get("msg_type") != "error":
                return None
            return super().output(outs, msg, display_id, cell_index)

    nb = nbformat.read(job["notebook"], as_version=4)
    workdir = Path(job["workdir"])
    vault = Path(job["vault"])
    captures = {int(k): v for k, v in job.get("captures", {}).items()}  # cell index -> capture stem
    learner_cells = {int(i) for i in job.get("learner_cells", [])}
    deadline = time.monotonic() + float(job["timeout"])
    cell_timeout = float(job["cell_timeout"])
    client = ErrorsOnly(
        nb,
        timeout=max(1, math.ceil(cell_timeout)),
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        allow_errors=True,
        interrupt_on_timeout=True,
        startup_timeout=120,
    )
    finished = threading.Event()

    def watchdog():
        # a kernel that swallows interrupts (a bare except in a loop) is killed at the limit
        if not finished.wait(max(0.0, deadline - time.monotonic()) + GRACE):
            pid = _kernel_pid(client)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    with open(job["log"], "a") as log, open(Path(job["log"]).with_name("kernel.log"), "w") as klog:

        def write(record: dict) -> None:
            log.write(json.dumps(record) + "\n")
            log.flush()

        kept: dict[str, bytes] = {}  # capture files, held here until the kernel is gone
        write({"event": "start"})
        threading.Thread(target=watchdog, daemon=True).start()
        try:
            with client.setup_kernel(env=job["env"], stdout=klog, stderr=klog):
                write({"event": "kernel"})
                for i, cell in enumerate(nb.cells):
                    if cell.cell_type != "code":
                        continue
                    left = deadline - time.monotonic()
                    if left <= 0:
                        write({"index": i, "status": "skipped"})
                        continue
                    budget = min(cell_timeout, left) if i in learner_cells else left
                    limit = max(1, math.ceil(budget))  # nbclient wants whole seconds
                    client.timeout = limit
                    start = time.monotonic()
                    status = "ok"
                    try:
                        client.execute_cell(cell, i)
                    except CellTimeoutError:
                        status = "timeout"
                    except DeadKernelError:
                        status = "timeout" if time.monotonic() > deadline else "dead"
                        write({"index": i, "status": status, "seconds": round(time.monotonic() - start, 3)})
                        break
                    seconds = time.monotonic() - start
                    ename, evalue = _error_of(cell)
                    if ename == "KeyboardInterrupt" and seconds >= 0.9 * limit:
                        status = "timeout"  # our interrupt after the limit, not the learner's own
                    elif ename is not None and status == "ok":
                        status = "error"
                    record = {"index": i, "status": status, "ename": ename, "evalue": evalue}
                    write(record | {"seconds": round(seconds, 3)})
                    if i in captures:
                        for suffix in (".json", ".npz"):
                            src = workdir / ".grading" / f"{captures[i]}{suffix}"
                            if src.is_file():
                                kept[src.name] = src.read_bytes()
                                src.unlink()
        finally:
            finished.set()
            # the kernel is gone now (setup_kernel shut it down): nothing of the learner's runs any more
            vault.mkdir(parents=True, exist_ok=True)
            for name, data in kept.items():
                (vault / name).write_bytes(data)
        write({"event": "end"})


def serve() -> None:
    """Run jobs named on stdin, one per line; answer ``done PATH`` (or ``failed PATH ...``)."""
    # the answers get their own copy of stdout; anything else printed goes to stderr
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        try:
            run_job(json.loads(Path(path).read_text()))
            print(f"done {path}", file=answers, flush=True)
        except Exception as e:  # report and keep serving; the grader marks the submission
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:500]
            print(f"failed {path} {msg}", file=answers, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        run_job(json.loads(Path(sys.argv[1]).read_text()))
