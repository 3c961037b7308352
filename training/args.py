# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Arguments of the training scripts (``transformers.HfArgumentParser`` dataclasses) and their command line
(:func:`build_parser`, :func:`parse_args`). The papers' recipes, as named presets, are :mod:`medmae.training.presets`;
the tokens and ``--config`` file are made ready for the parser (spelling, old names) in :mod:`medmae.training.argv`.

Precedence, lowest first: dataclass defaults < ``--preset NAME`` < ``--config FILE`` (YAML or JSON) <
explicit command-line flags. A preset is a plain dict of field values, so ``medmae pretrain --preset busi
--num_train_epochs 10`` is the BUSI recipe with 10 epochs.

Where a field means what a ``transformers.TrainingArguments`` field means, it has that name (``learning_rate``,
``num_train_epochs``, ``per_device_train_batch_size``, ``lr_scheduler_type``, ``resume_from_checkpoint``, ...);
the earlier names are the fields' ``aliases`` and still work, with a note, until the next release. This module
imports no torch or transformers: ``medmae pretrain --help`` (:func:`build_parser`) answers in well under a second.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence, Union, get_args, get_origin, get_type_hints

from .argv import _normalise_flags, _rename_flags, _rename_keys, _value_of, read_config_file
from .families import FAMILY_NAMES, TASKS
from .presets import PRESETS, preset_values


@dataclass
class ModelArguments:
    family: Literal[FAMILY_NAMES] = field(default="sdda_mae", metadata={"help": "model family"})
    task: Optional[Literal["pretraining", "distillation", "multilabel_classification", "classification",
                            "segmentation_classification"]] = field(default=None, metadata={
        "help": "what is trained: pretraining (MAE; SDDA-MAE adds self-distillation) | distillation (ETMAE student "
                "from --teacher) | multilabel_classification (ETMAE) | classification (single-label, both families) | "
                "segmentation_classification (SDDA-MAE). Default: from --family, --teacher and the data "
                "(classification on data with one label per image, e.g. imagefolder)"})
    model_preset: str = field(default="tiny_test", metadata={
        "help": "size preset of the model config (ETMAEConfig / SDDAMAEConfig .from_preset)"})
    config_overrides: Optional[str] = field(default=None, metadata={
        "help": "JSON dict of config fields that override the preset, e.g. '{\"hidden_size\": 64}'"})
    init_from: Optional[str] = field(default=None, metadata={
        "help": "finetune: the pre-training run folder or its final/ folder (or any converted checkpoint "
                "folder); pretrain: continue from weights"})
    problem_type: Optional[Literal["single_label_classification", "multi_label_classification"]] = field(
        default=None, metadata={
            "help": "as in transformers: single_label_classification (= --task classification) | "
                    "multi_label_classification (= --task multilabel_classification); default: from the data"})
    from_scratch: bool = field(default=False, metadata={
        "help": "train from random weights (no --init_from), e.g. the papers' 'from scratch' rows"})
    transfer: Literal["encoder_decoder", "encoder"] = field(default="encoder_decoder", metadata={
        "help": "SDDA-MAE fine-tuning transfer: encoder_decoder (paper) | encoder ('Only Encoder' ablation)"})
    teacher: Optional[str] = field(default=None, metadata={
        "help": "ETMAE distillation teacher: a medmae run/final folder, a transformers ViTMAE folder or a "
                "MAE / medical_mae .pth file"})
    teacher_num_heads: Optional[int] = field(default=None, metadata={"help": "heads of a .pth teacher"})
    # the choices of tasks.etmae.teacher_normalization_choices() (tested equal; named here so --help needs no torch)
    teacher_normalization: Optional[Literal["medical_mae", "cxr", "half", "imagenet"]] = field(default=None, metadata={
        "help": "statistics the teacher saw in its own pre-training: medical_mae (per image by source: NIH 0.5056 / "
                "0.252, CheXpert ImageNet) | imagenet | cxr | half. Default: the teacher folder's config; required "
                "for a .pth teacher (it records none)"})
    mask_ratio: Optional[float] = field(default=None, metadata={"help": "pre-training mask ratio (default: config)"})
    sd_warmup: bool = field(default=False, metadata={
        "help": "SDDA-MAE pre-training: ramp the self-distillation weight linearly from 0 to sd_weight over the "
                "learning-rate warm-up (off: the paper's constant weight)"})
    drop_path_rate: Optional[float] = field(default=None, metadata={
        "help": "stochastic depth rate (default: the model config's; the fine-tuning recipes set it)"})
    normalization: Optional[Literal["imagenet", "cxr", "half"]] = field(default=None, metadata={
        "help": "input statistics of the model (default: the model config's)"})


@dataclass
class DataArguments:
    dataset: str = field(default="synthetic_ultrasound", metadata={
        "help": "busi | siim_acr | chestxray14 | chexpert | chestxray14+chexpert (ETMAE pre-training: both, images "
                "only, a source column) | synthetic_ultrasound | synthetic_cxr | imagefolder | segfolder | csv | "
                "hf:NAME (your own data)"})
    data_root: Optional[str] = field(default=None, metadata={
        "help": "dataset folder as published (real sets); a combined set takes one per source, repeated: "
                "--data_root chestxray14=DIR1 --data_root chexpert=DIR2"})
    dataset_path: Optional[str] = field(default=None, metadata={
        "help": "a folder written by `medmae prepare` (resized images, index, fingerprint), in place of --data_root; "
                "with --data_root too, it is prepared first when missing"})
    dataset_kwargs: Optional[str] = field(default=None, metadata={
        "help": "JSON dict passed to the loader, e.g. '{\"num_images\": 400}' or '{\"uncertainty\": \"ones\"}'"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/validation/test split"})
    manifest: Optional[str] = field(default=None, metadata={"help": "split manifest to rebuild exact splits"})
    image_size: Optional[int] = field(default=None, metadata={"help": "input size (default: model config)"})
    crop_scale_min: Optional[float] = field(default=None, metadata={
        "help": "random resized crop lower scale for training (0 or None: no crop)"})
    hflip: bool = field(default=True, metadata={"help": "random horizontal flip for training"})
    augmentation: Literal["crop_flip", "medical_mae", "simple"] = field(default="crop_flip", metadata={
        "help": "training augmentation recipe: crop_flip (random resized crop + flip; SDDA-MAE) | medical_mae "
                "(bicubic crop, flip, timm RandAugment rand-m6-mstd0.5-inc1; evaluation Resize(size/0.875) + "
                "CenterCrop; ETMAE's NIH/CheXpert default) | simple (resize + flip; the ETMAE authors' code)"})
    csv: Optional[str] = field(default=None, metadata={
        "help": "--dataset csv: the CSV of image paths (relative to --data_root) and labels"})
    image_column: Optional[str] = field(default=None, metadata={
        "help": "--dataset csv / hf:NAME: the column of images (default: path / image)"})
    label_columns: Optional[list[str]] = field(default=None, metadata={
        "help": "--dataset csv / hf:NAME: label column(s): one = single-label (or '|'-separated findings), several "
                "0/1 columns = multi-label (default: csv every other column; hf label)"})
    group_column: Optional[str] = field(default=None, metadata={
        "help": "--dataset csv: a group (e.g. patient) column; no group spans two splits"})
    mask_column: Optional[str] = field(default=None, metadata={"help": "--dataset hf:NAME: the column of masks"})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "truncate the training split"})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "truncate validation/test splits"})
    dataloader_num_workers: Optional[int] = field(default=None, metadata={
        "help": "DataLoader worker processes (0: load in the training process). Default: 0 for the synthetic sets "
                "(in memory), else the CPUs this process may use / the processes on this machine - 1, at most 8",
        "aliases": ["--num_workers"]})
    dataloader_persistent_workers: Optional[bool] = field(default=None, metadata={
        "help": "keep the DataLoader workers alive across epochs (default: yes when there are workers; each "
                "epoch's item seeds still reach them, so results and exact resume are unchanged)"})


@dataclass
class OptimizationArguments:
    optimizer: Literal["adamw", "sgd"] = field(default="adamw", metadata={"help": "optimizer"})
    learning_rate: Optional[float] = field(default=None, metadata={
        "help": "absolute peak learning rate (reached after the warm-up)", "aliases": ["--lr"]})
    blr: Optional[float] = field(default=None, metadata={
        "help": "base learning rate; learning_rate = blr * effective batch / 256 (MAE) when --learning_rate is not "
                "given"})
    min_lr: float = field(default=0.0, metadata={"help": "floor of the cosine schedule"})
    weight_decay: float = field(default=0.05, metadata={"help": "decoupled weight decay (which parameters: --weight_decay_rule)"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    layer_decay: Optional[float] = field(default=None, metadata={
        "help": "layer-wise lr decay (ETMAE fine-tuning: 0.55, timm param_groups_lrd semantics)"})
    weight_decay_rule: Optional[Literal["timm", "mae", "all"]] = field(default=None, metadata={
        "help": "which parameters take weight decay: timm (not biases, norms, CLS token, position tables or the "
                "model's no_weight_decay(): MAE's fine-tuning) | mae (not biases or norms: MAE's pre-training) | all "
                "(Swin-MAE's pre-training, DAE-Former). Default: the family's recipe for the stage "
                "(training/families.py)"})
    # medmae's names, not transformers' (whose "cosine" has no floor and "constant" no warm-up): every one of these
    # follows the linear warm-up; optim.SCHEDULERS maps them to transformers' schedulers
    lr_scheduler_type: Literal["cosine", "poly", "constant"] = field(default="cosine", metadata={
        "help": "per-iteration schedule after the linear warm-up: cosine (down to --min_lr; transformers' "
                "cosine_with_min_lr) | poly ((1 - t) ** --poly_power; transformers' polynomial) | constant "
                "(transformers' constant_with_warmup)", "aliases": ["--scheduler"]})
    poly_power: float = field(default=0.9, metadata={"help": "power of the poly schedule"})
    warmup_epochs: float = field(default=0.0, metadata={
        "help": "linear warm-up length in epochs (used when neither --warmup_steps nor --warmup_ratio is given)"})
    warmup_ratio: Optional[float] = field(default=None, metadata={
        "help": "linear warm-up as a fraction of all optimizer steps (overrides --warmup_epochs)"})
    warmup_steps: Optional[int] = field(default=None, metadata={
        "help": "linear warm-up length in optimizer steps (overrides --warmup_ratio and --warmup_epochs)"})
    num_train_epochs: int = field(default=1, metadata={
        "help": "training epochs (--max_steps, when given, wins)", "aliases": ["--num_epochs"]})
    max_steps: Optional[int] = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    per_device_train_batch_size: int = field(default=8, metadata={
        "help": "batch size per device (process); validation and test batches have the same size",
        "aliases": ["--batch_size"]})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "micro-batches per optimizer step (effective batch = per-device batch x this x processes)"})
    max_grad_norm: Optional[float] = field(default=None, metadata={"help": "clip gradients to this norm"})


@dataclass
class RunArguments:
    output_dir: str = field(default="runs/medmae", metadata={"help": "run folder"})
    preset: Optional[str] = field(default=None, metadata={"help": "named recipe (see --list_presets)"})
    config: Optional[str] = field(default=None, metadata={"help": "YAML or JSON file of arguments"})
    seed: int = field(default=0, metadata={"help": "seed of the model initialisation, masking, augmentation and "
                                                   "data order"})
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = field(default="auto", metadata={
        "help": "auto: the accelerate config's, else bf16 on CUDA with bf16 support, fp32 elsewhere (on CPUs, "
                "use bf16 explicitly where AMX/avx512_bf16 makes it faster)"})
    num_threads: Optional[int] = field(default=None, metadata={
        "help": "torch CPU threads; default 1 for models under 5M parameters (thread start-up costs more than "
                "it saves on tiny matrices), torch's default otherwise"})
    cpu: bool = field(default=False, metadata={"help": "force the CPU even when an accelerator is present"})
    save_steps: int = field(default=0, metadata={"help": "checkpoint every N optimizer steps (0: end only)"})
    save_total_limit: int = field(default=2, metadata={"help": "step checkpoints kept (newest)"})
    eval_steps: int = field(default=0, metadata={"help": "evaluate on validation every N steps (0: each epoch)"})
    logging_steps: int = field(default=10, metadata={"help": "log the training losses every N optimizer steps"})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={
        "help": "'latest' or a checkpoints/step_* path", "aliases": ["--resume"]})
    overwrite: bool = field(default=False, metadata={
        "help": "replace the outputs of a previous run in --output_dir (without it a non-empty folder is refused)"})
    metric_for_best_model: Optional[str] = field(default=None, metadata={
        "help": "validation metric that selects the best checkpoint (default per task; 'none' keeps the last)",
        "aliases": ["--metric_for_best"]})
    eval_test: bool = field(default=True, metadata={"help": "evaluate the chosen model on the test split at the end"})
    report_to: str = field(default="tensorboard", metadata={
        "help": "accelerate trackers: tensorboard, wandb, mlflow, trackio, ... (comma list; installed ones), all or "
                "none"})
    figures: bool = field(default=True, metadata={"help": "write PNG figures to figures/"})
    progress_bar: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})
    debug_nan_at_step: Optional[int] = field(default=None, metadata={
        "help": "testing hook: make the loss NaN at this optimizer step"})
    debug_step_delay: float = field(default=0.0, metadata={"help": "testing hook: sleep seconds per batch"})


@dataclass
class EvaluateArguments:
    model: str = field(default="", metadata={"help": "a fine-tuning run folder or its final/ folder (required)"})
    dataset: Optional[str] = field(default=None, metadata={
        "help": "default: the run's own dataset, arguments and split manifest (from its run_info.json); another "
                "dataset is allowed, but a split sharing ids with the run's training split is refused"})
    data_root: Optional[str] = field(default=None, metadata={
        "help": "dataset folder (runs record no local paths: give it for real datasets)"})
    dataset_path: Optional[str] = field(default=None, metadata={
        "help": "a folder written by `medmae prepare`, in place of --data_root"})
    dataset_kwargs: Optional[str] = field(default=None, metadata={
        "help": "JSON dict passed to the loader (default: the run's)"})
    split_seed: Optional[int] = field(default=None, metadata={"help": "default: the run's (0 without a run)"})
    manifest: Optional[str] = field(default=None, metadata={"help": "default: the run's split_manifest.json"})
    allow_training_overlap: bool = field(default=False, metadata={
        "help": "evaluate even when the split shares images with the run's training split (the result is labelled "
                "as such in the table and JSON)"})
    split: Literal["train", "validation", "test"] = field(default="test", metadata={"help": "split to evaluate"})
    per_device_eval_batch_size: int = field(default=16, metadata={
        "help": "batch size per device (process)", "aliases": ["--batch_size"]})
    output_dir: Optional[str] = field(default=None, metadata={"help": "where metrics.json/.md go (default: model)"})
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = field(default="no", metadata={
        "help": "autocast precision of the forward passes (auto: as in training)"})
    num_threads: Optional[int] = field(default=None, metadata={
        "help": "torch CPU threads (default as in training: 1 for models under 5M parameters)"})
    cpu: bool = field(default=False, metadata={"help": "force the CPU even when an accelerator is present"})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "truncate the split"})
    dataloader_num_workers: Optional[int] = field(default=None, metadata={
        "help": "DataLoader worker processes (0: load in this process). Default as in training",
        "aliases": ["--num_workers"]})
    augmentation: Optional[Literal["crop_flip", "medical_mae", "simple"]] = field(default=None, metadata={
        "help": "evaluation geometry of this recipe (default: the run's own)"})


TRAIN_DATACLASSES = (ModelArguments, DataArguments, OptimizationArguments, RunArguments)
SCRIPT_DATACLASSES = {"pretrain": TRAIN_DATACLASSES, "finetune": TRAIN_DATACLASSES, "evaluate": (EvaluateArguments,)}
# Fields of one script only: the other script's parser neither lists nor takes them (its dataclass keeps the
# default). Not in the field metadata, which HfArgumentParser passes on to argparse.
ONLY_FOR = {"pretrain": ("teacher", "teacher_num_heads", "teacher_normalization", "mask_ratio", "sd_warmup"),
            "finetune": ("problem_type", "from_scratch", "transfer")}
# Short usage lines (the generated one lists every flag: 60 lines above each error message)
USAGES = {"pretrain": "medmae pretrain [-h] [--list_presets] [--preset NAME] [--config FILE] [--FLAG VALUE ...]",
          "finetune": "medmae finetune [-h] [--list_presets] [--preset NAME] [--config FILE] "
                      "(--init_from RUN | --from_scratch) [--FLAG VALUE ...]",
          "evaluate": "medmae evaluate [-h] --model RUN [--data_root DIR] [--FLAG VALUE ...]"}
DESCRIPTIONS = {
    "pretrain": "Pre-training with Accelerate: SDDA-MAE (masked reconstruction + self-distillation), ETMAE teacher "
                "MAE pre-training, and ETMAE student distillation from a teacher (--task distillation --teacher PATH).",
    "finetune": "Fine-tuning with Accelerate: SDDA-MAE joint segmentation + classification, ETMAE multi-label "
                "classification, or single-label classification (either family), from a pre-training run "
                "(--init_from) or from scratch (--from_scratch).",
    "evaluate": "The papers' metrics of a fine-tuned model on a split, as JSON and Markdown tables; by default on the "
                "run's own dataset, arguments and split manifest (from its run_info.json).",
}


def renamed_fields(dataclass_types=TRAIN_DATACLASSES) -> dict[str, str]:
    """Old argument names still accepted (for one release) -> the field each now is (the fields' ``aliases``)."""
    return {alias.lstrip("-"): f.name for dc in dataclass_types for f in dataclasses.fields(dc)
            for alias in f.metadata.get("aliases", ())}


def _check_fields(values: dict, script: str, dataclass_types, source: str) -> None:
    known = {f.name for f in script_fields(script, dataclass_types)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {script} argument(s) {unknown}")


def script_fields(script: str, dataclass_types=None) -> list[dataclasses.Field]:
    """The fields ``script`` takes: all of its dataclasses' but those of another script only (:data:`ONLY_FOR`)."""
    others = {name for owner, names in ONLY_FOR.items() if owner != script for name in names}
    return [f for dc in dataclass_types or SCRIPT_DATACLASSES[script] for f in dataclasses.fields(dc)
            if f.name not in others]


def _without_none(hint):
    """``X`` of ``Optional[X]``; any other type as it is."""
    if get_origin(hint) in (Union, types.UnionType):
        return next(arg for arg in get_args(hint) if arg is not type(None))
    return hint


def _choices(f: dataclasses.Field, hint, script: str) -> Optional[list]:
    """The values of a ``Literal`` (or ``Optional[Literal]``) field; ``--task`` only the script's own tasks."""
    hint = _without_none(hint)
    if get_origin(hint) is not Literal:
        return None
    return [c for c in get_args(hint) if f.name != "task" or script not in TASKS or c in TASKS[script]]


def _to_bool(text: str) -> bool:
    if text.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if text.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it is None or its help already says what the default is."""

    def _get_help_string(self, action):
        if action.default in (None, argparse.SUPPRESS) or action.nargs == 0 or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser(script: str, dataclass_types=None) -> argparse.ArgumentParser:
    """The command line of ``medmae SCRIPT``, made from the dataclass fields as ``transformers.HfArgumentParser``
    makes it (``Literal`` -> choices, ``bool`` -> ``--flag [true|false]`` and ``--no_flag``, ``list`` -> several
    values, ``aliases`` metadata: the old names), but with argparse alone: ``medmae pretrain --help`` imports no
    torch/transformers (importing transformers alone takes over a second)."""
    dataclass_types = dataclass_types or SCRIPT_DATACLASSES[script]
    renamed = {new: old for old, new in renamed_fields(dataclass_types).items()}
    epilog = "Flags take _ or - (--num_train_epochs, --num-train-epochs)."
    if script in PRESETS:
        epilog = ("Precedence, lowest first: the defaults shown < --preset NAME < --config FILE (YAML or JSON of these "
                  "names) < flags. " + epilog)
    if renamed:
        epilog += " Renamed to transformers.TrainingArguments' names (the old one still works, with a note, until " \
                  "the next release): " + ", ".join(f"--{old} -> --{new}" for new, old in renamed.items()) + "."
    parser = argparse.ArgumentParser(prog=f"medmae {script}", usage=USAGES.get(script),
                                     description=DESCRIPTIONS.get(script), epilog=epilog,
                                     formatter_class=_HelpFormatter, allow_abbrev=False)
    if script in PRESETS:
        parser.add_argument("--list_presets", action="store_true", help="print the named recipes (--preset) and exit")
    fields = {f.name for f in script_fields(script, dataclass_types)}
    for dc in dataclass_types:
        group = parser.add_argument_group(dc.__name__.removesuffix("Arguments").lower() + " arguments")
        hints = get_type_hints(dc)
        for f in dataclasses.fields(dc):
            if f.name not in fields:
                continue
            help_ = (f.metadata.get("help") or "").replace("%", "%%")
            if f.name in renamed:
                help_ += f" (formerly --{renamed[f.name]})"
            kwargs: dict[str, Any] = {"help": help_, "default": f.default}
            hint, choices = _without_none(hints[f.name]), _choices(f, hints[f.name], script)
            if choices is not None:
                kwargs["choices"] = choices
            elif hint is bool:
                kwargs.update(type=_to_bool, nargs="?", const=True, metavar="{true,false}")
            elif get_origin(hint) is list:
                kwargs.update(type=get_args(hint)[0], nargs="+")
            else:
                kwargs["type"] = hint
            group.add_argument(f"--{f.name}", **kwargs)
            if hint is bool and f.default is True:
                group.add_argument(f"--no_{f.name}", dest=f.name, action="store_false", default=argparse.SUPPRESS,
                                   help=f"same as --{f.name} false")
    return parser


def parse_args(script: str, argv: Optional[Sequence[str]] = None, dataclass_types=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) into the script's dataclasses, applying ``--preset`` then
    ``--config`` as defaults below the explicit flags; old argument names are renamed with a note. Raises
    ValueError for an unknown preset or field, SystemExit (argparse) for a bad flag or value."""
    dataclass_types = dataclass_types or SCRIPT_DATACLASSES[script]
    renamed = renamed_fields(dataclass_types)
    argv = _rename_flags(_normalise_flags(list(sys.argv[1:] if argv is None else argv)), renamed, script)
    defaults: dict[str, Any] = {}
    preset = _value_of(argv, "--preset")
    config = _value_of(argv, "--config")
    if config is not None:
        file_values = _rename_keys(read_config_file(config), renamed, script, str(config))
        _check_fields(file_values, script, dataclass_types, str(config))
        preset = preset or file_values.get("preset")
    if preset is not None:
        defaults.update(preset_values(script, preset))
    if config is not None:
        defaults.update(file_values)
    defaults = {k: json.dumps(v) if isinstance(v, dict) and (k.endswith("_kwargs") or k == "config_overrides")
                else v for k, v in defaults.items()}
    parser = build_parser(script, dataclass_types)
    parser.set_defaults(**defaults)
    namespace = parser.parse_args(argv)
    groups = tuple(dc(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(dc)
                         if hasattr(namespace, f.name)}) for dc in dataclass_types)
    for group in groups:  # values from a preset or a --config file did not pass argparse's choices
        hints = get_type_hints(type(group))
        for f in dataclasses.fields(group):
            choices, value = _choices(f, hints[f.name], script), getattr(group, f.name)
            if choices is not None and value is not None and value not in choices:
                raise ValueError(f"--{f.name} {value!r}: choose one of {', '.join(map(str, choices))}")
    return groups


def json_dict(text: Optional[str], name: str) -> dict:
    """Parse a JSON-dict argument (``config_overrides``, ``dataset_kwargs``)."""
    if not text:
        return {}
    if isinstance(text, dict):
        return dict(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--{name} must be a JSON object, got {text!r}: {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"--{name} must be a JSON object, got {text!r}")
    return value


def args_to_dict(*groups) -> dict[str, Any]:
    """All fields of the argument dataclasses as one dict, WITHOUT absolute paths or dataset roots (this is what
    ``run_info.json`` publishes): path-valued fields keep only their last component."""
    out: dict[str, Any] = {}
    for group in groups:
        for f in dataclasses.fields(group):
            value = getattr(group, f.name)
            if f.name in ("data_root",):
                value = None if value is None else "<data_root>"
            elif f.name in ("output_dir", "init_from", "teacher", "manifest", "config", "resume_from_checkpoint",
                            "model", "dataset_path") \
                    and isinstance(value, str) and value:
                value = os.path.basename(os.path.normpath(value))
            out[f.name] = value
    return out
