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
