"""NIH ChestX-ray14 loader against the fixture (quirks Q13-Q17)."""

import numpy as np
import pytest

from medmae.training import data

from .fixtures import NIH_LABELS, build_nih, corrupt_file


def _rows(dd):
    return {r["image_id"]: (split, r) for split, ds in dd.items() for r in ds}


def test_label_order_constant():
    assert data.NIH_LABELS == NIH_LABELS and len(data.NIH_LABELS) == 14


@pytest.mark.parametrize("flat, sex_column", [(False, "Patient Gender"), (True, "Patient Sex")])
def test_v2020(tmp_path, flat, sex_column):
    truth = build_nih(tmp_path, flat=flat, sex_column=sex_column)
    dd = data.load_chestxray14(tmp_path, val_fraction=0.4, seed=0)
    assert set(dd) == {"train", "validation", "test"}
    rows = _rows(dd)
    assert set(rows) == set(truth)
    for name, t in truth.items():
        split, r = rows[name]
        assert r["labels"] == t["labels_v2020"]
        assert (split == "test") == (t["split"] == "test")
        assert r["patient_id"] == t["patient_id"] and r["age"] == t["age_v2020"]
        assert r["sex"] == t["sex"] and r["view"] == t["view"]
        assert r["image"].mode == "L"
        np.testing.assert_array_equal(np.asarray(r["image"]), t["image"])  # RGBA one too
    # patient-disjoint validation, patients of train_val only
    pats = {s: {r["patient_id"] for r in dd[s]} for s in dd}
    assert not pats["train"] & pats["validation"] and pats["validation"] <= {1, 2, 3}
    assert len(pats["validation"]) == 1  # round(3 * 0.4) = 1 patient
    assert dd["train"].features["labels"].feature.dtype == "float32"


def test_2017_csv(tmp_path):
    truth = build_nih(tmp_path)
    with pytest.warns(UserWarning, match="1 impossible or unparsable age"):
        dd = data.load_chestxray14(tmp_path, csv="Data_Entry_2017.csv", val_fraction=0.0)
    assert set(dd) == {"train", "test"}
    for name, (split, r) in _rows(dd).items():
        t = truth[name]
        assert r["labels"] == t["labels_2017"]
        assert r["age"] == (None if name == "00000004_000.png" else t["age_2017_years"])
        assert r["patient_id"] == t["patient_id"]
    assert _rows(dd)["00000005_001.png"][1]["labels"] == [0.0] * 14  # No Finding in 2017


def test_relabelled_and_unsorted(tmp_path):
    build_nih(tmp_path)
    rows = _rows(data.load_chestxray14(tmp_path))
    v = dict(zip(NIH_LABELS, rows["00000005_000.png"][1]["labels"]))
    assert {k for k, x in v.items() if x} == {"Effusion", "Nodule", "Mass"}
    v = dict(zip(NIH_LABELS, rows["00000003_000.png"][1]["labels"]))
    assert {k for k, x in v.items() if x} == {"Atelectasis", "Consolidation", "Edema", "Fibrosis",
                                              "Pneumothorax"}


def test_errors(tmp_path):
    build_nih(tmp_path)
    img = tmp_path / "images_002" / "images" / "00000003_001.png"
    corrupt_file(img)
    with pytest.raises(data.CorruptImageError, match=r"line \d+ \(00000003_001\.png\).*cannot read"):
        data.load_chestxray14(tmp_path)
    img.unlink()
    with pytest.raises(FileNotFoundError, match="00000003_001.png"):
        data.load_chestxray14(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1"):
        dd = data.load_chestxray14(tmp_path, on_bad_image="skip")
    assert sum(len(s) for s in dd.values()) == 7
    csv = tmp_path / "Data_Entry_2017_v2020.csv"
    csv.write_text(csv.read_text().replace("|Emphysema", "|Emphysem"))
    with pytest.raises(data.DatasetFormatError, match=r"line \d+: unknown finding 'Emphysem'"):
        data.load_chestxray14(tmp_path, check_images="none", on_bad_image="skip")
    (tmp_path / "test_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test_list.txt"):
        data.load_chestxray14(tmp_path)


def test_manifest(tmp_path):
    build_nih(tmp_path)
    dd = data.load_chestxray14(tmp_path, seed=2, val_fraction=0.4)
    path = data.write_split_manifest(dd, tmp_path / "split.json")
    again = data.load_chestxray14(tmp_path, seed=7, manifest=path)
    assert {k: again[k]["image_id"] for k in again} == {k: dd[k]["image_id"] for k in dd}
    assert data.load_split_manifest(path)["info"]["csv"] == "Data_Entry_2017_v2020.csv"


@pytest.mark.parametrize("twin_name", ["00000001_000.png", "00000001_000.PNG"])
def test_same_image_in_two_folders_is_refused_naming_both_files(tmp_path, twin_name):
    """The same file name (or one differing only in case) under two ``images_*`` folders."""
    build_nih(tmp_path)
    first = tmp_path / "images_001" / "images" / "00000001_000.png"
    twin = tmp_path / "images_002" / "images" / twin_name
    twin.write_bytes((tmp_path / "images_002" / "images" / "00000002_000.png").read_bytes())
    with pytest.raises(data.DatasetFormatError, match="found twice") as info:
        data.load_chestxray14(tmp_path, on_bad_image="skip")
    assert str(first) in str(info.value) and str(twin) in str(info.value)


def _replace_cell(csv, image, field, value):
    """Set one cell of the row of ``image``; returns the 1-based line number of that row."""
    lines = csv.read_text().split("\n")
    n = next(i for i, ln in enumerate(lines) if ln.startswith(image + ","))
    cells = lines[n].split(",")
    cells[field] = value
    lines[n] = ",".join(cells)
    csv.write_text("\n".join(lines))
    return n + 1


@pytest.mark.parametrize("column, field, value", [("Patient ID", 3, "P003"), ("Follow-up #", 2, "1.5"),
                                                  ("Patient ID", 3, "")])
def test_non_integer_ids_name_file_line_and_column(tmp_path, column, field, value):
    build_nih(tmp_path)
    line = _replace_cell(tmp_path / "Data_Entry_2017_v2020.csv", "00000003_001.png", field, value)
    with pytest.raises(data.DatasetFormatError, match=rf"Data_Entry_2017_v2020\.csv, line {line}, "
                                                      rf"column '{column}': value '{value}' is not"):
        data.load_chestxray14(tmp_path)


def test_non_utf8_files_name_the_line(tmp_path):
    build_nih(tmp_path)
    csv = tmp_path / "Data_Entry_2017.csv"
    lines = csv.read_bytes().split(b"\r\n")
    lines[5] = lines[5].replace(b"Hernia", b"Hernia\xe9")  # latin-1 'é' on line 6
    csv.write_bytes(b"\r\n".join(lines))
    with pytest.raises(data.DatasetFormatError, match=r"Data_Entry_2017\.csv, line 6: .*0xe9.*UTF-8"):
        data.load_chestxray14(tmp_path, csv="Data_Entry_2017.csv")
    listed = tmp_path / "test_list.txt"
    listed.write_bytes(listed.read_bytes() + b"caf\xe9.png\n")
    with pytest.raises(data.DatasetFormatError, match=r"test_list\.txt, line 4: .*0xe9"):
        data.load_chestxray14(tmp_path)
