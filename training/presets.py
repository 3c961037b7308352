# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""The papers' recipes as named presets (``--preset NAME``, ``--list_presets``): plain dicts of field values of the
argument dataclasses of :mod:`medmae.training.args`, whose :func:`~medmae.training.args.parse_args` applies them
above the defaults and below ``--config`` and the flags; and the effective batch each recipe was published with.
Like ``args.py``, this module imports no torch or transformers (``medmae pretrain --help`` reads :data:`PRESETS`).

Recipe sources (``design/method-notes.md``):

* SDDA-MAE (section 5.1, A12-A13): pre-training AdamW (0.9, 0.95), lr 2e-4 absolute, wd 0.05, per-iteration
  cosine with a 10 % warm-up, 400 / 200 epochs, batch 24 / 12 (SIIM-ACR / BUSI), mask ratio 0.6, 512 px.
  Fine-tuning SIIM-ACR: AdamW + cosine, lr 1.5e-3, 100 epochs, batch 24. Fine-tuning BUSI: lr 0.01 read as
  an SGD rate (momentum 0.9, wd 1e-4, poly 0.9; A12), 50 epochs, batch 12.
* ETMAE (sections 3.3-3.5): distillation = DMAE recipe, base lr 1.5e-4 scaled by effective batch / 256,
  AdamW (0.9, 0.95), wd 0.05, 100 epochs, 20 warm-up epochs, mask 0.75, per-GPU batch 32 (x4 accumulation
  in the ETMAE scripts). Teacher MAE pre-training = medical_mae recipe (mask 0.9, blr 1.5e-4, warm-up 40,
  800 epochs). Fine-tuning = medical_mae: blr 2.5e-4, layer decay 0.55, wd 0.05, AdamW (0.9, 0.999),
  5 warm-up epochs, min lr 1e-5, drop path 0.2, mean-pool head, BCE, 100 epochs (ETMAE paper), batch 32.
  Chest X-ray statistics 0.5056 / 0.252 (medical_mae), which the released teachers expect.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Optional


_SDDA_PRE = dict(family="sdda_mae", task="pretraining", model_preset="sdda_mae_512", optimizer="adamw",
                 learning_rate=2e-4, weight_decay=0.05, adam_beta1=0.9, adam_beta2=0.95, lr_scheduler_type="cosine",
                 warmup_ratio=0.1, mask_ratio=0.6, crop_scale_min=0.5, normalization="imagenet")
_SDDA_FT = dict(family="sdda_mae", task="segmentation_classification", model_preset="sdda_mae_512",
                transfer="encoder_decoder", crop_scale_min=0.5, metric_for_best_model="dice", normalization="imagenet")
_ETMAE_DISTILL = dict(family="etmae", task="distillation", model_preset="vit_tiny_patch16_dec512d2b", optimizer="adamw",
                      blr=1.5e-4, weight_decay=0.05, adam_beta1=0.9, adam_beta2=0.95, lr_scheduler_type="cosine",
                      warmup_epochs=20, num_train_epochs=100, per_device_train_batch_size=32,
                      gradient_accumulation_steps=4, mask_ratio=0.75, normalization="cxr",
                      teacher_normalization="medical_mae", dataset="chestxray14+chexpert")
_ETMAE_TEACHER = dict(family="etmae", model_preset="vit_small_patch16_dec512d2b",
                      optimizer="adamw", blr=1.5e-4, weight_decay=0.05, adam_beta1=0.9, adam_beta2=0.95,
                      lr_scheduler_type="cosine", warmup_epochs=40, num_train_epochs=800,
                      per_device_train_batch_size=256, mask_ratio=0.9, crop_scale_min=0.5, normalization="cxr")
_ETMAE_FT = dict(family="etmae", task="multilabel_classification", model_preset="vit_tiny_patch16_dec512d2b",
                 optimizer="adamw", blr=2.5e-4, layer_decay=0.55, weight_decay=0.05, adam_beta1=0.9,
                 adam_beta2=0.999, lr_scheduler_type="cosine", warmup_epochs=5, min_lr=1e-5, drop_path_rate=0.2,
                 num_train_epochs=100, per_device_train_batch_size=32, crop_scale_min=0.08, normalization="cxr",
                 metric_for_best_model="mauc", augmentation="medical_mae")

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "pretrain": {
        "busi": dict(_SDDA_PRE, dataset="busi", num_train_epochs=200, per_device_train_batch_size=12),
        "siim_acr": dict(_SDDA_PRE, dataset="siim_acr", num_train_epochs=400, per_device_train_batch_size=24),
        # ETMAE distils on NIH and CheXpert together (paper section 4.1): both presets use the combined set
        "chestxray14": _ETMAE_DISTILL,
        "chexpert": _ETMAE_DISTILL,
        "chestxray14_teacher": dict(_ETMAE_TEACHER, dataset="chestxray14"),
        "chexpert_teacher": dict(_ETMAE_TEACHER, dataset="chexpert"),
        # Laptop-sized runs on the synthetic sets (what `medmae demo` runs, in its full-size setting).
        "demo": dict(family="sdda_mae", task="pretraining", dataset="synthetic_ultrasound", model_preset="tiny_test",
                     optimizer="adamw", learning_rate=2e-3, weight_decay=0.05, adam_beta2=0.95,
                     lr_scheduler_type="cosine", warmup_ratio=0.1, num_train_epochs=8, per_device_train_batch_size=16,
                     mask_ratio=0.6, dataset_kwargs='{"num_images": 400, "image_size": 64}'),
        "demo_etmae_teacher": dict(family="etmae", dataset="synthetic_cxr",
                                   model_preset="tiny_test", optimizer="adamw", blr=1.5e-3, weight_decay=0.05,
                                   lr_scheduler_type="cosine", warmup_ratio=0.1, num_train_epochs=10,
                                   per_device_train_batch_size=32, mask_ratio=0.75,
                                   dataset_kwargs='{"num_images": 600, "image_size": 32}'),
    },
    "finetune": {
        "busi": dict(_SDDA_FT, dataset="busi", optimizer="sgd", learning_rate=0.01, momentum=0.9, weight_decay=1e-4,
                     weight_decay_rule="all", lr_scheduler_type="poly", poly_power=0.9, num_train_epochs=50,
                     per_device_train_batch_size=12),
        "siim_acr": dict(_SDDA_FT, dataset="siim_acr", optimizer="adamw", learning_rate=1.5e-3, weight_decay=0.05,
                         adam_beta1=0.9, adam_beta2=0.999, lr_scheduler_type="cosine", warmup_ratio=0.1,
                         num_train_epochs=100, per_device_train_batch_size=24),
        "chestxray14": dict(_ETMAE_FT, dataset="chestxray14"),
        "chexpert": dict(_ETMAE_FT, dataset="chexpert", dataset_kwargs='{"uncertainty": "mixed"}'),
        "demo": dict(family="sdda_mae", task="segmentation_classification", dataset="synthetic_ultrasound",
                     model_preset="tiny_test", optimizer="adamw", learning_rate=2e-3, weight_decay=0.05,
                     adam_beta2=0.999, lr_scheduler_type="cosine", warmup_ratio=0.1, num_train_epochs=10,
                     per_device_train_batch_size=16, metric_for_best_model="dice",
                     dataset_kwargs='{"num_images": 400, "image_size": 64}'),
        "demo_etmae": dict(family="etmae", task="multilabel_classification", dataset="synthetic_cxr",
                           model_preset="tiny_test", optimizer="adamw", blr=2e-3, layer_decay=0.75,
                           weight_decay=0.05, adam_beta2=0.999, lr_scheduler_type="cosine", warmup_ratio=0.1,
                           num_train_epochs=10, per_device_train_batch_size=32, metric_for_best_model="mauc",
                           dataset_kwargs='{"num_images": 600, "image_size": 32}'),
    },
}

# The effective batch (per-device batch x accumulation x devices) each recipe was published with: ETMAE's authors
# ran 4 GPUs (distillation 32 x 4 accumulation x 4 = 512, absolute lr 3e-4; fine-tuning 32 x 4 = 128, lr 1.25e-4).
PAPER_EFFECTIVE_BATCH = {
    ("pretrain", "chestxray14"): 512, ("pretrain", "chexpert"): 512,
    ("finetune", "chestxray14"): 128, ("finetune", "chexpert"): 128,
    ("pretrain", "busi"): 12, ("pretrain", "siim_acr"): 24, ("finetune", "busi"): 12, ("finetune", "siim_acr"): 24,
}


def effective_batch_report(script: str, preset: Optional[str], batch_size: int, accumulation: int, processes: int,
                           lr: float, scaled: bool = True) -> tuple[str, Optional[str]]:
    """(start-up line with the effective batch and absolute lr, warning or None). The warning fires when a paper
    preset runs at under half its published effective batch, and says how many accumulation steps restore it;
    ``scaled``: the lr follows the batch (``--blr``)."""
    effective = batch_size * accumulation * processes
    line = (f"effective batch {effective} ({batch_size} per device x {accumulation} accumulation x {processes} "
            f"process(es)), absolute lr {lr:.3g}")
    paper = PAPER_EFFECTIVE_BATCH.get((script, str(preset or "").strip().lower().replace("-", "_")))
    if paper is None or effective * 2 > paper:
        return line, None
    needed = math.ceil(paper / (batch_size * processes))
    lr_note = ", and the base-lr scaling lowers the lr with it" if scaled else ""
    return line, (f"--preset {preset} was published with an effective batch of {paper}; this run's is {effective} "
                  f"({paper / effective:.0f}x smaller{lr_note}). To match, use --gradient_accumulation_steps "
                  f"{needed} (or more devices).")


def list_presets(script: str) -> list[str]:
    return sorted(PRESETS.get(script, {}))


def preset_values(script: str, name: str) -> dict[str, Any]:
    """The field values of a named recipe; ValueError naming the valid presets for an unknown name."""
    presets = PRESETS.get(script, {})
    key = str(name).strip().lower().replace("-", "_")
    if key not in presets:
        raise ValueError(f"unknown {script} preset {name!r}; valid presets: {', '.join(sorted(presets))}")
    return copy.deepcopy(presets[key])
