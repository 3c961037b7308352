# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""ETMAE's training tasks.

* :class:`Pretraining`: MAE pre-training of a teacher (``--task pretraining``), or of the ViT-Tiny student
  distilled from a frozen teacher (``--task distillation --teacher PATH``): loss = reconstruction + the L1 feature
  alignment at 3/4 depth, the teacher seeing the images with the statistics of its own pre-training.
* :class:`Finetuning`: multi-label classification (mean-pool head, BCE, CheXpert's ``label_mask``; best on
  validation mAUC), or single-label classification on data with one class per image (cross-entropy; best on
  accuracy).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from ...configuration.configuration_etmae import align_layer_at_three_quarters
from ...modeling.convert import load_teacher
from ...modeling.image_processing_medmae import NORMALIZATION_PRESETS, TEACHER_SOURCE_STATISTICS
from ..figures import roc_curves
from ..provenance import model_folder, weights_sha256
from .base import model_config
from .finetuning import FinetuningTask
from .pretraining import MAEPretraining

logger = logging.getLogger(__name__)  # before the Accelerator exists: plain logging, main process only (runtime)


class Pretraining(MAEPretraining):
    teacher = None  # the frozen teacher of --task distillation

    def build_model(self):
        """The family's model (``MAEPretraining.build_model``); for distillation first the teacher, whose width and
        depth set the alignment fields, then given to the student with its input statistics."""
        m = self.model_args
        if self.task == "distillation":
            check_teacher_statistics_choice(m.teacher, m.teacher_normalization)
            self.teacher = load_teacher(_teacher_source(m.teacher), num_heads=m.teacher_num_heads)
        model = super().build_model()
        if self.teacher is not None:
            statistics, how = teacher_statistics(m.teacher, m.teacher_normalization, self.teacher)
            model.set_teacher(self.teacher, **statistics)
            logger.info(f"teacher input statistics: {how}")
            self.teacher_info = {"teacher": Path(m.teacher).name, "teacher_sha256": weights_sha256(m.teacher),
                                 "teacher_statistics": how}
        return model

    def config_fields(self) -> dict:
        if self.teacher is None:
            return {"teacher_hidden_size": None}  # no teacher: no alignment projection
        fields = {"teacher_hidden_size": self.teacher.config.hidden_size}
        if "teacher_align_layer" not in (self.model_args.config_overrides or ""):
            fields["teacher_align_layer"] = align_layer_at_three_quarters(self.teacher.config.num_hidden_layers)
        return fields

    def with_extra_columns(self, splits: dict) -> tuple[dict, tuple[str, ...]]:
        """``source`` when the teacher's statistics are chosen per source; a single dataset is its own source."""
        if not getattr(self.model.config, "teacher_source_statistics", None):
            return splits, ()
        if "source" not in splits["train"].column_names:
            source = self.data_args.dataset.strip().lower().replace("-", "_")
            splits = {name: ds.add_column("source", [source] * len(ds)) for name, ds in splits.items()}
        return splits, ("source",)

    def compute_loss(self, model, batch):
        extra = {"teacher_source": batch["source"]} if "source" in batch else {}
        out = model(pixel_values=batch["pixel_values"], **extra)
        return out.loss, self.loss_parts(out)

    def run_info_extra(self) -> dict:
        return {**super().run_info_extra(), **getattr(self, "teacher_info", {})}


class Finetuning(FinetuningTask):
    def build_model(self, names: list[str]):
        """``ETMAEForImageClassification`` with ``names`` as its labels, new or from ``--init_from`` (whose encoder
        must transfer: a missing block is an error)."""
        m = self.model_args
        problem_type = "multi_label_classification" if self.kind == "multilabel" else "single_label_classification"
        fields = dict(num_labels=len(names), problem_type=problem_type,
                      id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
        if m.drop_path_rate is not None:
            fields["drop_path_rate"] = m.drop_path_rate
        cls = self.model_class()
        if not m.init_from:
            return cls(model_config(m, self.data_args, teacher_hidden_size=None, **fields))
        model, info = cls.from_pretrained(model_folder(m.init_from), output_loading_info=True, **fields)
        new = sorted(info.get("missing_keys") or [])
        if any(k.startswith("etmae.blocks") or k.startswith("etmae.patch_embed") for k in new):
            raise ValueError(f"{m.init_from}: the encoder was not transferred (missing {new[:4]})")
        self.transfer_report = {"initialised": new, "dropped": sorted(info.get("unexpected_keys") or [])}
        return model

    def compute_loss(self, model, batch):
        """The model's own loss: BCE with CheXpert's ``label_mask`` ("ignore" policy), or cross-entropy."""
        out = model(pixel_values=batch["pixel_values"], labels=batch["labels"], label_mask=batch.get("label_mask"))
        return out.loss, {}

    def figures(self, model, accelerator, figures_dir: Path, title: str) -> list[Path]:
        """ROC curves per label of the last evaluation (multi-label)."""
        preds = getattr(self, "last_predictions", None)
        if self.kind != "multilabel" or preds is None:
            return []
        return [roc_curves(preds["probabilities"], preds["labels"], self.label_names, figures_dir / "roc_curves.png",
                           preds.get("label_mask"), title=title)]


def teacher_normalization_choices() -> list[str]:
    """The names ``--teacher_normalization`` accepts: per-source sets, then single statistics."""
    return sorted(TEACHER_SOURCE_STATISTICS) + sorted(NORMALIZATION_PRESETS)


def check_teacher_statistics_choice(path: str, choice: Optional[str]) -> None:
    """Before the teacher is loaded: an unknown choice, or a ``.pth`` teacher without one, is an error."""
    choices = teacher_normalization_choices()
    if choice is not None and choice not in choices:
        raise ValueError(f"unknown --teacher_normalization {choice!r}; choose one of {', '.join(choices)}")
    if choice is None and Path(path).is_file():
        raise ValueError(f"teacher {Path(path).name} is a checkpoint file without input statistics: say what the "
                         f"teacher was pre-trained with, --teacher_normalization {' | '.join(choices)} (medical_mae: "
                         "NIH mean 0.5056 / std 0.252 and CheXpert ImageNet statistics, per image by source)")


def teacher_statistics(path: str, choice: Optional[str], teacher) -> tuple[dict, str]:
    """The input statistics the teacher saw in its own pre-training, as ``set_teacher`` keyword arguments, and a
    sentence saying how they were chosen (logged and kept in run_info.json). Never a silent default: call
    :func:`check_teacher_statistics_choice` first (a ``.pth`` teacher carries no statistics, so
    ``--teacher_normalization`` must say which); without a choice, the teacher folder's config decides."""
    if choice in TEACHER_SOURCE_STATISTICS:
        stats = TEACHER_SOURCE_STATISTICS[choice]
        return {"source_statistics": stats}, f"--teacher_normalization {choice}: per source " + ", ".join(
            f"{s} mean {v['image_mean'][0]:.4g} std {v['image_std'][0]:.4g}" for s, v in stats.items())
    if choice in NORMALIZATION_PRESETS:
        mean, std = NORMALIZATION_PRESETS[choice]
        return {"image_mean": mean, "image_std": std}, f"--teacher_normalization {choice}: mean {mean} std {std}"
    config = teacher.config
    if getattr(config, "teacher_source_statistics", None) or getattr(config, "image_mean", None) is None:
        raise ValueError(f"teacher {Path(path).name}: its config records no single input statistics; give "
                         f"--teacher_normalization {' | '.join(teacher_normalization_choices())}")
    return ({"image_mean": config.image_mean, "image_std": config.image_std},
            f"the teacher folder's config: mean {config.image_mean} std {config.image_std}")


def _teacher_source(path: str):
    """A run folder -> its final/; anything else as given (folder, .pth, .safetensors)."""
    candidate = Path(path)
    if (candidate / "final" / "config.json").is_file():
        return candidate / "final"
    return path

