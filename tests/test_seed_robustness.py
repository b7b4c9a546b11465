"""benchmarks/seed_robustness.py claims that its extra cell moves every seed a lesson sets by the
shift, and nothing else: a lesson run after it must draw what it would draw with seed + shift."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from seed_robustness import SHIFT_CELL, shifted_copy  # noqa: E402

# The draws a lesson makes: the course's seeding, a seeded CPU generator (as training and sampling
# make), Python's and NumPy's generators. Printed as one JSON list.
DRAWS = """
import json, random
import numpy as np
import torch
from course_lib.device import seed_everything

def draws(seed):
    seed_everything(seed)
    out = [torch.randn(3).tolist(), random.random(), float(np.random.rand())]
    g = torch.Generator(device="cpu")
    g.manual_seed(seed + 10)
    out += [torch.randn(2, generator=g).tolist(), torch.Generator().manual_seed(seed).initial_seed()]
    out += [float(np.random.default_rng(seed).random()), int(torch.manual_seed(seed).initial_seed())]
    return out

print(json.dumps([draws(0), draws(4)]))
"""


def _run(prefix: str) -> list:
    done = subprocess.run([sys.executable, "-c", prefix + DRAWS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_shift_cell_moves_every_seed_by_the_shift():
    plain_0, plain_4 = _run("")
    shifted_0, shifted_4 = _run(SHIFT_CELL.format(shift=4))
    assert shifted_0 != plain_0, "the shift cell changed no draw"
    assert shifted_0 == plain_4, "seed 0 under shift 4 must draw what seed 4 draws"
    assert shifted_4 != plain_4


@pytest.mark.parametrize("shift", [1, 7])
def test_a_shifted_copy_keeps_the_lesson_and_puts_the_cell_first(tmp_path, shift):
    src = ROOT / "notebooks" / "01_noise_schedules.ipynb"
    copy = json.loads(shifted_copy(src, shift, tmp_path).read_text())
    original = json.loads(src.read_text())
    assert copy["cells"][1:] == original["cells"]
    assert copy["cells"][0]["source"] == SHIFT_CELL.format(shift=shift)
