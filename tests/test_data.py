"""Tests of marginrobust.data: loaders, subsets, specs and their error sentences (no network)."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from marginrobust.data import (
    DataSpec,
    balanced_subset,
    default_data_dir,
    list_datasets,
    load_dataset,
)
from marginrobust.data import sources as data
from marginrobust.errors import UserError

CIFAR_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.xz"


def _counts(y: torch.Tensor, k: int = 10) -> list[int]:
    return np.bincount(y.numpy(), minlength=k).tolist()


# --------------------------------------------------------------------------- digits


def test_digits_shapes_range_and_spec(tmp_path: Path) -> None:
    ds = load_dataset("digits", data_dir=tmp_path)
    assert ds.x_train.shape == (1347, 1, 8, 8) and ds.x_test.shape == (450, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    for x in (ds.x_train, ds.x_test):
        assert x.min() >= 0.0 and x.max() == 1.0  # 16/16 occurs
    spec = ds.spec
    assert (spec.name, spec.source) == ("digits", "sklearn.datasets.load_digits")
    assert spec.shape == (1, 8, 8) and spec.num_classes == 10
    assert spec.classes == [str(c) for c in range(10)]
    assert (spec.n_train, spec.n_test, spec.train_subset, spec.seed) == (1347, 450, None, 0)
    assert spec.bounds == (0.0, 1.0)
    # Stratified: every class is in the test split about in proportion (~45 each).
    assert min(_counts(ds.y_test)) >= 43
    again = load_dataset("digits", data_dir=tmp_path)
    assert torch.equal(ds.x_test, again.x_test) and torch.equal(ds.y_train, again.y_train)
    assert not list(tmp_path.iterdir())  # embedded: nothing written


def test_digits_takes_no_argument_and_unknown_name_fails() -> None:
    with pytest.raises(UserError, match="takes no argument"):
        load_dataset("digits:foo")
    with pytest.raises(UserError, match="unknown dataset 'nope'"):
        load_dataset("nope")


def test_list_datasets_describes_every_builtin() -> None:
    listed = dict(list_datasets())
    for name in ("digits", "mnist", "fashion-mnist", "cifar10", "imagefolder", "npz"):
        assert listed[name] and "\n" not in listed[name]


def test_default_data_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MARGINROBUST_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("MARGINROBUST_DATA")
    assert default_data_dir() == Path.home() / ".cache" / "marginrobust"


# --------------------------------------------------------------------------- subsets


def test_subsets_balanced_deterministic_and_seeded() -> None:
    a = load_dataset("digits", train_subset=105, test_subset=23, seed=1)
    assert sorted(_counts(a.y_train)) == [10] * 5 + [11] * 5
    assert _counts(a.y_train)[:5] == [11] * 5  # remainder goes to the lowest classes
    assert _counts(a.y_test) == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert (a.spec.n_train, a.spec.n_test) == (105, 23)
    assert (a.spec.train_subset, a.spec.test_subset, a.spec.seed) == (105, 23, 1)
    b = load_dataset("digits", train_subset=105, test_subset=23, seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    c = load_dataset("digits", train_subset=105, test_subset=23, seed=2)
    assert not torch.equal(a.x_train, c.x_train) and not torch.equal(a.x_test, c.x_test)
    # The test choice does not depend on the training subset size.
    d = load_dataset("digits", train_subset=50, test_subset=23, seed=1)
    assert torch.equal(a.x_test, d.x_test)


def test_subset_rows_keep_original_order() -> None:
    full = load_dataset("digits")
    sub = load_dataset("digits", train_subset=200, seed=5)
    rows = {full.x_train[i].numpy().tobytes(): i for i in range(len(full.x_train))}
    idx = [rows[x.numpy().tobytes()] for x in sub.x_train]
    assert idx == sorted(idx)


def test_balanced_subset_with_a_short_class() -> None:
    labels = np.array([0] * 2 + [1] * 10 + [2] * 10)
    rng = np.random.default_rng(0)
    assert np.bincount(labels[balanced_subset(labels, 12, 3, rng)]).tolist() == [2, 5, 5]
    assert np.bincount(labels[balanced_subset(labels, 13, 3, rng)]).tolist() == [2, 6, 5]
    idx = balanced_subset(labels, 22, 3, rng)
    assert idx.tolist() == list(range(22))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"train_subset": 0}, "train_subset must be positive"),
    ({"test_subset": -3}, "test_subset must be positive"),
    ({"train_subset": 1348}, "train_subset=1348 is larger than the 1347 images"),
    ({"test_subset": 451}, "test_subset=451 is larger than the 450 images"),
    ({"seed": -1}, "seed must be non-negative"),
])
def test_subset_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_dataset("digits", **kwargs)


# --------------------------------------------------------------------------- spec


def test_spec_round_trip_through_json() -> None:
    spec = load_dataset("digits", train_subset=30, seed=4).spec
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["shape"] == [1, 8, 8] and d["bounds"] == [0.0, 1.0]
    assert DataSpec.from_dict(d) == spec
    d["added_later"] = 1  # newer writers may add keys
    assert DataSpec.from_dict(d) == spec


def test_spec_from_dict_names_missing_keys() -> None:
    with pytest.raises(UserError, match="lacks shape, num_classes"):
        DataSpec.from_dict({"name": "digits", "source": "x", "classes": [], "n_train": 1,
                            "n_test": 1})


# --------------------------------------------------------------------------- npz


def _labels(n: int, k: int = 3) -> np.ndarray:
    return np.arange(n) % k


@pytest.mark.parametrize(("train", "test", "shape"), [
    ((12, 5, 6), (6, 5, 6), (1, 5, 6)),             # NHW
    ((12, 5, 6, 3), (6, 5, 6, 3), (3, 5, 6)),       # NHWC
    ((12, 3, 5, 6), (6, 3, 5, 6), (3, 5, 6)),       # NCHW
    ((12, 5, 6, 1), (6, 5, 6, 1), (1, 5, 6)),       # NHWC, one channel
])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_npz_layouts(tmp_path: Path, train: tuple, test: tuple, shape: tuple,
                     dtype: str) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=train).astype(np.uint8)
    x_test = rng.integers(0, 256, size=test).astype(np.uint8)
    if dtype == "float32":
        x_train, x_test = x_train / np.float32(255), x_test / np.float32(255)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, y_train=_labels(12), x_test=x_test, y_test=_labels(6))
    ds = load_dataset(f"npz:{path}", data_dir=tmp_path, train_subset=6)
    assert ds.x_train.shape == (6, *shape) and ds.x_test.shape == (6, *shape)
    assert ds.x_train.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    assert ds.spec.source == str(path) and ds.spec.classes == ["0", "1", "2"]
    assert _counts(ds.y_train, 3) == [2, 2, 2]
    # Pixel values survive the layout change: compare one test image.
    expect = np.asarray(x_test[2], dtype=np.float32)
    if dtype == "uint8":
        expect = expect / 255
    if len(test) == 4 and test[3] in (1, 3):
        expect = expect.transpose(2, 0, 1)
    np.testing.assert_allclose(ds.x_test[2].numpy().reshape(expect.shape), expect, rtol=1e-6)


def test_npz_class_names(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    x = np.zeros((4, 2, 2), np.uint8)
    np.savez(path, x_train=x, y_train=_labels(4, 2), x_test=x, y_test=_labels(4, 2),
             classes=np.array(["cat", "dog"]))
    assert load_dataset(f"npz:{path}").spec.classes == ["cat", "dog"]


def _save(path: Path, **arrays: np.ndarray) -> str:
    base = {"x_train": np.zeros((4, 2, 2), np.uint8), "y_train": _labels(4),
            "x_test": np.zeros((4, 2, 2), np.uint8), "y_test": _labels(4)}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return f"npz:{path}"


@pytest.mark.parametrize(("arrays", "message"), [
    ({"y_train": None, "x_test": None}, "lacks the arrays y_train, x_test"),
    ({"x_train": np.full((4, 2, 2), 1.5, np.float32)}, r"values must lie in \[0, 1\]"),
    ({"x_test": np.full((4, 2, 2), -0.1, np.float64)}, r"values must lie in \[0, 1\]"),
    ({"x_train": np.full((4, 2, 2), np.nan, np.float32)}, r"values must lie in \[0, 1\]"),
    ({"x_train": np.zeros((4, 2, 2), np.int32)}, "must be uint8 or float"),
    ({"x_train": np.zeros((4, 5, 5, 5), np.uint8)}, "cannot tell the channel axis"),
    ({"x_train": np.zeros((4, 2), np.uint8)}, "must be NHW, NHWC or NCHW"),
    ({"x_test": np.zeros((4, 3, 3), np.uint8)}, "train images are"),
    ({"y_train": _labels(3)}, "one label per image"),
    ({"y_test": np.array([0.0, 1.0, 2.0, 0.0])}, "integer labels"),
    ({"y_test": np.array([0, 1, 2, -1])}, "y_test holds the negative label -1"),
])
def test_npz_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_dataset(_save(tmp_path / "bad.npz", **arrays))


def test_npz_path_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs a path"):
        load_dataset("npz")
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(UserError, match="cannot read"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")


# --------------------------------------------------------------------------- imagefolder

CLASSES = ["ant", "bee", "cow"]


def _make_folder(root: Path, per_class: tuple[int, int] = (4, 2), size: int = 6,
                 mode: str = "L", ext: str = "png") -> dict[str, np.ndarray]:
    """Write root/{train,test}/<class>/<i>.<ext>; return the pixels written, by relative path."""
    rng = np.random.default_rng(0)
    written = {}
    for split, n in zip(("train", "test"), per_class, strict=True):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                shape = (size, size) if mode == "L" else (size, size, 3)
                pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
                Image.fromarray(pixels, mode).save(root / split / c / f"{i:03d}.{ext}")
                written[f"{split}/{c}/{i:03d}"] = pixels
    return written


def test_imagefolder_png_exact_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = _make_folder(tmp_path / "imgs")
    cache_dir = tmp_path / "data"
    ds = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", data_dir=cache_dir)
    assert ds.x_train.shape == (12, 1, 6, 6) and ds.x_test.shape == (6, 1, 6, 6)
    assert ds.spec.classes == CLASSES and ds.spec.num_classes == 3
    assert ds.spec.source == str(tmp_path / "imgs")
    assert ds.y_train.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # PNG is lossless: the pixels come back exactly (sorted by class, then file name).
    np.testing.assert_array_equal(ds.x_train[5, 0].numpy() * 255, written["train/bee/001"])
    np.testing.assert_array_equal(ds.x_test[5, 0].numpy() * 255, written["test/cow/001"])
    assert len(list((cache_dir / "cache").glob("*.npz"))) == 1

    # A second load reads the cache and decodes nothing.
    def no_decode(root: Path) -> None:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data, "_decode_folder", no_decode)
    again = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", data_dir=cache_dir, train_subset=3)
    assert _counts(again.y_train, 3) == [1, 1, 1]
    monkeypatch.undo()

    # Adding an image changes its class folder's mtime and so the cache key.
    Image.fromarray(written["train/ant/000"], "L").save(tmp_path / "imgs/train/ant/zzz.png")
    more = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", data_dir=cache_dir)
    assert more.spec.n_train == 13


def test_imagefolder_rgb_jpeg(tmp_path: Path) -> None:
    _make_folder(tmp_path / "imgs", mode="RGB", ext="jpg", size=8)
    ds = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", data_dir=tmp_path / "data",
                      test_subset=3, seed=2)
    assert ds.x_train.shape == (12, 3, 8, 8) and ds.x_test.shape == (3, 3, 8, 8)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert _counts(ds.y_test, 3) == [1, 1, 1]


def test_imagefolder_from_tar_gz_one_level_down(tmp_path: Path) -> None:
    _make_folder(tmp_path / "src" / "tiny")
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "tiny", arcname="tiny")
    cache_dir = tmp_path / "data"
    from_tar = load_dataset(f"imagefolder:{archive}", data_dir=cache_dir)
    from_dir = load_dataset(f"imagefolder:{tmp_path / 'src' / 'tiny'}", data_dir=cache_dir)
    assert torch.equal(from_tar.x_train, from_dir.x_train)
    assert torch.equal(from_tar.y_test, from_dir.y_test)
    assert from_tar.spec.source == str(archive)
    assert (cache_dir / "extracted" / "tiny" / "tiny" / "train" / "ant").is_dir()
    # No temporary folders are left behind.
    assert [p.name for p in (cache_dir / "extracted").iterdir()] == ["tiny"]
    again = load_dataset(f"imagefolder:{archive}", data_dir=cache_dir)
    assert torch.equal(again.x_test, from_tar.x_test)


@pytest.mark.parametrize("data_filter", [True, False], ids=["data-filter", "older-python"])
def test_imagefolder_archive_safety_with_and_without_the_data_filter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_filter: bool) -> None:
    if not data_filter:  # what Debian 12's Python 3.11.2 has: no tarfile.data_filter
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    _make_folder(tmp_path / "src" / "tiny")
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "tiny", arcname="tiny")
    plain = load_dataset(f"imagefolder:{archive}", data_dir=tmp_path / "data")
    direct = load_dataset(f"imagefolder:{tmp_path / 'src' / 'tiny'}", data_dir=tmp_path / "d2")
    assert torch.equal(plain.x_train, direct.x_train)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(tmp_path / "src" / "tiny", arcname="tiny")
        link = tarfile.TarInfo("tiny/train/ant/escape.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(UserError):
        load_dataset(f"imagefolder:{evil}", data_dir=tmp_path / "data3")
    assert not (tmp_path / "data3" / "extracted" / "evil").exists()


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs a path"):
        load_dataset("imagefolder")
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(UserError, match="neither a folder nor"):
        load_dataset(f"imagefolder:{tmp_path / 'plain.txt'}")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="has no train/ and test/ folders"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}", data_dir=tmp_path / "d")
    (tmp_path / "empty" / "test").mkdir()
    with pytest.raises(UserError, match="found no class folders"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}", data_dir=tmp_path / "d")
    (tmp_path / "bad.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(UserError, match="cannot extract"):
        load_dataset(f"imagefolder:{tmp_path / 'bad.tar.gz'}", data_dir=tmp_path / "d")


def test_imagefolder_class_mismatch(tmp_path: Path) -> None:
    _make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "test" / "cow").rename(tmp_path / "imgs" / "test" / "cat")
    with pytest.raises(UserError, match="has classes"):
        load_dataset(f"imagefolder:{tmp_path / 'imgs'}", data_dir=tmp_path / "d")


def test_imagefolder_mixed_sizes(tmp_path: Path) -> None:
    _make_folder(tmp_path / "imgs")
    Image.new("L", (7, 6)).save(tmp_path / "imgs" / "test" / "cow" / "big.png")
    with pytest.raises(UserError, match="all images must share one size"):
        load_dataset(f"imagefolder:{tmp_path / 'imgs'}", data_dir=tmp_path / "d")


def test_imagefolder_gray_and_colour_become_rgb(tmp_path: Path) -> None:
    _make_folder(tmp_path / "imgs")
    Image.new("RGB", (6, 6), (255, 0, 0)).save(tmp_path / "imgs" / "test" / "ant" / "red.png")
    ds = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", data_dir=tmp_path / "d")
    assert ds.spec.shape == (3, 6, 6)
    assert torch.equal(ds.x_train[0, 0], ds.x_train[0, 2])  # gray repeated


# --------------------------------------------------------------------------- torchvision


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_files(tmp_path: Path) -> None:
    ds = load_dataset("fashion-mnist", data_dir=tmp_path, train_subset=200, test_subset=50,
                      seed=3)
    assert ds.x_train.shape == (200, 1, 28, 28) and ds.x_test.shape == (50, 1, 28, 28)
    assert _counts(ds.y_train) == [20] * 10 and _counts(ds.y_test) == [5] * 10
    assert ds.spec.classes[0] == "T-shirt/top" and ds.spec.num_classes == 10
    assert ds.spec.source == str(data.DEBIAN_FASHION_MNIST)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()


def _offline(monkeypatch: pytest.MonkeyPatch, module: str) -> list[str]:
    """Make torchvision's downloader in ``module`` fail at once, as it does without network."""
    tried: list[str] = []

    def fail(url: str, *args: object, **kwargs: object) -> None:
        tried.append(url)
        raise URLError("network is unreachable")

    monkeypatch.setattr(f"torchvision.datasets.{module}.download_and_extract_archive", fail)
    return tried


def test_mnist_offline_says_where_to_put_files(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tried = _offline(monkeypatch, "mnist")
    with pytest.raises(UserError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"could not download MNIST into {tmp_path};")
    assert "train-images-idx3-ubyte.gz" in msg and f"{tmp_path}/MNIST/raw/" in msg
    assert "\n" not in msg and tried


def test_fashion_mnist_offline_without_debian(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    tried = _offline(monkeypatch, "mnist")
    with pytest.raises(UserError, match="could not download Fashion-MNIST") as info:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert f"{tmp_path}/FashionMNIST/raw/" in str(info.value) and tried


def test_cifar10_offline_says_where_to_put_files(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tried = _offline(monkeypatch, "cifar")
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(info.value) == (
        f"could not download CIFAR-10 into {tmp_path}; place cifar-10-python.tar.gz (or the "
        f"extracted cifar-10-batches-py folder) in {tmp_path}/ and retry")
    assert tried


# --------------------------------------------------------------------------- CIFAR-10 (JPEG)


@pytest.fixture
def big_data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data_dir removed after the test: pytest keeps recent tmp dirs, ~400 MB here."""
    yield tmp_path / "data"
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_JPEG.is_file(), reason=f"{CIFAR_JPEG} is not present")
def test_cifar10_jpeg_archive(big_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"imagefolder:{CIFAR_JPEG}"
    ds = load_dataset(name, data_dir=big_data_dir, train_subset=100, test_subset=50)
    assert ds.x_train.shape == (100, 3, 32, 32) and ds.x_test.shape == (50, 3, 32, 32)
    assert _counts(ds.y_train) == [10] * 10 and _counts(ds.y_test) == [5] * 10
    assert ds.spec.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                               "horse", "ship", "truck"]
    assert Path(ds.spec.source).resolve() == CIFAR_JPEG.resolve()
    # The full set now comes from the cache, neither extracted nor decoded again.
    monkeypatch.setattr(data, "_extract", None)
    monkeypatch.setattr(data, "_decode_folder", None)
    full = load_dataset(name, data_dir=big_data_dir)
    assert (full.spec.n_train, full.spec.n_test) == (50000, 10000)
    assert _counts(full.y_train) == [5000] * 10
