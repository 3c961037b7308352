# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""What MAE pre-training is for every family: images only, validation losses under a fixed masking seed, and a
figure of reconstructions. A family's ``Pretraining`` (``training/tasks/<family>.py``) builds its model and says
how its loss is made of parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...modeling.image_processing_medmae import processor_for_config
from ..dataloading import attach_transforms, load_splits, split_record, synthetic_defaults
from ..families import family, resolve_task
from ..figures import mae_reconstructions, to_display
from ..provenance import model_folder
from ..runtime import fixed_rng
from .base import TrainingTask, model_config


class MAEPretraining(TrainingTask):
    """Set ``model`` in :meth:`build_model`; :meth:`compute_loss` returns the loss and its logged parts."""

    def build(self) -> None:
        self.family = self.model_args.family
        self.task = resolve_task("pretrain", self.model_args)
        self.model = self.build_model()
        self.processor = processor_for_config(self.model.config)
        self.datasets = self.image_datasets()

    def build_model(self):
        """A new model of the family's pre-training class from the run's config, or ``--init_from``'s weights."""
        m = self.model_args
        config = model_config(m, self.data_args, **self.config_fields())
        model = self.model_class()(config)
        return self.model_class().from_pretrained(model_folder(m.init_from), config=config) if m.init_from else model

    def config_fields(self) -> dict:
        """Config fields this task sets whatever the preset says."""
        return {}

    def image_datasets(self) -> dict:
        """``train`` and ``validation`` as images (+ the columns of :meth:`with_extra_columns`) with the pre-training
        transform; records the split in ``split_info``."""
        d, size = self.data_args, self.model.config.image_size
        splits = load_splits(d, size, **synthetic_defaults(d, size))
        self.split_info = {"split": split_record(splits, d, self.output_dir),
                           "uncertainty_policy": getattr(splits, "medmae_split_info", {}).get("uncertainty")}
        keep = {name: splits[name] for name in ("train", "validation") if name in splits}
        keep, extra = self.with_extra_columns(keep)
        columns = ["image", *extra]
        keep = {name: ds.select_columns(columns) for name, ds in keep.items()}
        return attach_transforms(keep, "image", self.processor, d, passthrough=columns[1:])

    def with_extra_columns(self, splits: dict) -> tuple[dict, tuple[str, ...]]:
        """Hook: the columns the loss needs besides the image, added to ``splits`` where the data lacks them
        (ETMAE's per-source teacher statistics)."""
        return splits, ()

    def loss_parts(self, out) -> dict:
        """The family's pre-training loss terms (``Family.loss_terms``) that ``out`` carries, for logging."""
        return {name: getattr(out, name) for name in family(self.family).loss_terms
                if getattr(out, name, None) is not None}

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
        """Up to four validation images: original, masked, and the reconstruction pasted into the visible patches."""
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
