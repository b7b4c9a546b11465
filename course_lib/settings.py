"""Course settings, read from the environment.

| variable                | meaning                                             | default                          |
| ----------------------- | --------------------------------------------------- | -------------------------------- |
| ``COURSE_QUICK``        | ``1`` shrinks budgets (steps, samples, widths)      | ``0``                            |
| ``COURSE_DATASET``      | dataset the lessons train on                        | ``fashion_mnist``                |
| ``COURSE_DATA_DIR``     | extra folder searched for dataset files             | unset                            |
| ``COURSE_CACHE_DIR``    | downloads, trained models, evaluator                | ``~/.cache/diffusion-course``    |
| ``COURSE_DEVICE``       | force ``cpu``, ``cuda``, ``cuda:1`` or ``mps``      | unset (pick the best)            |
| ``COURSE_TEXT_ENCODER`` | Hugging Face model id or folder of the text encoder | unset (bundled all-MiniLM-L6-v2) |
| ``COURSE_COMPILE``      | compiling long trainings on CUDA: ``auto``, ``off``,| ``auto``: CUDA graphs for runs   |
|                         | ``default`` or ``reduce-overhead``                  | of 2000+ steps on a GPU          |
| ``COURSE_AUTOCAST``     | mixed precision: ``auto`` (bf16 on a CUDA GPU),     | ``auto``                         |
|                         | ``bf16`` (also on a CPU), ``off`` (fp32 everywhere) |                                  |
| ``COURSE_FULL_ON_CPU``  | ``1`` lets a full-mode training start on a CPU      | ``0``: it stops with an error    |
|                         | (hours to days)                                     | saying what to do                |

Quick mode changes budgets, never the code path: a quick run executes the same cells.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATASETS = ("fashion_mnist", "mnist", "digits")
COMPILE_MODES = ("auto", "off", "default", "reduce-overhead")
AUTOCAST_MODES = ("auto", "bf16", "off")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    quick: bool
    dataset: str
    data_dir: Path | None
    cache_dir: Path
    device: str | None
    text_encoder: str | None = None
    compile: str = "auto"
    autocast: str = "auto"
    full_on_cpu: bool = False


def _flag(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{name} must be 0 or 1 (or true/false), got {value!r}")


def get_settings() -> Settings:
    """Read the settings from the environment now (cheap, so every call sees changes)."""
    env = os.environ
    dataset = env.get("COURSE_DATASET", "fashion_mnist").strip() or "fashion_mnist"
    if dataset not in DATASETS:
        raise ValueError(f"COURSE_DATASET must be one of {', '.join(DATASETS)}; got {dataset!r}")
    data_dir = env.get("COURSE_DATA_DIR", "").strip()
    cache_dir = env.get("COURSE_CACHE_DIR", "").strip()
    device = env.get("COURSE_DEVICE", "").strip() or None
    text_encoder = env.get("COURSE_TEXT_ENCODER", "").strip() or None
    compile_mode = env.get("COURSE_COMPILE", "auto").strip().lower() or "auto"
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"COURSE_COMPILE must be one of {', '.join(COMPILE_MODES)}; got {compile_mode!r}")
    autocast = env.get("COURSE_AUTOCAST", "auto").strip().lower() or "auto"
    if autocast not in AUTOCAST_MODES:
        raise ValueError(f"COURSE_AUTOCAST must be one of {', '.join(AUTOCAST_MODES)}; got {autocast!r}")
    return Settings(
        quick=_flag("COURSE_QUICK", env.get("COURSE_QUICK", "0")),
        dataset=dataset,
        data_dir=Path(data_dir).expanduser() if data_dir else None,
        cache_dir=Path(cache_dir).expanduser() if cache_dir else Path.home() / ".cache" / "diffusion-course",
        device=device,
        text_encoder=text_encoder,
        compile=compile_mode,
        autocast=autocast,
        full_on_cpu=_flag("COURSE_FULL_ON_CPU", env.get("COURSE_FULL_ON_CPU", "0")),
    )


def quick() -> bool:
    """True in quick mode (``COURSE_QUICK=1``)."""
    return get_settings().quick


def budget(quick_value, full_value):
    """Pick the quick-mode or the full-mode value of a budget: ``steps = budget(300, 20_000)``."""
    return quick_value if quick() else full_value
