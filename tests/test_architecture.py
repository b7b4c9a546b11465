"""DESIGN.md: "Data flows one way: data → schedule + model → train → checkpoint → sampler → metrics / viz.
No module reaches back up that line." Checked on every import in course_lib, the lazy ones inside functions too."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "course_lib"

# Each module's place on the line; a module may import its own layer and the ones before it.
LAYERS = [
    {"settings", "device", "distributed", "progress"},
    {"data", "schedules"},
    {"text", "nn", "flow", "guidance", "oracle"},  # the models (an exact one too) and what conditions them
    {"train", "train_ddp"},  # training and checkpoints
    {"samplers", "diffusers_bridge"},
    {"pipeline", "metrics", "viz"},
    {"grading", "bench", "cli"},  # the course's tools, on top of everything
]


def _layer(module: str) -> int:
    """The layer of a dotted name inside course_lib ("nn.unet" → the models' layer)."""
    head = module.split(".")[0]
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"course_lib.{module} has no place in LAYERS: add it where it belongs")


def _imports(path: Path) -> set[str]:
    """Every course_lib module ``path`` imports (relative or absolute, at any depth of the file), dotted below
    course_lib."""
    here = path.relative_to(PACKAGE).with_suffix("").parts
    package = list(here[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] + ([node.module] if node.module else [])
            elif (node.module or "").startswith("course_lib"):
                base = node.module.split(".")[1:]
            else:
                continue
            if base:
                found.add(".".join(base))
            else:  # "from . import x" / "from course_lib import x"
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(".".join(a.name.split(".")[1:]) for a in node.names if a.name.startswith("course_lib."))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_reaches_back_up_the_line(path):
    module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    late = {dep for dep in _imports(path) if _layer(dep) > _layer(module)}
    assert not late, f"course_lib.{module} imports {sorted(late)}, which come later on DESIGN.md's line"


def test_the_check_sees_a_lazy_import_inside_a_function(tmp_path):
    """The import that used to break the rule (a model module importing train inside a function) is caught."""
    nn_dir = tmp_path / "course_lib" / "nn"
    nn_dir.mkdir(parents=True)
    bad = nn_dir / "bad.py"
    bad.write_text("def fit():\n    from ..train import diffusion_loss\n    return diffusion_loss\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "course_lib"
    try:
        assert _imports(bad) == {"train"}
        with pytest.raises(AssertionError, match=r"nn.bad imports \['train'\]"):
            test_no_module_reaches_back_up_the_line(bad)
    finally:
        PACKAGE = saved
