# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Helpers for fine-tuning with ``transformers.Trainer`` instead of the Accelerate scripts, with the SAME
metric functions (``training/evaluate.compute_metrics`` -> ``training/metrics.py``).

ETMAE multi-label with layer decay::

    from medmae.training.trainer_utils import layer_decay_optimizer, multilabel_compute_metrics
    args = TrainingArguments(..., remove_unused_columns=False, metric_for_best_model="mauc", lr_scheduler_type="cosine")
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      optimizer_cls_and_kwargs=layer_decay_optimizer(model, lr=1e-3, layer_decay=0.55),
                      compute_metrics=multilabel_compute_metrics(label_names), processing_class=processor)

SDDA-MAE joint segmentation + classification (two label tensors, ``labels`` = masks and ``class_labels``)::

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      compute_metrics=segcls_compute_metrics(),
                      preprocess_logits_for_metrics=segcls_preprocess_logits_for_metrics)

With ``TrainingArguments(batch_eval_metrics=True)`` the segmentation metrics are computed batch by batch (per-case
values kept, masks dropped), so evaluation memory does not grow with the split; without it Trainer holds the
uint8 predicted maps and its int64 label masks of the whole split, and the numbers are the same.

Three switches make Trainer fit (``design/hf-integration.md`` section 5): ``remove_unused_columns=False`` (the
datasets are transformed lazily with ``with_transform``), ``accepts_loss_kwargs = False`` on the models (set in
medmae; otherwise DDP multiplies the loss by the world size), and layer-decay groups passed as
``optimizer_cls_and_kwargs[1]["params"]`` with each group's ``lr`` already scaled (Trainer's scheduler, like
torch's, ignores timm's ``lr_scale``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .evaluate import compute_metrics, label_map, num_seg_classes
from .metrics import classification_metrics, segmentation_cases
from .optim import layer_decay_param_groups


def layer_decay_optimizer(model, lr: float, weight_decay: float = 0.05, layer_decay: float = 0.55,
                          betas=(0.9, 0.999), optimizer_cls=torch.optim.AdamW) -> tuple:
    """``(optimizer_cls, kwargs)`` for ``Trainer(optimizer_cls_and_kwargs=...)`` with timm ``param_groups_lrd``
    groups: ``lr * layer_decay ** (num_layers - layer_id)`` per group, no weight decay on biases / norms /
    ``cls_token`` / ``pos_embed``."""
    groups = layer_decay_param_groups(model, lr, weight_decay, layer_decay)
    for group in groups:
        group.pop("param_names")
    return optimizer_cls, {"params": groups, "lr": lr, "betas": tuple(betas)}


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def multilabel_compute_metrics(label_names: Sequence[str] = ()):
    """``compute_metrics`` for multi-label logits: ``mauc`` and ``auc/<label>`` (Trainer prefixes ``eval_``)."""

    def fn(eval_prediction) -> dict:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        probabilities = 1.0 / (1.0 + np.exp(-_numpy(logits).astype(np.float64)))
        metrics = compute_metrics("multilabel", {"probabilities": probabilities,
                                                 "labels": _numpy(eval_prediction.label_ids)}, label_names)
        return {k: v for k, v in metrics.items() if v is not None}

    return fn


def singlelabel_compute_metrics(label_names: Sequence[str] = ()):
    """``compute_metrics`` for single-label logits: ``accuracy``, macro ``precision`` / ``recall`` / ``f1`` and
    per-class precision and recall (``precision/<label>``), from ``training.metrics.classification_metrics``."""
    def fn(eval_prediction) -> dict:
        logits = eval_prediction.predictions
        logits = _numpy(logits[0] if isinstance(logits, tuple) else logits)
        names = list(label_names) or None
        cls = classification_metrics(_numpy(eval_prediction.label_ids), logits, num_classes=logits.shape[1],
                                     class_names=names)
        out = {"accuracy": cls["accuracy"], "precision": cls["precision_macro"], "recall": cls["recall_macro"],
               "f1": cls["f1_macro"]}
        for name, per in cls["per_class"].items():
            out[f"precision/{name}"], out[f"recall/{name}"] = per["precision"], per["recall"]
        return out

    return fn


def segcls_preprocess_logits_for_metrics(logits, labels):
    """Keep the predicted class map (uint8 [B, H, W], not [B, K, H, W] float logits) and the class logits, so Trainer
    accumulates small tensors. ``logits`` = ``(seg_logits, class_logits, ...)`` from the joint model."""
    seg_logits, class_logits = logits[0], logits[1]
    return label_map(seg_logits), class_logits


def segcls_compute_metrics(seg_classes: Sequence[str] = ()):
    """``compute_metrics`` for ``SDDAMAEForSegmentationAndClassification``: predictions ``(seg_pred,
    class_logits)`` (after :func:`segcls_preprocess_logits_for_metrics`), label_ids ``(masks, class_labels)``.
    Dice, Jaccard, HD95, ASD, accuracy, precision, recall; ``seg_classes``: the segmentation head's class names when
    it has more than two (per-class metrics), as ``model.config.id2label`` lists them.

    Works both ways Trainer calls it: once with the whole split, or per batch under ``batch_eval_metrics=True``
    (``compute_result`` False until the last batch), where each batch's masks are reduced to per-case values
    (``metrics.segmentation_cases``) and dropped, so memory stays O(batch); the numbers are identical."""
    pending: dict[str, list] = {"seg_cases": [], "class_logits": [], "class_labels": []}

    def fn(eval_prediction, compute_result: bool = True) -> dict:
        seg_pred, class_logits = eval_prediction.predictions[:2]
        masks, class_labels = eval_prediction.label_ids[:2]
        pending["seg_cases"].append(segmentation_cases(seg_pred, masks, num_seg_classes(seg_classes)))
        pending["class_logits"].append(_numpy(class_logits).astype(np.float64))
        pending["class_labels"].append(_numpy(class_labels))
        if not compute_result:
            return {}
        cases, logits, labels = (np.concatenate(pending[key]) for key in ("seg_cases", "class_logits", "class_labels"))
        for parts in pending.values():
            parts.clear()
        metrics = compute_metrics("segcls", {"seg_cases": cases, "cls_prob": _softmax(logits), "cls_true": labels},
                                  seg_classes=seg_classes)
        return {k: v for k, v in metrics.items() if v is not None}

    return fn


def _softmax(logits: np.ndarray) -> np.ndarray:
    """[N, C] float64 logits -> probabilities (max-subtracted)."""
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    return probabilities / probabilities.sum(1, keepdims=True)
