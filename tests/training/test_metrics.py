"""Metrics against independent implementations (MONAI for HD95/ASD, scikit-learn for AUC,
precision, recall) on random cases, plus the empty-mask conventions."""

import json
import subprocess
import sys

import numpy as np
import pytest

from medmae.training import metrics


def _blobs(rng, n, shape=(24, 20)):
    out = []
    for _ in range(n):
        m = np.zeros(shape, np.uint8)
        for _ in range(rng.integers(1, 3)):
            r0, c0 = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
            m[r0:r0 + rng.integers(2, 10), c0:c0 + rng.integers(2, 10)] = 1
        m[rng.random(shape) < 0.02] ^= 1  # ragged edges and isolated pixels
        out.append(m)
    return out


def test_dice_jaccard_known():
    a = np.zeros((4, 4), int)
    a[:2, :2] = 1
    b = np.zeros((4, 4), int)
    b[:2, :1] = 1
    assert metrics.dice(a, b) == pytest.approx(2 * 2 / 6)
    assert metrics.jaccard(a, b) == pytest.approx(2 / 4)
    z = np.zeros((4, 4))
    assert metrics.dice(z, z) == 1.0 and metrics.dice(a, z) == 0.0 and metrics.jaccard(z, a) == 0.0


def test_distances_against_monai():
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(0)
    preds, trues = _blobs(rng, 25), _blobs(rng, 25)
    for spacing in (None, (0.5, 2.0)):
        kw = {} if spacing is None else {"spacing": list(spacing)}
        for p, t in zip(preds, trues):
            yp = torch.as_tensor(p[None, None]).float()
            yt = torch.as_tensor(t[None, None]).float()
            hd = monai_metrics.compute_hausdorff_distance(yp, yt, include_background=True,
                                                          percentile=95, **kw).item()
            sd = monai_metrics.compute_average_surface_distance(yp, yt, include_background=True,
                                                                symmetric=True, **kw).item()
            assert metrics.hd95(p, t, spacing, convention="monai") == pytest.approx(hd, rel=1e-5, abs=1e-5)
            assert metrics.asd(p, t, spacing) == pytest.approx(sd, rel=1e-5, abs=1e-5)


def test_distances_against_medpy_the_paper_lineage():
    binary = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(0)
    preds, trues = _blobs(rng, 25), _blobs(rng, 25)
    differ = 0
    for spacing in (None, (0.5, 2.0)):
        for p, t in zip(preds, trues):
            ours = metrics.hd95(p, t, spacing)  # default convention: medpy's pooled percentile
            assert ours == pytest.approx(binary.hd95(p, t, voxelspacing=spacing), rel=1e-6, abs=1e-6)
            assert metrics.asd(p, t, spacing) == pytest.approx(binary.assd(p, t, voxelspacing=spacing), rel=1e-6)
            differ += ours < metrics.hd95(p, t, spacing, convention="monai") - 1e-9
    assert differ > 0  # the two conventions are really different numbers
    out = metrics.segmentation_metrics(preds[:3], trues[:3])
    assert out["distance_convention"] == "medpy"
    assert metrics.segmentation_metrics(preds[:3], trues[:3], convention="monai")["hd95"] >= out["hd95"]
    with pytest.raises(ValueError, match="unknown HD95 convention"):
        metrics.hd95(preds[0], trues[0], convention="max")


def test_missed_lesion_never_improves_the_mean():
    rng = np.random.default_rng(1)
    trues = _blobs(rng, 6)
    good = [t.copy() for t in trues]
    good[0] = np.roll(good[0], 1, axis=0)
    missed = [g.copy() for g in good]
    missed[1][:] = 0  # one lesion missed entirely
    a = metrics.segmentation_metrics(good, trues)
    b = metrics.segmentation_metrics(missed, trues)
    assert b["hd95"] > a["hd95"] and b["asd"] > a["asd"] and b["dice"] < a["dice"]
    assert b["per_case"]["hd95"][1] == pytest.approx(np.hypot(24, 20))  # worst case: diagonal
    assert b["cases"]["missed"] == 1 and b["excluded"]["hd95"] == 0
    # explicit exclusion is reported, never silent
    c = metrics.segmentation_metrics(missed, trues, missing_distance=None)
    assert c["per_case"]["hd95"][1] is None and c["excluded"]["hd95"] == 1
    json.dumps(b), json.dumps(c)  # JSON-serialisable, no NaN


def test_empty_conventions_and_spacing():
    z = np.zeros((10, 10), np.uint8)
    m = z.copy()
    m[2:5, 2:5] = 1
    out = metrics.segmentation_metrics([z, m, z], [z, z, m], spacing=[(1, 1), (2, 2), (0.5, 0.5)])
    assert out["per_case"]["dice"] == [1.0, 0.0, 0.0]
    assert out["per_case"]["hd95"] == pytest.approx([0.0, np.hypot(20, 20), np.hypot(5, 5)])
    assert out["cases"] == {"both_empty": 1, "missed": 1, "false_positive": 1}
    assert out["dice_positive"] == 0.0
    shifted = np.roll(m, 1, axis=1)
    assert metrics.hd95(shifted, m, spacing=(1.0, 0.7)) == pytest.approx(0.7)
    assert metrics.segmentation_metrics([], [])["dice"] is None


def test_classification_against_sklearn():
    from sklearn.metrics import accuracy_score, precision_score, recall_score

    rng = np.random.default_rng(2)
    for _ in range(10):
        y = rng.integers(0, 4, 50)
        p = np.where(rng.random(50) < 0.6, y, rng.integers(0, 4, 50))
        p[p == 3] = 2  # class 3 never predicted: undefined precision counts as 0
        out = metrics.classification_metrics(y, p, num_classes=4, class_names=list("abcd"))
        assert out["accuracy"] == pytest.approx(accuracy_score(y, p))
        assert out["precision_macro"] == pytest.approx(
            precision_score(y, p, average="macro", labels=range(4), zero_division=0))
        assert out["recall_macro"] == pytest.approx(recall_score(y, p, average="macro", labels=range(4)))
        assert out["per_class"]["b"]["recall"] == pytest.approx(
            recall_score(y, p, labels=[1], average=None)[0])
        assert "d" in out["undefined_precision"]
        json.dumps(out)
    logits = np.eye(3)[[0, 1, 2, 2]]
    assert metrics.classification_metrics([0, 1, 2, 1], logits)["accuracy"] == 0.75


def test_multilabel_auc_against_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = (rng.random((40, 5)) < 0.3).astype(int)
    y[:, 4] = 0  # one class only -> excluded and reported
    s = y * 0.5 + rng.random((40, 5))
    out = metrics.multilabel_auc(y, s, label_names=list("ABCDE"))
    ref = [roc_auc_score(y[:, j], s[:, j]) for j in range(4)]
    assert [out["per_label"][k] for k in "ABCD"] == pytest.approx(ref)
    assert out["mean_auc"] == pytest.approx(np.mean(ref))
    assert out["excluded_labels"] == ["E"] and out["per_label"]["E"] is None
    mask = np.ones_like(y)
    mask[:10, 0] = 0
    masked = metrics.multilabel_auc(y, s, mask=mask)
    assert masked["per_label"]["0"] == pytest.approx(roc_auc_score(y[10:, 0], s[10:, 0]))
    json.dumps(out)


def test_importing_medmae_does_not_import_evaluate():
    code = ("import sys, medmae, medmae.training.metrics, medmae.training.data, "
            "medmae.training.synthetic, medmae.training.transforms; "
            "assert 'evaluate' not in sys.modules, 'evaluate imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluate_wrappers_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    evaluate = pytest.importorskip("evaluate")
    rng = np.random.default_rng(4)
    preds, trues = _blobs(rng, 3, (8, 8)), _blobs(rng, 3, (8, 8))
    seg = evaluate.load(metrics.metric_script_path("medmae_segmentation"))
    out = seg.compute(predictions=[p.tolist() for p in preds], references=[t.tolist() for t in trues])
    assert out["dice"] == pytest.approx(metrics.segmentation_metrics(preds, trues)["dice"])
    cls = evaluate.load(metrics.metric_script_path("medmae_classification"))
    cls.add_batch(predictions=[0, 1], references=[0, 0])
    cls.add_batch(predictions=[2], references=[2])
    assert cls.compute(num_classes=3)["accuracy"] == pytest.approx(2 / 3)
    auc = evaluate.load(metrics.metric_script_path("medmae_multilabel_auc"))
    out = auc.compute(prediction_scores=[[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]],
                      references=[[0, 1], [1, 0], [0, 0]])
    assert out["per_label"]["0"] == 1.0
    with pytest.raises(ValueError, match="unknown medmae metric"):
        metrics.metric_script_path("dice")
