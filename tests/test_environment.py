"""environment.yml cannot be exercised without conda here: check it agrees with the lock."""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", line)
        assert m, f"requirements.lock line is not an exact pin: {line!r}"
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def _env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_lock_pins_the_course_dependencies():
    pins = _lock()
    for pkg in ("torch", "numpy", "matplotlib", "ipywidgets", "jupyterlab", "nbval", "diffusers",
                "safetensors", "tqdm", "scikit-learn", "scikit-image", "pytest", "pytest-xdist", "nbclient"):
        assert pkg in pins, f"{pkg} is not pinned in requirements.lock"
    assert pins["torch"] == "2.13.0"
    assert "torchvision" not in pins, "torchvision fails to import beside the pinned torch"


def test_environment_yml_installs_the_lock():
    env = _env()
    deps = env["dependencies"]
    python = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"], python
    assert "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-r requirements.lock" in pip and "-e ." in pip
    # torch first, with the lock's exact version
    torch_pins = [p for p in pip if p.startswith("torch")]
    assert torch_pins == [f"torch=={_lock()['torch']}"]
    assert pip.index(torch_pins[0]) < pip.index("-r requirements.lock")
    # nothing else pinned in the yml that could disagree with the lock
    assert not [d for d in deps if isinstance(d, str) and "=" in d and not d.startswith("python")]


def test_pyproject_ranges_admit_the_lock():
    import tomllib
    from packaging.requirements import Requirement

    pins = _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is a dependency but not in requirements.lock"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} violates {spec}"
    assert sys.version_info >= (3, 10)


def _first_command_under(readme: str, heading: str) -> str:
    """The first line of the first fenced bash block under the README heading ``heading``."""
    section = readme.split(f"\n{heading}\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return block.strip().splitlines()[0]


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    """CI's claim, "install exactly as README.md says, then run README's test command", held to the letter."""
    readme = (ROOT / "README.md").read_text()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for heading in ("## Install", "## Test"):
        command = _first_command_under(readme, heading)
        assert command in ci, f"README's {heading[3:]} command is not a line of .ci/run: {command!r}"


def test_gpu_loan_scripts_parse_and_list_every_job():
    """benchmarks/gpu_kit.sh and gpu_loan.sh run on machines CI never sees: at least they parse, and each job
    the loan script's header promises is one its ``case`` runs (and no other)."""
    import subprocess

    for name in ("gpu_kit.sh", "gpu_loan.sh"):
        done = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / name)], capture_output=True, text=True)
        assert done.returncode == 0, f"{name} does not parse: {done.stderr}"
    text = (ROOT / "benchmarks" / "gpu_loan.sh").read_text()
    promised = set(re.findall(r"^#   (\w+)  ", text, flags=re.M))
    run = {job for arm in re.findall(r"^    ([\w|]+)\)", text, flags=re.M) for job in arm.split("|")}
    assert promised and promised == run, f"header lists {sorted(promised)}, the case runs {sorted(run)}"
    assert "/.gpu/" in (ROOT / ".gitignore").read_text().split(), ".gpu/ (wheels, data) must stay out of git"
