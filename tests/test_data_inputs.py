"""Degenerate data refused in one sentence that names the fault: empty splits, label sets
with gaps or out of range, image folders with an empty class folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marginrobust.data import load_dataset
from marginrobust.errors import UserError


def _npz(path: Path, **arrays: np.ndarray | None) -> str:
    """``npz:PATH`` of a 3-class dataset of 2x2 images, with ``arrays`` replaced
    (None: left out)."""
    base: dict[str, np.ndarray | None] = {
        "x_train": np.zeros((6, 2, 2), np.uint8), "y_train": np.arange(6) % 3,
        "x_test": np.zeros((3, 2, 2), np.uint8), "y_test": np.arange(3)}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return f"npz:{path}"


def _one_sentence(message: str) -> None:
    assert "\n" not in message and message.count(". ") == 0, message


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x_train": np.zeros((0, 2, 2), np.uint8), "y_train": np.zeros(0, np.int64)},
     "x_train and y_train in .* are empty; training and testing need at least one image"),
    ({"x_test": np.zeros((0, 2, 2, 1), np.uint8)}, "x_test in .* is empty"),
    ({"y_test": np.zeros(0, np.int64)}, "y_test in .* is empty"),
])
def test_npz_with_an_empty_split_is_refused(tmp_path: Path, arrays: dict,
                                            message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        load_dataset(_npz(tmp_path / "d.npz", **arrays))
    _one_sentence(str(err.value))


def test_label_gaps_are_refused_naming_the_skipped_labels(tmp_path: Path) -> None:
    # Ten classes 0..9 and one typo: 12, which would make a 13-class model.
    y = np.arange(20) % 10
    y[7] = 12
    with pytest.raises(UserError, match=r"skip 10, 11: they run up to 12 but only 11 "
                                        r"distinct labels occur.*num_classes") as err:
        load_dataset(_npz(tmp_path / "d.npz", x_train=np.zeros((20, 2, 2), np.uint8),
                          y_train=y))
    _one_sentence(str(err.value))


def test_a_gap_is_found_across_both_splits(tmp_path: Path) -> None:
    # Class 2 occurs only in the test split: no gap.
    ds = load_dataset(_npz(tmp_path / "a.npz", y_train=np.arange(6) % 2,
                           y_test=np.array([2, 0, 1])))
    assert ds.spec.num_classes == 3
    with pytest.raises(UserError, match="skip 2"):
        load_dataset(_npz(tmp_path / "b.npz", y_train=np.arange(6) % 2,
                          y_test=np.array([3, 0, 1])))


def test_num_classes_entry_sets_the_class_count(tmp_path: Path) -> None:
    ds = load_dataset(_npz(tmp_path / "d.npz", y_train=np.array([0, 1, 5, 0, 1, 5]),
                           y_test=np.array([0, 1, 5]), num_classes=np.array(7)))
    assert ds.spec.num_classes == 7 and ds.spec.classes == [str(c) for c in range(7)]
    with pytest.raises(UserError, match=r"y_train holds the label 9, but labels must lie in "
                                        r"0..6 \(7 classes\)"):
        load_dataset(_npz(tmp_path / "e.npz", y_train=np.array([0, 1, 9, 0, 1, 5]),
                          num_classes=np.array(7)))


@pytest.mark.parametrize(("extra", "message"), [
    ({"num_classes": np.array([3, 4])}, "num_classes in .* must be one positive integer"),
    ({"num_classes": np.array(0)}, "must be one positive integer, got 0"),
    ({"num_classes": np.array(2.5)}, "must be one positive integer, got 2.5"),
    ({"num_classes": np.array(4), "classes": np.array(["a", "b", "c"])},
     "names 3 classes but its num_classes is 4"),
    ({"classes": np.array(["a", "b"])}, r"y_train holds the label 2, but labels must lie in "
                                        r"0..1 \(2 classes\)"),
    ({"y_train": np.array([0, 1, 2, -1, 1, 2])}, "y_train holds the negative label -1"),
    ({"y_test": np.array([-3, -1, -2])}, "y_test holds the negative label -3"),
])
def test_class_count_and_label_faults(tmp_path: Path, extra: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        load_dataset(_npz(tmp_path / "d.npz", **extra))
    _one_sentence(str(err.value))


def _images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((4, 4), 10 * i, np.uint8), "L").save(folder / f"{i}.png")


def test_imagefolder_names_its_empty_class_folder(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for split in ("train", "test"):
        _images(root / split / "ant", 2)
        _images(root / split / "bee", 2)
    (root / "train" / "cow").mkdir()
    (root / "train" / "cow" / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match=r"the class folder .*train/cow holds no images "
                                        r"\(.*\.png.*\); add images or remove it") as err:
        load_dataset(f"imagefolder:{root}", data_dir=tmp_path / "d")
    _one_sentence(str(err.value))
    (root / "test" / "cow").mkdir()
    with pytest.raises(UserError, match=r"train/cow holds no images"):
        load_dataset(f"imagefolder:{root}", data_dir=tmp_path / "d")
    _images(root / "train" / "cow" / "nested", 1)   # images below a class folder count
    with pytest.raises(UserError, match=r"test/cow holds no images"):
        load_dataset(f"imagefolder:{root}", data_dir=tmp_path / "d")
    _images(root / "test" / "cow" / "more", 1)
    ds = load_dataset(f"imagefolder:{root}", data_dir=tmp_path / "d")
    assert ds.spec.classes == ["ant", "bee", "cow"] and ds.spec.n_train == 5


def test_imagefolder_with_two_empty_class_folders_names_both(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _images(root / "train" / "ant", 2)
    (root / "train" / "bee").mkdir()
    (root / "train" / "cow").mkdir()
    _images(root / "test" / "ant", 1)
    with pytest.raises(UserError, match=r"class folders .*train/bee, .*train/cow hold no "
                                        r"images .*; add images or remove them"):
        load_dataset(f"imagefolder:{root}", data_dir=tmp_path / "d")
