"""Tests for course_lib.data: real IDX files, checksums, atomic downloads, digits, captions.

No test touches the network: an autouse fixture makes ``urllib.request.urlopen`` raise, and
the tests that exercise downloading replace it with a fake that serves local bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import data
from course_lib.data import (
    CAPTIONS,
    DIGITS_TRAIN_SIZE,
    FASHION_MNIST_CLASSES,
    HELD_OUT_CAPTIONS,
    MNIST_CLASSES,
    DatasetChecksumError,
    DatasetUnavailableError,
    ImageData,
    caption_for,
    class_names,
    clear_cache,
    load_images,
    parse_idx,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_DIR = SHARED_DATA / "mnist"
MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
REAL_DEBIAN_DIR = data.DEBIAN_FASHION_MNIST_DIR
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

needs_mnist = pytest.mark.skipif(
    not all((MNIST_DIR / f).is_file() for f in MNIST_TEST_FILES),
    reason=f"the real MNIST test split is not at {MNIST_DIR} (shared/data/mnist beside the repo)",
)
needs_debian_fashion = pytest.mark.skipif(
    not all((REAL_DEBIAN_DIR / f).is_file() for f in FASHION_FILES),
    reason=f"Debian's dataset-fashion-mnist is not installed ({REAL_DEBIAN_DIR} missing)",
)


class NoNetwork(AssertionError):
    pass


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Empty cache, no COURSE_DATA_DIR, an empty 'Debian' folder, and no network."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("COURSE_CACHE_DIR", str(cache))
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.delenv("COURSE_DATASET", raising=False)
    empty = tmp_path / "no-debian"
    empty.mkdir()
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", empty)

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError(f"network disabled in tests ({url})")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    clear_cache()
    yield cache
    clear_cache()


def use_shared_mnist(monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(SHARED_DATA))


def copy_mnist_test_to(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in MNIST_TEST_FILES:
        shutil.copyfile(MNIST_DIR / f, folder / f)
    return folder


def fake_urlopen_serving(files: dict[str, bytes], requested: list[str], check=None):
    """An urlopen replacement: serves ``files[basename(url)]``; records each url asked for."""

    def urlopen(url, *args, **kwargs):
        requested.append(url)
        fname = url.rsplit("/", 1)[-1]
        if check is not None:
            check(url)
        if fname not in files:
            raise urllib.error.HTTPError(url, 404, "not found", None, None)
        return io.BytesIO(files[fname])

    return urlopen


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------
# Real files
# ------------------------------------------------------------------------------------------


@needs_mnist
def test_mnist_test_split_from_course_data_dir(monkeypatch):
    use_shared_mnist(monkeypatch)
    d = load_images("mnist", "test")
    assert isinstance(d, ImageData)
    assert d.name == "mnist" and d.split == "test"
    assert d.images.shape == (10000, 1, 32, 32)
    assert d.images.dtype == torch.float32
    assert d.labels.shape == (10000,) and d.labels.dtype == torch.int64
    assert d.images.min().item() == -1.0 and d.images.max().item() == 1.0
    # pixel values are exactly x / 127.5 - 1 of the file's bytes x, centred in the 32×32 frame
    raw = gzip.decompress((MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    x = torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(10000, 28, 28).copy())
    assert torch.equal(d.images[:, 0, 2:30, 2:30], x.float() / 127.5 - 1)
    # 2 pixels of background padding on every side
    pad = torch.ones(32, 32, dtype=torch.bool)
    pad[2:30, 2:30] = False
    assert (d.images[:, 0][:, pad] == -1).all()
    assert (d.images[:, :, 2:30, 2:30] > -1).any(dim=(1, 2, 3)).all()  # every digit has ink
    assert torch.bincount(d.labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert d.class_names == MNIST_CLASSES and len(d) == 10000
    # the first test image is a 7 (a well-known fact about MNIST)
    assert d.labels[0].item() == 7
    # nothing was copied into the cache: the files were used in place
    assert not (Path(data.get_settings().cache_dir) / "data").exists()


@needs_mnist
def test_second_call_uses_memory_and_returns_independent_tensors(monkeypatch):
    use_shared_mnist(monkeypatch)
    a = load_images("mnist", "test")
    hits = data._load_raw.cache_info().hits
    b = load_images("mnist", "test")
    assert data._load_raw.cache_info().hits == hits + 1
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    a.images.zero_()
    a.labels.fill_(3)
    a.class_names.append("oops")
    c = load_images("mnist", "test")
    assert c.images.min().item() == -1.0
    assert torch.bincount(c.labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert c.class_names == MNIST_CLASSES
    assert MNIST_CLASSES == [str(i) for i in range(10)]


@needs_debian_fashion
@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist_from_debian_folder(monkeypatch, split, n):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", REAL_DEBIAN_DIR)
    d = load_images("fashion_mnist", split)
    assert d.images.shape == (n, 1, 32, 32) and d.images.dtype == torch.float32
    assert d.images.min().item() == -1.0 and d.images.max().item() == 1.0
    assert (d.images[:, :, :2] == -1).all() and (d.images[:, :, :, 30:] == -1).all()
    assert torch.bincount(d.labels, minlength=10).tolist() == [n // 10] * 10
    assert d.class_names == FASHION_MNIST_CLASSES


@needs_debian_fashion
def test_default_dataset_is_fashion_mnist(monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", REAL_DEBIAN_DIR)
    d = load_images(split="test")
    assert d.name == "fashion_mnist" and len(d) == 10000


def test_default_dataset_follows_course_dataset(monkeypatch):
    monkeypatch.setenv("COURSE_DATASET", "digits")
    d = load_images(split="test")
    assert d.name == "digits"
    assert class_names() == MNIST_CLASSES


# ------------------------------------------------------------------------------------------
# Checksums
# ------------------------------------------------------------------------------------------


@needs_mnist
def test_corrupted_copy_in_data_dir_is_rejected(tmp_path, monkeypatch):
    root = tmp_path / "data"
    folder = copy_mnist_test_to(root / "mnist")
    bad = folder / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(bad.read_bytes())
    for i in range(1000, 1010):
        raw[i] ^= 0xFF
    bad.write_bytes(bytes(raw))
    monkeypatch.setenv("COURSE_DATA_DIR", str(root))
    with pytest.raises(DatasetChecksumError) as info:
        load_images("mnist", "test")
    msg = str(info.value)
    assert str(bad) in msg
    assert "9fb629c4189551a2d022fa330f9573f3" in msg  # the expected md5
    assert "Delete it" in msg and "COURSE_DATA_DIR" in msg
    assert bad.exists()  # a user's own file is reported, never deleted
    assert isinstance(info.value, RuntimeError)


@needs_mnist
def test_truncated_copy_in_data_dir_is_rejected(tmp_path, monkeypatch):
    root = tmp_path / "data"
    folder = copy_mnist_test_to(root / "mnist")
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:2000])
    monkeypatch.setenv("COURSE_DATA_DIR", str(root))
    with pytest.raises(DatasetChecksumError, match="not a complete gzip file") as info:
        load_images("mnist", "test")
    assert str(bad) in str(info.value)


@needs_debian_fashion
def test_recompressed_file_accepted_by_content_hash(tmp_path, monkeypatch):
    """A file with another archive md5 but the official contents passes (as Debian's do)."""
    folder = tmp_path / "data" / "fashion_mnist"
    folder.mkdir(parents=True)
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        contents = gzip.decompress((REAL_DEBIAN_DIR / f).read_bytes())
        (folder / f).write_bytes(gzip.compress(contents, compresslevel=1, mtime=0))
        assert md5(folder / f) != data._MD5["fashion_mnist"][f]
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    assert len(load_images("fashion_mnist", "test")) == 10000
    # whereas a recompressed file with changed contents is rejected
    contents = bytearray(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    contents[100] = (contents[100] + 1) % 10
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(contents)))
    clear_cache()
    with pytest.raises(DatasetChecksumError, match="corrupted"):
        load_images("fashion_mnist", "test")


def test_corrupted_debian_file_says_reinstall(tmp_path, monkeypatch):
    folder = tmp_path / "debian"
    folder.mkdir()
    for f in FASHION_FILES:
        (folder / f).write_bytes(gzip.compress(b"not the real thing"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", folder)
    with pytest.raises(DatasetChecksumError, match="apt-get install --reinstall dataset-fashion-mnist"):
        load_images("fashion_mnist", "test")


# ------------------------------------------------------------------------------------------
# Downloads (mocked)
# ------------------------------------------------------------------------------------------


@needs_mnist
def test_mocked_download_lands_atomically_in_cache(isolated, monkeypatch):
    cache_folder = isolated / "data" / "mnist"
    files = {f: (MNIST_DIR / f).read_bytes() for f in MNIST_TEST_FILES}
    requested: list[str] = []

    def not_there_yet(url):
        # while a file is being fetched, its final name must not exist yet
        assert not (cache_folder / url.rsplit("/", 1)[-1]).exists()

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen_serving(files, requested, not_there_yet))
    d = load_images("mnist", "test")
    assert torch.bincount(d.labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert requested == [data.MIRRORS["mnist"][0] + f for f in MNIST_TEST_FILES]
    assert requested[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz"
    assert sorted(p.name for p in cache_folder.iterdir()) == sorted(MNIST_TEST_FILES)  # no temp files
    for f in MNIST_TEST_FILES:
        assert md5(cache_folder / f) == data._MD5["mnist"][f]

    # the next load (fresh process memory) uses the cache, not the network
    clear_cache()
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen_serving({}, requested))
    n_requests = len(requested)
    assert len(load_images("mnist", "test")) == 10000
    assert len(requested) == n_requests


def test_download_with_wrong_bytes_leaves_nothing_behind(isolated, monkeypatch):
    files = {f: gzip.compress(b"\x00\x00\x08\x03" + b"garbage" * 100) for f in FASHION_FILES}
    requested: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen_serving(files, requested))
    with pytest.raises(DatasetChecksumError, match="was not kept"):
        load_images("fashion_mnist", "test")
    assert requested == [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz"
    ]
    folder = isolated / "data" / "fashion_mnist"
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_interrupted_download_leaves_nothing_behind(isolated, monkeypatch):
    class Broken(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 0:
                raise ConnectionResetError("connection dropped")
            return super().read(10)

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, *a, **k: Broken(b"x" * 100))
    with pytest.raises(DatasetUnavailableError, match="connection dropped"):
        load_images("mnist", "test")
    assert list((isolated / "data" / "mnist").iterdir()) == []


@needs_mnist
def test_corrupted_cache_file_is_removed_and_downloaded_again(isolated, monkeypatch):
    cache_folder = copy_mnist_test_to(isolated / "data" / "mnist")
    bad = cache_folder / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated
    files = {f: (MNIST_DIR / f).read_bytes() for f in MNIST_TEST_FILES}
    requested: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen_serving(files, requested))
    d = load_images("mnist", "test")
    assert len(d) == 10000
    assert [u.rsplit("/", 1)[-1] for u in requested] == ["t10k-images-idx3-ubyte.gz"]  # only the bad one
    assert md5(bad) == data._MD5["mnist"]["t10k-images-idx3-ubyte.gz"]


def test_corrupted_cache_file_offline_is_removed_and_reported(isolated):
    cache_folder = isolated / "data" / "mnist"
    cache_folder.mkdir(parents=True)
    bad = cache_folder / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(b"half a file")
    with pytest.raises(DatasetUnavailableError) as info:
        load_images("mnist", "test")
    assert not bad.exists()
    assert "cached copy was removed" in str(info.value)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_offline_with_nothing_found_explains_what_to_do(isolated, name):
    with pytest.raises(DatasetUnavailableError) as info:
        load_images(name, "train")
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "COURSE_DATA_DIR" in msg and f"$COURSE_DATA_DIR/{name}/" in msg
    assert str(isolated / "data" / name) in msg
    for f in FASHION_FILES:
        assert f in msg
    # the Debian package holds Fashion-MNIST only: an MNIST error must not send the learner there
    assert ("apt-get install dataset-fashion-mnist" in msg) == (name == "fashion_mnist")
    assert "COURSE_DATASET=digits" in msg
    assert "network disabled in tests" in msg  # the underlying reason is shown
    assert list((isolated / "data" / name).iterdir()) == []


# ------------------------------------------------------------------------------------------
# IDX parsing
# ------------------------------------------------------------------------------------------


def _idx(magic: int, sizes: tuple[int, ...], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(s.to_bytes(4, "big") for s in sizes) + payload


def test_parse_idx_reads_valid_data():
    arr = parse_idx(_idx(2051, (2, 2, 3), bytes(range(12))), 2051)
    assert arr.shape == (2, 2, 3) and arr.dtype == np.uint8 and arr[1, 1, 2] == 11
    assert parse_idx(_idx(2049, (3,), b"\x01\x02\x03"), 2049).tolist() == [1, 2, 3]


def test_parse_idx_rejects_bad_magic_and_sizes():
    with pytest.raises(ValueError, match="magic number must be 2051, got 2049"):
        parse_idx(_idx(2049, (3,), b"abc"), 2051, "x")
    with pytest.raises(ValueError, match="sizes"):
        parse_idx(_idx(2051, (2, 28, 28), bytes(28 * 28)), 2051)  # one image short
    with pytest.raises(ValueError, match="too short"):
        parse_idx(b"\x00\x00", 2049)
    with pytest.raises(ValueError, match="2051 .images. or 2049"):
        parse_idx(b"", 1234)


# ------------------------------------------------------------------------------------------
# digits
# ------------------------------------------------------------------------------------------


def test_digits_offline_shapes_range_and_split():
    from sklearn.datasets import load_digits

    train = load_images("digits", "train")
    test = load_images("digits", "test")
    assert train.images.shape == (DIGITS_TRAIN_SIZE, 1, 32, 32) == (1500, 1, 32, 32)
    assert test.images.shape == (297, 1, 32, 32)
    for d in (train, test):
        assert d.images.dtype == torch.float32 and d.labels.dtype == torch.int64
        assert d.images.min().item() == -1.0 and d.images.max().item() == 1.0
        assert set(d.labels.tolist()) == set(range(10))
        # nearest-neighbour: every 4×4 block is constant
        blocks = d.images.unfold(2, 4, 4).unfold(3, 4, 4)  # N×1×8×8×4×4
        assert (blocks == blocks[..., :1, :1]).all()
    # train then test, in order, is exactly scikit-learn's 1797 digits: disjoint and complete
    ref = load_digits()
    both = torch.cat([train.images, test.images])[:, 0, ::4, ::4]
    assert both.shape == (1797, 8, 8)
    expected = torch.from_numpy(ref.images).float() / 8 - 1
    assert torch.equal(both, expected)
    assert torch.equal(torch.cat([train.labels, test.labels]), torch.from_numpy(ref.target).long())


# ------------------------------------------------------------------------------------------
# Captions and class names
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "digits"])
def test_captions_several_per_class_and_held_out_ones_unseen(name):
    assert len(CAPTIONS[name]) == 10
    training = set()
    for phrasings in CAPTIONS[name]:
        assert len(phrasings) >= 3 and len(set(phrasings)) == len(phrasings)
        training.update(phrasings)
    held = HELD_OUT_CAPTIONS[name]
    assert len(held) == 10 and len(set(held)) == 10
    assert not training & set(held)


def test_caption_examples():
    fashion = CAPTIONS["fashion_mnist"]
    assert "a sneaker" in fashion[7] and "a running shoe" in fashion[7] and "a trainer" in fashion[7]
    assert HELD_OUT_CAPTIONS["fashion_mnist"][1] == "a pair of jeans"
    assert HELD_OUT_CAPTIONS["fashion_mnist"][8] == "a purse"
    everything = " ".join(c for cs in fashion for c in cs)
    assert "jeans" not in everything and "purse" not in everything
    assert "the digit three" in CAPTIONS["mnist"][3] and "a handwritten 3" in CAPTIONS["mnist"][3]
    assert CAPTIONS["digits"] == CAPTIONS["mnist"]


def test_captions_seeded_and_drawn_from_the_right_class():
    d = load_images("digits", "test")
    labels = d.labels[:50]
    a = d.captions(labels, generator=torch.Generator().manual_seed(1))
    b = d.captions(labels, generator=torch.Generator().manual_seed(1))
    c = d.captions(labels, generator=torch.Generator().manual_seed(2))
    assert a == b and a != c
    assert len(a) == 50
    for lab, cap in zip(labels.tolist(), a):
        assert cap in CAPTIONS["digits"][lab]
    assert isinstance(d.captions(3), str) and isinstance(d.captions(labels[0]), str)
    assert len(d.captions([0, 1, 2])) == 3
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert caption_for("fashion_mnist", 8, g1) == caption_for("fashion_mnist", 8, g2)
    # all phrasings of a class actually get used
    g = torch.Generator().manual_seed(0)
    seen = {caption_for("fashion_mnist", 7, g) for _ in range(200)}
    assert seen == set(CAPTIONS["fashion_mnist"][7])


def test_bad_labels_for_captions():
    for bad in (10, -1, 2.5, "3", True):
        with pytest.raises(ValueError, match=r"label must be an integer in 0\.\.9"):
            caption_for("mnist", bad)


def test_class_names():
    assert class_names("fashion_mnist") == FASHION_MNIST_CLASSES
    assert class_names("fashion_mnist")[9] == "Ankle boot"
    assert class_names("mnist") == class_names("digits") == MNIST_CLASSES
    names = class_names("mnist")
    names[0] = "changed"
    assert class_names("mnist")[0] == "0"


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["cifar10", "MNIST", "fashion-mnist", ""])
def test_unknown_dataset_name_lists_choices(bad):
    for call in (lambda: load_images(bad), lambda: class_names(bad), lambda: caption_for(bad, 0)):
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert "'fashion_mnist'" in msg and "'mnist'" in msg and "'digits'" in msg and repr(bad) in msg


@pytest.mark.parametrize("bad", ["val", "training", "Test", None])
def test_unknown_split_lists_choices(bad):
    with pytest.raises(ValueError) as info:
        load_images("digits", bad)
    msg = str(info.value)
    assert "'train'" in msg and "'test'" in msg and repr(bad) in msg
