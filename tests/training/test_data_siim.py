"""SIIM-ACR loader and RLE codecs against the fixture (quirks Q6-Q12)."""

import shutil

import numpy as np
import pytest

from medmae.training import data

from .fixtures import build_siim, corrupt_file, rle_relative, rle_standard

# the worked example of dataset-formats.md: 3 rows x 4 columns
EXAMPLE = np.array([[1, 0, 0, 1], [1, 0, 1, 1], [0, 0, 1, 0]], np.uint8)


def test_rle_worked_example():
    assert data.rle_encode(EXAMPLE, "relative") == "0 2 5 4"
    assert data.rle_encode(EXAMPLE, "standard") == "1 2 8 4"
    np.testing.assert_array_equal(data.rle_decode("0 2 5 4", (3, 4), "relative"), EXAMPLE)
    np.testing.assert_array_equal(data.rle_decode(" 1 2 8 4", (3, 4), "standard"), EXAMPLE)
    assert not data.rle_decode(" -1", (3, 4), "relative").any()
    # the real first positive row: run 2 starts at column 172, row 241
    m = data.rle_decode("175349 7 1013 12", (1024, 1024), "relative")
    assert m[245:252, 171].all() and m[241:253, 172].all() and m.sum() == 19
    assert data.rle_encode(m, "standard") == "175350 7 176370 12"


def test_rle_random_roundtrip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = (rng.random((9, 7)) < 0.3).astype(np.uint8)
        for enc, ref in (("relative", rle_relative), ("standard", rle_standard)):
            assert data.rle_encode(m, enc) == ref(m)
            np.testing.assert_array_equal(data.rle_decode(ref(m), m.shape, enc), m)


def test_rle_errors():
    with pytest.raises(data.DatasetFormatError, match="odd"):
        data.rle_decode("1 2 3", (4, 4), "relative")
    with pytest.raises(data.DatasetFormatError, match="beyond"):
        data.rle_decode("10 7", (4, 4), "relative")
    with pytest.raises(ValueError, match="relative"):
        data.rle_decode("1 2", (4, 4), "auto")


@pytest.fixture
def siim(tmp_path):
    return tmp_path, build_siim(tmp_path)


def _rows(dd):
    return {r["image_id"]: r for split in dd.values() for r in split}


@pytest.mark.parametrize("csv, encoding", [("train-rle.csv", "relative"),
                                           ("stage_2_train.csv", "relative"),
                                           ("stage_2_train_standard_rle.csv", "standard")])
def test_masks_labels_images(siim, csv, encoding):
    root, truth = siim
    with pytest.warns(UserWarning, match=r"2 DICOM file\(s\) have no row.*1 of them in a test"):
        dd = data.load_siim_acr(root, rle_encoding=encoding, csv=csv,
                                test_fraction=0, val_fraction=0)
    rows = _rows(dd)
    expected = {t["image_id"]: t for t in truth.values() if t["in_csv"]}
    assert set(rows) == set(expected)  # E (no row) and T (test) excluded
    assert dd["train"].features["label"].names == ["absent", "present"]
    for image_id, t in expected.items():
        row = rows[image_id]
        np.testing.assert_array_equal(np.asarray(row["mask"]), t["mask"])
        np.testing.assert_array_equal(np.asarray(row["image"]), t["pixels"])
        assert row["label"] == t["label"]
        assert row["age"] == 38 and row["pixel_spacing"] == pytest.approx([0.143, 0.143])


def test_wrong_encoding_is_not_silently_accepted(siim):
    root, truth = siim
    # the relative file read as standard gives different masks (auto-detection would be unsafe)
    with pytest.warns(UserWarning):
        dd = data.load_siim_acr(root, rle_encoding="standard", csv="stage_2_train.csv",
                                test_fraction=0, val_fraction=0, on_bad_image="skip")
    d = _rows(dd).get(truth["D"]["image_id"])
    assert d is None or not np.array_equal(np.asarray(d["mask"]), truth["D"]["mask"])


def test_requires_choice_when_both_csvs(siim):
    root, _ = siim
    (root / "stage_2_train_standard_rle.csv").unlink()
    with pytest.raises(ValueError, match="pass csv="):
        data.load_siim_acr(root)
    (root / "stage_2_train.csv").unlink()
    with pytest.warns(UserWarning):
        dd = data.load_siim_acr(root, seed=1)  # only train-rle.csv left: used by default
    assert sum(len(s) for s in dd.values()) == 5 and set(dd) == {"train", "validation", "test"}


def test_corrupt_and_missing_dicom(siim):
    root, truth = siim
    truth["B"]["dicom_path"].unlink()
    with pytest.raises(FileNotFoundError, match=r"train-rle\.csv, line 4 .*no DICOM file"):
        data.load_siim_acr(root, csv="train-rle.csv")
    corrupt_file(truth["C"]["dicom_path"])
    with pytest.raises(data.CorruptImageError, match=r"line 3 .*cannot read DICOM file .*"
                       + truth["C"]["image_id"].replace(".", r"\.") + r"\.dcm"):
        data.load_siim_acr(root, csv="train-rle.csv")
    with pytest.warns(UserWarning) as record:
        dd = data.load_siim_acr(root, csv="train-rle.csv", on_bad_image="skip",
                                test_fraction=0, val_fraction=0)
    messages = [str(w.message) for w in record]
    assert any("skipped 2" in m for m in messages) and any("have no row" in m for m in messages)
    assert len(dd["train"]) == 3


def test_image_cache_dir(siim, tmp_path):
    root, truth = siim
    with pytest.warns(UserWarning):
        dd = data.load_siim_acr(root, csv="train-rle.csv", image_cache_dir=tmp_path / "cache",
                                test_fraction=0, val_fraction=0)
    assert (tmp_path / "cache" / f"{truth['B']['image_id']}.jpg").is_file()
    row = _rows(dd)[truth["B"]["image_id"]]
    np.testing.assert_array_equal(np.asarray(row["image"]), truth["B"]["pixels"])


def test_same_image_id_in_two_folders_is_refused_naming_both_files(siim):
    """Two DICOMs with one stem (= ImageId) in different sub-folders used to keep one silently."""
    root, truth = siim
    first = truth["C"]["dicom_path"]
    twin = root / "dicom-images-train" / "copied" / first.name
    twin.parent.mkdir()
    shutil.copy(truth["A"]["dicom_path"], twin)  # other pixels under the same name
    with pytest.raises(data.DatasetFormatError, match="found twice") as info:
        data.load_siim_acr(root, csv="train-rle.csv", on_bad_image="skip")
    assert str(first) in str(info.value) and str(twin) in str(info.value)


def test_non_utf8_label_file_names_the_line(siim):
    root, _ = siim
    csv = root / "train-rle.csv"
    lines = csv.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b",", b"\xe9,", 1)  # a latin-1 'é' on line 4
    csv.write_bytes(b"\n".join(lines))
    with pytest.raises(data.DatasetFormatError, match=r"train-rle\.csv, line 4: .*0xe9.*UTF-8"):
        data.load_siim_acr(root, csv="train-rle.csv")
