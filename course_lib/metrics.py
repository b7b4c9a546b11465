r"""The course evaluator: a small classifier that judges generated images.

Inception-based FID is the usual yardstick for image generators, but Inception was trained
on 299×299 photographs. For 32×32 Fashion-MNIST the course trains its own judge instead: a
small CNN classifier (:class:`EvaluatorNet`). Two figures come from it:

**Fréchet distance** (FD) between the classifier's penultimate features of the samples and
of real test images, each set summarised by a Gaussian N(mu, Σ):

    FD = ||mu_a − mu_b||² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})

(the 2-Wasserstein distance between the two Gaussians; FID is this on Inception features).
Lower is better; 0 only when the two Gaussians are equal.

**Recognised share**: how many samples the classifier puts in one class with
probability > 0.9 — real images are mostly recognised, blurry or mixed samples are not —
and, for class-conditional samples, the **accuracy**: the share classified as the asked class.

Neither number means much alone, so :meth:`Evaluator.evaluate` always reports it beside
its *real floor*: the same figure for the same number of real images. FD in particular
depends on n (a finite-sample bias), so the floor uses the same n and the same reference.

    from course_lib.metrics import load_evaluator
    judge = load_evaluator()                 # trains once (~1-2 min on a 2-core CPU), then cached
    report = judge.evaluate(samples, labels=asked_classes)
    print(report)                            # each figure beside its real floor
    report.fd_ratio                          # fd / fd_floor: 1 is as close as real images get

The evaluator is trained with one fixed :class:`EvaluatorRecipe`, the same in quick and full
mode, so numbers stay comparable between runs and budgets. Its weights are cached as
``<COURSE_CACHE_DIR>/evaluator/<dataset>-<recipe hash>.safetensors`` with a JSON sidecar
(recipe, test accuracy); parallel notebooks share one training run through a lock file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .device import pick_device
from .settings import get_settings

__all__ = [
    "CONFIDENCE",
    "EvalReport",
    "Evaluator",
    "EvaluatorNet",
    "EvaluatorRecipe",
    "check_images",
    "clear_memory_cache",
    "evaluator_path",
    "frechet_distance",
    "gaussian_frechet_distance",
    "load_evaluator",
    "train_evaluator",
]

#: A sample counts as *recognised* when the classifier's top probability exceeds this.
CONFIDENCE = 0.9

#: The real-vs-real FD floor is averaged over this many random draws of real images. One draw scatters
#: widely: 60 draws of 1000 Fashion-MNIST training images gave FDs from 1.5 to 6.7 (mean 2.69, std 0.92), so
#: 3 draws could sit 0.5 off; 25 draws put the floor's standard error near 0.18 at n = 1000.
FLOOR_DRAWS = 25

#: Images this far outside [-1, 1] are rejected as not being course images (e.g. 0..255 pixels);
#: smaller overshoots (common in raw diffusion samples) are clipped to [-1, 1].
MAX_ABS_VALUE = 2.0

#: A lock file not touched for this many seconds belongs to a process that died (its holder
#: touches it every few seconds while training; a dead holder on this machine is noticed at once).
LOCK_STALE_SECONDS = 300.0

#: Bump when EvaluatorNet or the training loop changes: it is part of the recipe hash.
ARCHITECTURE = "cnn-s2-v1"


# ---------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------


def _as_float64(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric array or tensor, got {type(x).__name__}") from e
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via its eigendecomposition."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    r"""Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

        d² = ||mu1 − mu2||² + Tr(Σ1) + Tr(Σ2) − 2 Tr((Σ1 Σ2)^{1/2})

    Σ1 Σ2 is not symmetric, so its square root is taken the stable way: with S = Σ1^{1/2},
    S Σ2 S is symmetric PSD and has the same eigenvalues λ_i as Σ1 Σ2, hence
    Tr((Σ1 Σ2)^{1/2}) = Σ_i sqrt(λ_i(S Σ2 S)). Both square roots use ``eigh``, whose
    tiny negative round-off eigenvalues are clipped to 0; so is the result.

    Args:
        mu1, mu2: means, shape (D,).
        sigma1, sigma2: covariances, shape (D, D), symmetric PSD.
    Returns:
        The distance d² as a Python float (this is what "FID" reports; it is not square-rooted).
    """
    mu1 = _as_float64(mu1, "mu1")
    mu2 = _as_float64(mu2, "mu2")
    s1 = _as_float64(sigma1, "sigma1")
    s2 = _as_float64(sigma2, "sigma2")
    if mu1.ndim != 1 or mu2.ndim != 1:
        raise ValueError(f"mu1 and mu2 must be vectors of shape (D,), got {mu1.shape} and {mu2.shape}")
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must have the same length, got {mu1.shape[0]} and {mu2.shape[0]}")
    d = mu1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must be a {d}×{d} covariance matrix (D = len(mu)), got shape {s.shape}")
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    root1 = _sqrtm_psd(s1)
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(fd, 0.0)


def _mean_cov(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D)."""
    return feats.mean(axis=0), np.cov(feats, rowvar=False, ddof=1).reshape(feats.shape[1], feats.shape[1])


def _check_features(feats, name: str) -> np.ndarray:
    arr = _as_float64(feats, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be N×D (one feature vector per row), got {arr.ndim} dims {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows to estimate a covariance, got {arr.shape[0]}")
    return arr


def frechet_distance(feats_a, feats_b) -> float:
    r"""Fréchet distance between two sets of feature vectors, each fitted with a Gaussian.

        FD = ||mu_a − mu_b||² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})

    with mu, Σ the mean and (unbiased, ddof = 1) covariance of each set; see
    :func:`gaussian_frechet_distance` for how the matrix square root is computed stably.

    Args:
        feats_a: N_a×D array or tensor (numpy or torch, any float dtype; computed in float64).
        feats_b: N_b×D, the same D. N_a and N_b may differ; each must be ≥ 2.
    Returns:
        FD ≥ 0 as a float. Symmetric in its arguments; 0 for a set with itself.
        Mind that FD is biased upwards at small N: compare only FDs computed with the same N.
    """
    a = _check_features(feats_a, "feats_a")
    b = _check_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feats_a and feats_b must have the same feature size D, got {a.shape[1]} and {b.shape[1]}"
        )
    mu_a, sigma_a = _mean_cov(a)
    mu_b, sigma_b = _mean_cov(b)
    return gaussian_frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


# ---------------------------------------------------------------------------------------------
# The classifier
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluatorRecipe:
    """How the evaluator is trained. One fixed default for every budget; its hash names the cache.

    Training runs ``max(epochs, ceil(min_steps / steps_per_epoch))`` epochs, so a small dataset
    (scikit-learn's digits: 1500 images) still gets enough optimiser steps.
    AdamW with a one-cycle learning-rate schedule peaking at ``lr``; no augmentation.
    """

    epochs: int = 2
    min_steps: int = 150
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    widths: tuple[int, int, int] = (32, 64, 128)
    feature_dim: int = 128
    seed: int = 0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        d["architecture"] = ARCHITECTURE
        return d

    def hash(self) -> str:
        """First 10 hex digits of the sha256 of the recipe (and the architecture version)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def _block(c_in: int, c_out: int, stride: int, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


class EvaluatorNet(nn.Module):
    """A small CNN for 1×32×32 images in [-1, 1].

    ::

        x  N×1×32×32
        → conv3×3 stride 2 (w0) → BN → ReLU              N×w0×16×16
        → conv3×3 (w1) → BN → ReLU → maxpool 2            N×w1×8×8
        → conv3×3 (w2) → BN → ReLU → maxpool 2            N×w2×4×4
        → flatten → linear → ReLU                         N×feature_dim   (the features)
        → linear                                          N×num_classes   (the logits)

    The first block downsamples by its stride rather than by pooling: it keeps accuracy
    (≈ 91% on Fashion-MNIST) at about half the CPU cost of a full-resolution first block.
    """

    def __init__(
        self,
        widths: tuple[int, int, int] = (32, 64, 128),
        feature_dim: int = 128,
        num_classes: int = 10,
        in_channels: int = 1,
    ):
        super().__init__()
        w0, w1, w2 = widths
        self.image_shape = (in_channels, 32, 32)
        self.body = nn.Sequential(
            *_block(in_channels, w0, stride=2, pool=False),
            *_block(w0, w1, stride=1, pool=True),
            *_block(w1, w2, stride=1, pool=True),
            nn.Flatten(),
        )
        self.feature = nn.Sequential(nn.Linear(w2 * 4 * 4, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(feature_dim, num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        """A ValueError unless x is N×C×32×32 in the weights' dtype (any float under autocast): torch's own
        errors ("mat1 and mat2 shapes cannot be multiplied", "expected scalar type Double") name neither."""
        from .nn.blocks import autocast_enabled

        weight = self.body[0].weight
        c, h, w = self.image_shape
        want = f"x must be N×{c}×{h}×{w} {str(weight.dtype).removeprefix('torch.')} (images in [-1, 1])"
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{want}, got a {type(x).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"{want}, got shape {tuple(x.shape)}: resize or pad images to {h}×{w} first")
        if not x.is_floating_point() or (x.dtype != weight.dtype and not autocast_enabled(x.device.type)):
            raise ValueError(f"{want}, got {x.dtype}: use x.to({weight.dtype})")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, N×feature_dim (after the ReLU)."""
        self.check_input(x)
        return self.feature(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, N×num_classes."""
        return self.head(self.features(x))


def _memory_format(device: torch.device) -> torch.memory_format:
    # channels_last roughly halves the CPU time of these convolutions (oneDNN's preferred layout)
    return torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format


def check_images(images, name: str = "images", shape: tuple[int, int, int] = (1, 32, 32)) -> torch.Tensor:
    """Validate course images and return them as a float32 tensor clipped to [-1, 1].

    Expects N×C×H×W (``shape`` = (C, H, W), default 1×32×32), N ≥ 1, finite, values in [-1, 1];
    values up to ±2 are tolerated (raw diffusion samples overshoot a little) and clipped,
    anything beyond that (e.g. 0..255 pixels) is a ValueError.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor (or numpy array) N×C×H×W, got {type(images).__name__}"
        )
    c, h, w = shape
    if images.dim() != 4:
        raise ValueError(
            f"{name} must be N×{c}×{h}×{w}, got {images.dim()} dims (shape {tuple(images.shape)})"
        )
    if tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} must be N×{c}×{h}×{w}, got shape {tuple(images.shape)}")
    if images.shape[0] < 1:
        raise ValueError(f"{name} is empty: expected at least one image")
    if not (
        images.dtype.is_floating_point
        or images.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    ):
        raise ValueError(f"{name} must hold real numbers, got dtype {images.dtype}")
    images = images.detach().float()
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -MAX_ABS_VALUE or hi > MAX_ABS_VALUE:
        raise ValueError(
            f"{name} must be in [-1, 1] (course images, x / 127.5 - 1); got values in [{lo:.3g}, {hi:.3g}]"
        )
    return images.clamp(-1.0, 1.0)


def _check_labels(labels, n: int, num_classes: int, name: str = "labels") -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class indices, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), one class per image; got {tuple(labels.shape)}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name} must lie in 0..{num_classes - 1}, got values {int(labels.min())}..{int(labels.max())}"
        )
    return labels.long().cpu()


def train_evaluator(
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: EvaluatorRecipe | None = None,
    *,
    num_classes: int = 10,
    device: torch.device | str | None = None,
    progress: bool = True,
    heartbeat: Callable[[], None] | None = None,
) -> EvaluatorNet:
    """Train an :class:`EvaluatorNet` on ``images`` N×1×32×32 and ``labels`` (N,) with ``recipe``.

    Minimises the cross-entropy −log softmax(f(x))_y with AdamW and a one-cycle learning rate.
    Deterministic for a given recipe, data and device: the weights and the shuffling come from
    ``recipe.seed`` (torch's global random state is left untouched). Runs in float32 on every
    device, so the judge does not depend on the accelerator's precision.

    ``heartbeat`` is called every step (the cache uses it to keep its lock file fresh).
    Returns the network in eval mode, on ``device``.
    """
    recipe = recipe or EvaluatorRecipe()
    dev = pick_device(device) if not isinstance(device, torch.device) else device
    images = check_images(images, "images")
    labels = _check_labels(labels, images.shape[0], num_classes)
    n = images.shape[0]
    fmt = _memory_format(dev)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = EvaluatorNet(recipe.widths, recipe.feature_dim, num_classes)
    net = net.to(dev, memory_format=fmt)
    gen = torch.Generator().manual_seed(recipe.seed)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    epochs = max(recipe.epochs, math.ceil(recipe.min_steps / steps_per_epoch))
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total, pct_start=0.25)
    x_all = images.to(dev)
    y_all = labels.to(dev)

    from .progress import progress_bar

    bar = progress_bar(total=total, desc="training the course evaluator", disable=not progress)
    net.train()
    try:
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen).to(dev)
            for i in range(0, n, recipe.batch_size):
                idx = perm[i : i + recipe.batch_size]
                if idx.numel() < 2:  # BatchNorm needs two examples; drop a last batch of one
                    continue
                x = x_all[idx].contiguous(memory_format=fmt)
                loss = F.cross_entropy(net(x), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                if heartbeat is not None:
                    heartbeat()
    finally:
        bar.close()
    return net.eval()


@torch.no_grad()
def _forward(net: EvaluatorNet, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features N×D float64, probabilities N×K float64), both on the CPU; images already checked."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    dev = next(net.parameters()).device
    fmt = _memory_format(dev)
    was_training = net.training
    net.eval()
    feats, probs = [], []
    # float32 whatever the caller does: images from a bf16 sampler, or a surrounding autocast, would otherwise make
    # the judge's features depend on the precision of the code that asked
    with torch.autocast(dev.type, enabled=False):
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size].to(dev, torch.float32).contiguous(memory_format=fmt)
            f = net.features(x)
            feats.append(f.double().cpu())
            probs.append(F.softmax(net.head(f).double(), dim=1).cpu())
    net.train(was_training)
    return torch.cat(feats), torch.cat(probs)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalReport:
    """What :meth:`Evaluator.evaluate` measured, each figure beside its real floor.

    Attributes:
        n: number of samples.
        fd: Fréchet distance of the samples' features to the reference (all real test images);
            with ``fd_sets`` > 1, the mean FD of that many disjoint sets of ``fd_n`` samples.
        fd_floor: FD of ``n_real`` real *training* images to the same reference (mean of
            ``FLOOR_DRAWS`` draws): what a perfect generator would score with this n
            (FD is biased upwards at small n: about 2.7 at n = 1000 and 0.7 at n = 5000
            on Fashion-MNIST, and one set of 1000 real images scatters by ±0.9 around it).
        recognised: share of samples whose top class probability exceeds ``confidence``.
        recognised_real: the same share for min(n, n_reference) real test images.
        accuracy: share of samples classified as the asked class (None without labels).
        accuracy_real: classifier accuracy on those same real test images (None without labels).
        class_share: share of samples predicted as each class (a collapsed generator shows up here).
        n_real: real training images behind ``fd_floor`` (= fd_n unless the split is smaller).
        fd_n, fd_sets: the samples per FD and how many disjoint sets ``fd`` averages (fd_n = n, 1 set,
            unless ``evaluate`` was given ``fd_n``); fd_each: the FD of each set, in order.
        n_reference: real test images in the FD reference.
        dataset, confidence, evaluator_accuracy: the evaluator used.
    """

    n: int
    fd: float
    fd_floor: float
    recognised: float
    recognised_real: float
    accuracy: float | None = None
    accuracy_real: float | None = None
    class_share: tuple[float, ...] = ()
    n_real: int = 0
    n_reference: int = 0
    dataset: str = ""
    confidence: float = CONFIDENCE
    evaluator_accuracy: float | None = None
    fd_n: int = 0
    fd_sets: int = 1
    fd_each: tuple[float, ...] = ()

    @property
    def fd_ratio(self) -> float:
        """fd / fd_floor: 1 is as good as real data."""
        return self.fd / self.fd_floor if self.fd_floor > 0 else math.inf

    def table(self) -> str:
        """A plain-text table: each figure for the samples and for real images."""
        acc = "" if self.evaluator_accuracy is None else f", test accuracy {self.evaluator_accuracy:.1%}"
        recognised = f"recognised (p > {self.confidence:g})"
        sets = f" (FD: the mean over {self.fd_sets} sets of {self.fd_n})" if self.fd_sets > 1 else ""
        rows = [
            f"course evaluator ({self.dataset}{acc}); {self.n} samples{sets} vs {self.n_real} real images,"
            f" FD reference: {self.n_reference} test images",
            f"{'':34}{'samples':>10}{'real':>10}",
            f"{'Fréchet distance (lower is better)':34}{self.fd:>10.3f}{self.fd_floor:>10.3f}",
            f"{recognised:34}{self.recognised:>10.1%}{self.recognised_real:>10.1%}",
        ]
        if self.accuracy is not None:
            real = "" if self.accuracy_real is None else f"{self.accuracy_real:>10.1%}"
            rows.append(f"{'classified as the asked class':34}{self.accuracy:>10.1%}{real}")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------------------------


def _load_split(dataset: str) -> Callable[[str], tuple[torch.Tensor, torch.Tensor]]:
    def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        from .data import load_images

        data = load_images(dataset, split=name)
        return data.images, data.labels

    return split


class Evaluator:
    """A trained :class:`EvaluatorNet` plus the real data its floors are measured on.

    Build it with :func:`load_evaluator`. ``data(split)`` returns ``(images, labels)`` of the
    ``"train"`` or ``"test"`` split (default: :func:`course_lib.data.load_images`); the test
    split is the FD reference, the train split gives the real-vs-real FD floor.
    """

    def __init__(
        self,
        net: EvaluatorNet,
        dataset: str,
        class_names: list[str],
        test_accuracy: float | None = None,
        recipe: EvaluatorRecipe | None = None,
        data: Callable[[str], tuple[torch.Tensor, torch.Tensor]] | None = None,
        path: Path | None = None,
    ):
        self.net = net.eval()
        self.dataset = dataset
        self.class_names = list(class_names)
        self.test_accuracy = test_accuracy
        self.recipe = recipe
        self.path = path
        self._data = data or _load_split(dataset)
        self._reference: dict | None = None
        self._floors: dict[tuple[int, int], float] = {}
        self._train_size = 0
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        acc = "?" if self.test_accuracy is None else f"{self.test_accuracy:.1%}"
        return f"Evaluator(dataset={self.dataset!r}, test_accuracy={acc}, device={self.device})"

    # ------------------------------------------------------------------ per-image outputs
    def features(self, images, batch_size: int = 512) -> torch.Tensor:
        """Penultimate features of ``images`` (N×1×32×32 in [-1, 1]): N×128 float64 on the CPU."""
        return _forward(self.net, check_images(images, "images", self.net.image_shape), batch_size)[0]

    def predict_proba(self, images, batch_size: int = 512) -> torch.Tensor:
        """Class probabilities softmax(logits), N×10 float64 on the CPU."""
        return _forward(self.net, check_images(images, "images", self.net.image_shape), batch_size)[1]

    def classify(self, images, batch_size: int = 512) -> torch.Tensor:
        """The most probable class of each image, int64 (N,)."""
        return self.predict_proba(images, batch_size).argmax(dim=1)

    def accuracy(self, images, labels, batch_size: int = 512) -> float:
        """Share of ``images`` classified as ``labels``."""
        images = check_images(images, "images", self.net.image_shape)
        labels = _check_labels(labels, images.shape[0], self.num_classes)
        return float((self.classify(images, batch_size) == labels).double().mean())

    # ------------------------------------------------------------------ real references
    def _reference_stats(self) -> dict:
        """Features, probabilities, mean and covariance of the whole test split (computed once)."""
        with self._lock:
            if self._reference is None:
                images, labels = self._data("test")
                images = check_images(images, "test images", self.net.image_shape)
                feats, probs = _forward(self.net, images, 512)
                mu, sigma = _mean_cov(feats.numpy())
                self._reference = dict(
                    feats=feats, probs=probs, labels=labels.long().cpu(), mu=mu, sigma=sigma
                )
            return self._reference

    def fd_to_reference(self, feats) -> float:
        """FD of features (N×D) to the reference: all real test images."""
        ref = self._reference_stats()
        feats = _check_features(feats, "feats")
        if feats.shape[1] != ref["mu"].shape[0]:
            raise ValueError(f"feats must be N×{ref['mu'].shape[0]}, got {feats.shape}")
        return gaussian_frechet_distance(*_mean_cov(feats), ref["mu"], ref["sigma"])

    def fd_floor(self, n: int, seed: int = 0) -> float:
        """FD of n real training images to the test reference: the mean over FLOOR_DRAWS random draws.

        One draw of n = 1000 Fashion-MNIST images scatters widely (1.5 to 6.7 around a mean of 2.7), so
        the floor averages many (chosen with ``seed``, hence reproducible).
        """
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be an int ≥ 2 for a Fréchet distance, got {n!r}")
        key = (n, seed)
        if key not in self._floors:
            images, _ = self._data("train")
            self._train_size = images.shape[0]
            n_real = min(n, images.shape[0])
            gen = torch.Generator().manual_seed(seed)
            draws = 1 if n_real == images.shape[0] else FLOOR_DRAWS
            fds = []
            for _ in range(draws):
                idx = torch.randperm(images.shape[0], generator=gen)[:n_real]
                fds.append(self.fd_to_reference(self.features(images[idx])))
            self._floors[key] = float(np.mean(fds))
        return self._floors[key]

    # ------------------------------------------------------------------ the report
    def evaluate(self, samples, labels=None, seed: int = 0, batch_size: int = 512, fd_n: int | None = None
                 ) -> EvalReport:
        """Judge generated ``samples`` against real images; see :class:`EvalReport`.

        Args:
            samples: N×1×32×32 in [-1, 1] (small overshoots are clipped), N ≥ 2.
            labels: the classes the samples were asked to be, (N,) ints; None if unconditional.
            seed: picks the real images for the floors (same seed, same floors).
            fd_n: None: one FD of all N samples, beside the floor at N. An int that divides N: the
                mean FD of the N / fd_n disjoint sets of fd_n samples (in order), beside the floor at
                fd_n, which is the mean over as many draws of real images. One set of 1000 scatters by
                about ±0.9 in FD, so a verdict at n = 1000 is worth several sets.
        Returns:
            An :class:`EvalReport`; ``print(report)`` shows each figure beside its real floor.
        """
        samples = check_images(samples, "samples", self.net.image_shape)
        n = samples.shape[0]
        if n < 2:
            raise ValueError(f"samples needs at least 2 images for a Fréchet distance, got {n}")
        if labels is not None:
            labels = _check_labels(labels, n, self.num_classes)
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")

        if fd_n is None:
            fd_n = n
        if isinstance(fd_n, bool) or not isinstance(fd_n, int) or fd_n < 2 or n % fd_n:
            raise ValueError(f"fd_n must be None or an int ≥ 2 that divides the {n} samples, got {fd_n!r}")

        feats, probs = _forward(self.net, samples, batch_size)
        ref = self._reference_stats()
        fd_each = tuple(self.fd_to_reference(part) for part in feats.split(fd_n))
        fd = float(np.mean(fd_each))
        fd_floor = self.fd_floor(fd_n, seed)
        n_test = ref["probs"].shape[0]
        idx = torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))[: min(n, n_test)]
        real_probs = ref["probs"][idx]
        top, pred = probs.max(dim=1)
        accuracy = accuracy_real = None
        if labels is not None:
            accuracy = float((pred == labels).double().mean())
            accuracy_real = float((real_probs.argmax(dim=1) == ref["labels"][idx]).double().mean())
        share = torch.bincount(pred, minlength=self.num_classes).double() / n
        return EvalReport(
            n=n,
            fd=fd,
            fd_floor=fd_floor,
            recognised=float((top > CONFIDENCE).double().mean()),
            recognised_real=float((real_probs.max(dim=1).values > CONFIDENCE).double().mean()),
            accuracy=accuracy,
            accuracy_real=accuracy_real,
            class_share=tuple(float(s) for s in share),
            n_real=min(fd_n, self._train_size),
            n_reference=n_test,
            dataset=self.dataset,
            confidence=CONFIDENCE,
            evaluator_accuracy=self.test_accuracy,
            fd_n=fd_n,
            fd_sets=n // fd_n,
            fd_each=fd_each,
        )


# ---------------------------------------------------------------------------------------------
# Cache: files, lock, memory
# ---------------------------------------------------------------------------------------------

_MEMORY: dict[tuple[str, str], Evaluator] = {}
_MEMORY_LOCK = threading.Lock()


def clear_memory_cache() -> None:
    """Forget the evaluators kept in memory (the files on disk stay)."""
    with _MEMORY_LOCK:
        _MEMORY.clear()


def evaluator_path(dataset: str | None = None, recipe: EvaluatorRecipe | None = None) -> Path:
    """``<COURSE_CACHE_DIR>/evaluator/<dataset>-<recipe hash>.safetensors`` (sidecar: ``.json``)."""
    settings = get_settings()
    dataset = dataset or settings.dataset
    recipe = recipe or EvaluatorRecipe()
    return settings.cache_dir / "evaluator" / f"{dataset}-{recipe.hash()}.safetensors"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the cache may be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _save(path: Path, net: EvaluatorNet, meta: dict) -> None:
    """Weights first, then the sidecar: a sidecar present means the weights are complete."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    _atomic_write_bytes(path, save(state, metadata={"recipe_hash": meta["recipe_hash"]}))
    _atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=2).encode())


def _try_load(path: Path, recipe: EvaluatorRecipe, device: torch.device) -> tuple[EvaluatorNet, dict] | None:
    """The cached network and its sidecar, or None if absent or unreadable."""
    sidecar = path.with_suffix(".json")
    if not (path.exists() and sidecar.exists()):
        return None
    try:
        from safetensors.torch import load_file

        meta = json.loads(sidecar.read_text())
        state = load_file(str(path), device="cpu")
        net = EvaluatorNet(recipe.widths, recipe.feature_dim, len(meta["class_names"]))
        net.load_state_dict(state, strict=True)
    except Exception:  # a corrupt or foreign file: retrain over it
        return None
    return net.to(device, memory_format=_memory_format(device)).eval(), meta


def _holder_is_dead(lock_path: Path) -> bool:
    """True if the lock names a process on this machine that no longer runs."""
    try:
        pid_text, host, *_ = lock_path.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False  # unreadable or still being written: judge by age only
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return False
    return False


class _FileLock:
    """A lock file created with O_CREAT | O_EXCL, holding "<pid> <host> <time>".

    The holder touches it while it works. A waiter breaks it when its holder's process is gone
    (same machine) or when nobody touched it for ``stale_after`` seconds. If two processes ever
    train at once (a lock broken by two waiters at the same moment), both write the same
    deterministic result atomically, so the cache is still never half-written.
    """

    def __init__(self, path: Path, stale_after: float = LOCK_STALE_SECONDS, poll: float = 0.5):
        self.path = path
        self.stale_after = stale_after
        self.poll = poll
        self._last_touch = 0.0

    def acquire(self, done: Callable[[], bool]) -> bool:
        """Take the lock (True), or return False as soon as ``done()`` says another process finished."""
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if done():
                    return False
                try:
                    age = time.time() - self.path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age > self.stale_after or _holder_is_dead(self.path):
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                time.sleep(self.poll)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n")
            self._last_touch = time.time()
            return True

    def touch(self) -> None:
        """Show that the holder is alive (at most every 5 s)."""
        now = time.time()
        if now - self._last_touch > 5.0:
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass
            self._last_touch = now

    def release(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def load_evaluator(
    dataset: str | None = None,
    device: torch.device | str | None = None,
    *,
    recipe: EvaluatorRecipe | None = None,
    progress: bool = True,
    data: Callable[[str], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Evaluator:
    """The course evaluator for ``dataset`` (None: ``COURSE_DATASET``), trained once and cached.

    Looks in this process's memory, then in ``<COURSE_CACHE_DIR>/evaluator/`` (safetensors
    weights + JSON sidecar with the recipe and test accuracy), and only then trains on the whole
    train split (:func:`train_evaluator`) and measures accuracy on the test split. Writes are
    atomic; a lock file makes parallel notebooks wait for one training run instead of each
    training their own.

    Args:
        dataset: ``"fashion_mnist"``, ``"mnist"`` or ``"digits"``.
        device: where the classifier runs (None: :func:`course_lib.device.pick_device`).
        recipe: leave at the default — the one fixed recipe — except in tests.
        progress: show a progress bar while training.
        data: ``split -> (images, labels)``; default :func:`course_lib.data.load_images`.
    """
    settings = get_settings()
    dataset = dataset or settings.dataset
    recipe = recipe or EvaluatorRecipe()
    if not isinstance(recipe, EvaluatorRecipe):
        raise ValueError(f"recipe must be an EvaluatorRecipe, got {type(recipe).__name__}")
    dev = pick_device(device) if not isinstance(device, torch.device) else device
    path = evaluator_path(dataset, recipe)
    key = (str(path), str(dev))
    with _MEMORY_LOCK:
        if key in _MEMORY:
            return _MEMORY[key]
        split = data or _load_split(dataset)
        loaded = _try_load(path, recipe, dev)
        if loaded is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = _FileLock(path.with_suffix(".lock"))
            got = lock.acquire(done=lambda: path.with_suffix(".json").exists())
            try:
                loaded = _try_load(path, recipe, dev)  # another process may have finished meanwhile
                if loaded is None:
                    loaded = _train_and_save(path, dataset, recipe, dev, split, progress, lock.touch)
            finally:
                if got:
                    lock.release()
        net, meta = loaded
        evaluator = Evaluator(
            net, dataset, meta["class_names"], meta.get("test_accuracy"), recipe, data=split, path=path
        )
        _MEMORY[key] = evaluator
        return evaluator


def _train_and_save(path, dataset, recipe, dev, split, progress, heartbeat) -> tuple[EvaluatorNet, dict]:
    train_images, train_labels = split("train")
    heartbeat()
    test_images, test_labels = split("test")
    names = _class_names(dataset)
    start = time.perf_counter()
    net = train_evaluator(
        train_images,
        train_labels,
        recipe,
        num_classes=len(names),
        device=dev,
        progress=progress,
        heartbeat=heartbeat,
    )
    seconds = time.perf_counter() - start
    test_images = check_images(test_images, "test images", net.image_shape)
    test_labels = _check_labels(test_labels, test_images.shape[0], len(names), "test labels")
    probs = _forward(net, test_images, 512)[1]
    acc = float((probs.argmax(dim=1) == test_labels).double().mean())
    meta = dict(
        dataset=dataset,
        recipe=recipe.to_dict(),
        recipe_hash=recipe.hash(),
        test_accuracy=acc,
        num_train=int(train_images.shape[0]),
        num_test=int(test_images.shape[0]),
        class_names=names,
        train_seconds=round(seconds, 1),
        device=str(dev),
        torch_version=torch.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    _save(path, net, meta)
    return net, meta


def _class_names(dataset: str) -> list[str]:
    try:
        from .data import class_names

        return list(class_names(dataset))
    except (ImportError, ValueError):
        return [str(i) for i in range(10)]
