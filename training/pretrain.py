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

from ..configuration.configuration_etmae import align_layer_at_three_quarters
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


class PretrainTask(TrainingTask):
    def build(self) -> None:
        from ..modeling import ETMAEForPreTraining, SDDAMAEForPreTraining
        from ..modeling.image_processing_medmae import processor_for_config

        m, d = self.model_args, self.data_args
        self.family = m.family
        self.task = resolve_task("pretrain", m)
        if m.family == "etmae":
            teacher = None
            fields = {"teacher_hidden_size": None}
            if self.task == "distillation":
                from ..modeling.convert import load_teacher

                check_teacher_statistics_choice(m.teacher, m.teacher_normalization)
                teacher = load_teacher(_teacher_source(m.teacher), num_heads=m.teacher_num_heads)
                overrides = m.config_overrides or ""
                fields = {"teacher_hidden_size": teacher.config.hidden_size}
                if "teacher_align_layer" not in overrides:
                    fields["teacher_align_layer"] = align_layer_at_three_quarters(teacher.config.num_hidden_layers)
            config = model_config(m, d, **fields)
            model = ETMAEForPreTraining(config)
            if m.init_from:
                model = ETMAEForPreTraining.from_pretrained(model_folder(m.init_from), config=config)
            if teacher is not None:
                statistics, how = teacher_statistics(m.teacher, m.teacher_normalization, teacher)
                model.set_teacher(teacher, **statistics)
                print(f"teacher input statistics: {how}", flush=True)
                self.teacher_info = {"teacher": Path(m.teacher).name, "teacher_sha256": weights_sha256(m.teacher),
                                     "teacher_statistics": how}
        else:
            config = model_config(m, d)
            model = SDDAMAEForPreTraining(config)
            if m.init_from:
                model = SDDAMAEForPreTraining.from_pretrained(model_folder(m.init_from), config=config)
        self.model = model
        self.processor = processor_for_config(config)
        splits = load_splits(d, config.image_size, **synthetic_defaults(d, config.image_size))
        self.split_info = {"split": split_record(splits, d, self.output_dir),
                           "uncertainty_policy": getattr(splits, "medmae_split_info", {}).get("uncertainty")}
        keep = {name: splits[name] for name in ("train", "validation") if name in splits}
        self.teacher_sources = bool(getattr(model.config, "teacher_source_statistics", None))
        if self.teacher_sources and "source" not in splits["train"].column_names:
            source = d.dataset.strip().lower().replace("-", "_")  # a single dataset is its own source
            keep = {name: ds.add_column("source", [source] * len(ds)) for name, ds in keep.items()}
        columns = ["image", "source"] if self.teacher_sources else ["image"]
        keep = {name: ds.select_columns(columns) for name, ds in keep.items()}
        self.datasets = attach_transforms(keep, "image", self.processor, d, passthrough=columns[1:])

    def compute_loss(self, model, batch):
        extra = {"teacher_source": batch["source"]} if getattr(self, "teacher_sources", False) else {}
        out = model(pixel_values=batch["pixel_values"], **extra)
        parts = {"reconstruction_loss": out.reconstruction_loss}
        if self.family == "etmae":
            if getattr(out, "distillation_loss", None) is not None:
                parts["distillation_loss"] = out.distillation_loss
            return out.loss, parts
        parts["self_distillation_loss"] = out.self_distillation_loss
        parts.update(self_distillation_diagnostics(out.sd_teacher_probs, out.sd_student_log_probs))
        weight, loss = self.model.config.sd_weight, out.loss
        if self.model_args.sd_warmup and model.training and self.warmup_steps:
            weight *= min(self.global_step / self.warmup_steps, 1.0)  # the lr warm-up's linear ramp
            loss = out.reconstruction_loss + weight * out.self_distillation_loss
            parts["sd_weight"] = out.self_distillation_loss.new_tensor(weight)
        if self.diagnostics_due and torch.is_grad_enabled():
            parts["sd_grad_ratio"] = sd_gradient_ratio(model, out, weight)
        return loss, parts

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

    def figures(self, model, accelerator, figures_dir: Path, title: str) -> list[Path]:
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
                                   title=f"{title}, mask ratio {model.config.mask_ratio}")
        return [path]

    def run_info_extra(self) -> dict:
        return {**super().run_info_extra(), **getattr(self, "teacher_info", {})}


def sd_gradient_ratio(model, out, weight: float) -> torch.Tensor:
    """``||d(weight * L_SD)/d encoder|| / ||d L_MSE/d encoder||`` on this batch's graph (kept for the backward):
    how strongly self-distillation pulls on the encoder relative to reconstruction (0-d tensor)."""
    unwrapped = model.module if hasattr(model, "module") else model
    encoder = [p for p in unwrapped.sdda_mae.parameters() if p.requires_grad]

    def norm(loss):
        grads = torch.autograd.grad(loss, encoder, retain_graph=True, allow_unused=True)
        return torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))

    return (norm(weight * out.self_distillation_loss) / norm(out.reconstruction_loss).clamp_min(1e-12)).detach()


def teacher_normalization_choices() -> list[str]:
    """The names ``--teacher_normalization`` accepts: per-source sets, then single statistics."""
    from ..modeling.image_processing_medmae import NORMALIZATION_PRESETS, TEACHER_SOURCE_STATISTICS

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
    from ..modeling.image_processing_medmae import NORMALIZATION_PRESETS, TEACHER_SOURCE_STATISTICS

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


def main(argv: Optional[Sequence[str]] = None) -> dict:
    return run_script("pretrain", PretrainTask, argv)


if __name__ == "__main__":
    main()
