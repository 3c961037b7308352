# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Linear probe of a frozen ETMAE encoder: a cheap, sensitive measure of representation quality.

Features are the encoder's mean-pooled patch tokens after its final norm (MAE's ``global_pool`` features, without
the classifier's fc_norm), computed once per image with the evaluation transform. Each label gets an
L2-regularised logistic regression (scikit-learn, lbfgs, deterministic) on standardised training features; the
score is the test mAUC with ``training.metrics.multilabel_auc`` (labels with one class in the test truth are
excluded, as everywhere in medmae). A label with one class in the TRAINING split predicts that class's prior.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .metrics import multilabel_auc


@torch.no_grad()
def encoder_features(encoder, dataset, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, D], labels [N, K]) of a transformed dataset (``pixel_values``, ``labels``) through
    ``encoder`` (an ``ETMAEModel``) without masking."""
    encoder.eval()
    features, labels = [], []
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start: start + batch_size]
        tokens = encoder(pixel_values=batch["pixel_values"]).last_hidden_state
        features.append(tokens[:, 1:].mean(dim=1).float().numpy())
        labels.append(np.asarray(batch["labels"], dtype=np.float32))
    return np.concatenate(features), np.concatenate(labels)


def linear_probe(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                 label_names: Sequence[str], c: float = 1.0) -> dict:
    """Per-label logistic regression on frozen features; returns ``{"mauc", "auc/<label>": ...}`` on ``test``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    (x_train, y_train), (x_test, y_test) = train, test
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    scores = np.zeros_like(y_test, dtype=np.float64)
    for k in range(y_train.shape[1]):
        if len(np.unique(y_train[:, k])) < 2:
            scores[:, k] = y_train[0, k]
            continue
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train[:, k])
        scores[:, k] = model.predict_proba(x_test)[:, 1]
    auc = multilabel_auc(y_test, scores, list(label_names))
    return {"mauc": auc["mean_auc"], **{f"auc/{name}": value for name, value in auc["per_label"].items()}}
