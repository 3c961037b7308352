# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Pre-training with Accelerate: SDDA-MAE (masked MSE + self-distillation), ETMAE teacher MAE pre-training,
and ETMAE student distillation from a teacher given as a path.

    accelerate launch -m medmae.training.pretrain --preset busi --data_root /data/BUSI --output_dir runs/busi_pt
    medmae pretrain --family etmae --teacher runs/teacher --dataset synthetic_cxr --output_dir runs/student
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m medmae.training.pretrain --preset demo ...

Arguments: ``medmae pretrain --help`` (``training/args.py``); recipes: ``--preset`` (``--list_presets``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..modeling.modeling_sdda_mae import self_distillation_diagnostics
from .args import resolve_task
from .loop import (
    TrainingTask,
    attach_transforms,
    fixed_rng,
    load_splits,
    model_config,
    model_folder,
    run_script,
    split_record,
    synthetic_defaults,
    weights_sha256,
)


def teacher_align_layer(depth: int) -> int:
    """ETMAE / DMAE: align at 3/4 depth -> 0-based block ``3 * depth // 4 - 1`` (8 of 12; 2 of 4)."""
    return max(3 * depth // 4 - 1, 0)


class PretrainTask(TrainingTask):
    def build(self) -> None:
        from ..modeling import ETMAEForPreTraining, SDDAMAEForPreTraining
        from ..modeling.image_processing_medmae import NORMALIZATION_PRESETS, processor_for_config

        m, d = self.model_args, self.data_args
        self.family = m.family
        self.task = resolve_task("pretrain", m)
        if m.family == "etmae":
            teacher = None
            fields = {"teacher_hidden_size": None}
            if self.task == "distillation":
                from ..modeling.convert import load_teacher

                teacher = load_teacher(_teacher_source(m.teacher), num_heads=m.teacher_num_heads)
                overrides = m.config_overrides or ""
                fields = {"teacher_hidden_size": teacher.config.hidden_size}
                if "teacher_align_layer" not in overrides:
                    fields["teacher_align_layer"] = teacher_align_layer(teacher.config.num_hidden_layers)
            config = model_config(m, d, **fields)
            model = ETMAEForPreTraining(config)
            if m.init_from:
                model = ETMAEForPreTraining.from_pretrained(model_folder(m.init_from), config=config)
            if teacher is not None:
                if m.teacher_normalization:
                    mean, std = NORMALIZATION_PRESETS[m.teacher_normalization]
                else:
                    mean, std = teacher.config.image_mean, teacher.config.image_std
                model.set_teacher(teacher, image_mean=mean, image_std=std)
                self.teacher_info = {"teacher": Path(m.teacher).name, "teacher_sha256": weights_sha256(m.teacher)}
        else:
            config = model_config(m, d)
            model = SDDAMAEForPreTraining(config)
            if m.init_from:
                model = SDDAMAEForPreTraining.from_pretrained(model_folder(m.init_from), config=config)
        self.model = model
        self.processor = processor_for_config(config)
        splits = load_splits(d, **synthetic_defaults(d, config.image_size))
        self.split_info = {"split": split_record(splits, d, self.output_dir),
                           "uncertainty_policy": getattr(splits, "medmae_split_info", {}).get("uncertainty")}
        keep = {name: splits[name].select_columns(["image"]) for name in ("train", "validation") if name in splits}
        self.datasets = attach_transforms(keep, "image", self.processor, d)

    def compute_loss(self, model, batch):
        out = model(pixel_values=batch["pixel_values"])
        parts = {"reconstruction_loss": out.reconstruction_loss}
        if self.family == "etmae":
            if getattr(out, "distillation_loss", None) is not None:
                parts["distillation_loss"] = out.distillation_loss
            return out.loss, parts
        parts["self_distillation_loss"] = out.self_distillation_loss
        parts.update(self_distillation_diagnostics(out.sd_teacher_probs, out.sd_student_log_probs))
        if self.diagnostics_due and torch.is_grad_enabled():
            parts["sd_grad_ratio"] = sd_gradient_ratio(model, out)
        return out.loss, parts
    @torch.no_grad()
    def evaluate(self, model, dataloader, accelerator) -> dict[str, float]:
        """Mean validation losses with a fixed masking seed (the training RNG is untouched)."""
        model.eval()
        totals: dict[str, list] = {}
        with fixed_rng(self.run_args.seed + 1, accelerator.device):
            for batch in dataloader:
                with accelerator.autocast():
                    loss, parts = self.compute_loss(model, batch)
                size = batch["pixel_values"].shape[0]
                for name, value in {"loss": loss, **parts}.items():
                    per_item = value.detach().float().reshape(1).expand(size).contiguous()
                    totals.setdefault(name, []).append(accelerator.gather_for_metrics(per_item).cpu())
        return {name: float(torch.cat(v).mean()) for name, v in totals.items()}

    def figures(self, model, accelerator, figures_dir: Path) -> list[Path]:
        from .figures import mae_reconstructions, to_display

        source = self.datasets.get("validation") or self.datasets["train"]
        if len(source) == 0:
            return []
        pixels = source[: min(4, len(source))]["pixel_values"].to(next(model.parameters()).device)
        model.eval()
        with torch.no_grad(), fixed_rng(self.run_args.seed + 2, accelerator.device):
            out = model(pixel_values=pixels)
        p = model.config.patch_size
        grid = (pixels.shape[-2] // p, pixels.shape[-1] // p)
        pred = model.unpatchify(out.logits.float(), grid)
        mask = out.mask.float().reshape(-1, 1, *grid)
        mask = mask.repeat_interleave(p, 2).repeat_interleave(p, 3)
        if model.config.norm_pix_loss:  # show the un-normalised prediction: patch statistics of the input
            target = model.patchify(pixels)
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            pred = model.unpatchify(out.logits.float() * (var + 1e-6) ** 0.5 + mean, grid)
        mean, std = self.processor.image_mean, self.processor.image_std
        original = to_display(pixels, mean, std)
        hidden = mask[:, 0].cpu().numpy() > 0.5
        masked = np.where(hidden if original.ndim == 3 else hidden[..., None], 0.5, original)
        pasted = to_display(pixels * (1 - mask) + pred * mask, mean, std)
        path = mae_reconstructions(original, masked, pasted, figures_dir / "reconstructions.png",
                                   title=f"{self.family} {self.task}: mask ratio {model.config.mask_ratio}")
        return [path]

    def run_info_extra(self) -> dict:
        return {**super().run_info_extra(), **getattr(self, "teacher_info", {})}


def sd_gradient_ratio(model, out) -> torch.Tensor:
    """``||d(sd_weight * L_SD)/d encoder|| / ||d L_MSE/d encoder||`` on this batch's graph (kept for the backward):
    how strongly self-distillation pulls on the encoder relative to reconstruction (0-d tensor)."""
    unwrapped = model.module if hasattr(model, "module") else model
    encoder = [p for p in unwrapped.sdda_mae.parameters() if p.requires_grad]

    def norm(loss):
        grads = torch.autograd.grad(loss, encoder, retain_graph=True, allow_unused=True)
        return torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))

    sd = unwrapped.config.sd_weight * out.self_distillation_loss
    return (norm(sd) / norm(out.reconstruction_loss).clamp_min(1e-12)).detach()


def _teacher_source(path: str):
    """A run folder -> its final/; anything else as given (folder, .pth, .safetensors)."""
    candidate = Path(path)
    if (candidate / "final" / "config.json").is_file():
        return candidate / "final"
    return path


def main(argv: Optional[Sequence[str]] = None) -> dict:
    return run_script("pretrain", PretrainTask, argv)


if __name__ == "__main__":
    main()
