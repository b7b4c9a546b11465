"""Where tensors live and how to make runs repeatable.

``pick_device()`` prefers CUDA, then Apple's MPS, then the CPU, unless ``COURSE_DEVICE``
names one. On CUDA the course trains and samples under bf16 autocast; elsewhere in fp32
(``COURSE_AUTOCAST`` changes that: ``bf16`` also on a CPU, ``off`` nowhere).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import warnings

import numpy as np
import torch

from .settings import get_settings


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def pick_device(preferred: str | None = None) -> torch.device:
    """The device to run on: ``preferred``, else ``COURSE_DEVICE``, else cuda → mps → cpu."""
    name = preferred or get_settings().device
    if name:
        try:
            dev = torch.device(name)
        except RuntimeError as e:
            raise ValueError(f"device must be like 'cpu', 'cuda', 'cuda:0' or 'mps'; got {name!r}") from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
        if dev.type == "mps" and not _mps_available():
            raise ValueError(f"device {name!r} asked for, but MPS is not available here")
        return _indexed(dev)
    if torch.cuda.is_available():
        return _indexed(torch.device("cuda"))
    if _mps_available():
        return _indexed(torch.device("mps"))
    return torch.device("cpu")


def _indexed(dev: torch.device) -> torch.device:
    """"cuda" as "cuda:0" (the current GPU), "mps" as "mps:0": what a tensor on it reports as its device, so
    that ``tensor.device == pick_device()`` holds and per-device caches keyed by the name see one device."""
    if dev.index is not None or dev.type not in ("cuda", "mps"):
        return dev
    return torch.device(dev.type, torch.cuda.current_device() if dev.type == "cuda" else 0)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a CPU generator with that seed."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return torch.Generator().manual_seed(seed)


def table_dtype(device) -> torch.dtype:
    """The dtype a schedule's tables take on ``device``: float64 (their own), except on Apple's MPS, which
    has no float64 (a float64 tensor cannot even be moved there): float32, still finer than the bf16 or
    float32 images the tables scale."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def check_seed(seed) -> int:
    """A sampler's ``seed``: an int (None means 0), else a TypeError that says so."""
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {seed!r} ({type(seed).__name__})")
    return int(seed)


def _where(generator, device):
    """The device to draw on: the generator's own (see :func:`randn`), or ``device`` without one."""
    if generator is None:
        return device
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}: for a "
                        f"seed, pass torch.Generator().manual_seed({generator!r})")
    return generator.device


def randn(shape, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
    """N(0, I) draws of ``shape`` on ``device``, made on ``generator``'s own device and moved there.

    torch lets a generator fill tensors on its own device only (a CPU generator with
    ``device="cuda"`` raises). Drawing where the generator lives lets a learner seed one CPU
    generator and get the same noise on a laptop and on a GPU, as diffusers' ``randn_tensor``
    does. With a generator on ``device`` (or none) the move is a no-op.
    """
    where = _where(generator, device)
    return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)


def rand(shape, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
    """Uniform draws in [0, 1) of ``shape`` on ``device``, made on ``generator``'s device (see ``randn``)."""
    where = _where(generator, device)
    return torch.rand(shape, generator=generator, device=where, dtype=dtype).to(device)


def randint(high: int, shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Integers in 0..high−1 of ``shape`` (int64) on ``device``, made on ``generator``'s device (see ``randn``)."""
    where = _where(generator, device)
    return torch.randint(0, high, shape, generator=generator, device=where).to(device)


def restores_global_rng(fn):
    """Decorator: ``fn`` may seed the global generators (Python, NumPy, torch on the CPU and every
    CUDA device) for a repeatable run; their states are put back when it returns or raises.

    Training seeds them for itself, and a learner's notebook should go on with the random
    stream it had: the same as when the model came from the cache and nothing was trained.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        py, npy, hashseed = random.getstate(), np.random.get_state(), os.environ.get("PYTHONHASHSEED")
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=cuda):
                return fn(*args, **kwargs)
        finally:
            random.setstate(py)
            np.random.set_state(npy)
            if hashseed is None:
                os.environ.pop("PYTHONHASHSEED", None)
            else:
                os.environ["PYTHONHASHSEED"] = hashseed

    return wrapper


def bf16_supported(device: torch.device | str) -> bool:
    dev = torch.device(device)
    return dev.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The dtype the course autocasts to on ``device``, or None for plain fp32 (``COURSE_AUTOCAST``).

    "auto" (the default): bf16 on a CUDA GPU that supports it, fp32 elsewhere. "bf16": also on a
    CPU, which is faster only where the CPU computes in bf16 natively (AVX512-BF16 or AMX; elsewhere it
    is emulated and slower) and shows on a CPU how the lessons fare at a GPU's precision. "off":
    fp32 everywhere (at the course's small batches a GPU can be launch-bound, and then fp32 is as fast).
    """
    mode = get_settings().autocast
    dev = torch.device(device)
    if mode == "off":
        return None
    if bf16_supported(dev) or (mode == "bf16" and dev.type == "cpu"):
        return torch.bfloat16
    return None


def autocast(device: torch.device | str):
    """Context manager: autocast to :func:`autocast_dtype` (bf16 on CUDA by default), else a no-op."""
    dev = torch.device(device)
    dtype = autocast_dtype(dev)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=dtype)


#: below this many steps, compiling (30–60 s on an H100) costs more than CUDA graphs save
COMPILE_MIN_STEPS = 2000


def training_compile(device: torch.device | str, steps: int) -> bool | str:
    """The ``compile`` argument for a training run of ``steps`` steps on ``device``, from ``COURSE_COMPILE``.

    "auto" (the default): ``"reduce-overhead"`` (torch.compile with CUDA graphs) on CUDA for runs of
    at least :data:`COMPILE_MIN_STEPS` steps, else False. At the course's batch sizes a GPU training
    step is launch-bound, and replaying it as one graph made lesson 07's 15k-step recipe 3.6× faster
    on an H100 (benchmarks/RESULTS.md). A CPU, MPS, or a short run never compiles: there the compile
    time is not paid back. "off": never; "default" / "reduce-overhead": that torch.compile mode on CUDA.
    If compiling fails, training warns and goes on uncompiled.
    """
    mode = get_settings().compile
    if mode == "off" or torch.device(device).type != "cuda":
        return False
    if mode == "auto":
        return "reduce-overhead" if steps >= COMPILE_MIN_STEPS else False
    return True if mode == "default" else mode


def compile_model(model: torch.nn.Module, mode: bool | str = True) -> torch.nn.Module:
    """``torch.compile(model)`` where it can work, else ``model`` itself with a warning.

    ``mode``: True for the default, or one of torch.compile's modes ("reduce-overhead" adds
    CUDA graphs, "max-autotune" searches kernels). Compilation happens at the first call;
    :func:`course_lib.train.train_diffusion` catches a failure there and goes on uncompiled.
    """
    if mode not in (True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        raise ValueError("compile must be True or one of 'default', 'reduce-overhead', 'max-autotune', "
                         f"'max-autotune-no-cudagraphs', got {mode!r}")
    if not hasattr(torch, "compile"):
        warnings.warn("this torch has no torch.compile; running uncompiled", RuntimeWarning, stacklevel=2)
        return model
    try:
        # dynamic=False: a new batch size recompiles with static shapes. torch 2.11's inductor failed with
        # "misaligned address" on the dynamic-batch kernels it made otherwise (benchmarks/gpu_suite.py, H100)
        return torch.compile(model, mode=None if mode is True else mode, dynamic=False)
    except Exception as e:  # e.g. a Python version the installed torch cannot compile for
        warnings.warn(f"torch.compile is unavailable here ({type(e).__name__}: {e}); running uncompiled",
                      RuntimeWarning, stacklevel=2)
        return model
