"""Segmentation evaluation at scale: per-case values computed batch by batch (bounding-box-cropped distance
transforms, one pair per case for HD95 and ASD) and only those gathered give EXACTLY the numbers of the former
whole-split computation -- frozen below as the oracle -- including every empty-mask case, under one and two
processes, and through ``transformers.Trainer``'s whole-split and ``batch_eval_metrics`` modes."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import ndimage

from medmae.training import evaluate, metrics
from medmae.training.trainer_utils import segcls_compute_metrics, segcls_preprocess_logits_for_metrics
from testing_utils import free_port

WORKER = Path(__file__).with_name("seg_eval_worker.py")


# ----------------------------------------------------------------------------------------------------
# The oracle: segmentation_metrics and evaluate's segmentation path as of commit 2293278 (whole split, full-image
# distance transforms, HD95 and ASD each computing their own), copied verbatim apart from names
# ----------------------------------------------------------------------------------------------------
def _legacy_surface_distances(pred, true, spacing=None):
    p, t = metrics._pair(pred, true)
    if not p.any() or not t.any():
        return None
    sampling = metrics._spacing(spacing)
    edge_p = p ^ ndimage.binary_erosion(p, structure=metrics._CROSS)
    edge_t = t ^ ndimage.binary_erosion(t, structure=metrics._CROSS)
    to_t = ndimage.distance_transform_edt(~edge_t, sampling=sampling)
    to_p = ndimage.distance_transform_edt(~edge_p, sampling=sampling)
    return to_t[edge_p], to_p[edge_t]


def _legacy_distance_metric(pred, true, spacing, missing_distance, reduce):
    p, t = metrics._pair(pred, true)
    if not p.any() and not t.any():
        return 0.0
    d = _legacy_surface_distances(p, t, spacing)
    if d is None:
        return metrics._missing(p.shape, spacing, missing_distance)
    return float(reduce(*d))


_LEGACY_CONVENTIONS = {
    "medpy": lambda a, b: np.percentile(np.concatenate([a, b]), 95),
    "monai": lambda a, b: max(np.percentile(a, 95), np.percentile(b, 95)),
}


def _legacy_segmentation_metrics(pred_masks, true_masks, spacing=None, missing_distance="diagonal",
                                 distances=True, convention="medpy"):
    preds, trues = list(pred_masks), list(true_masks)
    n = len(preds)
    spacings = [spacing] * n if spacing is None or np.ndim(spacing) == 1 else list(spacing)
    per = {"dice": [], "jaccard": [], "hd95": [], "asd": []}
    cases = {"both_empty": 0, "missed": 0, "false_positive": 0}
    positive_dice = []
    for p, t, s in zip(preds, trues, spacings):
        p, t = metrics._pair(p, t)
        per["dice"].append(metrics.dice(p, t))
        per["jaccard"].append(metrics.jaccard(p, t))
        if t.any():
            positive_dice.append(per["dice"][-1])
        has_p, has_t = bool(p.any()), bool(t.any())
        cases["both_empty"] += not has_p and not has_t
        cases["missed"] += has_t and not has_p
        cases["false_positive"] += has_p and not has_t
        if distances:
            per["hd95"].append(_legacy_distance_metric(p, t, s, missing_distance, _LEGACY_CONVENTIONS[convention]))
            per["asd"].append(_legacy_distance_metric(p, t, s, missing_distance,
                                                      lambda a, b: np.concatenate([a, b]).mean()))
    out = {"num_cases": n, "per_case": {k: [metrics._clean(v) for v in vals] for k, vals in per.items()
                                         if distances or k in ("dice", "jaccard")},
           "excluded": {}, "cases": cases, "missing_distance": missing_distance, "distance_convention": convention}
    for k, vals in out["per_case"].items():
        out[k], out["excluded"][k] = metrics._mean(vals)
    out["dice_positive"] = metrics._mean(positive_dice)[0]
    return out


def _legacy_seg_metrics(seg_pred, seg_true, seg_classes=()):
    """evaluate.compute_metrics' segmentation part on whole-split label maps, as it was."""
    keys = ("dice", "jaccard", "hd95", "asd", "dice_positive")
    if len(seg_classes) <= 2:
        binary = _legacy_segmentation_metrics(seg_pred > 0, seg_true > 0)
        return {key: binary[key] for key in keys}
    per = {name: _legacy_segmentation_metrics(seg_pred == k, seg_true == k)
           for k, name in enumerate(seg_classes) if k > 0}

    def mean(key):
        values = [m[key] for m in per.values() if m[key] is not None]
        return float(np.mean(values)) if values else None

    out = {key: mean(key) for key in keys}
    out.update({f"{key}/{name}": m[key] for name, m in per.items() for key in ("dice", "hd95")})
    return out


# ----------------------------------------------------------------------------------------------------
# Random label maps with every edge case
# ----------------------------------------------------------------------------------------------------
def random_label_maps(seed: int, n: int = 40, shape=(36, 30), num_classes: int = 2):
    """(pred, true) int64 [n, H, W]: random blobs of classes 1..K-1, predictions = shifted / grown / shrunk truth
    plus spurious blobs, and fixed edge cases: both empty, missed lesion, false positive, masks touching the
    image border, a full image, single pixels, lesions far apart."""
    rng = np.random.default_rng(seed)
    true = np.zeros((n, *shape), np.int64)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):
            r, c = rng.integers(-3, shape[0] - 2), rng.integers(-3, shape[1] - 2)
            true[i, max(r, 0):r + rng.integers(2, 14), max(c, 0):c + rng.integers(2, 14)] = rng.integers(1, num_classes)
    pred = np.stack([np.roll(t, tuple(rng.integers(-3, 4, 2)), (0, 1)) for t in true])
    pred[rng.random(pred.shape) < 0.01] = rng.integers(0, num_classes)
    pred[:, :2][rng.random((n, 2, shape[1])) < 0.05] = num_classes - 1  # stray pixels on the top border
    true[0], pred[0] = 0, 0                                 # both empty
    true[1, 5:12, 5:9], pred[1] = 1, 0                      # missed lesion
    true[2], pred[2, 20:25, 3:8] = 0, 1                     # false positive
    true[3], pred[3] = 1, 1                                 # full image (its boundary is the image frame)
    true[4], pred[4] = 0, 0
    true[4, 0, 0], pred[4, -1, -1] = 1, 1                   # single pixels in opposite corners
    true[5], pred[5] = 0, 0
    true[5, 2:5, 2:5], pred[5, 30:34, 25:29] = 1, 1         # far apart: the box spans nearly the whole image
    return pred, true


def _batches(pred, true, size):
    for start in range(0, len(pred), size):
        yield pred[start:start + size], true[start:start + size]


def _per_batch(pred, true, num_classes=2, size=7, **kw):
    return np.concatenate([metrics.segmentation_cases(p, t, num_classes, **kw) for p, t in _batches(pred, true, size)])


# ----------------------------------------------------------------------------------------------------
# metrics.py: per batch == whole split == the oracle, exactly
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("missing_distance", ["diagonal", None, 100.0])
@pytest.mark.parametrize("convention", ["medpy", "monai"])
def test_per_batch_cases_equal_the_former_whole_split_metrics(missing_distance, convention):
    pred, true = random_label_maps(0)
    expected = _legacy_segmentation_metrics(pred > 0, true > 0, missing_distance=missing_distance,
                                            convention=convention)
    cases = _per_batch(pred, true, missing_distance=missing_distance, convention=convention)
    per_batch = metrics.summarize_cases(cases[:, 0], missing_distance, convention=convention)
    whole = metrics.segmentation_metrics(pred > 0, true > 0, missing_distance=missing_distance, convention=convention)
    assert per_batch == expected and whole == expected  # identical floats, same keys, same order of cases
    assert json.dumps(per_batch) == json.dumps(expected)
    assert expected["cases"]["missed"] >= 1 and expected["cases"]["false_positive"] >= 1
    assert expected["cases"]["both_empty"] >= 1


def test_per_case_spacing_and_distances_off_equal_the_former():
    pred, true = random_label_maps(1, n=12)
    per_case = np.random.default_rng(1).uniform(0.3, 2.0, (12, 2))
    for spacing, distances in ((per_case, True), ((0.5, 2.0), True), (None, False)):
        expected = _legacy_segmentation_metrics(pred > 0, true > 0, spacing, distances=distances)
        assert metrics.segmentation_metrics(pred > 0, true > 0, spacing, distances=distances) == expected
        parts = [slice(0, 5), slice(5, 12)]
        cases = np.concatenate([metrics.segmentation_cases(pred[part], true[part], spacing=spacing[part] if spacing
                                                           is per_case else spacing, distances=distances)
                                for part in parts])
        assert metrics.summarize_cases(cases[:, 0], distances=distances) == expected


def test_cropped_distances_equal_full_image_ones_bitwise():
    pred, true = random_label_maps(2, n=30, shape=(48, 40))
    for p, t in zip(pred > 0, true > 0):
        for spacing in (None, (0.7, 1.3)):
            new, old = metrics.surface_distances(p, t, spacing), _legacy_surface_distances(p, t, spacing)
            assert (new is None) == (old is None)
            if new is not None:
                assert np.array_equal(new[0], old[0]) and np.array_equal(new[1], old[1])


def test_several_classes_per_batch_equal_the_former():
    classes = ["background", "benign", "malignant", "cyst"]
    pred, true = random_label_maps(3, n=25, num_classes=4)
    expected = _legacy_seg_metrics(pred, true, classes)
    seg = evaluate.segmentation_summary(_per_batch(pred, true, num_classes=4, size=6), classes)
    got = {key: seg[key] for key in ("dice", "jaccard", "hd95", "asd", "dice_positive")} | seg["per_class"]
    assert got == expected
    whole = evaluate.seg_cases_of({"seg_pred": pred, "seg_true": true}, classes)
    assert evaluate.segmentation_summary(whole, classes) == seg


def test_case_metrics_against_monai():
    torch_ = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    pred, true = random_label_maps(4, n=20, shape=(40, 34))
    rows = metrics.segmentation_cases(pred, true, convention="monai")[:, 0]
    for (dice, _, hd, sd, has_p, has_t), p, t in zip(rows, pred > 0, true > 0):
        if not (has_p and has_t):
            continue  # MONAI gives NaN/inf there; medmae's policy is tested above
        yp, yt = torch_.as_tensor(p[None, None]).float(), torch_.as_tensor(t[None, None]).float()
        assert hd == pytest.approx(monai_metrics.compute_hausdorff_distance(
            yp, yt, include_background=True, percentile=95).item(), rel=1e-5, abs=1e-5)
        assert sd == pytest.approx(monai_metrics.compute_average_surface_distance(
            yp, yt, include_background=True, symmetric=True).item(), rel=1e-5, abs=1e-5)
        assert dice == pytest.approx(monai_metrics.compute_dice(yp, yt, include_background=True).item(), rel=1e-6)


def test_bad_inputs_are_named():
    pred, true = random_label_maps(5, n=6)
    pred, true = pred[:3], true[:3]
    with pytest.raises(ValueError, match=r"label maps \[B, H, W\].*\(3, 36, 30\).*\(3, 36\)"):
        metrics.segmentation_cases(pred, true[:, :, 0])
    with pytest.raises(ValueError, match=r"per-case rows \[N, 6\].*\(3, 4\)"):
        metrics.summarize_cases(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="unknown HD95 convention 'max'"):
        metrics.segmentation_cases(pred, true, convention="max")
    with pytest.raises(ValueError, match="2 spacings for 3 cases"):
        metrics.segmentation_cases(pred, true, spacing=[(1, 1), (1, 1)])
    with pytest.raises(ValueError, match=r"'seg_cases'.*\['cls_prob'\]"):
        evaluate.seg_cases_of({"cls_prob": np.zeros((3, 2))})
    with pytest.raises(ValueError, match=r"seg_cases has shape \(3, 1, 6\); 4 segmentation classes need \[N, 3, 6\]"):
        evaluate.seg_cases_of({"seg_cases": np.zeros((3, 1, 6))}, ["a", "b", "c", "d"])


# ----------------------------------------------------------------------------------------------------
# evaluate.predict: per-batch cases gathered == the former whole-split gather of int64 masks
# ----------------------------------------------------------------------------------------------------
class MapModel(torch.nn.Module):
    """Returns its input as segmentation logits (so the predicted map is known) and per-class means as class
    logits."""

    def __init__(self, num_diagnoses: int = 3):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.num_diagnoses = num_diagnoses

    def forward(self, pixel_values):
        return SimpleNamespace(logits=pixel_values * self.scale,
                               class_logits=pixel_values.flatten(2).mean(-1)[:, :self.num_diagnoses] * self.scale)


def map_items(pred, true, num_classes):
    """Dataset items whose pixel_values are the one-hot of ``pred`` (plus noise below the argmax margin)."""
    noise = np.random.default_rng(0).uniform(0, 0.4, (len(pred), num_classes, *pred.shape[1:]))
    one_hot = (np.arange(num_classes)[None, :, None, None] == pred[:, None]).astype(np.float32) + noise
    return [{"pixel_values": torch.as_tensor(one_hot[i], dtype=torch.float32), "labels": torch.as_tensor(true[i]),
             "class_labels": torch.tensor(i % 3)} for i in range(len(pred))]


def _accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(cpu=True)


@pytest.mark.parametrize("classes", [["background", "lesion"], ["background", "benign", "malignant", "cyst"]])
def test_predict_scores_per_batch_like_the_former_whole_split(classes):
    pred, true = random_label_maps(6, n=23, num_classes=len(classes))
    items = map_items(pred, true, len(classes))
    accelerator = _accelerator()
    loader = accelerator.prepare(torch.utils.data.DataLoader(items, batch_size=5))
    model = accelerator.prepare(MapModel())
    preds = evaluate.predict(model, loader, accelerator, "segcls", classes)
    assert set(preds) == {"seg_cases", "cls_prob", "cls_true"} and preds["seg_cases"].shape == (23, len(classes) - 1, 6)
    got = evaluate.compute_metrics("segcls", preds, seg_classes=classes)
    expected = _legacy_seg_metrics(pred, true, classes)
    assert {k: got[k] for k in expected} == expected
    # the whole-split label-map input (Trainer, demo) gives the same dict
    whole = evaluate.compute_metrics("segcls", {"seg_pred": pred, "seg_true": true, "cls_prob": preds["cls_prob"],
                                                "cls_true": preds["cls_true"]}, seg_classes=classes)
    assert whole == got


def test_label_map_is_uint8_and_the_fp32_argmax():
    logits = torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)
    out = evaluate.label_map(logits)
    assert out.dtype == torch.uint8 and torch.equal(out.long(), logits.float().argmax(1))
    assert evaluate.label_map(torch.randn(1, 300, 2, 2)).dtype == torch.int32


def test_two_processes_gather_only_per_case_values_and_match(tmp_path):
    """23 cases over 2 processes x batch 5 pad the last batch; gather_for_metrics drops the duplicates."""
    out = tmp_path / "metrics.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(WORKER), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["num_processes"] == 2 and got["num_cases"] == 23
    pred, true = random_label_maps(6, n=23)
    expected = _legacy_seg_metrics(pred, true)
    assert {k: got["metrics"][k] for k in expected} == expected


# ----------------------------------------------------------------------------------------------------
# transformers.Trainer helpers
# ----------------------------------------------------------------------------------------------------
def test_trainer_helpers_whole_split_and_batch_eval_metrics_agree():
    from transformers import EvalPrediction

    pred, true = random_label_maps(7, n=21)
    logits = torch.as_tensor(np.stack([pred == 0, pred == 1], 1), dtype=torch.float32)
    class_logits = torch.randn(21, 2, generator=torch.Generator().manual_seed(0))
    class_labels = torch.arange(21) % 2
    seg_pred, kept_logits = segcls_preprocess_logits_for_metrics((logits, class_logits), None)
    assert seg_pred.dtype == torch.uint8 and torch.equal(seg_pred.long(), torch.as_tensor(pred))
    whole = segcls_compute_metrics()(EvalPrediction((seg_pred.numpy(), kept_logits.numpy()),
                                                    (true, class_labels.numpy())))
    fn = segcls_compute_metrics()
    for rep in range(2):  # the state is reset after each result
        for start in range(0, 21, 4):
            part = slice(start, start + 4)
            result = fn(EvalPrediction((seg_pred[part], kept_logits[part]),
                                       (torch.as_tensor(true[part]), class_labels[part])), compute_result=start + 4 >= 21)
        assert result == whole
    expected = _legacy_seg_metrics(pred, true)
    assert {k: whole[k] for k in expected} == expected
