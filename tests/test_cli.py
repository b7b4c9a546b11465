"""Tests for the ``course`` command: ``course doctor`` and ``course run``.

Nothing here downloads anything: doctor only looks at file names. The ``run`` tests execute
tiny notebooks written into tmp_path, each in a real python3 kernel (a second or two each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_lib import cli, data
from course_lib.device import pick_device

MNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Known settings: an empty cache in tmp_path, no data dir, no Debian folder, no quick mode."""
    for var in ("COURSE_QUICK", "COURSE_DATASET", "COURSE_DATA_DIR", "COURSE_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")


def doctor_json(capsys) -> dict:
    assert cli.main(["doctor", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def dataset_line(text: str, name: str, split: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.split()[:2] == [name, split]]
    assert len(lines) == 1, f"expected one line for {name} {split} in:\n{text}"
    return lines[0]


# ---------------------------------------------------------------------------------------------
# course doctor
# ---------------------------------------------------------------------------------------------


def test_doctor_prints_torch_device_and_datasets(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert torch.__version__ in out
    device_lines = [ln for ln in out.splitlines() if ln.split()[:1] == ["device"]]
    assert device_lines and device_lines[0].split()[1] == str(pick_device())
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in out
    for name in ("fashion_mnist", "mnist", "digits"):
        for split in ("train", "test"):
            dataset_line(out, name, split)
    # nothing found anywhere: MNIST would be downloaded, digits ship with scikit-learn
    assert "missing" in dataset_line(out, "mnist", "test")
    assert data.MIRRORS["mnist"][0] in dataset_line(out, "mnist", "test")
    assert "available" in dataset_line(out, "digits", "train")
    assert "does not exist yet" in out  # the empty cache of the fixture
    for dist in ("numpy", "safetensors", "scikit-learn"):
        assert any(ln.split()[:1] == [dist] for ln in out.splitlines()), dist


def test_doctor_json_has_the_keys(capsys):
    report = doctor_json(capsys)
    for key in (
        "python",
        "platform",
        "torch",
        "device",
        "cuda",
        "bf16",
        "mps",
        "packages",
        "settings",
        "datasets",
        "cache",
    ):
        assert key in report, key
    assert report["torch"] == torch.__version__
    assert report["device"]["name"] == str(pick_device())
    assert report["cuda"]["available"] == torch.cuda.is_available()
    assert set(report["datasets"]) == {"fashion_mnist", "mnist", "digits"}
    assert set(report["settings"]) >= {"quick", "dataset", "data_dir", "cache_dir", "device"}
    assert report["settings"]["dataset"] == "fashion_mnist"
    assert report["settings"]["quick"] is False
    assert report["packages"]["numpy"] == __import__("numpy").__version__


def test_doctor_finds_mnist_test_split_in_course_data_dir(capsys, monkeypatch, tmp_path):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for fname in MNIST_FILES[2:]:  # only the test split
        (folder / fname).write_bytes(b"fake")  # doctor looks at names, never at contents
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))

    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    test_line = dataset_line(out, "mnist", "test")
    assert "available" in test_line and "COURSE_DATA_DIR" in test_line and str(folder) in test_line
    assert "missing" in dataset_line(out, "mnist", "train")

    report = doctor_json(capsys)
    split = report["datasets"]["mnist"]["splits"]["test"]
    assert split["available"] is True
    assert split["source"] == "COURSE_DATA_DIR"
    assert split["folder"] == str(folder)
    assert report["datasets"]["mnist"]["splits"]["train"]["available"] is False


def test_doctor_follows_the_loaders_search_order(capsys, monkeypatch, tmp_path):
    """COURSE_DATA_DIR before the cache before Debian's folder, per file; half a split is 'partial'."""
    data_dir, cache_data = tmp_path / "data", tmp_path / "cache" / "data"
    debian = tmp_path / "debian"
    for folder in (data_dir / "fashion_mnist", cache_data / "fashion_mnist", debian, cache_data / "mnist"):
        folder.mkdir(parents=True)
    for fname in MNIST_FILES:
        (debian / fname).write_bytes(b"x")
        (cache_data / "fashion_mnist" / fname).write_bytes(b"x")
    (data_dir / "fashion_mnist" / MNIST_FILES[0]).write_bytes(b"x")
    (cache_data / "mnist" / MNIST_FILES[1]).write_bytes(b"x")
    monkeypatch.setenv("COURSE_DATA_DIR", str(data_dir))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", debian)

    fashion = doctor_json(capsys)["datasets"]["fashion_mnist"]["splits"]
    assert fashion["test"]["source"] == "cache"  # the cache shadows Debian's folder
    assert fashion["train"]["source"] == "COURSE_DATA_DIR + cache"
    assert fashion["train"]["files"][MNIST_FILES[0]]["source"] == "COURSE_DATA_DIR"
    assert fashion["train"]["available"] is True

    (cache_data / "fashion_mnist" / MNIST_FILES[2]).unlink()
    (cache_data / "fashion_mnist" / MNIST_FILES[3]).unlink()
    report = doctor_json(capsys)
    assert report["datasets"]["fashion_mnist"]["splits"]["test"]["source"] == "Debian package"
    mnist_train = report["datasets"]["mnist"]["splits"]["train"]
    assert mnist_train["status"] == "partial" and mnist_train["available"] is False

    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "Debian package" in dataset_line(out, "fashion_mnist", "test")
    assert "partial" in dataset_line(out, "mnist", "train")


def test_idx_file_names_match_the_loader():
    """doctor must look for exactly the files course_lib.data reads."""
    assert cli.IDX_FILES == data._FILES


def test_doctor_reports_cache_contents(capsys, tmp_path):
    cache = tmp_path / "cache"
    (cache / "models" / "ddpm-mnist-abc").mkdir(parents=True)
    (cache / "models" / "ddpm-mnist-abc" / "model.safetensors").write_bytes(b"0" * 3000)
    (cache / "models" / "ddpm-mnist-abc" / "config.json").write_text("{}")
    (cache / "evaluator").mkdir()
    (cache / "evaluator" / "mnist-123.safetensors").write_bytes(b"0" * 100)
    (cache / "evaluator" / "mnist-123.json").write_text("{}")
    (cache / "data" / "mnist").mkdir(parents=True)
    (cache / "data" / "mnist" / MNIST_FILES[3]).write_bytes(b"0" * 10)

    c = doctor_json(capsys)["cache"]
    assert c["exists"] is True and c["path"] == str(cache)
    assert c["folders"]["models"]["items"] == ["ddpm-mnist-abc"]
    assert c["folders"]["models"]["bytes"] == 3002
    assert c["folders"]["evaluator"]["items"] == ["mnist-123.safetensors"]
    assert c["folders"]["data"]["items"] == [f"mnist/{MNIST_FILES[3]}"]
    assert c["files"] == 5

    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert any(
        ln.split()[:3] == ["models", "1", "item(s),"] and "ddpm-mnist-abc" in ln for ln in out.splitlines()
    )
    assert str(cache) in out


def test_doctor_survives_missing_packages_and_bad_settings(capsys, monkeypatch):
    monkeypatch.setattr(cli, "PACKAGES", cli.PACKAGES + ("surely-not-an-installed-package",))
    monkeypatch.setenv("COURSE_QUICK", "maybe")
    monkeypatch.setenv("COURSE_DEVICE", "warp-drive")
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "surely-not-an-installed-package" in ln)
    assert "not installed" in line
    assert "COURSE_QUICK" in out and "maybe" in out  # the settings error, shown not raised
    report = doctor_json(capsys)
    assert report["packages"]["surely-not-an-installed-package"] is None
    assert report["settings"]["error"] and report["device"]["error"]


# ---------------------------------------------------------------------------------------------
# course run
# ---------------------------------------------------------------------------------------------


def write_notebook(path: Path, *sources: str) -> Path:
    nb = new_notebook(cells=[new_markdown_cell(f"# {path.stem}")] + [new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def lessons(tmp_path, monkeypatch):
    """A notebooks/ folder with lessons that pass, raise, check quick mode and sleep; cwd = tmp_path."""
    folder = tmp_path / "notebooks"
    write_notebook(folder / "00_ok.ipynb", "x = 6 * 7", "print(open('beside.txt').read(), x)")
    (folder / "beside.txt").write_text("read relative to the notebook")
    write_notebook(
        folder / "01_boom.ipynb", "a = 1", "\nb = a + 1\nraise ValueError('the lesson broke')", "c = 3"
    )
    write_notebook(folder / "02_quick.ipynb", "import os\nassert os.environ.get('COURSE_QUICK') == '1'")
    write_notebook(folder / "03_slow.ipynb", "import time", "time.sleep(60)")
    (folder / "helper.ipynb").write_text("not a lesson, never run")
    monkeypatch.chdir(tmp_path)
    return folder


def test_resolve_lessons_by_number_name_path_and_folder(lessons):
    names = lambda args: [p.stem for p in cli.resolve_notebooks(args, lessons)]
    assert names([]) == ["00_ok", "01_boom", "02_quick", "03_slow"]
    assert names(["02", "00_ok", "01_boom.ipynb"]) == ["02_quick", "00_ok", "01_boom"]
    assert names([str(lessons / "03_slow.ipynb"), "03"]) == ["03_slow"]  # each notebook once
    assert names([str(lessons)]) == ["00_ok", "01_boom", "02_quick", "03_slow"]
    assert cli.find_notebooks_dir() == lessons
    with pytest.raises(cli.UsageError, match="unknown lesson '07'.*00_ok, 01_boom, 02_quick, 03_slow"):
        cli.resolve_notebooks(["07"], lessons)


def test_unknown_lesson_exits_2_listing_the_lessons(lessons, capsys):
    assert cli.main(["run", "05_missing"]) == 2
    err = capsys.readouterr().err
    assert "unknown lesson '05_missing'" in err
    assert "00_ok, 01_boom, 02_quick, 03_slow" in err
    assert not Path("build/run").exists()  # nothing ran
    assert cli.main(["run", "--no-such-option"]) == 2
    assert cli.main([]) == 2


def test_no_notebooks_folder_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "find_notebooks_dir", lambda cwd=None: None)
    assert cli.main(["run"]) == 2
    assert "no lessons" in capsys.readouterr().err


@pytest.mark.slow
def test_run_reports_each_lesson_and_keeps_going_after_an_error(lessons, tmp_path, capsys):
    out_dir = tmp_path / "out"
    status = cli.main(["run", "--quick", "--out", str(out_dir), "00", "01", "02"])
    out = capsys.readouterr().out
    assert status == 1

    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln[:3] in ("00_", "01_", "02_")}
    assert rows["00_ok"][1] == "ok" and rows["01_boom"][1] == "error" and rows["02_quick"][1] == "ok"
    assert all(float(r[2]) > 0 for r in rows.values())
    note = next(ln for ln in out.splitlines() if ln.strip().startswith("01_boom:"))
    assert "cell 3" in note and "`b = a + 1`" in note and "ValueError" in note

    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["quick"] is True and summary["ok"] is False
    assert [r["status"] for r in summary["results"]] == ["ok", "error", "ok"]
    assert summary["results"][1]["error"]["ename"] == "ValueError"

    ok = nbformat.read(out_dir / "00_ok.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for o in ok.cells[2].outputs)
    assert "read relative to the notebook 42" in printed  # cwd was the notebook's folder
    boom = nbformat.read(out_dir / "01_boom.ipynb", as_version=4)
    assert any(o.output_type == "error" for o in boom.cells[2].outputs)
    assert not boom.cells[3].get("outputs") and boom.cells[3].execution_count is None
    assert not (lessons / "00_ok.ipynb").read_text().count('"output_type"')  # source untouched


@pytest.mark.slow
def test_run_without_quick_leaves_quick_mode_off_and_timeout(lessons, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert cli.main(["run", "--out", str(out_dir), "--timeout", "2", "02_quick", "03"]) == 1
    out = capsys.readouterr().out
    summary = json.loads((out_dir / "summary.json").read_text())
    results = {r["lesson"]: r for r in summary["results"]}
    assert results["02_quick"]["status"] == "error"
    assert results["02_quick"]["error"]["ename"] == "AssertionError"
    assert results["03_slow"]["status"] == "timeout"
    assert results["03_slow"]["seconds"] < 30
    assert "timeout" in next(ln for ln in out.splitlines() if ln.startswith("03_slow"))


@pytest.mark.slow
def test_run_exits_0_when_all_lessons_pass(lessons, tmp_path, capsys):
    out_dir = tmp_path / "elsewhere"
    status = cli.main(["run", "--quick", "--out", str(out_dir), str(lessons / "02_quick.ipynb")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "02_quick" in out and "1/1 ok" in out
    assert (out_dir / "02_quick.ipynb").is_file()
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["ok"] is True
    if sys.platform.startswith("linux"):  # the kernel's peak memory, from /proc: a Python kernel holds tens of MiB
        peak = summary["results"][0]["peak_mib"]
        assert 20 < peak < 4096, peak
        assert "peak MiB" in out and f"{peak:.0f}" in out


# ---------------------------------------------------------------------------------------------
# The console script
# ---------------------------------------------------------------------------------------------


def test_course_console_script(tmp_path):
    exe = Path(sys.executable).parent / "course"
    assert exe.is_file(), "the `course` console script is not installed (pip install -e .)"
    env = {**os.environ, "COURSE_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("COURSE_QUICK", None)
    done = subprocess.run(
        [str(exe), "doctor", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["torch"] == torch.__version__
    assert report["cache"]["path"] == str(tmp_path / "cache")

    done = subprocess.run(
        [str(exe), "run", "no_such_lesson"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2
    assert "unknown lesson 'no_such_lesson'" in done.stderr


# ----------------------------------------------------------------------------- course bench
def _fake_benchmarks(tmp_path, monkeypatch):
    from course_lib import bench

    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "good.py").write_text(
        "import sys\nprint('| a | b |\\n| --- | --- |\\n| 1 | ' + ' '.join(sys.argv[1:]) + ' |')\n")
    (tmp_path / "benchmarks" / "bad.py").write_text("raise SystemExit('the benchmark broke: no data')\n")
    fake = {
        "good": bench.Benchmark("good", "good.py", "a table", cpu_args=("--on-cpu",), gpu_args=("--on-gpu",)),
        "bad": bench.Benchmark("bad", "bad.py", "a failure"),
        "gpu-only": bench.Benchmark("gpu-only", "good.py", "needs a GPU", needs_gpu=True),
    }
    monkeypatch.setattr(bench, "BENCHMARKS", fake)
    monkeypatch.setattr(bench, "repo_root", lambda: tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_bench_appends_a_section_per_benchmark_with_machine_command_and_output(tmp_path, monkeypatch, capsys):
    _fake_benchmarks(tmp_path, monkeypatch)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Measured results\n")
    assert cli.main(["bench", "--results", str(results)]) == 1  # "bad" failed
    text = results.read_text()
    assert text.startswith("# Measured results\n")  # appended, never overwritten
    good, bad, gpu = text.split("## course bench: ")[1:]
    assert good.startswith("good (") and "| 1 | --on-cpu |" in good
    assert "Command: `python benchmarks/good.py --on-cpu`" in good and "exit status 0" in good
    assert "Machine: " in good and "torch " in good and "Python " in good
    assert "**Failed.**" in bad and "the benchmark broke: no data" in bad
    assert "Skipped: needs a CUDA GPU" in gpu
    assert "bad: FAILED" in capsys.readouterr().err


def test_bench_list_and_dry_run_write_nothing(tmp_path, monkeypatch, capsys):
    _fake_benchmarks(tmp_path, monkeypatch)
    results = tmp_path / "RESULTS.md"
    assert cli.main(["bench", "--dry-run", "good", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "python benchmarks/good.py --on-cpu" in out
    assert f"each appending a section to {results}" in out  # where the results would go
    assert not results.exists()
    assert cli.main(["bench", "--list"]) == 0
    assert "skipped (needs a GPU)" in capsys.readouterr().out


def test_bench_rejects_unknown_names_and_bad_timeouts(tmp_path, monkeypatch, capsys):
    _fake_benchmarks(tmp_path, monkeypatch)
    assert cli.main(["bench", "nonsense"]) == 2
    assert "unknown benchmark 'nonsense'; expected one of good, bad, gpu-only" in capsys.readouterr().err
    assert cli.main(["bench", "good", "--timeout", "0"]) == 2


def test_real_benchmark_registry_points_at_scripts_that_exist():
    from course_lib.bench import BENCHMARKS, repo_root

    for b in BENCHMARKS.values():
        assert (repo_root() / "benchmarks" / b.script).is_file(), b.script


def test_run_in_full_mode_on_a_cpu_says_to_add_quick(lessons, tmp_path, monkeypatch, capsys):
    """A learner who forgets --quick on a laptop is told before the first lesson, and the failure's line in the
    table says the fix instead of the start of train.check_cpu_budget's message."""
    monkeypatch.setenv("COURSE_QUICK", "0")
    monkeypatch.delenv("COURSE_FULL_ON_CPU", raising=False)
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    message = ("full mode on a CPU: the U-Net ddpm-x would train 15,000 steps of 128 images, which takes many hours "
               "to days on a CPU. Quick mode is meant for a CPU: restart Jupyter with COURSE_QUICK=1 …")

    def fake_run(path, out_dir, quick=False, timeout=None):
        return {"lesson": path.stem, "path": str(path), "output": None, "status": "error", "seconds": 1.0,
                "error": {"ename": "RuntimeError", "evalue": message, "cell": 10,
                          "first_line": "from course_lib.samplers import sample"}}

    monkeypatch.setattr(cli, "run_notebook", fake_run)
    assert cli.main(["run", "--out", str(tmp_path / "out"), "00"]) == 1
    captured = capsys.readouterr()
    assert "note: full mode on a CPU" in captured.err and "add --quick" in captured.err
    failure = next(ln for ln in captured.out.splitlines() if ln.strip().startswith("00_ok:"))
    assert "run it as `course run --quick 00_ok`" in failure, failure
    # with --quick (or COURSE_QUICK=1) there is no such note
    assert cli.main(["run", "--quick", "--out", str(tmp_path / "out"), "00"]) == 1
    assert "note: full mode" not in capsys.readouterr().err


def test_bench_runs_a_quick_mode_benchmark_with_its_variables_and_says_so(tmp_path, monkeypatch, capsys):
    """A benchmark registered with COURSE_QUICK=1 gets it in its process, and the section's command shows it, so
    the command can be run again as written."""
    from course_lib import bench

    _fake_benchmarks(tmp_path, monkeypatch)
    (tmp_path / "benchmarks" / "envy.py").write_text("import os\nprint('quick =', os.environ.get('COURSE_QUICK'))\n")
    monkeypatch.setitem(bench.BENCHMARKS, "envy", bench.Benchmark("envy", "envy.py", "reads its variables",
                                                                  env={"COURSE_QUICK": "1"}))
    monkeypatch.setenv("COURSE_QUICK", "0")
    results = tmp_path / "RESULTS.md"
    assert cli.main(["bench", "envy", "--results", str(results)]) == 0
    text = results.read_text()
    assert "Command: `COURSE_QUICK=1 python benchmarks/envy.py`" in text and "quick = 1" in text, text
    assert cli.main(["bench", "--list", "envy"]) == 0
    assert "COURSE_QUICK=1 python benchmarks/envy.py" in capsys.readouterr().out
