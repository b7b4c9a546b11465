"""The ``course`` command.

Usage::

    course doctor [--json]
        What this machine offers the course: Python, torch, the device the lessons will use
        (CUDA + GPUs + bf16, MPS), package versions, the settings, which datasets are
        available offline and where from, and what the cache holds. Nothing is downloaded.

    course run [--quick] [--out DIR] [--timeout S] [NB ...]
        Execute lesson notebooks headlessly (a fresh ``python3`` kernel each, working directory
        = the notebook's folder), write the executed copies and ``summary.json`` into DIR
        (default ``build/run``), print a table lesson / status / seconds. NB is a notebook
        path, a folder of lessons, or a lesson name or number (``01``, ``01_noise_schedules``);
        none means every ``notebooks/[0-9][0-9]_*.ipynb``. Exit status 1 if a lesson failed.

    course build-exercises [--check]
        Write exercises/NN_topic.ipynb from solutions/NN_topic.ipynb (answers replaced by stubs
        that raise NotImplementedError). With --check, write nothing and exit 1 if exercises/
        is out of date.

    course check NB [--timeout S] [--seed K] [--strict]
        Grade your own exercise notebook exactly as the teacher's grader will (a fresh kernel,
        the checks judged outside it) and print a table: exercise, status, points, hint.
        --seed K checks on the inputs of seed K (a gradebook row's seed repeats that grade);
        --strict exits 1 unless every exercise passes.

    course grade SUBMISSION... --out DIR [--jobs N] [--timeout S] [--lesson NN] [--seed K]
        Grade a class: each submission in its own kernel and temporary folder, on the CPU,
        rebuilt from the released exercise notebook (only the learner's exercise cells are
        taken). Writes DIR/gradebook.csv, DIR/<submission>.json and DIR/<submission>.md.
        SUBMISSION may be a folder (every .ipynb in it). Exit status 1 only if the grader
        itself failed.

Adding a subcommand: write ``_add_<name>(subparsers)`` that builds its parser and calls
``parser.set_defaults(func=_cmd_<name>)``, write ``_cmd_<name>(args) -> int``, and append
``_add_<name>`` to :data:`SUBCOMMANDS`. Handlers return the exit status; :class:`UsageError`
(bad input from the user) prints ``course <cmd>: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["SUBCOMMANDS", "UsageError", "build_parser", "main"]


class UsageError(Exception):
    """Bad input from the user (an unknown lesson, a missing file): exit status 2."""


# =============================================================================================
# course doctor
# =============================================================================================

#: Distributions whose versions ``course doctor`` reports (optional ones may be missing).
PACKAGES = (
    "numpy",
    "diffusers",
    "transformers",
    "safetensors",
    "matplotlib",
    "ipywidgets",
    "nbval",
    "jupyterlab",
    "tqdm",
    "scikit-learn",
    "scikit-image",
    "nbclient",
    "ipykernel",
)

#: The four IDX files of MNIST and Fashion-MNIST, per split, as ``course_lib.data`` looks for
#: them (it keeps its own copy private; tests/test_cli.py checks that the two agree).
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

_SETTING_VARS = {
    "quick": "COURSE_QUICK",
    "dataset": "COURSE_DATASET",
    "data_dir": "COURSE_DATA_DIR",
    "cache_dir": "COURSE_CACHE_DIR",
    "device": "COURSE_DEVICE",
    "text_encoder": "COURSE_TEXT_ENCODER",
    "compile": "COURSE_COMPILE",
    "autocast": "COURSE_AUTOCAST",
    "full_on_cpu": "COURSE_FULL_ON_CPU",
}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _system_report() -> dict[str, Any]:
    import torch

    from .device import autocast_dtype, pick_device

    report: dict[str, Any] = {
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": {
            "system": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "torch": torch.__version__,
    }

    try:
        device = pick_device()
        report["device"] = {"name": str(device), "error": None}
        report["bf16"] = autocast_dtype(device) is torch.bfloat16
    except Exception as e:  # a bad COURSE_DEVICE or COURSE_AUTOCAST: report it, do not crash
        report["device"] = {"name": None, "error": _error_text(e)}
        report["bf16"] = False

    gpus = []
    cuda_error = None
    try:
        cuda = torch.cuda.is_available()
        for i in range(torch.cuda.device_count() if cuda else 0):
            props = torch.cuda.get_device_properties(i)
            gpus.append(
                {
                    "index": i,
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 1),
                    "capability": f"{props.major}.{props.minor}",
                }
            )
    except Exception as e:  # a broken driver must not stop the report
        cuda, cuda_error = False, _error_text(e)
    report["cuda"] = {
        "available": cuda,
        "version": torch.version.cuda,
        "gpus": gpus,
        "error": cuda_error,
    }

    mps = getattr(torch.backends, "mps", None)
    report["mps"] = {
        "available": bool(mps and mps.is_available()),
        "built": bool(mps and mps.is_built()),
    }
    report["packages"] = {dist: _version(dist) for dist in PACKAGES}
    return report


def _locate_idx(name: str, data_dir: Path | None, cache_dir: Path) -> dict[str, Any]:
    """Where ``course_lib.data`` would find each IDX file of ``name``, looking only at names.

    The search order is data.py's: ``$COURSE_DATA_DIR/<name>/``, ``<cache>/data/<name>/``,
    then (Fashion-MNIST only) Debian's folder. Files are not opened, so not checksum-checked.
    """
    from . import data

    places: list[tuple[str, Path]] = []
    if data_dir is not None:
        places.append(("COURSE_DATA_DIR", data_dir / name))
    places.append(("cache", cache_dir / "data" / name))
    if name == "fashion_mnist":
        places.append(("Debian package", Path(data.DEBIAN_FASHION_MNIST_DIR)))

    splits: dict[str, Any] = {}
    for split in data.SPLITS:
        files = {}
        for fname in IDX_FILES[split]:
            found = next(((label, folder) for label, folder in places if (folder / fname).is_file()), None)
            files[fname] = (
                {"source": found[0], "path": str(found[1] / fname)}
                if found
                else {"source": None, "path": None}
            )
        sources = [f["source"] for f in files.values()]
        n_found = sum(s is not None for s in sources)
        status = "available" if n_found == len(sources) else "partial" if n_found else "missing"
        found_places = [(label, str(folder)) for label, folder in places if label in sources]
        splits[split] = {
            "available": status == "available",
            "status": status,
            "source": " + ".join(label for label, _ in found_places) or None,
            "folder": found_places[0][1] if len(found_places) == 1 else None,
            "files": files,
        }
    return {
        "kind": "IDX files",
        "searched": [{"source": label, "folder": str(folder)} for label, folder in places],
        "download_from": list(data.MIRRORS.get(name, [])),
        "splits": splits,
    }


def _locate_digits() -> dict[str, Any]:
    """scikit-learn's digits ship inside scikit-learn: find the file without importing it."""
    spec = importlib.util.find_spec("sklearn")
    path = None
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
        path = str(candidate) if candidate.is_file() else None
    available = path is not None
    version = _version("scikit-learn")
    split_info = {
        "available": available,
        "status": "available" if available else "missing",
        "source": f"scikit-learn {version}" if available else None,
        "folder": str(Path(path).parent) if path else None,
        "files": {"digits.csv.gz": {"source": "scikit-learn" if available else None, "path": path}},
    }
    return {
        "kind": "embedded in scikit-learn",
        "searched": [],
        "download_from": [],
        "splits": {"train": dict(split_info), "test": dict(split_info)},
    }


def _data_and_cache_dirs(settings) -> tuple[Path | None, Path]:
    """The settings' folders; when another setting is unreadable, read these two directly."""
    if settings is not None:
        return settings.data_dir, settings.cache_dir
    data_dir = os.environ.get("COURSE_DATA_DIR", "").strip()
    cache_dir = os.environ.get("COURSE_CACHE_DIR", "").strip()
    return (
        Path(data_dir).expanduser() if data_dir else None,
        Path(cache_dir).expanduser() if cache_dir else Path.home() / ".cache" / "diffusion-course",
    )


def _datasets_report(settings) -> dict[str, Any]:
    from .settings import DATASETS

    data_dir, cache_dir = _data_and_cache_dirs(settings)
    return {
        name: _locate_digits() if name == "digits" else _locate_idx(name, data_dir, cache_dir)
        for name in DATASETS
    }


def _tree_size(path: Path) -> tuple[int, int]:
    """(number of files, bytes) under ``path``, following no links."""
    n, size = 0, 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                size += (Path(root) / f).lstat().st_size
                n += 1
            except OSError:
                pass
    return n, size


def _cache_report(cache_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"path": str(cache_dir), "exists": cache_dir.is_dir(), "folders": {}}
    if not report["exists"]:
        return report
    items_of = {
        # what one "item" is in each folder the library writes
        "models": lambda folder: [
            p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
        ],
        "evaluator": lambda folder: [p.name for p in folder.glob("*.safetensors")],
        "data": lambda folder: [
            f"{p.parent.name}/{p.name}"
            for p in folder.glob("*/*")
            if p.is_file() and not p.name.startswith(".")
        ],
    }
    names = ["models", "evaluator", "data"] + sorted(
        p.name for p in cache_dir.iterdir() if p.is_dir() and p.name not in items_of
    )
    for name in names:
        folder = cache_dir / name
        if not folder.is_dir():
            report["folders"][name] = {"exists": False, "items": [], "files": 0, "bytes": 0}
            continue
        items = sorted(items_of.get(name, lambda f: [p.name for p in f.iterdir()])(folder))
        n_files, size = _tree_size(folder)
        report["folders"][name] = {"exists": True, "items": items, "files": n_files, "bytes": size}
    n_files, size = _tree_size(cache_dir)
    report["files"], report["bytes"] = n_files, size
    return report


def doctor_report() -> dict[str, Any]:
    """Everything ``course doctor`` prints, as a JSON-able dict."""
    from .settings import get_settings

    report = _system_report()
    try:
        settings = get_settings()
        report["settings"] = {
            "quick": settings.quick,
            "dataset": settings.dataset,
            "data_dir": str(settings.data_dir) if settings.data_dir else None,
            "cache_dir": str(settings.cache_dir),
            "device": settings.device,
            "text_encoder": settings.text_encoder,
            "compile": settings.compile,
            "autocast": settings.autocast,
            "full_on_cpu": settings.full_on_cpu,
            "error": None,
        }
    except ValueError as e:  # e.g. COURSE_QUICK=maybe
        settings = None
        report["settings"] = {key: None for key in _SETTING_VARS} | {"error": str(e)}
    report["datasets"] = _datasets_report(settings)
    cache_dir = _data_and_cache_dirs(settings)[1]
    report["cache"] = _cache_report(cache_dir)
    return report


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def format_doctor(r: dict[str, Any]) -> str:
    """The human-readable report of :func:`doctor_report`."""
    out: list[str] = []
    add = out.append
    row = lambda key, value: add(f"  {key:<13} {value}")

    add("System")
    row("python", f"{r['python']['version']}  ({r['python']['executable']})")
    p = r["platform"]
    row("platform", f"{p['system']}, {p['cpu_count']} CPUs ({p['torch_threads']} torch threads)")
    row("torch", r["torch"])
    dev = r["device"]
    row("device", dev["name"] if dev["error"] is None else f"none: {dev['error']}")
    cuda = r["cuda"]
    if cuda["available"]:
        row("cuda", f"available (CUDA {cuda['version']}), {len(cuda['gpus'])} GPU(s)")
        for g in cuda["gpus"]:
            gpu = f"cuda:{g['index']} {g['name']}, {g['memory_gib']} GiB, capability {g['capability']}"
            add(f"  {'':<13}   {gpu}")
    else:
        built = f"torch built with CUDA {cuda['version']}" if cuda["version"] else "CPU-only torch build"
        row("cuda", f"not available ({built})" + (f"; {cuda['error']}" if cuda["error"] else ""))
    if r["bf16"]:
        row("bf16", "yes: the lessons train and sample in bf16 (16-bit floats) under autocast (COURSE_AUTOCAST)")
    else:
        on_cpu = (dev["name"] or "").startswith("cpu")
        why = "as expected on a CPU" if on_cpu else "COURSE_AUTOCAST=off, or no bf16 on this device"
        row("bf16", f"no: the lessons run in fp32 here, {why} (bf16 autocast needs a CUDA GPU from Ampere on)")
    row("mps", "available" if r["mps"]["available"] else "not available")

    add("")
    add("Packages")
    for dist, version in r["packages"].items():
        row(dist, version or "not installed")

    add("")
    add("Settings")
    s = r["settings"]
    if s["error"]:
        add(f"  error: {s['error']}")
    else:
        for key, var in _SETTING_VARS.items():
            value = s[key]
            shown = "unset" if value is None else str(value)
            row(key, f"{shown}  ({var})")
        if not s["quick"] and not r["cuda"]["available"]:
            add("  note: full mode without a GPU: the lessons' full-mode trainings take hours to days on a CPU;")
            add("        on a laptop start Jupyter with COURSE_QUICK=1 (quick mode, same cells, minutes)")
            if not s["full_on_cpu"]:
                add("        (a full-mode training stops before it starts here, unless COURSE_FULL_ON_CPU=1)")

    add("")
    add("Datasets (looked up offline by file name: nothing downloaded, nothing checksum-checked)")
    add(f"  {'dataset':<14} {'split':<6} {'status':<10} where")
    for name, d in r["datasets"].items():
        for split, info in d["splits"].items():
            if info["status"] == "available":
                where = f"{info['source']}: {info['folder']}" if info["folder"] else info["source"]
            elif d["download_from"]:
                missing = [f for f, v in info["files"].items() if v["source"] is None]
                where = f"{len(missing)} file(s) would be downloaded from {d['download_from'][0]}"
                if info["status"] == "partial":
                    where = f"found in {info['source']}; " + where
            else:
                where = "scikit-learn is not installed"
            add(f"  {name:<14} {split:<6} {info['status']:<10} {where}")
    if s.get("dataset"):
        train = r["datasets"][s["dataset"]]["splits"]["train"]
        if not train["available"]:
            add(
                f"  note: the course's dataset ({s['dataset']}) is not all here; it is downloaded on "
                "first use, or set COURSE_DATASET=digits to work offline."
            )

    add("")
    c = r["cache"]
    if not c["exists"]:
        add(f"Cache  {c['path']}  (does not exist yet; made on first use)")
    else:
        add(f"Cache  {c['path']}  ({c['files']} files, {_human_bytes(c['bytes'])})")
        for name, f in c["folders"].items():
            if not f["exists"]:
                row(name, "empty")
                continue
            shown = ", ".join(f["items"][:5]) + (
                f", … ({len(f['items']) - 5} more)" if len(f["items"]) > 5 else ""
            )
            row(
                name,
                f"{len(f['items'])} item(s), {_human_bytes(f['bytes'])}" + (f": {shown}" if shown else ""),
            )
    return "\n".join(out)


def _add_doctor(subparsers) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="report Python, torch, device, packages, settings, datasets and the cache",
        description="Report what this machine offers the course. Downloads nothing; always exits 0.",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    report = doctor_report()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_doctor(report))
    return 0


# =============================================================================================
# course run
# =============================================================================================

LESSON_GLOB = "[0-9][0-9]_*.ipynb"


def find_notebooks_dir(cwd: Path | None = None) -> Path | None:
    """``./notebooks`` if it exists, else ``notebooks/`` beside the installed ``course_lib``."""
    candidates = [(cwd or Path.cwd()) / "notebooks", Path(__file__).resolve().parent.parent / "notebooks"]
    return next((c for c in candidates if c.is_dir()), None)


def _lessons_in(folder: Path) -> list[Path]:
    return sorted(folder.glob(LESSON_GLOB))


def resolve_notebooks(names: Sequence[str], notebooks_dir: Path | None) -> list[Path]:
    """Turn NB arguments (paths, folders, lesson names or numbers) into notebook paths.

    Raises UsageError naming the available lessons when an argument matches nothing.
    """
    available = _lessons_in(notebooks_dir) if notebooks_dir else []
    where = f"in {notebooks_dir}" if notebooks_dir else "(no notebooks/ folder found)"
    listing = ", ".join(p.stem for p in available) or "none"
    if not names:
        if not available:
            raise UsageError(f"no lessons ({LESSON_GLOB}) found {where}")
        return available

    paths: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = _lessons_in(path)
            if not found:
                raise UsageError(f"no lessons ({LESSON_GLOB}) in folder {name}")
            paths += found
            continue
        if path.is_file():
            if path.suffix != ".ipynb":
                raise UsageError(f"{name} is not a notebook (.ipynb)")
            paths.append(path)
            continue
        stem = name.removesuffix(".ipynb")
        matches = [p for p in available if p.stem == stem]
        matches = matches or [p for p in available if p.stem.startswith(stem + "_")]
        if len(matches) == 1:
            paths.append(matches[0])
            continue
        if len(matches) > 1:
            raise UsageError(f"lesson {name!r} is ambiguous: {', '.join(p.stem for p in matches)}")
        raise UsageError(f"unknown lesson {name!r}; available lessons {where}: {listing}")
    seen: set[Path] = set()
    unique = []
    for p in paths:  # keep the order given, run each notebook once
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _first_line(source: str) -> str:
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= 80 else line[:77] + "..."


def _peak_mib(pid: int | None) -> float | None:
    """A process's peak resident memory in MiB (VmHWM in /proc/PID/status; Linux only, else None)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_notebook(
    path: Path, out_dir: Path, quick: bool = False, timeout: float | None = None
) -> dict[str, Any]:
    """Execute one notebook in a fresh ``python3`` kernel (cwd = its folder) and save the copy.

    Returns a summary row: lesson, path, output, status (ok / error / timeout), seconds,
    peak_mib (the kernel's peak resident memory, where Linux's /proc tells it, else None),
    kernel_log (the kernel process's stderr), and for a failure ``error`` = {cell (1-based
    index among all cells), first_line, ename, evalue}.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    from .grading.worker import _kernel_pid

    out_path = out_dir / path.name
    row: dict[str, Any] = {
        "lesson": path.stem,
        "path": str(path),
        "output": str(out_path),
        "status": "ok",
        "seconds": 0.0,
        "peak_mib": None,
        "error": None,
    }
    current: dict[str, Any] = {"index": None, "source": ""}

    def on_cell_start(cell, cell_index, **_):
        current["index"], current["source"] = cell_index, cell.get("source", "")

    def on_cell_executed(**_):
        # the kernel's high-water mark so far (what a learner's laptop must hold); read while the kernel lives
        peak = _peak_mib(_kernel_pid(client))
        if peak is not None:
            row["peak_mib"] = max(row["peak_mib"] or 0.0, peak)

    env = dict(os.environ)
    if quick:
        env["COURSE_QUICK"] = "1"
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiet the debugger's frozen-modules warning
    # The kernel process's own stderr (its log, C-level warnings, crash dumps; not cell output,
    # which goes into the notebook) is kept in a file rather than cluttering the terminal.
    log_path = out_dir / "logs" / f"{path.stem}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    row["kernel_log"] = str(log_path)
    start = time.perf_counter()
    nb = None
    try:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.resolve().parent)}},
            on_cell_start=on_cell_start,
            on_cell_executed=on_cell_executed,
        )
        with open(log_path, "w") as log:
            client.execute(env=env, stdout=log, stderr=log)
    except CellTimeoutError:
        row["status"] = "timeout"
        row["error"] = {"ename": "CellTimeoutError", "evalue": f"a cell ran longer than {timeout:g} s"}
    except CellExecutionError as e:
        row["status"] = "error"
        row["error"] = {"ename": e.ename, "evalue": e.evalue}
    except Exception as e:  # unreadable notebook, kernel died or would not start
        row["status"] = "error"
        row["error"] = {"ename": type(e).__name__, "evalue": f"{e} (kernel log: {log_path})"}
    row["seconds"] = round(time.perf_counter() - start, 2)
    if row["error"] is not None:
        index = current["index"]
        row["error"] |= {
            "cell": None if index is None else index + 1,
            "first_line": _first_line(current["source"]) if index is not None else "",
        }
    if nb is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_path)
    else:
        row["output"] = None
    return row


def format_run_table(rows: list[dict[str, Any]]) -> str:
    width = max([len("lesson")] + [len(r["lesson"]) for r in rows])
    lines = [f"{'lesson':<{width}}  {'status':<7}  {'seconds':>8}  {'peak MiB':>8}"]
    lines += [f"{r['lesson']:<{width}}  {r['status']:<7}  {r['seconds']:>8.1f}  "
              f"{'' if r.get('peak_mib') is None else format(r['peak_mib'], '.0f'):>8}" for r in rows]
    total = sum(r["seconds"] for r in rows)
    n_ok = sum(r["status"] == "ok" for r in rows)
    lines.append(f"{f'{n_ok}/{len(rows)} ok':<{width}}  {'':<7}  {total:>8.1f}")
    notes = []
    for r in rows:
        e = r["error"]
        if e is None:
            continue
        evalue = _first_line(e.get("evalue") or "")
        where = f"cell {e['cell']} `{e['first_line']}`: " if e.get("cell") else ""
        if "full mode on a CPU" in (e.get("evalue") or ""):  # train.check_cpu_budget: say the fix, not its start
            evalue = f"full mode on a CPU would train for hours to days; run it as `course run --quick {r['lesson']}`"
        notes.append(f"  {r['lesson']}: {where}{e['ename']}" + (f": {evalue}" if evalue else ""))
    if notes:
        lines += ["", "Failures:"] + notes
    return "\n".join(lines)


def _add_run(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="execute lesson notebooks headlessly and report ok / error / timeout",
        description=(
            "Execute lesson notebooks in order, each in a fresh python3 kernel whose working "
            "directory is the notebook's folder. Executed copies and summary.json go to --out. "
            "Exit status 1 if any lesson failed, 2 for bad arguments."
        ),
    )
    p.add_argument(
        "notebooks",
        nargs="*",
        metavar="NB",
        help="notebook path, folder, or lesson name/number (01, 01_noise_schedules); "
        f"default: every notebooks/{LESSON_GLOB}",
    )
    p.add_argument("--quick", action="store_true", help="set COURSE_QUICK=1 in the kernels")
    p.add_argument("--out", type=Path, default=Path("build/run"), help="output folder (default: build/run)")
    p.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="limit per cell, in seconds (default: none)"
    )
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    paths = resolve_notebooks(args.notebooks, find_notebooks_dir())
    from .device import pick_device
    from .settings import get_settings

    settings = get_settings()
    if not args.quick and not settings.quick and not settings.full_on_cpu and pick_device().type == "cpu":
        print("note: full mode on a CPU: a lesson that trains stops at its first training (it would take hours to "
              "days); add --quick for the CPU-sized course", file=sys.stderr)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "timeout": args.timeout,
        "python": sys.executable,
        "results": [],
    }
    for i, path in enumerate(paths, 1):
        print(f"[{i}/{len(paths)}] {path.stem} ...", file=sys.stderr, flush=True)
        row = run_notebook(path, out_dir, quick=args.quick, timeout=args.timeout)
        print(
            f"[{i}/{len(paths)}] {path.stem}: {row['status']} ({row['seconds']:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
        summary["results"].append(row)
        summary["ok"] = all(r["status"] == "ok" for r in summary["results"])
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_run_table(summary["results"]))
    print(f"\nExecuted notebooks and summary.json are in {out_dir}/")
    return 0 if summary["ok"] else 1


# =============================================================================================
# course build-exercises / check / grade
# =============================================================================================


def _add_build_exercises(subparsers) -> None:
    p = subparsers.add_parser(
        "build-exercises",
        help="write exercises/ from solutions/ (answers replaced by stubs)",
        description="Write exercises/NN_topic.ipynb from each solutions/NN_topic.ipynb.",
    )
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if exercises/ is out of date")
    p.add_argument("--solutions", type=Path, default=None, help="solutions folder (default: the course's)")
    p.add_argument("--exercises", type=Path, default=None, help="exercises folder (default: the course's)")
    p.set_defaults(func=_cmd_build_exercises)


def _cmd_build_exercises(args: argparse.Namespace) -> int:
    from course_lib.grading.build import BuildError, build_exercises, repo_folder, stale_exercises

    solutions = args.solutions or repo_folder("solutions")
    if not Path(solutions).is_dir():
        raise UsageError(f"no solutions folder at {solutions}")
    own = Path(solutions).resolve() == repo_folder("solutions").resolve()
    if not own and args.exercises is None:
        # your own solutions built into the course's exercises/ would become the release that grading reads
        raise UsageError(f"--solutions {args.solutions} needs --exercises FOLDER too: without it the build would "
                         f"write over the course's own {repo_folder('exercises')}")
    target = args.exercises or repo_folder("exercises")
    # which checkout: an editable install reads and writes beside the course_lib it imports, wherever you stand
    print(f"{'checking' if args.check else 'building'} {target} from {solutions}")
    try:
        if args.check:
            stale = stale_exercises(solutions, args.exercises)
            for name in stale:
                print(f"out of date: {name}")
            if stale:
                print("run `course build-exercises` to regenerate exercises/")
            return 1 if stale else 0
        notes: list[str] = []
        changed = build_exercises(solutions, args.exercises, notes)
    except BuildError as e:
        raise UsageError(str(e)) from None
    for path in changed:
        print(f"wrote {path}")
    for note in notes:
        print(f"note: {note}")
    if not changed:
        print(f"{target} is up to date")
    return 0


def _grade_options(args: argparse.Namespace, jobs: int = 1):
    from course_lib.grading.grade import GradeOptions

    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    opts = GradeOptions(jobs=jobs, lesson=getattr(args, "lesson", None), seed=getattr(args, "seed", None))
    if args.timeout is not None:
        opts.timeout = args.timeout
        opts.cell_timeout = min(opts.cell_timeout, args.timeout)
    if getattr(args, "device", None):
        opts.device = args.device
    if getattr(args, "exercises", None):
        if not Path(args.exercises).is_dir():
            raise UsageError(f"no exercises folder at {args.exercises}")
        opts.exercises_dir = args.exercises
    return opts


def _add_check(subparsers) -> None:
    p = subparsers.add_parser(
        "check",
        help="grade your own exercise notebook and print exercise / status / points / hint",
        description="Grade one exercise notebook exactly as `course grade` would and print the table.",
    )
    p.add_argument("notebook", type=Path, metavar="NB", help="your exercise notebook (.ipynb)")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="limit for the whole notebook")
    p.add_argument("--lesson", default=None, help="lesson number or name, if the notebook does not say")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the check inputs (default: random); the gradebook's seed repeats a teacher's run")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 unless every exercise passes (for a script or CI of your own)")
    p.add_argument("--exercises", type=Path, default=None, metavar="FOLDER",
                   help="the release your notebook came from, if your teacher handed out their own (default: the "
                   "course's exercises/)")
    p.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from course_lib.grading.grade import format_table, grade_submission, platform_problem

    if problem := platform_problem():
        raise UsageError(problem)

    if not args.notebook.is_file():
        raise UsageError(f"no notebook at {args.notebook}")
    row = grade_submission(args.notebook, _grade_options(args))
    print(format_table(row))
    if row["lesson"] is None:
        # the grader's note says the teacher will look; here the learner can say which lesson it is
        print(f"\nsay which lesson it is: course check --lesson NN {args.notebook} (NN as in the exercise "
              "notebook's name, e.g. 03)")
    if row.get("seed") is not None and row["exercises"]:
        # the inputs are drawn from the seed: with it, the same notebook gets the same table again
        print(f"\nchecked on the inputs of seed {row['seed']} (`course check --seed {row['seed']}` repeats them)")
    if row["status"] == "grader_error":
        return 1
    if args.strict and (not row["exercises"] or any(e["status"] != "pass" for e in row["exercises"])):
        return 1
    return 0


def _submissions(items: Sequence[Path], skipped: list[Path] | None = None) -> list[Path]:
    """Every submission named or found in a folder. In a folder, any file whose name contains ".ipynb" counts
    (``x.ipynb``, but also ``x.ipynb.txt`` or ``x.ipynb (1)`` as browsers save them): an unreadable one still
    gets its row. Other files are listed as skipped, so that nothing a student handed in goes unseen."""
    paths: list[Path] = []
    for item in items:
        if item.is_dir():
            files = [p for p in sorted(item.rglob("*")) if p.is_file() and ".ipynb_checkpoints" not in p.parts]
            # a zip made on a Mac carries __MACOSX/…/._name copies of its files' metadata: not submissions
            junk = [p for p in files if "__MACOSX" in p.relative_to(item).parts or p.name.startswith("._")]
            files = [p for p in files if p not in junk]
            found = [p for p in files if ".ipynb" in p.name.lower()]
            passed_over = [p for p in files if ".ipynb" not in p.name.lower()] + junk
            if not found:
                print(f"note: no .ipynb files in {item}", file=sys.stderr)
            if passed_over:
                shown = ", ".join(str(p.relative_to(item)) for p in passed_over[:5])
                more = f" and {len(passed_over) - 5} more" if len(passed_over) > 5 else ""
                print(f"note: skipped {len(passed_over)} file(s) in {item} that are not notebooks: {shown}{more}",
                      file=sys.stderr)
                if skipped is not None:
                    skipped += passed_over
            paths += found
        elif item.exists():
            paths.append(item)
        else:
            raise UsageError(f"no submission at {item}")
    if not paths:
        raise UsageError("no submissions to grade")
    return paths


def _add_grade(subparsers) -> None:
    p = subparsers.add_parser(
        "grade",
        help="grade a class's submissions into a gradebook",
        description=(
            "Grade submissions, each in its own kernel and temporary folder, rebuilt from the released "
            "exercise notebook. Writes DIR/gradebook.csv, DIR/summary.txt, DIR/<submission>.json and "
            "DIR/<submission>.md. Exit status 1 only if the grader itself failed, 2 for a usage error."
        ),
    )
    p.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSION", help="notebooks or folders of them")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the gradebook goes")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="submissions graded at once (default 1; about one per 2 CPU cores)")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="wall-clock limit per submission (default 300); inside it each exercise cell gets at most 30 s and each "
        "call of the learner's function in a check its exercise's limit (10 s; 20 s for exercise 08.3)",
    )
    p.add_argument("--lesson", default=None, help="lesson number or name for every submission")
    p.add_argument("--seed", type=int, default=None, help="seed of the check inputs (default: random, recorded)")
    p.add_argument("--device", default="cpu", help="device for the learners' code (default cpu)")
    p.add_argument("--exercises", type=Path, default=None, help="released exercises folder (default: the course's)")
    p.add_argument("--replace", action="store_true",
                   help="a resubmission (a file of a student and lesson DIR already holds, or of a row name it "
                   "holds) replaces those rows instead of getting a row beside them")
    p.add_argument("--dry-run", action="store_true",
                   help="list each submission's row name, lesson and student, and what happens to earlier rows; "
                   "grade nothing, write nothing")
    p.set_defaults(func=_cmd_grade)


def _cmd_grade(args: argparse.Namespace) -> int:
    from course_lib.grading.grade import class_summary, grade_many, platform_problem

    if problem := platform_problem():
        raise UsageError(problem)

    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    skipped: list[Path] = []
    paths = _submissions(args.submissions, skipped)
    opts = _grade_options(args, jobs=args.jobs)
    opts.replace = args.replace
    if args.dry_run:
        from course_lib.grading.grade import plan_names

        for path, name, lesson, action in plan_names(paths, args.out, opts):
            print(f"{path} → {name} (lesson {lesson or '?'}){': ' + action if action else ''}")
        return 0
    start = time.perf_counter()

    def progress(row, done, total):
        print(
            f"[{done}/{total}] {row['submission']}: {row['status']}, {row['total']:g}/{row['max_total']:g} "
            f"({row['seconds']:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    from course_lib.grading.grade import earlier_rows

    files = {str(p.resolve()) for p in paths}
    kept = [r for r in earlier_rows(args.out) if str(Path(r.get("file", "")).resolve()) not in files]
    if kept:
        print(f"note: {args.out} holds {len(kept)} graded submission(s) from an earlier run; they stay in the "
              "gradebook", file=sys.stderr)
        seeds = {r.get("seed") for r in kept}
        by_lesson: dict[str, set] = {}
        for r in kept:
            by_lesson.setdefault(r.get("lesson"), set()).add(r.get("seed"))
        lesson_seeds = {
            lesson: next(iter(s)) for lesson, s in by_lesson.items()
            if isinstance(lesson, str) and len(s) == 1 and isinstance(next(iter(s)), int)
        }
        if opts.seed is None and lesson_seeds:
            # a late submission is checked on its class's inputs (its lesson's earlier seed) unless --seed says
            opts.lesson_seeds = lesson_seeds
            if len(set(lesson_seeds.values())) == 1:
                opts.seed = next(iter(lesson_seeds.values()))
                print(f"note: using the earlier run's seed {opts.seed} (give --seed to choose another)",
                      file=sys.stderr)
            else:
                shown = ", ".join(f"{lesson} {seed}" for lesson, seed in sorted(lesson_seeds.items()))
                print(f"note: each lesson is checked with the seed of its earlier rows ({shown}; give --seed to "
                      "choose another)", file=sys.stderr)
        elif opts.seed is not None and opts.seed not in seeds:
            print(f"note: the earlier rows were checked with seed(s) {', '.join(map(str, sorted(seeds, key=str)))}, "
                  f"this run uses {opts.seed}", file=sys.stderr)
    try:
        rows = grade_many(paths, args.out, opts, progress=progress)
    except OSError as e:
        print(f"course grade: error: {e}", file=sys.stderr)
        return 1
    n_fail = sum(r["status"] == "grader_error" for r in rows)
    seeds_used = sorted({r["seed"] for r in rows if isinstance(r.get("seed"), int)}) or [opts.seed]
    print(
        f"graded {len(rows)} submission{'' if len(rows) == 1 else 's'} in {time.perf_counter() - start:.1f} s "
        f"(seed {', '.join(map(str, seeds_used))}); "
        f"gradebook: {args.out / 'gradebook.csv'}"
    )
    from course_lib.grading.grade import earlier_rows

    everyone = earlier_rows(args.out) or rows  # the whole gradebook: a late regrade keeps the class overview
    if len(everyone) > len(rows):
        print(f"the whole gradebook ({len(everyone)} submissions; also in {args.out / 'summary.txt'}):")
    summary = class_summary(everyone)
    if skipped:
        # in summary.txt too: a PDF handed in instead of the notebook must not go unseen
        summary += "\nskipped in this run, not notebooks (nothing graded): " + ", ".join(map(str, skipped))
        try:
            (args.out / "summary.txt").write_text(summary + "\n")
        except OSError:
            pass
    print(summary)
    if n_fail:
        print(f"course grade: the grader failed on {n_fail} submissions (see their .json)", file=sys.stderr)
    return 1 if n_fail else 0


# =============================================================================================
# The command
# =============================================================================================

#: One function per subcommand, in the order ``course --help`` lists them.
SUBCOMMANDS: list[Callable[[Any], None]] = [_add_doctor, _add_run, _add_build_exercises, _add_check, _add_grade]


# =============================================================================================
# course bench
# =============================================================================================


def _add_bench(subparsers) -> None:
    from .bench import BENCHMARKS

    p = subparsers.add_parser(
        "bench",
        help="run the benchmarks and append their results to benchmarks/RESULTS.md",
        description=(
            "Run benchmarks from the repository's benchmarks/ folder, one process each, and append one "
            "section per benchmark to the results file: date, machine, versions, command, seconds and the "
            "benchmark's own Markdown output. A GPU machine runs the full-mode variants. "
            "Benchmarks: " + "; ".join(f"{b.name} ({b.what})" for b in BENCHMARKS.values()) + ". "
            "Exit status 1 if any failed."
        ),
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and the commands, run nothing")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing, write nothing")
    p.add_argument("--results", type=Path, default=None,
                   help="file to append to (default: benchmarks/RESULTS.md in the checkout)")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="limit per benchmark, seconds")
    p.add_argument("--cpu", action="store_true", help="run the CPU variants even where a GPU exists")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from .bench import append_results, command_line, env_for, machine_line, plan, repo_root, run_benchmark, section

    root = repo_root()
    if not (root / "benchmarks").is_dir():
        raise UsageError(f"no benchmarks/ folder beside course_lib ({root}): course bench needs the course's "
                         "checkout (pip install -e .)")
    gpu = torch.cuda.is_available() and not args.cpu
    try:
        steps = plan(args.names, gpu)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    results = args.results or root / "benchmarks" / "RESULTS.md"
    if args.list or args.dry_run:
        for b, argv in steps:
            cmd = "skipped (needs a GPU)" if argv is None else command_line(argv, env_for(b, gpu))
            took = f" ({b.cpu_time} on a 2-core CPU)" if b.cpu_time and not gpu and argv is not None else ""
            print(f"{b.name:<11} {cmd}\n{'':<11} {b.what}{took}")
        if args.dry_run:
            print(f"\nwould run these one after the other, each appending a section to {results}")
        return 0
    machine = machine_line()
    failed = []
    for i, (b, argv) in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {b.name} ...", file=sys.stderr, flush=True)
        env = env_for(b, gpu)
        result = run_benchmark(argv, root, args.timeout, env) if argv is not None else None
        append_results(results, section(b, argv, result, machine, env))
        status = "skipped (needs a GPU)" if result is None else ("ok" if result[0] == 0 else "FAILED")
        if result is not None and result[0] != 0:
            failed.append(b.name)
        took = "" if result is None else f" in {result[3]:.0f} s"
        print(f"[{i}/{len(steps)}] {b.name}: {status}{took}", file=sys.stderr, flush=True)
    print(f"Results appended to {results}")
    return 1 if failed else 0


SUBCOMMANDS.append(_add_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="course",
        description="Tools for the diffusion course: check the setup, run the lessons, build and grade exercises.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``course`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or an argparse error (2): return, do not exit
        return e.code if isinstance(e.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except UsageError as e:
        print(f"course {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
