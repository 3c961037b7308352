# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""The model families medmae trains, in one table: everything that differs between ETMAE and SDDA-MAE on the
training side.

Every stage asks :data:`FAMILIES` (through :func:`family`); no other module of ``medmae.training`` branches on a
family's name. For each family the table names its config class (whose ``from_preset`` holds the size presets), its
model class per stage, its pre-training loss terms (the parts logged), its tasks per script, its weight-decay rule per
stage, and the module of its training tasks (``training/tasks/<module>.py``); :data:`BEST_METRIC` picks the best
checkpoint of each fine-tuning task. The model card of a family (template,
citations, tags) is ``medmae.hub_cards.catalogue.FAMILIES[name]``, keyed by the same name.

Classes are named by string and imported when asked for, so that ``medmae pretrain --help`` (which reads the
names and tasks) does not import torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional

TASKS = {
    "pretrain": ("pretraining", "distillation"),
    "finetune": ("multilabel_classification", "classification", "segmentation_classification"),
}

# what each fine-tuning task trains on: the kind of predictions and metrics (training/evaluate.py), and the
# validation metric that picks best/ unless --metric_for_best_model says otherwise
TASK_KINDS = {"multilabel_classification": "multilabel", "classification": "singlelabel",
              "segmentation_classification": "segcls"}
BEST_METRIC = {"multilabel": "mauc", "singlelabel": "accuracy", "segcls": "dice"}


@dataclass(frozen=True)
class Family:
    name: str  # --family, config.model_type
    display: str
    config_class: str  # in medmae.configuration
    model_classes: dict  # stage or task -> class name in medmae.modeling
    loss_terms: tuple[str, ...]  # the parts of the pre-training loss, logged when the model output carries them
    pretraining_tasks: tuple[str, ...]
    finetuning_tasks: tuple[str, ...]  # the first is the default on data with masks or several labels per image
    tasks_module: str  # medmae.training.tasks.<module>: its Pretraining and Finetuning task classes
    weight_decay_rule: dict  # script -> which parameters decay (training/optim.py), the default of --weight_decay_rule

    def config(self):
        """The configuration class (``ETMAEConfig`` / ``SDDAMAEConfig``)."""
        return getattr(importlib.import_module("medmae.configuration"), self.config_class)

    def model_class(self, stage: str):
        """The model class of a stage (``pretraining``) or a fine-tuning task."""
        return getattr(importlib.import_module("medmae.modeling"), self.model_classes[stage])

    def task_class(self, script: str):
        """The training task of ``pretrain`` or ``finetune`` for this family."""
        module = importlib.import_module(f"medmae.training.tasks.{self.tasks_module}")
        return getattr(module, {"pretrain": "Pretraining", "finetune": "Finetuning"}[script])

    def tasks(self, script: str) -> tuple[str, ...]:
        return self.pretraining_tasks if script == "pretrain" else self.finetuning_tasks


FAMILIES: dict[str, Family] = {
    "etmae": Family(
        name="etmae", display="ETMAE", config_class="ETMAEConfig",
        model_classes={"pretraining": "ETMAEForPreTraining", "distillation": "ETMAEForPreTraining",
                       "multilabel_classification": "ETMAEForImageClassification",
                       "classification": "ETMAEForImageClassification"},
        loss_terms=("reconstruction_loss", "distillation_loss"),
        pretraining_tasks=("pretraining", "distillation"),
        finetuning_tasks=("multilabel_classification", "classification"),
        tasks_module="etmae",
        # MAE's and medical_mae's main_pretrain.py: timm add_weight_decay, no skip list (the CLS token decays);
        # their fine-tuning: param_groups_lrd with the model's no_weight_decay() (CLS token, position table)
        weight_decay_rule={"pretrain": "mae", "finetune": "timm"}),
    "sdda_mae": Family(
        name="sdda_mae", display="SDDA-MAE", config_class="SDDAMAEConfig",
        model_classes={"pretraining": "SDDAMAEForPreTraining",
                       "segmentation_classification": "SDDAMAEForSegmentationAndClassification",
                       "classification": "SDDAMAEForImageClassification"},
        loss_terms=("reconstruction_loss", "self_distillation_loss"),
        pretraining_tasks=("pretraining",),
        finetuning_tasks=("segmentation_classification", "classification"),
        tasks_module="sdda_mae",
        # pre-training as Swin-MAE's train.py (whose masking and U-shape SDDA-MAE follows): AdamW over every
        # parameter. The paper names no fine-tuning optimiser: timm's exemptions (biases, norms, the channel-attention
        # temperature, as XCiT lists it); the BUSI preset takes DAE-Former's SGD recipe, every parameter decaying.
        weight_decay_rule={"pretrain": "all", "finetune": "timm"}),
}
FAMILY_NAMES = tuple(FAMILIES)


def family(name: str) -> Family:
    """The table's entry; an unknown name is an error listing the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def resolve_task(script: str, model_args, single_label_data: bool = False) -> str:
    """The run's task: ``--task`` (or ``--problem_type``) if given, else the family's default -- ``distillation``
    when pre-training with ``--teacher``, ``classification`` when fine-tuning on data with one label per image, the
    family's first fine-tuning task otherwise -- checked against what the family trains."""
    entry = family(model_args.family)
    task = _task_from_problem_type(script, model_args.task, getattr(model_args, "problem_type", None))
    if task is None:
        if script == "pretrain":
            task = "distillation" if model_args.teacher else "pretraining"
        else:
            task = "classification" if single_label_data else entry.finetuning_tasks[0]
    if task not in TASKS[script]:
        raise ValueError(f"{script}: unknown task {task!r}; choose one of {', '.join(TASKS[script])}")
    if task == "pretraining" and model_args.teacher:
        raise ValueError("--teacher was given with --task pretraining; ETMAE distillation is --task distillation")
    if task == "distillation" and (task not in entry.pretraining_tasks or not model_args.teacher):
        raise ValueError("distillation is ETMAE pre-training with a teacher: pass --family etmae --teacher PATH")
    if task not in entry.tasks(script):
        raise ValueError(f"task {task!r} does not belong to family {entry.name!r} (" + "; ".join(
            f"{f.display}: {', '.join(f.tasks(script))}" for f in FAMILIES.values()) +
            "; segmentation_classification needs masks)")
    return task


def _task_from_problem_type(script: str, task: Optional[str], problem_type: Optional[str]) -> Optional[str]:
    """``--problem_type`` (transformers' name) as the task it means; contradicting ``--task`` is an error."""
    if problem_type is None:
        return task
    by_problem = {"single_label_classification": "classification",
                  "multi_label_classification": "multilabel_classification"}
    if problem_type not in by_problem or script != "finetune":
        raise ValueError(f"--problem_type {problem_type!r}: finetune takes {' | '.join(by_problem)}")
    if task is not None and task != by_problem[problem_type]:
        raise ValueError(f"--problem_type {problem_type} and --task {task} contradict each other")
    return by_problem[problem_type]
