# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""What fine-tuning is for every family: labelled splits, the task chosen from the family and the data, the
columns each task needs, predictions and the papers' metrics on validation and test, and the metrics tables. A
family's ``Finetuning`` (``training/tasks/<family>.py``) builds its model for the task and computes its loss."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig

from ...modeling.image_processing_medmae import processor_for_config
from ..dataloading import attach_transforms, load_splits, split_record, synthetic_defaults
from ..evaluate import compute_metrics, label_names_of, markdown_for, predict
from ..families import BEST_METRIC, TASK_KINDS, resolve_task
from ..provenance import model_folder
from .base import TrainingTask, model_config

NEEDED_COLUMNS = {"multilabel": ["labels"], "singlelabel": ["label"], "segcls": ["mask", "label"]}
OPTIONAL_COLUMNS = {"multilabel": ["label_mask"], "singlelabel": [], "segcls": []}


class FinetuningTask(TrainingTask):
    """Set the model in :meth:`build_model` (given the label names) and the loss in :meth:`compute_loss`."""

    kind: str = ""  # multilabel | singlelabel | segcls (families.TASK_KINDS)

    def build(self) -> None:
        m, d = self.model_args, self.data_args
        self.family = m.family
        if bool(m.init_from) == m.from_scratch:
            raise ValueError("medmae finetune: give --init_from (the pre-training run or weights to start from) or "
                             "--from_scratch (random initial weights, deliberately)" if not m.init_from else
                             f"medmae finetune: --init_from {m.init_from} and --from_scratch contradict each other")
        image_size = self._image_size()
        splits = load_splits(d, image_size, **synthetic_defaults(d, image_size))
        self.split_source_info = getattr(splits, "medmae_split_info", {}) or {}
        self.task = resolve_task("finetune", m, single_label_data=_single_label(splits))
        self.kind = TASK_KINDS[self.task]
        self._check_columns(splits)
        if self.metric_for_best is None and not self.run_args.metric_for_best_model:
            self.metric_for_best = BEST_METRIC[self.kind]
        self.label_names = self._label_names(splits)
        self.model = self.build_model(self.label_names)
        self.seg_classes = list(self.model.config.id2label.values()) if self.kind == "segcls" else []
        self.processor = processor_for_config(self.model.config)
        self.split_info = {"split": split_record(splits, d, self.output_dir),
                           "uncertainty_policy": self.split_source_info.get("uncertainty")}
        splits = {name: ds.select_columns(self._columns(splits)) for name, ds in splits.items()}
        self.datasets = attach_transforms(splits, self.kind, self.processor, d,
                                          num_seg_classes=max(len(self.seg_classes), 2))

    def build_model(self, names: list[str]):
        raise NotImplementedError

    def _label_names(self, splits) -> list[str]:
        if self.kind == "multilabel":
            return label_names_of(splits, self.data_args.dataset, len(splits["train"][0]["labels"]))
        return list(splits["train"].features["label"].names)

    def _columns(self, splits) -> list[str]:
        """The image, the task's columns, and CheXpert's ``label_mask`` when the data has it."""
        optional = [c for c in OPTIONAL_COLUMNS[self.kind] if c in splits["train"].column_names]
        return ["image", *NEEDED_COLUMNS[self.kind], *optional]

    def _check_columns(self, splits) -> None:
        """The data must carry what the task trains on; say which column is missing and what would provide it."""
        missing = [c for c in NEEDED_COLUMNS[self.kind] if c not in splits["train"].column_names]
        if missing:
            raise ValueError(f"--task {self.task} needs the column(s) {missing} in --dataset {self.data_args.dataset}, "
                             f"which has {splits['train'].column_names}" + (
                                 ": the data is unlabelled (an imagefolder without class sub-folders): pre-train on "
                                 "it, or put the images in one folder per class" if not {"label", "labels"} &
                                 set(splits["train"].column_names) else ""))

    def _image_size(self) -> int:
        if self.model_args.init_from:
            return AutoConfig.from_pretrained(model_folder(self.model_args.init_from)).image_size
        return self.data_args.image_size or model_config(self.model_args, None).image_size

    def evaluate(self, model, dataloader, accelerator) -> dict[str, float]:
        self.last_predictions = predict(model, dataloader, accelerator, self.kind, self.seg_classes)
        return compute_metrics(self.kind, self.last_predictions, self.label_names, self.seg_classes)

    def metrics_markdown(self, metrics: dict, split: str) -> str:
        method = f"{self.family} ({Path(self.model_args.init_from).name if self.model_args.init_from else 'scratch'})"
        return markdown_for(self.kind, metrics, method, f"{self.data_args.dataset} ({split})",
                            sum(p.numel() for p in self.model.parameters()))

    def run_info_extra(self) -> dict:
        extra = {**super().run_info_extra(), "label_names": self.label_names}
        preds = getattr(self, "last_predictions", None)
        if preds:
            extra["eval_num_items"] = len(next(iter(preds.values())))
        if self.model_args.init_from:
            extra["transfer"] = getattr(self, "transfer_report", None)
        return extra


def _single_label(splits) -> bool:
    """One class per image (a ``label`` ClassLabel, no multi-label ``labels``, no masks): e.g. an imagefolder."""
    columns = splits["train"].column_names
    return "label" in columns and "labels" not in columns and "mask" not in columns
