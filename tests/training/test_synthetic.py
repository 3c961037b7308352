"""Synthetic datasets: columns like the real loaders, determinism, class appearance, CLI."""

import numpy as np
import pytest

from medmae.training import data, registry, synthetic


def test_ultrasound_columns_and_determinism():
    dd = synthetic.make_synthetic_ultrasound(num_images=20, image_size=32, seed=3)
    assert {k: len(v) for k, v in dd.items()} == {"train": 16, "validation": 2, "test": 2}
    feats = dd["train"].features
    assert feats["label"].names == list(data.BUSI_CLASSES)
    assert set(data.BUSI_FEATURES) - {"mask_files"} <= set(feats)
    row = dd["train"][0]
    assert row["image"].mode == "L" and row["image"].size == (32, 32)
    assert set(np.unique(np.asarray(row["mask"]))) <= {0, 1}
    again = synthetic.make_synthetic_ultrasound(num_images=20, image_size=32, seed=3)
    assert again["test"][1]["image"].tobytes() == dd["test"][1]["image"].tobytes()
    other = synthetic.make_synthetic_ultrasound(num_images=20, image_size=32, seed=4)
    assert other["test"][1]["image"].tobytes() != dd["test"][1]["image"].tobytes()


def test_prefix_property():
    small = synthetic.synthetic_ultrasound_arrays(5, 32, seed=1)
    big = synthetic.synthetic_ultrasound_arrays(200, 32, seed=1)
    np.testing.assert_array_equal(small["image"], big["image"][:5])


def test_ultrasound_class_appearance():
    a = synthetic.synthetic_ultrasound_arrays(300, 64, seed=0)
    area = a["mask"].sum((1, 2))
    y = a["label"]
    assert (area[y == 0] == 0).all() and (area[y > 0] > 0).all()
    # lesions are visible at 32-64 px: at least ~20 px of 64x64
    assert area[y > 0].min() >= 20
    # benign wider than tall, malignant taller than wide (on average)
    def aspect(m):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        return (np.ptp(cols) + 1) / (np.ptp(rows) + 1)
    ben = np.median([aspect(m) for m, c in zip(a["mask"], y) if c == 1])
    mal = np.median([aspect(m) for m, c in zip(a["mask"], y) if c == 2])
    assert ben > 1.15 and mal < 1.0
    # lesions are hypoechoic
    inside = [a["image"][i][a["mask"][i] > 0].mean() for i in np.flatnonzero(y > 0)[:30]]
    outside = [a["image"][i][a["mask"][i] == 0].mean() for i in np.flatnonzero(y > 0)[:30]]
    assert np.mean(inside) < 0.7 * np.mean(outside)
    assert np.bincount(y, minlength=3).min() >= 85


def test_cxr_columns_labels_and_mask():
    dd = synthetic.make_synthetic_cxr(num_images=40, image_size=32, seed=0)
    ds = dd["train"]
    assert {"image", "labels", "mask", "label", "image_id"} <= set(ds.features)
    assert ds.features["label"].names == ["absent", "present"]
    rows = list(ds)
    k = synthetic.SYNTHETIC_CXR_LABELS.index("Pneumothorax")
    for r in rows:
        assert len(r["labels"]) == len(synthetic.SYNTHETIC_CXR_LABELS)
        assert r["label"] == int(r["labels"][k]) == int(np.asarray(r["mask"]).any())
    sub = synthetic.make_synthetic_cxr(num_images=40, image_size=32, seed=0,
                                       labels=data.CHEXPERT_COMPETITION_LABELS)
    names = [synthetic.SYNTHETIC_CXR_LABELS.index(n) for n in
             ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Effusion")]
    assert sub["train"][3]["labels"] == [rows[3]["labels"][i] for i in names]
    with pytest.raises(ValueError, match="unknown synthetic CXR label"):
        synthetic.make_synthetic_cxr(num_images=4, labels=["Fracture"])


def test_cxr_cooccurrence_and_prevalence():
    f = synthetic.synthetic_cxr_arrays(1000, 32, seed=0)["findings"]
    names = synthetic.SYNTHETIC_CXR_LABELS
    prev = f.mean(0)
    assert ((prev > 0.05) & (prev < 0.4)).all()
    card, edema = f[:, names.index("Cardiomegaly")], f[:, names.index("Edema")]
    assert edema[card == 1].mean() > 2 * edema[card == 0].mean()


def test_speed():
    import time

    t = time.perf_counter()
    synthetic.synthetic_cxr_arrays(128, 128, seed=0)
    assert time.perf_counter() - t < 5  # ~0.3 s here; 1,000 images of 128 px in a few seconds


def test_dispatcher_and_cli(tmp_path):
    dd = registry.load_dataset_by_name("synthetic_cxr", num_images=8, image_size=32)
    assert len(dd["train"]) >= 6
    with pytest.raises(ValueError, match="takes no root"):
        registry.load_dataset_by_name("synthetic_ultrasound", tmp_path)
    out = tmp_path / "grid.png"
    assert synthetic.main(["--kind", "cxr", "--out", str(out), "--num-images", "4",
                           "--image-size", "32"]) == 0
    from PIL import Image
    assert Image.open(out).size[0] > 100
