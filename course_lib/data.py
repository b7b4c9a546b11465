"""The images the course trains on: Fashion-MNIST (default), MNIST, or scikit-learn's digits.

Every dataset comes out the same way, ready for a diffusion model::

    data = load_images("fashion_mnist", split="train")
    data.images      # float32, N×1×32×32, values in [-1, 1]  (x / 127.5 - 1)
    data.labels      # int64, (N,), class index 0..9
    data.class_names # 10 names, data.class_names[data.labels[i]]
    data.captions(data.labels[:4], generator=torch.Generator().manual_seed(0))

Where the files come from
-------------------------
``fashion_mnist`` and ``mnist`` are read from the four original IDX files
(``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz``). Each file is looked for, in this order, in

1. ``$COURSE_DATA_DIR/<name>/<file>`` (``<name>`` is ``mnist`` or ``fashion_mnist``);
2. the cache, ``<COURSE_CACHE_DIR>/data/<name>/<file>``;
3. Fashion-MNIST only: Debian's ``dataset-fashion-mnist`` package folder,
   :data:`DEBIAN_FASHION_MNIST_DIR` (``/usr/share/datasets/fashion-mnist``);
4. otherwise it is downloaded once from :data:`MIRRORS` into the cache.

Every file found or downloaded is checked before use: it is accepted when the md5 of the
``.gz`` archive is the official one, or when the sha256 of its decompressed contents is the
known one (Debian recompressed Fashion-MNIST, so its archives have other md5s but the same
contents). A download goes to a temporary file in the cache folder, is checked, and only then
renamed into place (``os.replace``, atomic), so parallel notebooks never see half a file.

``digits`` is scikit-learn's 8×8 digits (1797 images, shipped inside scikit-learn), so it
always works offline: ``COURSE_DATASET=digits``.

Loaded datasets are kept in memory (as compact uint8), so calling :func:`load_images` again in
a notebook reads and checks no files; each call returns fresh float tensors, so changing one result in place
never changes another. :func:`clear_cache` empties that memory.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import numbers
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path

import numpy as np
import torch

from .settings import DATASETS, get_settings

__all__ = [
    "CAPTIONS",
    "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "DIGITS_TRAIN_SIZE",
    "FASHION_MNIST_CLASSES",
    "HELD_OUT_CAPTIONS",
    "MIRRORS",
    "MNIST_CLASSES",
    "SPLITS",
    "DatasetChecksumError",
    "DatasetError",
    "DatasetUnavailableError",
    "ImageData",
    "caption_for",
    "check_labels",
    "class_names",
    "clear_cache",
    "load_images",
    "parse_idx",
]

SPLITS = ("train", "test")
IMAGE_SIZE = 32
DIGITS_TRAIN_SIZE = 1500  # digits: samples 0..1499 are "train", 1500..1796 (297) are "test"

#: Folder of Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Where a missing IDX file is downloaded from (file name appended to the base URL).
MIRRORS: dict[str, list[str]] = {
    "fashion_mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/"],
}

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# md5 of the official .gz archives.
_MD5 = {
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
}

# sha256 of the decompressed IDX contents, where known (survives recompression).
_SHA256_RAW = {
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    "mnist": {
        "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
}

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)

# ---------------------------------------------------------------------------------------------
# Class names and captions
# ---------------------------------------------------------------------------------------------

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES = [str(d) for d in range(10)]

_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

_FASHION_CAPTIONS = [
    ["a t-shirt", "a tee", "a short-sleeved top", "a t-shirt or top", "a casual top"],
    ["a pair of trousers", "trousers", "a pair of pants", "long pants", "slacks"],
    ["a pullover", "a sweater", "a jumper", "a knitted pullover", "a warm sweater"],
    ["a dress", "a summer dress", "a gown", "a frock", "a long dress"],
    ["a coat", "a jacket", "a winter coat", "an overcoat", "a warm jacket"],
    ["a sandal", "a pair of sandals", "an open shoe", "a summer sandal", "a strappy sandal"],
    ["a shirt", "a button-up shirt", "a collared shirt", "a long-sleeved shirt", "a dress shirt"],
    ["a sneaker", "a running shoe", "a trainer", "a sports shoe", "a pair of sneakers"],
    ["a bag", "a handbag", "a tote bag", "a shoulder bag", "a leather bag"],
    ["an ankle boot", "a boot", "a short boot", "a leather boot", "a pair of ankle boots"],
]

_DIGIT_CAPTIONS = [
    [f"the digit {w}", f"a handwritten {d}", f"number {w}", f"the number {d}", f"a written {w}"]
    for d, w in enumerate(_NUMBER_WORDS)
]

#: Training phrasings: ``CAPTIONS[name][label]`` is a list of captions for that class.
CAPTIONS: dict[str, list[list[str]]] = {
    "fashion_mnist": _FASHION_CAPTIONS,
    "mnist": _DIGIT_CAPTIONS,
    "digits": [list(c) for c in _DIGIT_CAPTIONS],
}

#: One phrasing per class that never appears in training captions, for testing how a
#: text-conditioned model handles prompts it has not seen ("a pair of jeans", "a purse").
HELD_OUT_CAPTIONS: dict[str, list[str]] = {
    "fashion_mnist": [
        "a graphic tee",
        "a pair of jeans",
        "a sweatshirt",
        "a sundress",
        "a parka",
        "a flip-flop",
        "a blouse",
        "a tennis shoe",
        "a purse",
        "a chelsea boot",
    ],
    "mnist": [f"the numeral {w}" for w in _NUMBER_WORDS],
    "digits": [f"the numeral {w}" for w in _NUMBER_WORDS],
}


def _check_name(name: str | None) -> str:
    if name is None:
        return get_settings().dataset
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"dataset name must be one of {', '.join(map(repr, DATASETS))}; got {name!r}")
    return name


def _check_split(split: str) -> str:
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}; got {split!r}")
    return split


def class_names(name: str | None = None) -> list[str]:
    """The 10 class names of dataset ``name`` (None: ``COURSE_DATASET``), index = label."""
    name = _check_name(name)
    return list(FASHION_MNIST_CLASSES if name == "fashion_mnist" else MNIST_CLASSES)


def _check_label(label, num_classes: int = 10) -> int:
    if isinstance(label, torch.Tensor):
        if label.numel() != 1 or label.is_floating_point() or label.is_complex():
            raise ValueError(f"label must be an integer in 0..{num_classes - 1}; got tensor {label!r}")
        label = label.item()
    if isinstance(label, bool) or not isinstance(label, numbers.Integral):
        raise ValueError(f"label must be an integer in 0..{num_classes - 1}; got {label!r}")
    label = int(label)
    if not 0 <= label < num_classes:
        raise ValueError(f"label must be an integer in 0..{num_classes - 1}; got {label}")
    return label


def check_labels(labels, n: int, device=None) -> torch.Tensor | None:
    """Class labels as an int64 (n,) tensor on ``device`` (a list or numpy array is taken as is); None stays None.
    Floats are refused: 1.6 would silently be class 1."""
    if labels is None:
        return None
    labels = torch.as_tensor(labels, device=device)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), one class per image, got {tuple(labels.shape)}")
    return labels.long()


def _pick(options: list[str], generator: torch.Generator | None) -> str:
    u = torch.rand((), generator=generator).item()
    return options[min(int(u * len(options)), len(options) - 1)]


def caption_for(name: str | None, label, generator: torch.Generator | None = None) -> str:
    """A caption for class ``label`` of dataset ``name``, one of ``CAPTIONS[name][label]`` at random.

    ``generator`` (a ``torch.Generator``) makes the choice reproducible; None uses torch's
    global generator (so ``seed_everything`` makes it reproducible too). Held-out phrasings
    (:data:`HELD_OUT_CAPTIONS`) are never returned.
    """
    name = _check_name(name)
    label = _check_label(label)
    return _pick(CAPTIONS[name][label], generator)


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageData:
    """A loaded split: ``images`` N×1×32×32 float32 in [-1, 1], ``labels`` (N,) int64 in 0..9.

    The tensors belong to the caller: every :func:`load_images` call returns fresh ones.
    """

    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    class_names: list[str]
    name: str
    split: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def captions(self, label_or_labels, generator: torch.Generator | None = None):
        """Random training captions: a ``str`` for one label, a ``list[str]`` for many.

        ``label_or_labels``: an int, a 0-dim tensor, or a sequence / 1-dim tensor of labels
        (e.g. ``data.labels[:8]``). Each label gets one of ``CAPTIONS[self.name][label]``,
        drawn with ``generator`` (None: torch's global generator).
        """
        if isinstance(label_or_labels, torch.Tensor):
            if label_or_labels.dim() == 0:
                return caption_for(self.name, label_or_labels, generator)
            if label_or_labels.dim() != 1:
                raise ValueError(
                    f"labels must be an int or a 1-dim sequence; got a {label_or_labels.dim()}-dim tensor"
                )
            label_or_labels = label_or_labels.tolist()
        elif isinstance(label_or_labels, np.ndarray):
            label_or_labels = label_or_labels.tolist()
        if isinstance(label_or_labels, Sequence) and not isinstance(label_or_labels, str):
            return [caption_for(self.name, lab, generator) for lab in label_or_labels]
        return caption_for(self.name, label_or_labels, generator)

    def __repr__(self) -> str:
        shape = "×".join(str(s) for s in self.images.shape)
        return (
            f"ImageData(name={self.name!r}, split={self.split!r}, images={shape} "
            f"{str(self.images.dtype).removeprefix('torch.')}, classes={self.class_names})"
        )


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class DatasetError(RuntimeError):
    """Something is wrong with the dataset files."""


class DatasetChecksumError(DatasetError):
    """A dataset file is corrupted, truncated, or not the official release."""


class DatasetUnavailableError(DatasetError):
    """The dataset files are nowhere to be found and cannot be downloaded (offline?)."""


# ---------------------------------------------------------------------------------------------
# IDX files: finding, checking, downloading, parsing
# ---------------------------------------------------------------------------------------------


def parse_idx(data: bytes, expected_magic: int, source: str = "IDX data") -> np.ndarray:
    """Parse decompressed IDX bytes into a uint8 array.

    Layout (big-endian): int32 magic = ``0x0000 08 D`` (``08`` = unsigned byte, ``D`` = number
    of dimensions), then ``D`` int32 sizes, then ``prod(sizes)`` bytes. Images have magic 2051
    (N×rows×cols), labels 2049 (N,). Returns a read-only view of shape ``sizes``.
    Raises ValueError naming ``source`` when the magic or the sizes are not as expected.
    """
    if expected_magic not in (_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC):
        raise ValueError(f"expected_magic must be 2051 (images) or 2049 (labels); got {expected_magic}")
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic is not None and magic != expected_magic:
        raise ValueError(f"{source}: IDX magic number must be {expected_magic}, got {magic}")
    if len(data) < header:
        raise ValueError(f"{source}: IDX data too short ({len(data)} bytes) for its {header}-byte header")
    sizes = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_len = header + int(np.prod(sizes))
    if len(data) != expected_len:
        raise ValueError(
            f"{source}: IDX header says sizes {sizes} ({expected_len} bytes in all), "
            f"but the data has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(sizes)


def _hash(algorithm: str, data: bytes) -> str:
    return hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()


def _verify(name: str, fname: str, path: Path) -> bytes:
    """Check ``path`` and return its decompressed contents; raise DatasetChecksumError if bad.

    Accepted when md5(archive) is the official one, or sha256(gunzip(archive)) is the known one.
    """
    raw = path.read_bytes()
    md5 = _hash("md5", raw)
    try:
        contents = gzip.decompress(raw)
        gz_problem = None
    except (OSError, EOFError, zlib.error) as e:
        contents, gz_problem = None, f"it is not a complete gzip file ({e})"
    if contents is not None:
        if md5 == _MD5[name][fname]:
            return contents
        sha = _SHA256_RAW[name].get(fname)
        if sha is not None and _hash("sha256", contents) == sha:
            return contents
    what = gz_problem or "it is corrupted or not the official release"
    raise DatasetChecksumError(
        f"{path} ({len(raw)} bytes) failed its check: {what}; md5 {md5}, expected {_MD5[name][fname]}"
        + (" (or the known sha256 of its contents)" if fname in _SHA256_RAW[name] else "")
        + "."
    )


def _download(name: str, fname: str, folder: Path) -> bytes:
    """Download ``fname`` into ``folder`` atomically and return its checked contents.

    The bytes go to a temporary file in ``folder``, are checked, and only then renamed to
    ``folder/fname``. On any failure the temporary file is removed. Network failures raise
    OSError (or http.client.HTTPException); a wrong file raises DatasetChecksumError.
    """
    folder.mkdir(parents=True, exist_ok=True)
    last_error: BaseException | None = None
    for base in MIRRORS[name]:
        url = base + fname
        print(f"Downloading {name}/{fname} from {url}", flush=True)  # stdout: in order with the lesson's own output
        fd, tmp_name = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=folder)
        tmp = Path(tmp_name)
        try:
            try:
                with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
            except (OSError, HTTPException) as e:
                last_error = e
                continue
            try:
                contents = _verify(name, fname, tmp)
            except DatasetChecksumError as e:
                raise DatasetChecksumError(
                    f"the download of {url} failed its check, so it was not kept: {e} "
                    "Try again later, or put the official file in COURSE_DATA_DIR."
                ) from None
            os.replace(tmp, folder / fname)
            return contents
        finally:
            tmp.unlink(missing_ok=True)
    assert last_error is not None
    raise last_error


def _verify_kept(name: str, fname: str, path: Path, advice: str) -> bytes:
    """Verify a file the user or the system keeps (never deleted here); on failure say what to do."""
    try:
        return _verify(name, fname, path)
    except DatasetChecksumError as e:
        raise DatasetChecksumError(f"{e} {advice}") from None


def _fetch(name: str, fname: str, data_dir: Path | None, cache_dir: Path, debian_dir: Path) -> bytes:
    """The checked, decompressed contents of ``fname``, found along the search path (module doc)."""
    if data_dir is not None and (data_dir / name / fname).is_file():
        return _verify_kept(
            name, fname, data_dir / name / fname,
            f"It was found through COURSE_DATA_DIR. Delete it or replace it with a fresh copy (from "
            f"{MIRRORS[name][0]}{fname}); without it the loader looks in the cache and downloads the file if needed.",
        )

    cache_folder = cache_dir / "data" / name
    cached = cache_folder / fname
    removed_note = ""
    if cached.is_file():
        try:
            return _verify(name, fname, cached)
        except DatasetChecksumError as e:
            cached.unlink(missing_ok=True)
            removed_note = f" (A cached copy was removed because it failed its check: {e})"
            print(f"Removed a bad cached file, downloading it again: {e}", file=sys.stderr)

    if name == "fashion_mnist" and (debian_dir / fname).is_file():
        return _verify_kept(
            name, fname, debian_dir / fname,
            "It comes from Debian's dataset-fashion-mnist package: reinstall it "
            "(apt-get install --reinstall dataset-fashion-mnist).",
        )

    try:
        return _download(name, fname, cache_folder)
    except (OSError, HTTPException) as e:
        raise DatasetUnavailableError(
            _unavailable_message(name, fname, data_dir, cache_folder, e) + removed_note
        ) from e


def _unavailable_message(name: str, fname: str, data_dir: Path | None, cache_folder: Path, error) -> str:
    files = ", ".join(f for pair in _FILES.values() for f in pair)
    data_dir_note = f"currently {data_dir}" if data_dir is not None else "currently unset"
    lines = [
        f"Could not find or download {name}/{fname} ({type(error).__name__}: {error}).",
        f"Put the files ({files}) in either",
        f"  - $COURSE_DATA_DIR/{name}/  (COURSE_DATA_DIR is {data_dir_note}), or",
        f"  - the cache folder {cache_folder}/",
    ]
    if name == "fashion_mnist":  # only Fashion-MNIST has a Debian package
        lines += ["Fashion-MNIST is also provided by Debian/Ubuntu: apt-get install dataset-fashion-mnist",
                  f"(files in {DEBIAN_FASHION_MNIST_DIR})."]
    lines.append("The 'digits' dataset (scikit-learn) works offline: set COURSE_DATASET=digits "
                 "or call load_images('digits').")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _pad_to_32(images: np.ndarray) -> torch.Tensor:
    """N×28×28 uint8 → N×1×32×32 uint8, 2 pixels of background (0) on every side."""
    n, h, w = images.shape
    if (h, w) != (28, 28):
        raise DatasetError(f"IDX images must be 28×28, got {h}×{w}")
    out = np.zeros((n, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    out[:, 0, 2:30, 2:30] = images
    return torch.from_numpy(out)


def _load_idx(name, split, data_dir, cache_dir, debian_dir) -> tuple[torch.Tensor, torch.Tensor]:
    image_file, label_file = _FILES[split]
    image_bytes = _fetch(name, image_file, data_dir, cache_dir, debian_dir)
    label_bytes = _fetch(name, label_file, data_dir, cache_dir, debian_dir)
    images = parse_idx(image_bytes, _IDX_IMAGES_MAGIC, f"{name}/{image_file}")
    labels = parse_idx(label_bytes, _IDX_LABELS_MAGIC, f"{name}/{label_file}")
    if len(images) != len(labels):
        raise DatasetError(f"{name} {split}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{name} {split}: labels must be in 0..9, found {int(labels.max())}")
    return _pad_to_32(images), torch.from_numpy(labels.astype(np.int64))


def _load_digits(split) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # lazy: importing scikit-learn takes a moment

    bunch = load_digits()
    sl = slice(0, DIGITS_TRAIN_SIZE) if split == "train" else slice(DIGITS_TRAIN_SIZE, None)
    small = torch.from_numpy(bunch.images[sl].astype(np.uint8)).unsqueeze(1)  # N×1×8×8, 0..16
    big = torch.nn.functional.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="nearest")
    return big.contiguous(), torch.from_numpy(bunch.target[sl].astype(np.int64))


@functools.lru_cache(maxsize=8)
def _load_raw(name, split, data_dir, cache_dir, debian_dir) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(uint8 N×1×32×32 images, int64 labels, max pixel value); cached per place searched."""
    if name == "digits":
        images, labels = _load_digits(split)
        return images, labels, 16.0
    images, labels = _load_idx(name, split, data_dir, cache_dir, debian_dir)
    return images, labels, 255.0


def clear_cache() -> None:
    """Forget the datasets kept in memory (files on disk stay)."""
    _load_raw.cache_clear()


def load_images(name: str | None = None, split: str = "train") -> ImageData:
    """Load a dataset split as N×1×32×32 float32 images in [-1, 1] with int64 labels.

    Args:
        name: ``"fashion_mnist"`` (course default), ``"mnist"`` or ``"digits"``;
            None means ``COURSE_DATASET`` (see :mod:`course_lib.settings`).
        split: ``"train"`` or ``"test"``.

    Pixel values ``x`` become ``x / (x_max / 2) - 1``, so 0 → -1 and ``x_max`` → 1:

    - ``fashion_mnist``, ``mnist``: 28×28 bytes (``x_max`` = 255, i.e. ``x / 127.5 - 1``),
      padded with 2 pixels of background on every side (value -1) to 32×32.
      train: 60000 images, test: 10000.
    - ``digits``: scikit-learn's 8×8 digits, values 0..16 (``x / 8 - 1``), upsampled ×4 to
      32×32 with **nearest-neighbour** interpolation (each pixel becomes a 4×4 block; no new
      values). Split by position, no randomness: train is samples 0..1499 (1500 images),
      test is samples 1500..1796 (297 images); both hold all 10 classes.

    Returns:
        :class:`ImageData` with ``images`` (N, 1, 32, 32) float32, ``labels`` (N,) int64,
        ``class_names`` (10 names), ``name``, ``split`` and ``captions(labels)``.
        The tensors are fresh copies: changing them never affects another call.

    Raises:
        ValueError: unknown ``name`` or ``split``.
        DatasetChecksumError: a file found or downloaded failed its checksum.
        DatasetUnavailableError: the files are missing and cannot be downloaded.
    """
    name = _check_name(name)
    split = _check_split(split)
    if name == "digits":
        key = (name, split, None, None, None)
    else:
        settings = get_settings()
        key = (name, split, settings.data_dir, settings.cache_dir, Path(DEBIAN_FASHION_MNIST_DIR))
    images_u8, labels, x_max = _load_raw(*key)
    images = images_u8.to(torch.float32).div_(x_max / 2).sub_(1.0)
    return ImageData(
        images=images,
        labels=labels.clone(),
        class_names=class_names(name),
        name=name,
        split=split,
    )
