"""Settings from the environment, device choice, seeding, autocast policy."""

import pytest
import torch

from course_lib.device import autocast_dtype, pick_device, seed_everything
from course_lib.settings import budget, get_settings


def test_defaults(monkeypatch):
    for var in ("COURSE_QUICK", "COURSE_DATASET", "COURSE_DATA_DIR", "COURSE_CACHE_DIR", "COURSE_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    s = get_settings()
    assert (s.quick, s.dataset, s.data_dir, s.device) == (False, "fashion_mnist", None, None)
    assert s.cache_dir.name == "diffusion-course"


def test_environment_is_read(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_QUICK", "1")
    monkeypatch.setenv("COURSE_DATASET", "digits")
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    s = get_settings()
    assert s.quick and s.dataset == "digits" and s.data_dir == tmp_path and s.cache_dir == tmp_path / "c"
    assert budget(3, 300) == 3
    assert pick_device() == torch.device("cpu")
    monkeypatch.setenv("COURSE_QUICK", "0")
    assert budget(3, 300) == 300


def test_bad_settings_say_what_was_expected(monkeypatch):
    monkeypatch.setenv("COURSE_DATASET", "cifar10")
    with pytest.raises(ValueError, match="fashion_mnist, mnist, digits"):
        get_settings()
    monkeypatch.delenv("COURSE_DATASET")
    monkeypatch.setenv("COURSE_QUICK", "maybe")
    with pytest.raises(ValueError, match="COURSE_QUICK must be 0 or 1"):
        get_settings()
    monkeypatch.delenv("COURSE_QUICK")
    with pytest.raises(ValueError, match="device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


def test_seed_everything_repeats_numbers():
    seed_everything(5)
    a = torch.randn(3)
    seed_everything(5)
    assert torch.equal(a, torch.randn(3))
    with pytest.raises(ValueError):
        seed_everything(-1)


def test_autocast_is_bf16_only_on_cuda():
    assert autocast_dtype("cpu") is None
