"""Fine-tuning with ``transformers.Trainer`` for both families, with the scripts' metric functions."""

import pytest
import torch
from transformers import Trainer, TrainingArguments

from medmae import ETMAEConfig, ETMAEForImageClassification, SDDAMAEConfig, SDDAMAEForSegmentationAndClassification
from medmae.modeling.image_processing_medmae import processor_for_config
from medmae.training.args import DataArguments
from medmae.training.dataloading import attach_transforms
from medmae.training.synthetic import make_synthetic_cxr, make_synthetic_ultrasound
from medmae.training.trainer_utils import (
    layer_decay_optimizer,
    multilabel_compute_metrics,
    segcls_compute_metrics,
    segcls_preprocess_logits_for_metrics,
)


def _args(tmp_path, **kw):
    return TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                             num_train_epochs=1, eval_strategy="epoch", save_strategy="no", report_to="none",
                             use_cpu=True, remove_unused_columns=False, logging_steps=1, disable_tqdm=True,
                             dataloader_num_workers=0, seed=0, **kw)


def test_etmae_multilabel_with_layer_decay(tmp_path):
    splits = make_synthetic_cxr(num_images=48, image_size=32)
    names = splits.medmae_split_info["labels"]
    config = ETMAEConfig.from_preset("tiny_test", num_labels=len(names), problem_type="multi_label_classification",
                                     teacher_hidden_size=None)
    model = ETMAEForImageClassification(config)
    processor = processor_for_config(config)
    data = attach_transforms({k: v.select_columns(["image", "labels"]) for k, v in splits.items()}, "multilabel",
                             processor, DataArguments(crop_scale_min=0.7))
    optimizer_cls, kwargs = layer_decay_optimizer(model, lr=1e-3, layer_decay=0.55)
    trainer = Trainer(model=model, args=_args(tmp_path, lr_scheduler_type="cosine", warmup_steps=1),
                      train_dataset=data["train"], eval_dataset=data["validation"],
                      optimizer_cls_and_kwargs=(optimizer_cls, kwargs), compute_metrics=multilabel_compute_metrics(names),
                      processing_class=processor)
    trainer.train()
    initial = sorted({round(g["initial_lr"], 10) for g in trainer.optimizer.param_groups})
    assert initial[-1] == pytest.approx(1e-3) and initial[0] == pytest.approx(1e-3 * 0.55**5)  # honoured
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_mauc"] <= 1.0 and any(k.startswith("eval_auc/") for k in metrics)


def test_sdda_joint_model_with_two_label_tensors(tmp_path):
    splits = make_synthetic_ultrasound(num_images=40, image_size=64)
    config = SDDAMAEConfig.from_preset("tiny_test", cls_id2label=dict(enumerate(splits["train"].features["label"].names)))
    model = SDDAMAEForSegmentationAndClassification(config)
    data = attach_transforms({k: v.select_columns(["image", "mask", "label"]) for k, v in splits.items()}, "segcls",
                             processor_for_config(config), DataArguments())
    trainer = Trainer(model=model, args=_args(tmp_path, learning_rate=2e-3), train_dataset=data["train"],
                      eval_dataset=data["validation"], compute_metrics=segcls_compute_metrics(),
                      preprocess_logits_for_metrics=segcls_preprocess_logits_for_metrics)
    assert trainer.label_names == ["labels", "class_labels"]
    trainer.train()
    metrics = trainer.evaluate()
    for key in ("eval_dice", "eval_jaccard", "eval_accuracy", "eval_precision", "eval_recall", "eval_loss"):
        assert key in metrics
    assert torch.isfinite(torch.tensor(metrics["eval_loss"]))
    # batch by batch (no whole-split masks held): the same numbers
    batched = Trainer(model=model, args=_args(tmp_path, batch_eval_metrics=True), eval_dataset=data["validation"],
                      compute_metrics=segcls_compute_metrics(),
                      preprocess_logits_for_metrics=segcls_preprocess_logits_for_metrics).evaluate()
    keys = ("eval_dice", "eval_jaccard", "eval_hd95", "eval_asd", "eval_dice_positive", "eval_accuracy",
            "eval_precision", "eval_recall")
    assert {k: batched[k] for k in keys} == {k: metrics[k] for k in keys}


def test_singlelabel_compute_metrics_matches_scikit_learn():
    import numpy as np
    from sklearn.metrics import accuracy_score, precision_score, recall_score
    from transformers import EvalPrediction

    from medmae.training.trainer_utils import singlelabel_compute_metrics

    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((40, 3)), rng.integers(0, 3, 40)
    out = singlelabel_compute_metrics(["normal", "benign", "malignant"])(EvalPrediction(logits, labels))
    predicted = logits.argmax(1)
    assert out["accuracy"] == accuracy_score(labels, predicted)
    assert out["precision"] == precision_score(labels, predicted, average="macro", zero_division=0)
    assert out["recall/benign"] == recall_score(labels, predicted, labels=[1], average="macro", zero_division=0)
