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

from .evaluate import compute_metrics
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
    from .metrics import classification_metrics

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
    """Keep the argmax of the segmentation logits (not [B, K, H, W] floats) and the class logits, so Trainer
    accumulates small tensors. ``logits`` = ``(seg_logits, class_logits, ...)`` from the joint model."""
    seg_logits, class_logits = logits[0], logits[1]
    return seg_logits.argmax(1), class_logits


def segcls_compute_metrics():
    """``compute_metrics`` for ``SDDAMAEForSegmentationAndClassification``: predictions ``(seg_pred,
    class_logits)`` (after :func:`segcls_preprocess_logits_for_metrics`), label_ids ``(masks, class_labels)``.
    Dice, Jaccard, HD95, ASD, accuracy, precision, recall."""

    def fn(eval_prediction) -> dict:
        seg_pred, class_logits = eval_prediction.predictions[:2]
        masks, class_labels = eval_prediction.label_ids[:2]
        logits = _numpy(class_logits).astype(np.float64)
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        probabilities /= probabilities.sum(1, keepdims=True)
        metrics = compute_metrics("segcls", {"seg_pred": _numpy(seg_pred), "seg_true": _numpy(masks),
                                             "cls_prob": probabilities, "cls_true": _numpy(class_labels)})
        return {k: v for k, v in metrics.items() if v is not None}

    return fn
