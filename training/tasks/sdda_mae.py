# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""SDDA-MAE's training tasks.

* :class:`Pretraining`: window-masked MAE reconstruction + self-distillation from the decoder (teacher) to the
  encoder (student), ``loss = MSE + sd_weight * L_SD`` (optionally ramped in over the lr warm-up,
  ``--sd_warmup``), with the self-distillation diagnostics logged (teacher entropy, agreement, and at logging steps
  the ratio of the two losses' gradients on the encoder).
* :class:`Finetuning`: joint segmentation + classification (``SDDAMAEForSegmentationAndClassification``) from a
  pre-training checkpoint, encoder+decoder transfer (the paper) or encoder only (``--transfer encoder``);
  ``0.5 (Dice + CE) + 0.5 (CE + focal)``; best on validation Dice. On data with one class per image: the image
  classifier (CE + focal as the paper's diagnosis term), best on accuracy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...modeling.modeling_sdda_mae import self_distillation_diagnostics
from ..figures import segmentation_overlays, to_display
from ..provenance import model_folder
from .base import model_config
from .finetuning import FinetuningTask
from .pretraining import MAEPretraining


class Pretraining(MAEPretraining):
    def compute_loss(self, model, batch):
        out = model(pixel_values=batch["pixel_values"])
        parts = {**self.loss_parts(out),
                 **self_distillation_diagnostics(out.sd_teacher_probs, out.sd_student_log_probs)}
        weight, loss = self.model.config.sd_weight, out.loss
        if self.model_args.sd_warmup and model.training and self.warmup_steps:
            weight *= min(self.global_step / self.warmup_steps, 1.0)  # the lr warm-up's linear ramp
            loss = out.reconstruction_loss + weight * out.self_distillation_loss
            parts["sd_weight"] = out.self_distillation_loss.new_tensor(weight)
        if self.diagnostics_due and torch.is_grad_enabled():
            parts["sd_grad_ratio"] = sd_gradient_ratio(model, out, weight)
        return loss, parts


def sd_gradient_ratio(model, out, weight: float) -> torch.Tensor:
    """``||d(weight * L_SD)/d encoder|| / ||d L_MSE/d encoder||`` on this batch's graph (kept for the backward):
    how strongly self-distillation pulls on the encoder relative to reconstruction (0-d tensor)."""
    unwrapped = model.module if hasattr(model, "module") else model
    encoder = [p for p in unwrapped.sdda_mae.parameters() if p.requires_grad]

    def norm(loss):
        grads = torch.autograd.grad(loss, encoder, retain_graph=True, allow_unused=True)
        return torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))

    return (norm(weight * out.self_distillation_loss) / norm(out.reconstruction_loss).clamp_min(1e-12)).detach()


class Finetuning(FinetuningTask):
    def build_model(self, names: list[str]):
        """The joint model (diagnoses in ``cls_id2label``), or for single-label data the image classifier (its
        classes in ``id2label``), new or transferred from a pre-training checkpoint (``--transfer``)."""
        m = self.model_args
        labels = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
        if self.kind == "singlelabel":
            fields = dict(id2label=labels[0], label2id=labels[1], problem_type="single_label_classification")
        else:
            fields = dict(cls_id2label=labels[0], cls_label2id=labels[1])
            seg = self.split_source_info.get("segmentation_classes")
            if seg:  # several foreground classes (segfolder with classes.json): the segmentation head's classes
                fields.update(id2label=dict(enumerate(seg)), label2id={n: i for i, n in enumerate(seg)})
        if m.drop_path_rate is not None:
            fields["drop_path_rate"] = m.drop_path_rate
        cls = self.model_class()
        if not m.init_from:
            return cls(model_config(m, self.data_args, **fields))
        if m.transfer not in ("encoder_decoder", "encoder"):
            raise ValueError(f"--transfer must be encoder_decoder or encoder, got {m.transfer!r}")
        model = cls.from_pretraining(str(model_folder(m.init_from)), transfer=m.transfer, **fields)
        self.transfer_report = {"transferred": len(model.transferred_keys), "transfer": m.transfer}
        return model

    def compute_loss(self, model, batch):
        if self.kind == "singlelabel":  # the model's own CE + focal
            return model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss, {}
        out = model(pixel_values=batch["pixel_values"], labels=batch["labels"], class_labels=batch["class_labels"])
        return out.loss, {"segmentation_loss": out.segmentation_loss, "classification_loss": out.classification_loss}

    def figures(self, model, accelerator, figures_dir: Path, title: str) -> list[Path]:
        """Predicted and true masks over up to eight test (else validation) images, captioned true -> predicted
        diagnosis (the joint model)."""
        source = self.datasets.get("test") or self.datasets.get("validation")
        if self.kind != "segcls" or source is None or not len(source):
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
