"""``course bench``: run the course's benchmarks and keep their results with how they were made.

Each benchmark is a script in ``benchmarks/`` that prints Markdown (a table and a line or two
around it). ``course bench`` runs the chosen ones, one after the other, in fresh processes
from the repository's root, and appends to ``benchmarks/RESULTS.md`` one section per run:
the date, the machine (CPU or GPU model, cores, memory), the versions (Python, torch,
diffusers, course_lib), the exact command, the seconds it took, and the script's own output.
A benchmark that fails is recorded as failed, with the end of its error output; the others
still run. Nothing is written with ``--dry-run``. These appended sections are the raw record; the
sections written by hand above them in RESULTS.md compare runs, and cite the command that made each figure.

The set differs by machine: the speed and quality figures the course states for a GPU need
one (``needs_gpu``), and are skipped, saying so, on a CPU.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str  # file in benchmarks/
    what: str
    cpu_args: tuple[str, ...] = ()  # the arguments on a CPU (None-equivalent: needs_gpu)
    gpu_args: tuple[str, ...] = ()
    needs_gpu: bool = False
    env: dict = field(default_factory=dict)  # set for the run (COURSE_QUICK=1 for a quick-mode benchmark)
    gpu_env: dict | None = None  # on a GPU, instead of env (None: env)
    cpu_time: str = ""  # how long it took on the course's 2-core CPU, where measured (benchmarks/RESULTS.md)


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("unet-speed", "unet_speed.py",
              "training step of the course U-Net vs diffusers' UNet2DModel at matched parameters",
              cpu_args=("--rounds", "5"), gpu_args=("--device", "cuda", "--rounds", "50"), cpu_time="about 3 min"),
    Benchmark("samplers", "sampler_table.py", "lesson 08's table: FD and seconds per 1000 images for every sampler",
              cpu_args=("--quick",), gpu_args=(), cpu_time="70–90 s"),
    Benchmark("solver-error", "solver_error.py",
              "each sampler's own error on the exact ε̂ of a Gaussian fit of the data (no network): RMS to the "
              "closed-form ODE solution, per grid and step count", cpu_args=(), gpu_args=(), cpu_time="about 30 s"),
    Benchmark("vae", "vae_quality.py", "lesson 05's VAE: test PSNR and KL, U-Net step on pixels vs latents",
              cpu_args=("--quick", "--factors", "4", "--test-images", "2000", "--rounds", "3"),
              gpu_args=("--device", "cuda")),
    Benchmark("grading", "grading_speed.py", "grading 30 submissions of lesson 01 with 2 job slots",
              cpu_args=("--lesson", "01_noise_schedules", "--n", "30", "--jobs", "2"),
              gpu_args=("--lesson", "01_noise_schedules", "--n", "30", "--jobs", "2"), cpu_time="under 2 min"),
    Benchmark("lessons", "lesson_runtimes.py", "every lesson's runtime: quick mode on a CPU, full mode on a GPU",
              cpu_args=("--quick",), gpu_args=(), cpu_time="6–11 min"),
    Benchmark("seeds", "seed_robustness.py",
              "each lesson's checks with every seed shifted (quick mode): do they hang on one random draw?",
              cpu_args=("--shifts", "1,2,3"), gpu_args=("--shifts", "1"), cpu_time="about 26 min"),
    Benchmark("cpu-ten-minutes", "cpu_ten_minutes.py",
              "lessons 06-07 side by side: ten minutes of class-conditional training, a public course's recipe vs "
              "the course's, one judge", cpu_args=(), gpu_args=(), cpu_time="about 25 min"),
    Benchmark("ddim-clamp", "ddim_clamp.py", "guided DDIM with three treatments of x̂_0 (the clamp experiment)",
              cpu_args=(), gpu_args=("--n", "1000", "--scales", "1", "3", "5"), env={"COURSE_QUICK": "1"},
              gpu_env={}),
    Benchmark("quick-class", "quick_class_model.py",
              "lesson 06's class model at quick mode's budget: does it follow its labels?",
              cpu_args=(), gpu_args=(), env={"COURSE_QUICK": "1"}),
    Benchmark("gpu-suite", "gpu_suite.py",
              "the GPU figures in one timed pass: lesson 04's DDPM, speed ablation and MFU, VAE, guidance sweep, "
              "sampler table, latent pipeline, lesson 10's models",
              gpu_args=("--out", "build/gpu_suite"), needs_gpu=True),
]}


def repo_root() -> Path:
    """The checkout holding ``benchmarks/`` (course_lib is installed editable from it)."""
    import course_lib

    return Path(course_lib.__file__).resolve().parent.parent


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine_line() -> str:
    """One line: the processor or GPU, cores, memory, and the versions that matter."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores{mem}, {gpu}; Python {platform.python_version()}, torch "
            f"{torch.__version__}, diffusers {_version('diffusers')}, course_lib {_version('diffusion-course')}")


def env_for(b: Benchmark, gpu: bool) -> dict:
    """The variables a benchmark runs with on this machine, beside the caller's environment."""
    return dict(b.gpu_env if gpu and b.gpu_env is not None else b.env)


def command_line(argv: list[str], env: dict) -> str:
    """``VAR=value python benchmarks/x.py --flag``, as a person would type it."""
    return " ".join([*(f"{k}={shlex.quote(str(v))}" for k, v in env.items()),
                     *(shlex.quote(a) for a in ["python", *argv[1:]])])


def plan(names: list[str] | None, gpu: bool) -> list[tuple[Benchmark, list[str] | None]]:
    """(benchmark, argv) for each chosen benchmark; argv None where it cannot run on this machine."""
    unknown = [n for n in names or [] if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; expected one of {', '.join(BENCHMARKS)}")
    chosen = [BENCHMARKS[n] for n in names] if names else [b for b in BENCHMARKS.values()]
    out = []
    for b in chosen:
        if b.needs_gpu and not gpu:
            out.append((b, None))
        else:
            out.append((b, [sys.executable, f"benchmarks/{b.script}", *(b.gpu_args if gpu else b.cpu_args)]))
    return out


def run_benchmark(argv: list[str], root: Path, timeout: float | None = None,
                  env: dict | None = None) -> tuple[int, str, str, float]:
    """Run one benchmark from ``root`` with ``env`` added to the environment: (exit status, stdout, stderr,
    seconds); 124 on timeout."""
    start = time.perf_counter()
    try:
        p = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
        return p.returncode, p.stdout, p.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return 124, out, err + f"\n(stopped after {timeout:g} s)", time.perf_counter() - start


def section(b: Benchmark, argv: list[str] | None, result: tuple[int, str, str, float] | None, machine: str,
            env: dict | None = None) -> str:
    """The Markdown section ``course bench`` appends for one benchmark (``env``: the variables it ran with)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## course bench: {b.name} ({stamp})", "", f"{b.what}.", "", f"Machine: {machine}.", ""]
    if argv is None:
        lines.append("Skipped: needs a CUDA GPU, and this machine has none.")
        return "\n".join(lines) + "\n"
    code, out, err, seconds = result
    command = command_line(argv, env or {})
    lines += [f"Command: `{command}` ({seconds:.0f} s, exit status {code}).", ""]
    if code == 0:
        lines.append(out.strip() or "(no output)")
    else:
        tail = "\n".join((err or out).strip().splitlines()[-15:])
        lines += ["**Failed.** The end of its error output:", "", "```", tail, "```"]
    return "\n".join(lines) + "\n"


def append_results(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n" + text)
