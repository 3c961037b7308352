# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""What every training task has: the arguments, the model and its data, and defaults for export, metrics tables,
figures and provenance. A family's tasks (``training/tasks/<family>.py``, named by ``training.families``) add the
model, the loss and the validation metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ...modeling.image_processing_medmae import NORMALIZATION_PRESETS
from ..args import json_dict
from ..families import family
from ..optim import scaled_lr
from ..provenance import weights_sha256



class TrainingTask:
    """What a script trains. Subclasses set ``family``/``task`` and implement :meth:`build`,
    :meth:`compute_loss` and :meth:`evaluate`; the rest has defaults."""

    script: str = ""  # pretrain | finetune (set by run_script)
    family: str = ""
    task: str = ""
    metric_for_best: Optional[str] = None  # a key of evaluate()'s dict; None keeps the last weights
    greater_is_better: bool = True
    find_unused_parameters: bool = False  # DDP: modules that get no gradient
    # set by the loop before each batch: optimizer steps done, warm-up length, and whether this is a logging step
    global_step: int = 0
    warmup_steps: int = 0
    diagnostics_due: bool = False

    def __init__(self, model_args, data_args, opt_args, run_args):
        self.model_args, self.data_args, self.opt_args, self.run_args = model_args, data_args, opt_args, run_args
        self.model = None
        self.processor = None
        self.datasets: dict = {}
        self.split_info: dict = {}
        self.label_names: list = []
        if run_args.metric_for_best_model:
            self.metric_for_best = None if run_args.metric_for_best_model == "none" else \
                run_args.metric_for_best_model
        self.output_dir = Path(run_args.output_dir)

    # -- to implement --------------------------------------------------------------------------------
    def build(self) -> None:
        """Set ``model``, ``processor``, ``datasets`` (``train`` and optionally ``validation``/``test``, torch
        datasets yielding dicts of tensors) and ``split_info``. Runs after seeding, on every process."""
        raise NotImplementedError

    def compute_loss(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, named scalar parts for logging) under autocast."""
        raise NotImplementedError

    def evaluate(self, model, dataloader, accelerator) -> dict[str, float]:
        """Metrics on a prepared dataloader; called on every process (gather with ``gather_for_metrics``)."""
        raise NotImplementedError

    # -- defaults ------------------------------------------------------------------------------------
    def model_class(self):
        """This family's model class for this task (``training.families``)."""
        return family(self.family).model_class(self.task)

    def export(self, model, directory: Path) -> None:
        model.save_pretrained(directory)
        if self.processor is not None:
            self.processor.save_pretrained(directory)

    def figures(self, model, accelerator, figures_dir: Path, title: str) -> list[Path]:
        return []

    def metrics_markdown(self, metrics: dict, split: str) -> str:
        rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, (int, float)))
        return f"| metric ({split}) | value |\n|---|---|\n{rows}\n"

    def run_info_extra(self) -> dict:
        """Provenance of the starting weights (``--init_from``); subclasses add their own keys."""
        if not self.model_args.init_from:
            return {}
        return {"base_model": Path(self.model_args.init_from).name,
                "source_checkpoint_sha256": weights_sha256(self.model_args.init_from)}

    def effective_lr(self, num_processes: int) -> float:
        o = self.opt_args
        if o.learning_rate is not None:
            return o.learning_rate
        if o.blr is not None:
            return scaled_lr(o.blr, o.per_device_train_batch_size * o.gradient_accumulation_steps * num_processes)
        raise ValueError("give --learning_rate (absolute) or --blr (scaled by effective batch / 256)")



def model_config(model_args, data_args, **fields):
    """The model config of a new model: ``model_preset`` + ``config_overrides`` + ``image_size`` /
    ``normalization`` / ``mask_ratio`` / ``drop_path_rate`` flags + ``fields`` (later wins)."""
    values = json_dict(model_args.config_overrides, "config_overrides")
    if data_args is not None and data_args.image_size:
        values.setdefault("image_size", data_args.image_size)
    if model_args.normalization:
        if model_args.normalization not in NORMALIZATION_PRESETS:
            raise ValueError(f"unknown normalization {model_args.normalization!r}; choose one of "
                             f"{', '.join(NORMALIZATION_PRESETS)}")
        mean, std = NORMALIZATION_PRESETS[model_args.normalization]
        values.setdefault("image_mean", mean)
        values.setdefault("image_std", std)
    if model_args.mask_ratio is not None:
        values.setdefault("mask_ratio", model_args.mask_ratio)
    if model_args.drop_path_rate is not None:
        values.setdefault("drop_path_rate", model_args.drop_path_rate)
    values.update(fields)
    return family(model_args.family).config().from_preset(model_args.model_preset, **values)
