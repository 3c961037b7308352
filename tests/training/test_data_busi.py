"""BUSI loader against the fixture of tests/training/fixtures.py (quirks Q1-Q5)."""

import json
import shutil

import numpy as np
import pytest

from medmae.training import data, registry
from .fixtures import build_busi, corrupt_file


@pytest.fixture
def busi(tmp_path):
    return tmp_path, build_busi(tmp_path)


def _all_rows(dd):
    return {r["image_id"]: r for split in dd.values() for r in split}


def test_masks_labels_images(busi):
    root, truth = busi
    dd = data.load_busi(root, test_fraction=0.0, val_fraction=0.0)
    assert list(dd) == ["train"]
    ds = dd["train"]
    assert ds.features["label"].names == ["normal", "benign", "malignant"]
    # natural order inside each class: benign (2) before benign (10)
    assert ds["image_id"] == ["normal (1)", "normal (2)", "benign (1)", "benign (2)", "benign (10)",
                              "malignant (1)", "malignant (2)"]
    for row in ds:
        t = truth[row["image_id"]]
        assert ds.features["label"].int2str(row["label"]) == t["label"]
        assert row["image"].mode == "L"
        np.testing.assert_array_equal(np.asarray(row["image"]), t["image"])
        mask = np.asarray(row["mask"])
        assert set(np.unique(mask)) <= {0, 1}
        np.testing.assert_array_equal(mask, t["mask"])  # OR of all files; RGBA alpha ignored
        assert row["mask_files"] == t["mask_files"]
    assert np.asarray(_all_rows(dd)["malignant (1)"]["mask"]).shape == (48, 40)  # portrait


def test_split_fractions_stratified_and_stable(busi):
    root, _ = busi
    a = data.load_busi(root, seed=3)
    b = data.load_busi(root, seed=3)
    assert {k: a[k]["image_id"] for k in a} == {k: b[k]["image_id"] for k in b}
    assert set(a) == {"train", "validation", "test"}
    assert sum(len(s) for s in a.values()) == 7
    ids = [set(s["image_id"]) for s in a.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert len(a["test"]) == 1 and len(a["validation"]) == 1  # round(7*.2)=1, round(6*.1)->1
    # without validation, test is unchanged
    c = data.load_busi(root, seed=3, val_fraction=0.0)
    assert c["test"]["image_id"] == a["test"]["image_id"] and set(c) == {"train", "test"}


def test_stratified_split_proportions():
    ids = [f"x{i}" for i in range(100)]
    strata = [0] * 60 + [1] * 30 + [2] * 10
    rest, taken = data.stratified_split(ids, strata, 0.2, seed=1)
    assert len(taken) == 20 and len(rest) == 80
    assert [sum(strata[i] == s for i in taken) for s in range(3)] == [12, 6, 2]
    # hash order: the split depends on (seed, id) only, not on input order
    rev_rest, rev_taken = data.stratified_split(ids[::-1], strata[::-1], 0.2, seed=1)
    assert sorted(ids[i] for i in taken) == sorted(ids[::-1][i] for i in rev_taken)


def test_kfold(busi):
    root, _ = busi
    folds = data.busi_kfold(root, n_folds=3, seed=0)
    assert len(folds) == 3
    tests = [set(f["test"]["image_id"]) for f in folds]
    assert set().union(*tests) == set(_all_rows(data.load_busi(root, test_fraction=0, val_fraction=0)))
    assert sum(len(t) for t in tests) == 7 and all(2 <= len(t) <= 3 for t in tests)
    for f in folds:
        assert not set(f["train"]["image_id"]) & set(f["test"]["image_id"])


def test_manifest_roundtrip(busi, tmp_path):
    root, _ = busi
    dd = data.load_busi(root, seed=5)
    path = data.write_split_manifest(dd, tmp_path / "m" / "split.json", note="x")
    payload = json.loads(path.read_text())
    assert payload["info"]["seed"] == 5 and payload["info"]["note"] == "x"
    assert payload["info"]["test_fraction"] == 0.2
    rebuilt = data.load_busi(root, seed=99, manifest=path)
    assert {k: rebuilt[k]["image_id"] for k in rebuilt} == {k: dd[k]["image_id"] for k in dd}


def test_corrupt_and_missing(busi):
    root, _ = busi
    bad = root / "Dataset_BUSI_with_GT" / "benign" / "benign (2).png"
    corrupt_file(bad)
    with pytest.raises(data.CorruptImageError, match=r"benign \(2\)\.png"):
        data.load_busi(root)
    with pytest.warns(UserWarning, match=r"skipped 1 .*benign \(2\)\.png"):
        dd = data.load_busi(root, on_bad_image="skip", test_fraction=0, val_fraction=0)
    assert len(dd["train"]) == 6
    (root / "Dataset_BUSI_with_GT" / "normal" / "normal (1)_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"normal \(1\)_mask\.png"):
        data.load_busi(root, on_bad_image="raise", check_images="none")


def test_small_and_missing_folder(tmp_path):
    build_busi(tmp_path)
    top = tmp_path / "Dataset_BUSI_with_GT"
    shutil.rmtree(top / "malignant")
    dd = data.load_busi(top)  # the class folder itself is accepted as root too
    assert sum(len(s) for s in dd.values()) == 5
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.load_busi(tmp_path / "nowhere")


def test_dispatcher(busi, tmp_path):
    root, _ = busi
    assert len(registry.load_dataset_by_name("busi", root)["train"]) > 0
    with pytest.raises(ValueError, match="unknown dataset"):
        registry.load_dataset_by_name("imagenet", root)
    with pytest.raises(FileNotFoundError, match="missing"):
        registry.load_dataset_by_name("chexpert", tmp_path / "missing")


@pytest.mark.parametrize("folder_name, kept, copied_from, twin_name", [
    # x.png beside x.PNG used to keep one of them silently (refused whatever the bad-file policy)
    ("benign", "benign (1).png", "benign (1).png", "benign (1).PNG"),
    # x_mask.png beside x_mask.PNG used to be OR-ed silently as if they were two lesions
    ("malignant", "malignant (2)_mask.png", "malignant (2)_mask_1.png", "malignant (2)_mask.PNG"),
])
def test_a_file_twice_is_refused_naming_both(busi, folder_name, kept, copied_from, twin_name):
    root, _ = busi
    folder = root / "Dataset_BUSI_with_GT" / folder_name
    shutil.copy(folder / copied_from, folder / twin_name)
    with pytest.raises(data.DatasetFormatError, match="found twice") as info:
        data.load_busi(root, on_bad_image="skip")
    assert str(folder / kept) in str(info.value) and str(folder / twin_name) in str(info.value)
