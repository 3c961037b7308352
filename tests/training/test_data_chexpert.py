"""CheXpert loader against the fixture (quirks Q18-Q22)."""

import numpy as np
import pytest

from medmae.training import data

from .fixtures import CHEXPERT_OBSERVATIONS, MEDICAL_MAE_ORDER, build_chexpert, chexpert_target


@pytest.fixture
def chexpert(tmp_path):
    return tmp_path, build_chexpert(tmp_path)


def _rows(dd):
    return {r["image_id"]: (split, r) for split, ds in dd.items() for r in ds}


def test_constants():
    assert data.CHEXPERT_COMPETITION_LABELS == MEDICAL_MAE_ORDER
    assert data.CHEXPERT_OBSERVATIONS == CHEXPERT_OBSERVATIONS


@pytest.mark.parametrize("policy", ["mixed", "ones", "zeros", "ignore"])
def test_policies_default_labels(chexpert, policy):
    root, truth = chexpert
    dd = data.load_chexpert(root, uncertainty=policy, val_fraction=0.0)
    rows = _rows(dd)
    assert set(rows) == {k for k, t in truth.items() if t["frontal"]}  # laterals dropped
    for rel, (split, r) in rows.items():
        t = truth[rel]
        expected = [chexpert_target(t["raw"][o], o, policy) for o in MEDICAL_MAE_ORDER]
        assert r["labels"] == [e[0] for e in expected]
        assert ("label_mask" in r) == (policy == "ignore")
        if policy == "ignore":
            assert r["label_mask"] == [e[1] for e in expected]
        assert split == ("test" if t["split"] == "valid" else "train")
        assert r["sex"] == t["sex"] and r["age"] == t["age"] and r["patient_id"] == t["patient"]
        assert r["ap_pa"] == t["ap_pa"]
        np.testing.assert_array_equal(np.asarray(r["image"]).shape, (32, 28))


def test_known_vectors(chexpert):
    root, _ = chexpert
    rows = _rows(data.load_chexpert(root, val_fraction=0.0))
    # row 2 of the real train.csv: all five competition labels uncertain
    assert rows["train/patient00002/study2/view1_frontal.jpg"][1]["labels"] == [0, 1, 0, 1, 0]
    assert rows["train/patient00001/study1/view1_frontal.jpg"][1]["labels"] == [0, 0, 0, 0, 0]
    assert rows["train/patient00003/study1/view1_frontal.jpg"][1]["ap_pa"] == "LL"


def test_all_views_all_labels_per_label_policy(chexpert):
    root, truth = chexpert
    parent = root / "CheXpert-v1.0-small"  # the dataset folder itself works as root too
    dd = data.load_chexpert(parent, frontal_only=False, labels=CHEXPERT_OBSERVATIONS,
                            uncertainty={"Edema": "ignore", "Cardiomegaly": "ones"}, val_fraction=0.0)
    rows = _rows(dd)
    assert len(rows) == 8
    lat = rows["train/patient00002/study2/view2_lateral.jpg"][1]
    assert lat["ap_pa"] is None and lat["view"] == "Lateral"
    for rel, (_, r) in rows.items():
        for i, o in enumerate(CHEXPERT_OBSERVATIONS):
            pol = {"Edema": "ignore", "Cardiomegaly": "ones"}.get(o, "mixed")
            assert (r["labels"][i], r["label_mask"][i]) == chexpert_target(truth[rel]["raw"][o], o, pol)


def test_patient_disjoint_validation(chexpert):
    root, _ = chexpert
    dd = data.load_chexpert(root, frontal_only=False, val_fraction=0.3, seed=0)
    pats = {s: set(dd[s]["patient_id"]) for s in dd}
    assert not pats["train"] & pats["validation"] and len(pats["validation"]) == 1
    assert pats["test"] == {"patient64541"}


def test_errors(chexpert):
    root, truth = chexpert
    with pytest.raises(ValueError, match="unknown uncertainty policy"):
        data.load_chexpert(root, uncertainty="maybe")
    with pytest.raises(ValueError, match="unknown CheXpert label"):
        data.load_chexpert(root, labels=["Effusion"])
    img = truth["train/patient00003/study1/view1_frontal.jpg"]["image_path"]
    img.unlink()
    with pytest.raises(FileNotFoundError, match=r"train\.csv, line 5 .*patient00003"):
        data.load_chexpert(root)
    with pytest.warns(UserWarning, match="skipped 1"):
        dd = data.load_chexpert(root, on_bad_image="skip", val_fraction=0)
    assert len(dd["train"]) == 3
    csv = root / "CheXpert-v1.0-small" / "train.csv"
    csv.write_text(csv.read_text().replace(",-1.0,", ",2.0,", 1))
    with pytest.raises(data.DatasetFormatError, match=r"train\.csv, line 3, column .*'2\.0'"):
        data.load_chexpert(root, on_bad_image="skip")


def _set_cell(csv, line, column, value):
    """Set ``column`` of the record on file line ``line`` (1-based, header = 1) of a fixture CSV."""
    lines = csv.read_text().split("\n")
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells)
    csv.write_text("\n".join(lines))


@pytest.mark.parametrize("value", ["CheXpert-v1.0-small/../outside.jpg",
                                   "CheXpert-v1.0-small/train/patient00002/../../../outside.jpg",
                                   "ABSOLUTE"])
def test_path_outside_the_dataset_folder_is_refused(chexpert, value):
    root, _ = chexpert
    outside = root / "outside.jpg"  # a readable image next to the dataset folder
    inside = root / "CheXpert-v1.0-small" / "train" / "patient00001" / "study1" / "view1_frontal.jpg"
    outside.write_bytes(inside.read_bytes())
    value = str(outside) if value == "ABSOLUTE" else value
    _set_cell(root / "CheXpert-v1.0-small" / "train.csv", 3, "Path", value)
    with pytest.raises(data.DatasetFormatError, match=r"train\.csv, line 3, column 'Path'") as info:
        data.load_chexpert(root, on_bad_image="skip")
    assert repr(value) in str(info.value) and "outside the dataset folder" in str(info.value)


@pytest.mark.parametrize("age", ["eighty", "87.5", "-3", "nan"])
def test_bad_age_names_file_line_and_column(chexpert, age):
    root, _ = chexpert
    _set_cell(root / "CheXpert-v1.0-small" / "train.csv", 3, "Age", age)
    with pytest.raises(data.DatasetFormatError, match=rf"train\.csv, line 3, column 'Age': value '{age}'"):
        data.load_chexpert(root)


def test_blank_age_is_none_and_line_numbers_are_file_lines(chexpert):
    root, _ = chexpert
    csv = root / "CheXpert-v1.0-small" / "train.csv"
    _set_cell(csv, 3, "Age", "")
    rows = _rows(data.load_chexpert(root, val_fraction=0.0))
    assert rows["train/patient00002/study2/view1_frontal.jpg"][1]["age"] is None  # documented fallback
    # a blank line counts as a line of the file, as in an editor: the bad row is now on line 4
    csv.write_text(csv.read_text().replace("\n", "\n\n", 1))
    _set_cell(csv, 4, "Age", "x")
    with pytest.raises(data.DatasetFormatError, match=r"train\.csv, line 4, column 'Age'"):
        data.load_chexpert(root)


def test_non_utf8_csv_names_the_line(chexpert):
    root, _ = chexpert
    csv = root / "CheXpert-v1.0-small" / "valid.csv"
    csv.write_bytes(csv.read_bytes().replace(b"Male", b"M\xe4le", 2))  # latin-1 'ä', lines 2 and 3
    with pytest.raises(data.DatasetFormatError, match=r"valid\.csv, line 2: .*0xe4.*UTF-8"):
        data.load_chexpert(root)


def test_unclosed_quote_is_refused_not_swallowed(chexpert):
    """A lenient CSV parser reads everything after a stray quote as one cell (rows vanish)."""
    root, _ = chexpert
    _set_cell(root / "CheXpert-v1.0-small" / "train.csv", 3, "Sex", '"Female')
    with pytest.raises(data.DatasetFormatError, match=r"train\.csv, line 3: malformed CSV"):
        data.load_chexpert(root)
