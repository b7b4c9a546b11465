"""Tests for course_lib.metrics: the Fréchet distance and the course evaluator.

The evaluator tests use a tiny recipe on small synthetic "datasets" whose classes are
easy to tell apart, so they run in seconds and never touch the real data or the user's cache.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import scipy.linalg
import torch

from course_lib import metrics
from course_lib.metrics import (
    EvalReport,
    EvaluatorNet,
    EvaluatorRecipe,
    frechet_distance,
    gaussian_frechet_distance,
    load_evaluator,
    train_evaluator,
)

TINY = EvaluatorRecipe(epochs=1, min_steps=40, batch_size=64, lr=3e-3, widths=(4, 8, 8), feature_dim=16)
# for tests of the cache machinery, where what is learnt does not matter
FAST = EvaluatorRecipe(epochs=1, min_steps=3, batch_size=64, widths=(4, 8, 8), feature_dim=8)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The nets here are tiny: one thread is as fast, and much faster when CI runs tests in parallel."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------


def _scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root (the FID reference code)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d", [3, 16, 64])
def test_frechet_distance_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(400, d)) @ rng.normal(size=(d, d))
    b = rng.normal(size=(300, d)) @ rng.normal(size=(d, d)) + 0.5
    ours = frechet_distance(a, b)
    ref = _scipy_fd(a, b)
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-8)


def test_frechet_distance_accepts_torch_and_numpy_alike():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(100, 8)), rng.normal(size=(120, 8)) * 2
    fd_np = frechet_distance(a, b)
    fd_t = frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b))
    assert fd_t == pytest.approx(fd_np, rel=1e-5)


def test_gaussian_closed_form_diagonal():
    # For diagonal covariances the square root is elementwise:
    # d² = ||mu1 - mu2||² + Σ_i (sqrt(a_i) - sqrt(b_i))²
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    a, b = rng.uniform(0.1, 3, size=10), rng.uniform(0.1, 3, size=10)
    expected = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    got = gaussian_frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)


def test_gaussian_closed_form_rotated():
    # Rotating both Gaussians by the same orthogonal matrix leaves the distance unchanged.
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.1, 2, size=6), rng.uniform(0.1, 2, size=6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    got = gaussian_frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)


def test_fd_with_itself_is_zero_and_symmetric():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(500, 32))
    b = rng.normal(size=(500, 32)) * 1.5 + 0.2
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, b) > 1.0


def test_fd_singular_covariances_are_fine():
    # Post-ReLU features often have dead units: zero-variance dimensions must not break FD.
    rng = np.random.default_rng(4)
    a = np.maximum(rng.normal(size=(200, 16)), 0)
    a[:, :4] = 0.0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert np.isfinite(frechet_distance(a, a + 0.1))


def test_fd_grows_with_a_shift():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(400, 8))
    b = rng.normal(size=(400, 8))
    fds = [frechet_distance(a, b + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(fds, fds[1:]))
    # a pure mean shift by s in every one of D dims adds about D·s²
    assert fds[3] - fds[0] == pytest.approx(8 * 4.0, rel=0.1)


@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.zeros((1, 4)), np.zeros((5, 4)), "at least 2"),
        (np.zeros((5, 4)), np.zeros((5, 3)), "same feature size"),
        (np.zeros(5), np.zeros((5, 4)), "N×D"),
        (np.full((5, 4), np.nan), np.zeros((5, 4)), "NaN"),
    ],
)
def test_frechet_distance_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(a, b)


def test_gaussian_fd_bad_shapes():
    with pytest.raises(ValueError, match="same length"):
        gaussian_frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="covariance"):
        gaussian_frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))


# ---------------------------------------------------------------------------------------------
# A small synthetic dataset the tiny evaluator can learn in seconds
# ---------------------------------------------------------------------------------------------


def _toy_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """10 classes: a bright 8×8 square at one of 10 positions, on a noisy dark background."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    x = -1 + 0.3 * torch.rand(n, 1, 32, 32, generator=g)
    jitter = torch.randint(-1, 2, (n, 2), generator=g)
    for i, c in enumerate(labels.tolist()):
        r0 = 3 + 14 * (c // 5) + int(jitter[i, 0])
        c0 = 2 + 6 * (c % 5) + int(jitter[i, 1])
        x[i, 0, r0 : r0 + 8, max(c0, 0) : c0 + 6] = 0.6 + 0.4 * torch.rand(1, generator=g).item()
    return x.clamp(-1, 1), labels


@pytest.fixture(scope="module")
def toy_data():
    train = _toy_images(1200, seed=0)
    test = _toy_images(600, seed=1)
    return {"train": train, "test": test}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    metrics.clear_memory_cache()
    yield tmp_path / "cache"
    metrics.clear_memory_cache()


@pytest.fixture
def counted_training(monkeypatch):
    calls = []
    real = metrics.train_evaluator

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics, "train_evaluator", counting)
    return calls


@pytest.fixture(scope="module")
def trained_net(toy_data):
    x, y = toy_data["train"]
    return train_evaluator(x, y, TINY, device="cpu", progress=False)


@pytest.fixture(scope="module")
def evaluator(trained_net, toy_data):
    xt, yt = toy_data["test"]
    with torch.no_grad():
        acc = (trained_net(xt).argmax(1) == yt).double().mean().item()
    names = [str(i) for i in range(10)]
    return metrics.Evaluator(trained_net, "fake", names, acc, TINY, data=toy_data.__getitem__)


def test_train_evaluator_beats_chance(trained_net, toy_data):
    net = trained_net
    xt, yt = toy_data["test"]
    with torch.no_grad():
        acc = (net(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.6, acc  # chance is 0.1
    assert net.features(xt[:5]).shape == (5, TINY.feature_dim)


@pytest.mark.slow
def test_tiny_recipe_on_a_real_fashion_mnist_subset():
    data = pytest.importorskip("course_lib.data")
    try:
        train = data.load_images("fashion_mnist", "train")
        test = data.load_images("fashion_mnist", "test")
    except data.DatasetError as e:  # no files and no network: the toy tests above still ran
        pytest.skip(f"Fashion-MNIST not available: {e}")
    recipe = EvaluatorRecipe(epochs=1, min_steps=60, batch_size=128, widths=(8, 16, 32), feature_dim=32)
    net = train_evaluator(train.images[:4000], train.labels[:4000], recipe, device="cpu", progress=False)
    with torch.no_grad():
        acc = (net(test.images[:2000]).argmax(1) == test.labels[:2000]).double().mean().item()
    assert acc > 0.6, acc  # chance is 0.1; the full recipe reaches about 0.91


def test_train_evaluator_is_deterministic_and_keeps_global_rng(toy_data):
    x, y = toy_data["train"]
    recipe = EvaluatorRecipe(epochs=1, min_steps=5, batch_size=64, widths=(4, 8, 8), feature_dim=8)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = train_evaluator(x[:300], y[:300], recipe, device="cpu", progress=False)
    after = torch.rand(1)
    b = train_evaluator(x[:300], y[:300], recipe, device="cpu", progress=False)
    assert torch.equal(before, after)  # training did not consume the learner's random numbers
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_load_evaluator_trains_once_then_uses_the_cache(cache, toy_data, counted_training):
    data = toy_data.__getitem__
    ev = load_evaluator("fake", recipe=TINY, data=data, progress=False)
    assert len(counted_training) == 1
    assert ev.test_accuracy > 0.6
    path = metrics.evaluator_path("fake", TINY)
    assert path.exists() and path.parent == cache / "evaluator"
    assert path.name == f"fake-{TINY.hash()}.safetensors"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["test_accuracy"] == pytest.approx(ev.test_accuracy)
    assert meta["recipe"]["widths"] == list(TINY.widths)
    assert not path.with_suffix(".lock").exists()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    mtime = path.stat().st_mtime_ns

    # same process: the very same object from memory
    assert load_evaluator("fake", recipe=TINY, data=data, progress=False) is ev
    # a "new process": memory cleared, weights come from disk, no training
    metrics.clear_memory_cache()
    ev2 = load_evaluator("fake", recipe=TINY, data=data, progress=False)
    assert ev2 is not ev
    assert len(counted_training) == 1
    assert path.stat().st_mtime_ns == mtime
    for (k, va), vb in zip(ev.net.state_dict().items(), ev2.net.state_dict().values()):
        assert torch.equal(va.cpu(), vb.cpu()), k
    x = toy_data["test"][0][:20]
    assert torch.equal(ev.features(x), ev2.features(x))

    assert ev2.class_names == [str(i) for i in range(10)]  # "fake" is no course dataset: plain names

    # another recipe is another file
    load_evaluator("fake", recipe=FAST, data=data, progress=False)
    assert len(counted_training) == 2
    assert metrics.evaluator_path("fake", FAST).exists()


def test_load_evaluator_waits_for_a_lock_held_by_another_process(
    cache, toy_data, counted_training, trained_net
):
    # Another "process" holds the lock and writes the cache 1.5 s later: we must wait and load it,
    # not train a second copy.
    net = trained_net  # the other process's work
    path = metrics.evaluator_path("fake", TINY)
    path.parent.mkdir(parents=True)
    lock = path.with_suffix(".lock")
    lock.write_text(f"{os.getpid()} {socket.gethostname()} 0\n")  # a live holder
    meta = {"recipe_hash": TINY.hash(), "test_accuracy": 0.5, "class_names": list("abcdefghij")}

    def other_process_finishes():
        metrics._save(path, net, meta)
        lock.unlink()

    timer = threading.Timer(1.5, other_process_finishes)
    start = time.perf_counter()
    timer.start()
    try:
        ev = load_evaluator("fake", recipe=TINY, data=toy_data.__getitem__, progress=False)
    finally:
        timer.join()
    assert time.perf_counter() - start >= 1.4
    assert counted_training == []
    assert ev.test_accuracy == 0.5 and ev.class_names == list("abcdefghij")
    xt = toy_data["test"][0][:8]
    with torch.no_grad():
        assert torch.allclose(ev.net.features(xt), net.features(xt))


_CHILD = """
import json, sys
from safetensors.torch import load_file
from course_lib import metrics
t = load_file(sys.argv[1])
data = {"train": (t["xtr"], t["ytr"]), "test": (t["xte"], t["yte"])}
real = metrics.train_evaluator
def counting(*a, **k):
    with open(sys.argv[2], "a") as f:
        f.write("trained\\n")
    return real(*a, **k)
metrics.train_evaluator = counting
spec = json.loads(sys.argv[3])
spec.pop("architecture")
recipe = metrics.EvaluatorRecipe(**{**spec, "widths": tuple(spec["widths"])})
ev = metrics.load_evaluator("fake", recipe=recipe, data=data.__getitem__, progress=False)
print(ev.test_accuracy)
"""


@pytest.mark.slow
def test_two_processes_train_only_once(cache, toy_data, tmp_path):
    from safetensors.torch import save_file

    (xtr, ytr), (xte, yte) = toy_data["train"], toy_data["test"]
    blob = tmp_path / "toy.safetensors"
    save_file({"xtr": xtr, "ytr": ytr, "xte": xte, "yte": yte}, str(blob))
    log = tmp_path / "trained.log"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {**os.environ, "COURSE_CACHE_DIR": str(cache), "COURSE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(blob), str(log), json.dumps(FAST.to_dict())],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert log.read_text().count("trained") == 1
    accs = [float(out.strip().splitlines()[-1]) for out, _ in outs]
    assert accs[0] == accs[1]
    assert metrics.evaluator_path("fake", FAST).exists()


def test_stale_lock_is_broken(cache, toy_data, counted_training):
    path = metrics.evaluator_path("fake", FAST)
    path.parent.mkdir(parents=True)
    lock = path.with_suffix(".lock")
    lock.write_text("1 some-other-host 0\n")  # can't check the pid: only the age tells
    old = time.time() - 2 * metrics.LOCK_STALE_SECONDS
    os.utime(lock, (old, old))
    load_evaluator("fake", recipe=FAST, data=toy_data.__getitem__, progress=False)
    assert len(counted_training) == 1
    assert not lock.exists()


def test_lock_of_a_dead_process_is_broken_at_once(cache, toy_data, counted_training):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = metrics.evaluator_path("fake", FAST)
    path.parent.mkdir(parents=True)
    lock = path.with_suffix(".lock")
    lock.write_text(f"{dead.pid} {socket.gethostname()} {time.time():.0f}\n")  # fresh, but its owner is gone
    start = time.perf_counter()
    load_evaluator("fake", recipe=FAST, data=toy_data.__getitem__, progress=False)
    assert len(counted_training) == 1
    assert time.perf_counter() - start < metrics.LOCK_STALE_SECONDS / 2
    assert not lock.exists()


def test_evaluator_outputs(evaluator, toy_data):
    x, y = toy_data["test"]
    feats = evaluator.features(x[:50])
    assert (
        feats.shape == (50, TINY.feature_dim) and feats.dtype == torch.float64 and feats.device.type == "cpu"
    )
    p = evaluator.predict_proba(x[:50])
    assert p.shape == (50, 10)
    assert torch.allclose(p.sum(1), torch.ones(50, dtype=p.dtype))
    assert torch.equal(evaluator.classify(x[:50]), p.argmax(1))
    assert evaluator.class_names == [str(i) for i in range(10)]
    assert evaluator.dataset == "fake"
    # batch size does not change the result (eval mode: BatchNorm uses running stats)
    assert torch.allclose(evaluator.features(x[:50], batch_size=7), feats)


def test_evaluate_real_images_near_floor_and_noise_far(evaluator, toy_data):
    x, y = toy_data["test"]
    n = 300
    real = evaluator.evaluate(x[:n], labels=y[:n])
    assert isinstance(real, EvalReport)
    assert real.n == n and real.n_real == n and real.n_reference == 600
    assert real.accuracy == pytest.approx(real.accuracy_real, abs=0.15)
    assert real.accuracy > 0.6
    assert real.recognised == pytest.approx(real.recognised_real, abs=0.15)
    assert real.fd < 3 * real.fd_floor + 1e-6
    assert sum(real.class_share) == pytest.approx(1.0)

    # a known-wrong input: uniform noise must fail the bar
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(n, 1, 32, 32, generator=g) * 2 - 1
    bad = evaluator.evaluate(noise, labels=y[:n])
    assert bad.fd > 10 * real.fd_floor
    assert bad.fd > 5 * real.fd
    assert bad.fd_floor == real.fd_floor  # the floor depends only on n and the seed
    assert bad.recognised < real.recognised_real
    assert bad.accuracy < 0.3

    # without labels: no accuracy
    unl = evaluator.evaluate(x[:n])
    assert unl.accuracy is None and unl.accuracy_real is None
    assert unl.fd == pytest.approx(real.fd)

    text = str(real)
    assert "Fréchet" in text and "recognised" in text and "asked class" in text
    assert f"{real.fd:.3f}" in text and f"{real.fd_floor:.3f}" in text
    assert "asked class" not in str(unl)


def test_evaluate_floor_uses_same_n(evaluator, toy_data):
    x, _ = toy_data["test"]
    small = evaluator.evaluate(x[:20])
    large = evaluator.evaluate(x[:400])
    assert small.n_real == 20 and large.n_real == 400
    assert small.fd_floor > large.fd_floor  # FD's small-sample bias: the floor follows n
    assert evaluator.evaluate(x[:20], seed=0).fd_floor == small.fd_floor
    # more samples than real training images: the floor uses the whole split
    huge = evaluator.evaluate(torch.cat([x, x, x]))
    assert huge.n == 1800 and huge.n_real == 1200


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # the tiny net's dead features
def test_fd_over_several_sets_is_the_mean_of_their_fds_beside_the_floor_at_their_size(evaluator, toy_data):
    x, _ = toy_data["test"]
    rep = evaluator.evaluate(x[:300], fd_n=100)
    # independent of evaluate: scipy's FD of each set's features against the whole test split's
    ref_feats = evaluator.features(x).numpy()
    sets = [_scipy_fd(evaluator.features(x[i : i + 100]).numpy(), ref_feats) for i in (0, 100, 200)]
    assert rep.fd == pytest.approx(np.mean(sets), rel=1e-4)
    assert rep.fd_each == pytest.approx(sets, rel=1e-4)
    assert rep.fd_n == 100 and rep.fd_sets == 3 and rep.n == 300 and rep.n_real == 100
    assert rep.fd_floor == evaluator.fd_floor(100)
    assert "mean over 3 sets of 100" in rep.table()
    # the default is one set of all the samples, as before
    one = evaluator.evaluate(x[:300])
    assert one.fd_sets == 1 and one.fd_n == 300 and one.fd_floor == evaluator.fd_floor(300)
    assert one.fd != pytest.approx(rep.fd, rel=1e-3)  # FD's small-sample bias: 100 per set reads higher
    for bad in (7, 1, 0, 300.0, True):
        with pytest.raises(ValueError, match="fd_n"):
            evaluator.evaluate(x[:300], fd_n=bad)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # the tiny net's dead features
def test_the_floor_is_the_mean_over_floor_draws_of_real_training_images(evaluator, toy_data):
    n, seed = 50, 4
    images, _ = toy_data["train"]
    gen = torch.Generator().manual_seed(seed)
    ref_feats = evaluator.features(toy_data["test"][0]).numpy()
    draws = [_scipy_fd(evaluator.features(images[torch.randperm(images.shape[0], generator=gen)[:n]]).numpy(),
                       ref_feats) for _ in range(metrics.FLOOR_DRAWS)]
    assert metrics.FLOOR_DRAWS >= 20  # one draw scatters widely (see FLOOR_DRAWS)
    assert evaluator.fd_floor(n, seed) == pytest.approx(np.mean(draws), rel=1e-4)


def test_overshoot_is_clipped_not_rejected(evaluator, toy_data):
    x, _ = toy_data["test"]
    a = evaluator.features(x[:10])
    b = evaluator.features(x[:10] * 1.5)  # values up to ±2 are clipped into [-1, 1]
    assert torch.equal(b, evaluator.features((x[:10] * 1.5).clamp(-1, 1)))
    assert not torch.equal(a, b)


@pytest.mark.parametrize(
    "samples, match",
    [
        (torch.zeros(4, 32, 32), "N×1×32×32"),
        (torch.zeros(4, 3, 32, 32), "N×1×32×32"),
        (torch.zeros(4, 1, 28, 28), "N×1×32×32"),
        (torch.full((4, 1, 32, 32), float("nan")), "NaN"),
        (torch.full((4, 1, 32, 32), 255.0), r"\[-1, 1\]"),
        (torch.zeros(1, 1, 32, 32), "at least 2"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_evaluate_bad_samples(evaluator, samples, match):
    with pytest.raises(ValueError, match=match):
        evaluator.evaluate(samples)


def test_evaluate_bad_labels(evaluator, toy_data):
    x, y = toy_data["test"]
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        evaluator.evaluate(x[:10], labels=y[:9])
    with pytest.raises(ValueError, match="0..9"):
        evaluator.evaluate(x[:10], labels=torch.full((10,), 10))
    with pytest.raises(ValueError, match="integer"):
        evaluator.evaluate(x[:10], labels=torch.zeros(10))


def test_features_bad_input(evaluator):
    with pytest.raises(ValueError, match="N×1×32×32"):
        evaluator.features(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="batch_size"):
        evaluator.features(torch.zeros(2, 1, 32, 32), batch_size=0)


def test_evaluator_net_called_directly_says_what_it_takes():
    net = EvaluatorNet(widths=(4, 8, 8), feature_dim=8).eval()
    x = torch.zeros(2, 1, 32, 32)
    with pytest.raises(ValueError, match=r"x must be N×1×32×32 float32 \(images in \[-1, 1\]\), "
                                         r"got shape \(2, 1, 28, 28\)"):
        net(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"x must be N×1×32×32 float32 .*got shape \(1, 32, 32\)"):
        net.features(torch.zeros(1, 32, 32))
    with pytest.raises(ValueError, match=r"x must be N×1×32×32 float32 .*got torch.float64: use x.to\(torch.float32\)"):
        net(x.double())
    with pytest.raises(ValueError, match=r"x must be N×1×32×32 float32 .*got torch.uint8"):
        net(x.to(torch.uint8))
    with pytest.raises(ValueError, match=r"x must be N×1×32×32 float32 .*got a ndarray"):
        net(x.numpy())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(x).shape == (2, 10)


def test_recipe_hash_is_stable_and_sensitive():
    assert EvaluatorRecipe().hash() == EvaluatorRecipe().hash()
    assert EvaluatorRecipe().hash() != EvaluatorRecipe(epochs=3).hash()
    assert len(EvaluatorRecipe().hash()) == 10


def test_recipe_does_not_depend_on_quick_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_QUICK", "1")
    quick = metrics.evaluator_path("fashion_mnist")
    monkeypatch.setenv("COURSE_QUICK", "0")
    assert metrics.evaluator_path("fashion_mnist") == quick


def test_report_fd_ratio():
    r = EvalReport(n=10, fd=4.0, fd_floor=2.0, recognised=0.5, recognised_real=0.9)
    assert r.fd_ratio == 2.0
    assert math.isinf(EvalReport(n=10, fd=1.0, fd_floor=0.0, recognised=0, recognised_real=0).fd_ratio)
    assert "asked class" not in r.table()


def test_the_judge_runs_in_float32_whatever_the_caller_does(evaluator, toy_data):
    """Samples from a bf16 pipeline, or a call inside the caller's autocast, get the same features as float32
    images: the judge's numbers must not depend on the precision of the code that asks."""
    xt, _ = toy_data["test"]
    x = xt[:64]
    plain = evaluator.features(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = evaluator.features(x)
    assert inside.dtype == torch.float64 and torch.equal(inside, plain)
    from_bf16 = evaluator.features(x.to(torch.bfloat16))
    assert torch.equal(from_bf16, evaluator.features(x.to(torch.bfloat16).float()))
