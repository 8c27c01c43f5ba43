"""The built-in datasets: scikit-learn's digits, MNIST, Fashion-MNIST (Debian's files when
present), CIFAR-10, ``npz:PATH`` and ``imagefolder:PATH`` (a folder or an archive, decoded
once and cached).

Each is a factory registered with :func:`~marginrobust.registry.register_dataset` that
returns :class:`~marginrobust.data.ArraySplits`; :func:`~marginrobust.data.load_dataset`
turns them into tensors and subsets.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io import atomic_write
from ..registry import register_dataset
from .loading import refuse_arg, require_path
from .spec import ArraySplits

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar")

_CACHE_VERSION = 1
_EXTRACT_MARKER = ".marginrobust-source"


@register_dataset("digits")
def _digits(arg: str | None, data_dir: Path) -> ArraySplits:
    """scikit-learn's 8x8 digits (1,797 images, embedded): fixed stratified 1,347/450 split."""
    refuse_arg(arg, "digits")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
    y = bunch.target.astype(np.int64)
    # The data has no official split: a fixed stratified one (random_state=0) makes every
    # run see the same 1,347 training and 450 test images, in their original order.
    tr, te = train_test_split(np.arange(len(y)), test_size=450, random_state=0, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    return ArraySplits(x[tr], y[tr], x[te], y[te], [str(c) for c in bunch.target_names],
                       "sklearn.datasets.load_digits")


# --------------------------------------------------------------------------- torchvision


def _mnist_like(cls: Any, label: str, data_dir: Path, hint: str) -> ArraySplits:
    """Load an MNIST-format torchvision dataset, downloading it if its files are absent."""
    try:
        # download=True only fetches what is missing; placed files are used as they are.
        train = cls(str(data_dir), train=True, download=True)
        test = cls(str(data_dir), train=False, download=True)
    except (RuntimeError, OSError) as exc:  # URLError is an OSError
        raise UserError(f"could not download {label} into {data_dir}; {hint}") from exc
    return ArraySplits(train.data.numpy()[:, None], train.targets.numpy(),
                       test.data.numpy()[:, None], test.targets.numpy(), list(train.classes),
                       str(Path(train.raw_folder)))


def _mnist_hint(raw: Path) -> str:
    names = ", ".join(f"{f}.gz" for f in MNIST_FILES)
    return f"place {names} in {raw}/ and retry"


@register_dataset("mnist")
def _mnist(arg: str | None, data_dir: Path) -> ArraySplits:
    """MNIST handwritten digits (70,000 images, 28x28) via torchvision, downloaded once."""
    refuse_arg(arg, "mnist")
    from torchvision.datasets import MNIST

    return _mnist_like(MNIST, "MNIST", data_dir, _mnist_hint(data_dir / "MNIST" / "raw"))


@register_dataset("fashion-mnist")
def _fashion_mnist(arg: str | None, data_dir: Path) -> ArraySplits:
    """Fashion-MNIST (70,000 images, 28x28): Debian's dataset-fashion-mnist or torchvision."""
    refuse_arg(arg, "fashion-mnist")
    from torchvision.datasets import FashionMNIST

    raw = data_dir / "FashionMNIST" / "raw"
    debian = [DEBIAN_FASHION_MNIST / f"{f}.gz" for f in MNIST_FILES]
    from_debian = all(p.is_file() for p in debian)
    if from_debian:
        # torchvision reads the decompressed files from <root>/FashionMNIST/raw/; decompress
        # the packaged originals there once instead of downloading the same bytes.
        raw.mkdir(parents=True, exist_ok=True)
        for src, name in zip(debian, MNIST_FILES, strict=True):
            if not (raw / name).is_file():
                _gunzip(src, raw / name)
    splits = _mnist_like(FashionMNIST, "Fashion-MNIST", data_dir, _mnist_hint(raw))
    if from_debian:
        splits.source = str(DEBIAN_FASHION_MNIST)
    return splits


def _gunzip(src: Path, dst: Path) -> None:
    with gzip.open(src, "rb") as fin:
        atomic_write(dst, lambda fout: shutil.copyfileobj(fin, fout))


@register_dataset("cifar10")
def _cifar10(arg: str | None, data_dir: Path) -> ArraySplits:
    """CIFAR-10 (60,000 images, 32x32 RGB) via torchvision, downloaded once."""
    refuse_arg(arg, "cifar10")
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(data_dir), train=True, download=True)
        test = CIFAR10(str(data_dir), train=False, download=True)
    except (RuntimeError, OSError) as exc:  # URLError is an OSError
        raise UserError(f"could not download CIFAR-10 into {data_dir}; place "
                        f"cifar-10-python.tar.gz (or the extracted cifar-10-batches-py folder) "
                        f"in {data_dir}/ and retry") from exc
    return ArraySplits(train.data.transpose(0, 3, 1, 2), np.asarray(train.targets),
                       test.data.transpose(0, 3, 1, 2), np.asarray(test.targets),
                       list(train.classes), str(data_dir / CIFAR10.base_folder))


# --------------------------------------------------------------------------- npz


@register_dataset("npz")
def _npz(arg: str | None, data_dir: Path) -> ArraySplits:
    """npz:PATH, arrays x_train, y_train, x_test, y_test (NCHW/NHWC/NHW; uint8 or [0, 1]).

    The labels are 0..K-1. K is the length of an optional ``classes`` array (the class
    names) or an optional scalar ``num_classes``; without either, every label from 0 to
    the largest must occur, so that a typo (a 12 among labels 0..9) is refused rather
    than read as three more classes.
    """
    path = require_path(arg, "npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"npz: cannot read {path} as a .npz file ({exc})") from exc
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise UserError(f"npz: {path} lacks the arrays {', '.join(missing)}")
    empty = [k for k in ("x_train", "y_train", "x_test", "y_test") if arrays[k].size == 0]
    if empty:
        raise UserError(f"npz: {' and '.join(empty)} in {path} "
                        f"{'is' if len(empty) == 1 else 'are'} empty; training and testing "
                        "need at least one image each")
    x_train = _to_nchw(arrays["x_train"], "x_train", path)
    x_test = _to_nchw(arrays["x_test"], "x_test", path)
    y_train, y_test = arrays["y_train"].reshape(-1), arrays["y_test"].reshape(-1)
    classes = _npz_classes(arrays, (y_train, y_test), path)
    return ArraySplits(x_train, y_train, x_test, y_test, classes, str(path))


def _npz_classes(arrays: dict[str, np.ndarray], labels: Sequence[np.ndarray],
                 path: Path) -> list[str]:
    """The class names: ``classes``, else ``0..num_classes-1``, else ``0..`` the largest
    label when every label up to it occurs (other label faults are left to the common
    check of :func:`~marginrobust.data.load_dataset`, which names the split)."""
    if "num_classes" in arrays:
        n = arrays["num_classes"]
        if n.ndim != 0 or n.dtype.kind not in "iu" or int(n) < 1:
            raise UserError(f"npz: num_classes in {path} must be one positive integer, "
                            f"got {n.tolist()!r}")
        if "classes" in arrays and len(arrays["classes"]) != int(n):
            raise UserError(f"npz: {path} names {len(arrays['classes'])} classes but its "
                            f"num_classes is {int(n)}")
        return [str(c) for c in range(int(n))]
    if "classes" in arrays:
        return [str(c) for c in arrays["classes"]]
    for key, y in zip(("y_train", "y_test"), labels, strict=True):
        if y.dtype.kind not in "iu":
            raise UserError(f"npz: {key} in {path} must hold integer labels, got {y.dtype}")
    present = np.unique(np.concatenate(labels))
    if present[0] < 0:
        return [str(c) for c in range(int(present[-1]) + 1)]
    top = int(present[-1])
    missing = np.setdiff1d(np.arange(top + 1), present)
    if len(missing):
        shown = ", ".join(str(int(m)) for m in missing[:5]) + (", ..." if len(missing) > 5
                                                               else "")
        raise UserError(f"npz: the labels in {path} skip {shown}: they run up to {top} "
                        f"but only {len(present)} distinct labels occur; number the classes "
                        f"0..{len(present) - 1}, or store num_classes (or the class names "
                        "as classes) in the npz")
    return [str(c) for c in range(top + 1)]


def _to_nchw(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """NHW → N1HW; NHWC → NCHW when the last axis (not the second) has 1 or 3 channels."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] in (1, 3):
            return x
        if x.shape[3] in (1, 3):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        raise UserError(f"npz: cannot tell the channel axis of {key} {x.shape} in {path}; "
                        f"use 1 or 3 channels in NCHW or NHWC")
    raise UserError(f"npz: {key} in {path} must be NHW, NHWC or NCHW, got shape {x.shape}")


# --------------------------------------------------------------------------- image folders


@register_dataset("imagefolder")
def _imagefolder(arg: str | None, data_dir: Path) -> ArraySplits:
    """imagefolder:PATH, a folder or .tar(.gz/.xz) with train/<class>/ and test/<class>/ images."""
    path = require_path(arg, "imagefolder")
    if path.is_dir():
        root = _find_split_root(path, path)
        key = _dir_key(root)
    elif path.name.endswith(ARCHIVE_SUFFIXES):
        st = path.stat()
        key = f"{path}|{st.st_mtime_ns}|{st.st_size}"
        root = None  # extracted only when the cache misses
    else:
        raise UserError(f"imagefolder: {path} is neither a folder nor a "
                        f"{'/'.join(ARCHIVE_SUFFIXES)} archive")
    digest = hashlib.sha256(f"v{_CACHE_VERSION}|{key}".encode()).hexdigest()[:20]
    cache = data_dir / "cache" / f"{digest}.npz"
    splits = _read_cache(cache)
    if splits is None:
        if root is None:
            root = _find_split_root(_extract(path, data_dir, key), path)
        splits = _decode_folder(root)
        _write_cache(cache, splits)
    splits.source = str(Path(arg).expanduser())  # as given: results name no machine folder
    return splits


def _find_split_root(folder: Path, shown: Path) -> Path:
    """The folder holding train/ and test/: ``folder`` itself or its only subfolder."""
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return folder
    subdirs = [p for p in folder.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / "train").is_dir() and (subdirs[0] / "test").is_dir():
        return subdirs[0]
    raise UserError(f"imagefolder: {shown} has no train/ and test/ folders of class folders "
                    f"(expected train/<class>/<image> and test/<class>/<image>)")


def _dir_key(root: Path) -> str:
    # Adding or removing an image changes its class folder's mtime, so these stamps notice
    # any change of the file set without listing every image.
    dirs = [root, root / "train", root / "test"]
    dirs += sorted(p for split in ("train", "test") for p in (root / split).iterdir()
                   if p.is_dir())
    return "|".join(f"{p}:{p.stat().st_mtime_ns}" for p in dirs)


def _extract(archive: Path, data_dir: Path, key: str) -> Path:
    """Unpack ``archive`` once into ``<data_dir>/extracted/<stem>/`` and return that folder."""
    stem = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    parent = data_dir / "extracted"
    target = parent / stem
    marker = target / _EXTRACT_MARKER
    if marker.is_file() and marker.read_text() == key:
        return target
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{stem}."))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared data_dir's copy from others
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                # The "data" filter refuses absolute paths, links out of the tree and devices.
                tar.extractall(tmp, filter="data")
            else:  # Python < 3.10.12 / 3.11.4 (Debian 12's 3.11.2): check the members here
                tar.extractall(tmp, members=_plain_members(tar, archive))
        (tmp / _EXTRACT_MARKER).write_text(key)
        if target.exists():  # a stale extraction of an older version of the archive
            stale = Path(tempfile.mkdtemp(dir=parent, prefix=f".{stem}.stale."))
            os.replace(target, stale / stem)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, target)  # atomic: readers see no half-extracted folder
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if marker.is_file() and marker.read_text() == key:
            return target  # another process finished the same extraction first
        raise UserError(f"imagefolder: cannot extract {archive} into {parent} ({exc})") from exc
    return target


def _plain_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """The archive's members when all are plain files and folders inside the tree.

    What the "data" filter of newer Pythons checks, for an image folder: no absolute path,
    no ``..``, no links or devices (an image folder needs none of them).
    """
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
            raise UserError(f"imagefolder: {archive} holds {m.name!r}, which is not a plain file "
                            "or folder inside the archive; extract it yourself and pass the "
                            "folder")
        m.mode = (m.mode | 0o644) & 0o755 if m.isfile() else 0o755
    return members


def _read_image(path: str) -> np.ndarray:
    """HxW for grayscale files, HxWx3 otherwise (alpha and palettes become RGB)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L" if img.mode in ("1", "L", "LA") else "RGB"))


def _decode_folder(root: Path) -> ArraySplits:
    """Decode every image of root/train and root/test into uint8 NCHW arrays."""
    from torchvision.datasets import ImageFolder

    images: list[np.ndarray] = []
    files: list[str] = []
    labels, classes = {}, {}
    for split in ("train", "test"):
        folder = root / split
        _check_class_folders(folder)
        try:
            ds = ImageFolder(str(folder), loader=_read_image)
        except FileNotFoundError as exc:
            raise UserError(f"imagefolder: found no class folders of images in {folder}") \
                from exc
        for file, _ in ds.samples:
            try:
                images.append(ds.loader(file))
            except OSError as exc:
                raise UserError(f"imagefolder: cannot read image {file} ({exc})") from exc
            files.append(file)
        labels[split] = np.asarray(ds.targets, dtype=np.int64)
        classes[split] = ds.classes
    if classes["train"] != classes["test"]:
        raise UserError(f"imagefolder: {root}/train has classes {classes['train']} but "
                        f"{root}/test has {classes['test']}")
    x = _stack_images(images, files)
    n = len(labels["train"])
    return ArraySplits(x[:n], labels["train"], x[n:], labels["test"], classes["train"],
                       str(root))


def _check_class_folders(folder: Path) -> None:
    """Refuse a split without class folders, or with one that holds no images, naming it
    (torchvision's own error names only the class)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"imagefolder: found no class folders of images in {folder} "
                        f"(expected {folder}/<class>/<image>)")
    # Images anywhere below a class folder count, as torchvision's ImageFolder walks it.
    empty = [str(c) for c in classes
             if not any(f.lower().endswith(IMG_EXTENSIONS)
                        for _, _, files in os.walk(c, followlinks=True) for f in files)]
    if empty:
        raise UserError(f"imagefolder: the class folder{'s' if len(empty) > 1 else ''} "
                        f"{', '.join(empty)} {'hold' if len(empty) > 1 else 'holds'} no images "
                        f"({' '.join(IMG_EXTENSIONS)}); add images or remove "
                        f"{'them' if len(empty) > 1 else 'it'}")


def _stack_images(images: Sequence[np.ndarray], files: Sequence[str]) -> np.ndarray:
    hw = images[0].shape[:2]
    for img, file in zip(images, files, strict=True):
        if img.shape[:2] != hw:
            raise UserError(f"imagefolder: {file} is {img.shape[1]}x{img.shape[0]} but "
                            f"{files[0]} is {hw[1]}x{hw[0]}; all images must share one size")
    if all(img.ndim == 2 for img in images):
        return np.stack(images)[:, None]
    # Mixed grayscale and colour: repeat gray into three channels.
    rgb = [np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img for img in images]
    return np.stack(rgb).transpose(0, 3, 1, 2).copy()


def _read_cache(cache: Path) -> ArraySplits | None:
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as f:
            return ArraySplits(f["x_train"], f["y_train"], f["x_test"], f["y_test"],
                               [str(c) for c in f["classes"]])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # unreadable cache: decode again and overwrite it


def _write_cache(cache: Path, s: ArraySplits) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only data_dir only costs the next run a decode
        warnings.warn(f"cannot cache decoded images in {cache.parent}: {exc}", stacklevel=3)
        return
    # Uncompressed: decoded pixels reload in well under a second this way.
    atomic_write(cache, lambda f: np.savez(f, x_train=s.x_train, y_train=s.y_train,
                                           x_test=s.x_test, y_test=s.y_test,
                                           classes=np.asarray(s.classes)))
