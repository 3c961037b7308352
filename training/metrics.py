"""Metrics of the papers as plain numpy / scipy / scikit-learn functions (JSON-serialisable outputs).

Segmentation (per case, then averaged): Dice, Jaccard (IoU), HD95 and ASD in pixels, or in mm
when a pixel ``spacing`` is given. Classification: accuracy, precision / recall / F1 (macro and
per class). Multi-label: per-label ROC AUC and their mean.

Conventions (no NaN ever leaves this module; undefined values are ``None``):

* **Dice / Jaccard**: both masks empty -> 1.0 (perfect agreement on a negative image); exactly
  one empty -> 0.0.
* **Surfaces**: the boundary of a mask is ``mask XOR binary_erosion(mask)`` (4-connected
  structuring element, pixels on the image border count as boundary), the distance of a boundary
  pixel is the Euclidean distance transform (``scipy.ndimage.distance_transform_edt``, with
  ``sampling=spacing``) to the other mask's boundary, as in MONAI and medpy. Both are computed on
  the bounding box of the two masks (as MONAI's ``get_mask_edges(crop=True)``): every boundary
  pixel lies inside it and the box's outside is background, so the distances are exactly those
  of the whole image, at a fraction of the cost.
* **HD95**, ``convention="medpy"`` (default): ``P95(d(pred -> true) ∪ d(true -> pred))``, the 95th
  percentile of both directions' distances POOLED -- medpy's ``binary.hd95``, which the TransUNet /
  Swin-Unet / DAE-Former evaluation code (``calculate_metric_percase``) calls and whose numbers the
  SDDA-MAE paper compares with. ``convention="monai"``: ``max(P95(d(pred -> true)), P95(d(true ->
  pred)))``, MONAI's ``compute_hausdorff_distance(percentile=95)``, 0-8% higher on the same masks.
  Every metric dict names its convention (``distance_convention``).
* **ASD**: symmetric average surface distance, the mean of the distances of both directions
  pooled: medpy 0.5.2 ``binary.assd`` (``concatenate(...).mean()``) and MONAI
  ``compute_average_surface_distance(symmetric=True)`` agree, so both conventions give the same ASD.
* **Empty masks and distances**: both empty -> 0.0. A MISSED lesion (prediction empty, ground
  truth not) or a false-positive prediction on an empty ground truth has no surface distance;
  MONAI returns NaN (or inf) there and a ``nanmean`` then DROPS the case, so missing more
  lesions improves the mean. Here such a case gets the worst-case distance
  ``missing_distance="diagonal"`` (the image diagonal, in mm with ``spacing``), or a number you
  choose; ``missing_distance=None`` makes it ``None`` and excludes it from the mean, and the
  count of excluded cases is reported beside every mean.
* **Precision/recall** of a class that is never predicted / never present is undefined; as in
  scikit-learn with ``zero_division=0`` it counts as 0 in the macro average (so a model cannot
  gain by never predicting a class) and the class is listed in ``undefined_precision`` /
  ``undefined_recall``.
* **AUC** of a label with only one class present in ``y_true`` is undefined: the label is
  excluded from the mean, its value is ``None`` and it is listed in ``excluded_labels`` (this
  depends only on the ground truth, so no prediction can game it).

Scaling: :func:`segmentation_cases` turns a batch of label maps into per-case values (one row of
``CASE_FIELDS`` per case and foreground class) and :func:`summarize_cases` turns the rows of a whole
split into the metric dict, so an evaluation keeps O(batch) masks and gathers only scalars across
processes (MONAI's ``Cumulative`` pattern). :func:`segmentation_metrics` is the two in one call.

This module never imports ``evaluate``; :func:`metric_script_path` gives the paths of the
``evaluate.Metric`` wrappers for ``evaluate.load(...)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["dice", "jaccard", "hd95", "asd", "surface_distances", "segmentation_metrics", "segmentation_cases",
           "case_metrics", "summarize_cases", "CASE_FIELDS", "classification_metrics", "multilabel_auc",
           "metric_script_path"]

_CROSS = ndimage.generate_binary_structure(2, 1)

# the per-case values of a segmentation case (a row of segmentation_cases / case_metrics); None is stored as NaN
CASE_FIELDS = ("dice", "jaccard", "hd95", "asd", "has_pred", "has_true")


def _clean(x) -> float | None:
    """Python float, or None for None/NaN/inf."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _mask(m) -> np.ndarray:
    m = np.asarray(m.detach().cpu() if hasattr(m, "detach") else m)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
    return m != 0 if m.dtype != bool else m


def _pair(pred, true):
    p, t = _mask(pred), _mask(true)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {t.shape} differ in shape")
    return p, t


def dice(pred, true) -> float:
    """Dice coefficient 2|P∩T|/(|P|+|T|); 1.0 when both masks are empty."""
    p, t = _pair(pred, true)
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(p, t).sum() / total)


def jaccard(pred, true) -> float:
    """Jaccard index (IoU) |P∩T|/|P∪T|; 1.0 when both masks are empty."""
    p, t = _pair(pred, true)
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def _spacing(spacing, ndim=2) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    s = tuple(float(x) for x in np.broadcast_to(np.asarray(spacing, dtype=float), (ndim,)))
    if any(v <= 0 for v in s):
        raise ValueError(f"spacing must be positive, got {spacing}")
    return s


def _bounding_box(p: np.ndarray, t: np.ndarray) -> tuple[slice, slice]:
    """The smallest (rows, cols) box holding every foreground pixel of ``p`` and ``t`` (bool [H, W], not both
    empty)."""
    rows = np.flatnonzero(p.any(1) | t.any(1))
    cols = np.flatnonzero(p.any(0) | t.any(0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _boundary(m: np.ndarray) -> np.ndarray:
    """``m XOR erosion(m)``, 4-connected; outside the array counts as background."""
    return m ^ ndimage.binary_erosion(m, structure=_CROSS)


def surface_distances(pred, true, spacing=None):
    """Directed boundary distances ``(d(pred -> true), d(true -> pred))`` as float arrays, or
    None when either mask is empty (see the module docstring for the surface definition).

    Computed on the masks' common bounding box: outside it both masks are background, so the
    erosion sees the same neighbours and every boundary pixel (hence every nearest one) is inside."""
    p, t = _pair(pred, true)
    if not p.any() or not t.any():
        return None
    sampling = _spacing(spacing)
    box = _bounding_box(p, t)
    edge_p, edge_t = _boundary(p[box]), _boundary(t[box])
    to_t = ndimage.distance_transform_edt(~edge_t, sampling=sampling)
    to_p = ndimage.distance_transform_edt(~edge_p, sampling=sampling)
    return to_t[edge_p], to_p[edge_t]


def _missing(shape, spacing, missing_distance):
    if missing_distance is None:
        return None
    if missing_distance == "diagonal":
        return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, _spacing(spacing)))))
    return float(missing_distance)


def _distance_metric(pred, true, spacing, missing_distance, reduce):
    p, t = _pair(pred, true)
    if not p.any() and not t.any():
        return 0.0
    d = surface_distances(p, t, spacing)
    if d is None:
        return _missing(p.shape, spacing, missing_distance)
    return float(reduce(*d))


DISTANCE_CONVENTIONS = {
    "medpy": lambda a, b: np.percentile(np.concatenate([a, b]), 95),
    "monai": lambda a, b: max(np.percentile(a, 95), np.percentile(b, 95)),
}


def _check_convention(convention: str) -> None:
    if convention not in DISTANCE_CONVENTIONS:
        raise ValueError(f"unknown HD95 convention {convention!r}; choose one of {', '.join(DISTANCE_CONVENTIONS)}")


def _average(a: np.ndarray, b: np.ndarray) -> float:
    return np.concatenate([a, b]).mean()


def hd95(pred, true, spacing=None, missing_distance="diagonal", convention: str = "medpy") -> float | None:
    """95th-percentile Hausdorff distance in pixels or in the unit of ``spacing``: ``convention="medpy"``
    pools both directions' distances (the paper lineage), ``"monai"`` takes the larger directed 95th
    percentile. Both empty -> 0.0; exactly one empty -> ``missing_distance`` (default the image diagonal;
    None -> None)."""
    _check_convention(convention)
    return _distance_metric(pred, true, spacing, missing_distance, DISTANCE_CONVENTIONS[convention])


def asd(pred, true, spacing=None, missing_distance="diagonal") -> float | None:
    """Symmetric average surface distance (mean of both directions' distances pooled). Empty
    masks as in :func:`hd95`."""
    return _distance_metric(pred, true, spacing, missing_distance, _average)


def _mean(values) -> tuple[float | None, int]:
    kept = [v for v in values if v is not None]
    return (float(np.mean(kept)) if kept else None), len(values) - len(kept)


def _none_as_nan(x) -> float:
    return math.nan if x is None else float(x)


def case_metrics(pred, true, spacing=None, missing_distance="diagonal", distances: bool = True,
                 convention: str = "medpy") -> tuple[float, ...]:
    """The ``CASE_FIELDS`` of one case: ``(dice, jaccard, hd95, asd, has_pred, has_true)`` as floats, None as
    NaN (HD95/ASD with ``distances=False`` or ``missing_distance=None`` on a one-empty case). ``pred`` /
    ``true``: 2-D masks, non-zero = foreground. Both surface distances come from ONE pair of distance
    transforms; the values are exactly those of :func:`dice`, :func:`jaccard`, :func:`hd95`, :func:`asd`."""
    _check_convention(convention)
    p, t = _pair(pred, true)
    has_p, has_t = bool(p.any()), bool(t.any())
    hd = sd = math.nan
    if distances and not (has_p or has_t):
        hd = sd = 0.0
    elif distances and not (has_p and has_t):
        hd = sd = _none_as_nan(_missing(p.shape, spacing, missing_distance))
    elif distances:
        a, b = surface_distances(p, t, spacing)
        hd, sd = float(DISTANCE_CONVENTIONS[convention](a, b)), float(_average(a, b))
    return dice(p, t), jaccard(p, t), hd, sd, float(has_p), float(has_t)


def _spacings(spacing, n: int) -> list:
    """None / one (row, col) pair for all cases / one pair per case -> a list of ``n`` spacings."""
    if spacing is None or np.ndim(spacing) == 1:
        return [spacing] * n
    spacings = list(spacing)
    if len(spacings) != n:
        raise ValueError(f"{len(spacings)} spacings for {n} cases")
    return spacings


def _class_masks(label_map: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """[B, H, W] label map -> the masks scored: ``[label_map > 0]`` when ``num_classes <= 2`` (binary, any
    positive class is foreground), else ``[label_map == k for k in 1..num_classes-1]``, each bool [B, H, W]."""
    if num_classes <= 2:
        return [label_map > 0]
    return [label_map == k for k in range(1, num_classes)]


def _label_maps(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p, t = (np.asarray(m.detach().cpu() if hasattr(m, "detach") else m) for m in (pred, true))
    if p.ndim != 3 or p.shape != t.shape:
        raise ValueError(f"expected label maps [B, H, W] of one shape, got prediction {p.shape} and ground truth "
                         f"{t.shape}")
    return p, t


def segmentation_cases(pred, true, num_classes: int = 2, spacing=None, missing_distance="diagonal",
                       distances: bool = True, convention: str = "medpy") -> np.ndarray:
    """Per-case values of a batch: label maps ``pred`` / ``true`` [B, H, W] (numpy or torch, any integer or bool
    dtype) -> float64 [B, C, len(CASE_FIELDS)], C = 1 for ``num_classes <= 2`` (label > 0 = foreground) or
    ``num_classes - 1`` (class k = 1..K-1 against the rest). None is stored as NaN. Concatenate the batches'
    rows along dim 0 and pass ``rows[:, c]`` to :func:`summarize_cases`; ``spacing`` as in
    :func:`segmentation_metrics` (per case: B pairs)."""
    p, t = _label_maps(pred, true)
    spacings = _spacings(spacing, len(p))
    rows = np.empty((len(p), max(num_classes - 1, 1), len(CASE_FIELDS)))
    for c, (pc, tc) in enumerate(zip(_class_masks(p, num_classes), _class_masks(t, num_classes))):
        for i, s in enumerate(spacings):
            rows[i, c] = case_metrics(pc[i], tc[i], s, missing_distance, distances, convention)
    return rows


def summarize_cases(rows, missing_distance="diagonal", distances: bool = True, convention: str = "medpy") -> dict:
    """The :func:`segmentation_metrics` dict of per-case rows float [N, len(CASE_FIELDS)] (from
    :func:`case_metrics` / :func:`segmentation_cases`, in case order); ``missing_distance``, ``distances`` and
    ``convention`` are recorded as given (they must be the ones the rows were computed with)."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(CASE_FIELDS):
        raise ValueError(f"expected per-case rows [N, {len(CASE_FIELDS)}] ({', '.join(CASE_FIELDS)}), got {rows.shape}")
    column = dict(zip(CASE_FIELDS, rows.T))
    has_p, has_t = column["has_pred"] > 0, column["has_true"] > 0
    kept = ("dice", "jaccard", "hd95", "asd") if distances else ("dice", "jaccard")
    cases = {"both_empty": int((~has_p & ~has_t).sum()), "missed": int((has_t & ~has_p).sum()),
             "false_positive": int((has_p & ~has_t).sum())}
    out = {"num_cases": len(rows), "per_case": {k: [_clean(v) for v in column[k].tolist()] for k in kept},
           "excluded": {}, "cases": cases, "missing_distance": missing_distance, "distance_convention": convention}
    for k, vals in out["per_case"].items():
        out[k], out["excluded"][k] = _mean(vals)
    out["dice_positive"] = _mean(column["dice"][has_t].tolist())[0]
    return out


def segmentation_metrics(pred_masks, true_masks, spacing=None, missing_distance="diagonal",
                         distances: bool = True, convention: str = "medpy") -> dict:
    """Per-case and mean Dice, Jaccard, HD95 and ASD of binary masks.

    ``pred_masks`` / ``true_masks``: sequences of 2-D masks (sizes may differ between cases) or
    arrays (N, H, W); non-zero = foreground. ``spacing``: None (pixels), one (row, col) pair for
    all cases, or one pair per case (e.g. SIIM's ``pixel_spacing`` column). ``distances=False``
    skips HD95/ASD (faster). ``convention``: the HD95 definition (``medpy`` or ``monai``, see the
    module docstring), recorded as ``distance_convention``.

    Returns ``{"num_cases", "dice", "jaccard", "hd95", "asd"`` (means), ``"dice_positive"`` (mean
    Dice over cases with a non-empty ground truth), ``"per_case": {metric: [...]}``,
    ``"excluded": {metric: n}`` (cases left out of each mean because their value is None),
    ``"cases": {"both_empty", "missed", "false_positive"}`` (counts),
    ``"missing_distance"``}. All values are Python floats/ints or None. The same as
    :func:`summarize_cases` of the :func:`case_metrics` of every case (how an evaluation computes it
    batch by batch).
    """
    preds, trues = list(pred_masks), list(true_masks)
    if len(preds) != len(trues):
        raise ValueError(f"{len(preds)} predictions but {len(trues)} ground-truth masks")
    rows = [case_metrics(p, t, s, missing_distance, distances, convention)
            for p, t, s in zip(preds, trues, _spacings(spacing, len(preds)))]
    return summarize_cases(np.reshape(rows, (len(rows), len(CASE_FIELDS))), missing_distance, distances, convention)


def classification_metrics(y_true, y_pred, num_classes: int | None = None,
                           class_names: Sequence[str] | None = None) -> dict:
    """Accuracy and precision / recall / F1, macro-averaged and per class (scikit-learn).

    ``y_pred``: class indices (N,) or scores/logits (N, K) (argmax is taken). ``num_classes``
    (default: from ``class_names`` or the data) fixes the class set, so an absent class still
    counts in the macro average. Returns ``{"accuracy", "precision_macro", "recall_macro",
    "f1_macro", "per_class": {name: {"precision", "recall", "f1", "support"}},
    "confusion_matrix", "undefined_precision", "undefined_recall", "num_samples"}``.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true).astype(int).reshape(-1)
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2:
        y_pred = y_pred.argmax(1)
    y_pred = y_pred.astype(int).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ")
    if num_classes is None:
        num_classes = len(class_names) if class_names else int(max(y_true.max(initial=0),
                                                                   y_pred.max(initial=0)) + 1)
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    labels = list(range(num_classes))
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                       zero_division=0)
    predicted = np.bincount(y_pred[(y_pred >= 0) & (y_pred < num_classes)], minlength=num_classes)
    return {
        "num_samples": int(y_true.size),
        "accuracy": _clean(np.mean(y_true == y_pred)) if y_true.size else None,
        "precision_macro": _clean(p.mean()), "recall_macro": _clean(r.mean()),
        "f1_macro": _clean(f.mean()),
        "per_class": {n: {"precision": _clean(p[i]), "recall": _clean(r[i]), "f1": _clean(f[i]),
                          "support": int(support[i])} for i, n in enumerate(names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "undefined_precision": [n for i, n in enumerate(names) if predicted[i] == 0],
        "undefined_recall": [n for i, n in enumerate(names) if support[i] == 0],
    }


def multilabel_auc(y_true, y_score, label_names: Sequence[str] | None = None, mask=None) -> dict:
    """Per-label ROC AUC (scikit-learn ``roc_auc_score``) and their mean.

    ``y_true`` (N, K) in {0, 1}; ``y_score`` (N, K) scores or probabilities; ``mask`` (N, K),
    optional, 1 = use (e.g. CheXpert's ``label_mask`` under the ignore policy). A label whose
    used targets contain only one class is excluded (value None, listed in
    ``excluded_labels``). Returns ``{"mean_auc", "per_label", "excluded_labels",
    "num_labels_used"}``.
    """
    from sklearn.metrics import roc_auc_score

    y_true, y_score = np.asarray(y_true, dtype=float), np.asarray(y_score, dtype=float)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must both be (N, K)")
    k = y_true.shape[1]
    names = list(label_names) if label_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} label names for {k} labels")
    use = np.ones_like(y_true, bool) if mask is None else np.asarray(mask) > 0
    if use.shape != y_true.shape:
        raise ValueError(f"mask {use.shape} must match y_true {y_true.shape}")
    per, excluded = {}, []
    for j, name in enumerate(names):
        t, s = y_true[use[:, j], j], y_score[use[:, j], j]
        if np.unique(t).size < 2:
            per[name] = None
            excluded.append(name)
        else:
            per[name] = _clean(roc_auc_score(t, s))
    mean, _ = _mean(list(per.values()))
    return {"mean_auc": mean, "per_label": per, "excluded_labels": excluded,
            "num_labels_used": k - len(excluded)}


def metric_script_path(name: str = "medmae_segmentation") -> str:
    """Path of a bundled ``evaluate.Metric`` script, for ``evaluate.load(path)`` (offline):
    ``medmae_segmentation``, ``medmae_classification`` or ``medmae_multilabel_auc``."""
    path = Path(__file__).with_name("metrics_evaluate") / name / f"{name}.py"
    if not path.is_file():
        available = sorted(p.name for p in path.parent.parent.iterdir() if p.is_dir())
        raise ValueError(f"unknown medmae metric {name!r}; available: {available}")
    return str(path)
