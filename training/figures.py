# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""PNG figures of a run (matplotlib, Agg backend): loss curves, MAE reconstructions, segmentation overlays,
multi-label ROC curves. Every function takes plain arrays and a path and returns the path."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, title: str) -> Path:
    """Every figure names its run (``title``) and is written at one resolution."""
    plt = _plt()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# Units of the validation metrics: one panel each, so a 0-1 score never shares an axis with pixel distances.
DISTANCE_METRICS = ("hd95", "asd")


def validation_panels(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Group validation metric names by unit: ``[(axis label, names)]`` for scores (0-1), distances (pixels) and
    losses, skipping empty groups; every name is kept (per-label AUCs included)."""
    names = [k for k in names if not k.startswith("sd_") or k.endswith("loss")]
    losses = [k for k in names if k.endswith("loss")]
    distances = [k for k in names if k in DISTANCE_METRICS or k.startswith(tuple(f"{d}/" for d in DISTANCE_METRICS))]
    scores = [k for k in names if k not in losses and k not in distances]
    groups = [("score (0-1)", scores), ("distance (pixels)", distances), ("loss", losses)]
    return [(unit, keys) for unit, keys in groups if keys]


def to_display(images, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised [N, C, H, W] tensors/arrays -> [N, H, W] (grayscale) or [N, H, W, 3] in [0, 1]."""
    x = images.detach().float().cpu().numpy() if hasattr(images, "detach") else np.asarray(images, dtype=np.float32)
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    x = np.clip(x * std + mean, 0.0, 1.0)
    if x.shape[1] == 3 and np.allclose(x[:, 0], x[:, 1], atol=1e-3) and np.allclose(x[:, 0], x[:, 2], atol=1e-3):
        return x[:, 0]
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def _show(ax, image, title: Optional[str] = None):
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _plot_series(ax, rows: list[dict], keys: Sequence[str], **style) -> None:
    for key in keys:
        ax.plot([h["step"] for h in rows if key in h], [h[key] for h in rows if key in h], label=key, **style)


def loss_curves(history: list[dict], path, title: str = "") -> Path:
    """Training loss and its parts per logged step; the self-distillation diagnostics (``sd_*``: teacher
    information, teacher entropy against ln K, KL, SD/MSE gradient ratio) on their own panel when logged;
    validation metrics on one panel per unit (:func:`validation_panels`). ``title`` names the run."""
    plt = _plt()
    train = [h for h in history if h.get("split") == "train"]
    val = [h for h in history if h.get("split") == "validation"]
    keys = [k for k in (train[0] if train else {}) if k not in ("step", "epoch", "split", "lr")]
    losses = [k for k in keys if not k.startswith("sd_") or k.endswith("loss")]
    diagnostics = [k for k in keys if k not in losses and k != "sd_entropy_max"]
    metric_names = [k for k in (val[-1] if val else {}) if k not in ("step", "epoch", "split")
                    and isinstance(val[-1][k], (int, float))]
    groups = validation_panels(metric_names)
    panels = 1 + bool(diagnostics) + len(groups)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), squeeze=False)
    ax = axes[0, 0]
    _plot_series(ax, train, losses)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("training", fontsize=9)
    if losses:
        ax.legend(fontsize=7)
    if diagnostics:
        _diagnostics_panel(axes[0, 1], train, keys, diagnostics)
    for ax, (unit, names) in zip(axes[0, 1 + bool(diagnostics):], groups):
        per_label = [k for k in names if "/" in k]
        _plot_series(ax, val, [k for k in names if k not in per_label], marker="o", ms=3, lw=1.8)
        _plot_series(ax, val, per_label, lw=0.8, alpha=0.7)  # e.g. every label's AUC beside the mean
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(unit)
        ax.set_title(f"validation: {unit}", fontsize=9)
        ax.legend(fontsize=6, ncol=2 if len(names) > 6 else 1)
    return _save(fig, path, title)


def _diagnostics_panel(ax, train: list[dict], keys: list[str], diagnostics: list[str]) -> None:
    nats = [k for k in diagnostics if not k.endswith(("_ratio", "_weight"))]
    _plot_series(ax, train, nats)
    if "sd_entropy_max" in keys:
        ax.axhline(train[0]["sd_entropy_max"], color="grey", ls="--", lw=1, label="ln K (uniform teacher)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("nats")
    ax.set_title("self-distillation diagnostics", fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    others = [k for k in diagnostics if k not in nats]
    if others:  # gradient ratio (and SD weight) on their own log axis, so a spike hides nothing
        right = ax.twinx()
        _plot_series(right, train, others, ls=":", color="black")
        right.set_yscale("log")
        right.set_ylabel(", ".join(others) + " (log)", fontsize=7)
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, fontsize=7)


def mae_reconstructions(original: np.ndarray, masked: np.ndarray, reconstruction: np.ndarray, path,
                        title: str = "") -> Path:
    """Rows of (original | masked input | reconstruction with visible patches pasted back)."""
    plt = _plt()
    n = len(original)
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
    for i in range(n):
        for j, (image, name) in enumerate(((original[i], "original"), (masked[i], "masked"),
                                           (reconstruction[i], "reconstruction"))):
            _show(axes[i, j], image, name if i == 0 else None)
    return _save(fig, path, title)


def segmentation_overlays(images: np.ndarray, truth: np.ndarray, prediction: np.ndarray, path,
                          captions: Optional[Sequence[str]] = None, title: str = "") -> Path:
    """Each image with the ground-truth contour (green) and the predicted mask (red, translucent)."""
    plt = _plt()
    n = len(images)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        _show(ax, images[i], captions[i] if captions else None)
        overlay = np.zeros((*prediction[i].shape, 4))
        overlay[prediction[i] > 0] = (1.0, 0.1, 0.1, 0.4)
        ax.imshow(overlay)
        if truth[i].any():
            ax.contour(truth[i] > 0, levels=[0.5], colors=["lime"], linewidths=0.8)
    return _save(fig, path, f"{title}: ground truth (green contour) / prediction (red)".lstrip(": "))


def roc_curves(probabilities: np.ndarray, labels: np.ndarray, names: Sequence[str], path,
               mask: Optional[np.ndarray] = None, title: str = "") -> Path:
    """One ROC curve per label (labels with a single class present are skipped), AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for k, name in enumerate(names):
        keep = np.ones(len(labels), bool) if mask is None else mask[:, k] > 0
        y, p = labels[keep, k], probabilities[keep, k]
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1, label=f"{name} ({roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.7)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC per label (AUC)", fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
    return _save(fig, path, title)
