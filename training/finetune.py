# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Fine-tuning with Accelerate.

* SDDA-MAE: joint segmentation + classification (``SDDAMAEForSegmentationAndClassification``) from a
  pre-training checkpoint, encoder+decoder transfer (the paper) or encoder only (``--transfer encoder``);
  loss ``0.5 (Dice + CE) + 0.5 (CE + focal)``; best checkpoint on validation Dice.
* ETMAE: multi-label classification (``ETMAEForImageClassification``, mean-pool head, BCE) with layer-wise
  lr decay (0.55 in the recipe); best checkpoint on validation mAUC. On data with one class per image (e.g.
  ``--dataset imagefolder`` with a folder per class): single-label classification (cross-entropy), best
  checkpoint on validation accuracy.

    accelerate launch -m medmae.training.finetune --preset busi --data_root /data/BUSI --init_from runs/busi_pt
    medmae finetune --preset chestxray14 --data_root /data/NIH --init_from runs/etmae_student
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from .args import resolve_task
from .evaluate import KINDS, classification_table, compute_metrics, label_names_of, mauc_table, predict, segmentation_table
from .loop import (
    TrainingTask,
    attach_transforms,
    load_splits,
    model_config,
    model_folder,
    run_script,
    split_record,
    synthetic_defaults,
)


def _single_label(splits) -> bool:
    """One class per image (a ``label`` ClassLabel, no multi-label ``labels``, no masks): e.g. an imagefolder."""
    columns = splits["train"].column_names
    return "label" in columns and "labels" not in columns and "mask" not in columns


class FinetuneTask(TrainingTask):
    def build(self) -> None:
        from ..modeling.image_processing_medmae import processor_for_config

        m, d = self.model_args, self.data_args
        self.family = m.family
        if bool(m.init_from) == m.from_scratch:
            raise ValueError("medmae finetune: give --init_from (the pre-training run or weights to start from) or "
                             "--from_scratch (random initial weights, deliberately)" if not m.init_from else
                             f"medmae finetune: --init_from {m.init_from} and --from_scratch contradict each other")
        image_size = self._image_size()
        splits = load_splits(d, image_size, **synthetic_defaults(d, image_size))
        info = getattr(splits, "medmae_split_info", {}) or {}
        self.split_source_info = info
        self.task = resolve_task("finetune", m, single_label_data=_single_label(splits))
        self.kind = KINDS[self.task]
        self._check_columns(splits)
        if self.metric_for_best is None and not self.run_args.metric_for_best_model:
            self.metric_for_best = {"multilabel": "mauc", "singlelabel": "accuracy"}.get(self.kind, "dice")
        if self.kind == "multilabel":
            num_labels = len(splits["train"][0]["labels"])
            self.label_names = label_names_of(splits, d.dataset, num_labels)
            self.model = self._etmae_model(self.label_names, "multi_label_classification")
        elif self.kind == "singlelabel":
            self.label_names = list(splits["train"].features["label"].names)
            self.model = self._etmae_model(self.label_names, "single_label_classification") \
                if m.family == "etmae" else self._sdda_model(self.label_names)
        else:
            self.label_names = list(splits["train"].features["label"].names)
            self.model = self._sdda_model(self.label_names)
        self.seg_classes = list(self.model.config.id2label.values()) if self.kind == "segcls" else []
        self.processor = processor_for_config(self.model.config)
        self.split_info = {"split": split_record(splits, d, self.output_dir),
                           "uncertainty_policy": info.get("uncertainty")}
        splits = {name: ds.select_columns(self._columns(splits)) for name, ds in splits.items()}
        self.datasets = attach_transforms(splits, self.kind, self.processor, d,
                                          num_seg_classes=max(len(self.seg_classes), 2))

    def _columns(self, splits) -> list[str]:
        if self.kind == "multilabel":
            return ["image", "labels"] + (["label_mask"] if "label_mask" in splits["train"].column_names else [])
        return ["image", "label"] if self.kind == "singlelabel" else ["image", "mask", "label"]

    def _check_columns(self, splits) -> None:
        """The data must carry what the task trains on; say which column is missing and what would provide it."""
        need = {"multilabel": ["labels"], "singlelabel": ["label"], "segcls": ["mask", "label"]}[self.kind]
        missing = [c for c in need if c not in splits["train"].column_names]
        if missing:
            raise ValueError(f"--task {self.task} needs the column(s) {missing} in --dataset {self.data_args.dataset}, "
                             f"which has {splits['train'].column_names}" + (
                                 ": the data is unlabelled (an imagefolder without class sub-folders): pre-train on "
                                 "it, or put the images in one folder per class" if not {"label", "labels"} &
                                 set(splits["train"].column_names) else ""))

    # -- models --------------------------------------------------------------------------------------
    def _image_size(self) -> int:
        if self.model_args.init_from:
            from transformers import AutoConfig

            return AutoConfig.from_pretrained(model_folder(self.model_args.init_from)).image_size
        return self.data_args.image_size or model_config(self.model_args, None).image_size

    def _etmae_model(self, names: list[str], problem_type: str):
        from ..modeling import ETMAEForImageClassification

        m = self.model_args
        fields = dict(num_labels=len(names), problem_type=problem_type,
                      id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
        if m.drop_path_rate is not None:
            fields["drop_path_rate"] = m.drop_path_rate
        if not m.init_from:
            return ETMAEForImageClassification(model_config(m, self.data_args, teacher_hidden_size=None, **fields))
        model, info = ETMAEForImageClassification.from_pretrained(model_folder(m.init_from), output_loading_info=True,
                                                                  **fields)
        new = sorted(info.get("missing_keys") or [])
        if any(k.startswith("etmae.blocks") or k.startswith("etmae.patch_embed") for k in new):
            raise ValueError(f"{m.init_from}: the encoder was not transferred (missing {new[:4]})")
        self.transfer_report = {"initialised": new, "dropped": sorted(info.get("unexpected_keys") or [])}
        return model

    def _sdda_model(self, names: list[str]):
        """The joint model (diagnoses in ``cls_id2label``), or for single-label data the image classifier (its
        classes in ``id2label``, CE + focal loss as the paper's diagnosis term)."""
        from ..modeling import SDDAMAEForImageClassification, SDDAMAEForSegmentationAndClassification

        m = self.model_args
        labels = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
        if self.kind == "singlelabel":
            cls, fields = SDDAMAEForImageClassification, dict(id2label=labels[0], label2id=labels[1],
                                                              problem_type="single_label_classification")
        else:
            cls, fields = SDDAMAEForSegmentationAndClassification, dict(cls_id2label=labels[0], cls_label2id=labels[1])
            seg = (getattr(self, "split_source_info", {}) or {}).get("segmentation_classes")
            if seg:  # several foreground classes (segfolder with classes.json): the segmentation head's classes
                fields.update(id2label=dict(enumerate(seg)), label2id={n: i for i, n in enumerate(seg)})
        if m.drop_path_rate is not None:
            fields["drop_path_rate"] = m.drop_path_rate
        if not m.init_from:
            return cls(model_config(m, self.data_args, **fields))
        if m.transfer not in ("encoder_decoder", "encoder"):
            raise ValueError(f"--transfer must be encoder_decoder or encoder, got {m.transfer!r}")
        model = cls.from_pretraining(str(model_folder(m.init_from)), transfer=m.transfer, **fields)
        self.transfer_report = {"transferred": len(model.transferred_keys), "transfer": m.transfer}
        return model

    # -- training ------------------------------------------------------------------------------------
    def compute_loss(self, model, batch):
        if self.kind == "multilabel":  # the model's own loss (label_mask: CheXpert's "ignore" policy)
            out = model(pixel_values=batch["pixel_values"], labels=batch["labels"], label_mask=batch.get("label_mask"))
            return out.loss, {}
        if self.kind == "singlelabel":  # the model's own cross-entropy
            return model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss, {}
        out = model(pixel_values=batch["pixel_values"], labels=batch["labels"], class_labels=batch["class_labels"])
        return out.loss, {"segmentation_loss": out.segmentation_loss, "classification_loss": out.classification_loss}

    def evaluate(self, model, dataloader, accelerator) -> dict[str, float]:
        self.last_predictions = predict(model, dataloader, accelerator, self.kind, self.seg_classes)
        return compute_metrics(self.kind, self.last_predictions, self.label_names, self.seg_classes)

    def metrics_markdown(self, metrics: dict, split: str) -> str:
        method = f"{self.family} ({Path(self.model_args.init_from).name if self.model_args.init_from else 'scratch'})"
        dataset = f"{self.data_args.dataset} ({split})"
        if self.kind == "multilabel":
            return mauc_table({method: metrics}, dataset, {method: sum(p.numel() for p in self.model.parameters())})
        if self.kind == "singlelabel":
            return classification_table({method: metrics}, dataset)
        return segmentation_table({method: metrics}, dataset) + "\n" + classification_table({method: metrics}, dataset)

    def figures(self, model, accelerator, figures_dir: Path, title: str) -> list[Path]:
        from .figures import roc_curves, segmentation_overlays, to_display

        preds = getattr(self, "last_predictions", None)
        if self.kind == "singlelabel":
            return []  # the metrics table says it; no per-class figure yet
        if self.kind == "multilabel":
            if preds is None:
                return []
            return [roc_curves(preds["probabilities"], preds["labels"], self.label_names, figures_dir / "roc_curves.png",
                               preds.get("label_mask"), title=title)]
        source = self.datasets.get("test") or self.datasets.get("validation")
        if source is None or not len(source):
            return []
        batch = source[: min(8, len(source))]
        model.eval()
        with torch.no_grad():
            out = model(pixel_values=batch["pixel_values"].to(next(model.parameters()).device))
        images = to_display(batch["pixel_values"], self.processor.image_mean, self.processor.image_std)
        pred_class = out.class_logits.argmax(-1).tolist()
        captions = [f"{self.label_names[t]} -> {self.label_names[p]}"
                    for t, p in zip(batch["class_labels"].tolist(), pred_class)]
        return [segmentation_overlays(images, batch["labels"].numpy(), out.logits.argmax(1).cpu().numpy(),
                                      figures_dir / "segmentation_overlays.png", captions, title=title)]

    def run_info_extra(self) -> dict:
        extra = {**super().run_info_extra(), "label_names": self.label_names}
        preds = getattr(self, "last_predictions", None)
        if preds:
            extra["eval_num_items"] = len(next(iter(preds.values())))
        if self.model_args.init_from:
            extra["transfer"] = getattr(self, "transfer_report", None)
        return extra


def main(argv: Optional[Sequence[str]] = None) -> dict:
    return run_script("finetune", FinetuneTask, argv)


if __name__ == "__main__":
    main()
