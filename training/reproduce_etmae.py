# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""ETMAE's Table 2 over seeds, with a linear probe: ``medmae reproduce etmae``.

    medmae reproduce etmae --dataset synthetic_cxr --teachers S B --seeds 0 1 2 --output_dir etmae_abl
    medmae reproduce etmae --dataset chestxray14 --data_root /data/NIH --preset paper \\
        --teacher_paths S=vit-s_CXR_0.3M_mae.pth B=vit-b_CXR_0.5M_mae.pth --teacher_normalization medical_mae

Rows (one ``pretrain`` / ``finetune`` run folder each under ``runs/``):

* the student pre-trained as a plain MAE (no teacher);
* the student distilled from each teacher in ``--teachers`` (feature alignment at 3/4 depth, L1);
* each teacher itself (linear probe; fine-tuned too with ``--finetune_teachers``, the default when its weights are
  given): the reference the student is distilled towards;
* the student fine-tuned from scratch (no pre-training).

A teacher is pre-trained ONCE per size by the sweep (seed 0; the budget's recipe) and shared by every seed, unless
``--teacher_paths NAME=PATH`` gives its weights (a medmae / transformers folder or a MAE / medical_mae ``.pth``).
Every pre-trained encoder is also scored by a linear probe (``training/probe.py``): frozen features, one logistic
regression per label, test mAUC -- cheaper than fine-tuning and more sensitive to what pre-training learnt. Rows
are compared pairwise per seed (verdict rule: ``training/sweep.py``); the data and split stay fixed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..configuration import ETMAEConfig
from ..modeling import ETMAEModel
from ..modeling.convert import file_sha256, load_teacher
from ..modeling.image_processing_medmae import (
    NORMALIZATION_PRESETS,
    TEACHER_SOURCE_STATISTICS,
    MedMAEImageProcessor,
    processor_for_config,
)
from .evaluate import label_names_of
from .probe import encoder_features, linear_probe
from .provenance import model_folder
from .registry import load_dataset_by_name
from .sweep import (
    Run,
    SweepArguments,
    cell,
    check_dataset,
    check_plan,
    execute,
    resolve_budget,
    verdict,
    verdict_lines,
)
from .transforms import MultiLabelTransform

# Sizes on the synthetic chest X-rays (64 px, 8 px patches = 64 tokens). The student is ETMAEConfig "tiny_test"
# (4 blocks x 32, 2 heads, ~43k encoder parameters); teachers are wider AND deeper and trained longer.
SYNTHETIC_STUDENT = {"patch_size": 8}
SYNTHETIC_TEACHERS = {
    "S": {"patch_size": 8, "hidden_size": 96, "num_hidden_layers": 6, "num_attention_heads": 4,
          "intermediate_size": 384, "decoder_hidden_size": 64, "decoder_num_hidden_layers": 2,
          "decoder_num_attention_heads": 4, "decoder_intermediate_size": 256},
    "B": {"patch_size": 8, "hidden_size": 128, "num_hidden_layers": 8, "num_attention_heads": 4,
          "intermediate_size": 512, "decoder_hidden_size": 64, "decoder_num_hidden_layers": 2,
          "decoder_num_attention_heads": 4, "decoder_intermediate_size": 256},
}
QUICK_TEACHERS = {"S": {"hidden_size": 48, "num_attention_heads": 2, "intermediate_size": 96},
                  "B": {"hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}}
PAPER_TEACHERS = {"S": "vit_small_patch16_dec512d8b", "B": "vit_base_patch16_dec512d8b"}

ETMAE_BUDGETS = {
    "quick": dict(image_size=32, num_images=96, teacher_epochs=1, student_epochs=1, finetune_epochs=1, batch_size=8,
                  seeds=(0, 1), teachers=QUICK_TEACHERS, student={}, probe_images=96),
    "default": dict(image_size=64, num_images=2000, teacher_epochs=25, student_epochs=8, finetune_epochs=12,
                    batch_size=32, seeds=(0, 1, 2), teachers=SYNTHETIC_TEACHERS, student=SYNTHETIC_STUDENT,
                    probe_images=2000),
    "paper": dict(image_size=224, num_images=None, teacher_epochs=None, student_epochs=None, finetune_epochs=None,
                  batch_size=None, seeds=(0, 1, 2), teachers=PAPER_TEACHERS, student=None, probe_images=20000),
}
ETMAE_DATASETS = ("chestxray14", "chexpert", "synthetic_cxr")


@dataclass
class Arguments(SweepArguments):
    output_dir: str = field(default="reproduce_etmae", metadata={"help": "folder of runs/ and the tables"})
    dataset: str = field(default="synthetic_cxr", metadata={"help": "chestxray14 | chexpert | synthetic_cxr"})
    data_root: Optional[str] = field(default=None, metadata={"help": "dataset folder (chestxray14, chexpert)"})
    pretrain_dataset: Optional[str] = field(default=None, metadata={
        "help": "pre-training set (default: --dataset; the paper distils on chestxray14+chexpert)"})
    pretrain_data_root: Optional[list[str]] = field(default=None, metadata={
        "help": "its folder(s): DIR, or SOURCE=DIR per source of a combined set"})
    teachers: list[str] = field(default_factory=lambda: ["S", "B"], metadata={
        "help": "teacher sizes to distil from: S, B (the budget's teacher architectures)"})
    teacher_paths: Optional[list[str]] = field(default=None, metadata={
        "help": "NAME=PATH of given teacher weights (folder or .pth); the others are pre-trained by the sweep"})
    finetune_teachers: Optional[bool] = field(default=None, metadata={
        "help": "also fine-tune the teachers (default: when their weights are given by --teacher_paths; the "
                "teachers are always scored by the linear probe)"})
    teacher_normalization: Optional[str] = field(default=None, metadata={
        "help": "input statistics of .pth teachers (medical_mae | imagenet | cxr | half); see medmae pretrain"})
    teacher_epochs: Optional[int] = field(default=None, metadata={
        "help": "pre-training epochs of the sweep's teachers (default: the budget's; 25 on the synthetic set)"})


def check_arguments(args: Arguments) -> dict:
    """Validate everything before any file is written; returns the budget with names resolved."""
    dataset = check_dataset("etmae", args.dataset, ETMAE_DATASETS, args.data_root)
    budget = resolve_budget(args, ETMAE_BUDGETS)
    given = _teacher_paths(args.teacher_paths)
    unknown = [t for t in list(args.teachers) + list(given) if t not in budget["teachers"]]
    if unknown or not args.teachers:
        raise ValueError(f"--teachers must name sizes among {sorted(budget['teachers'])}, got {args.teachers} "
                         f"(and --teacher_paths {sorted(given)})")
    for name, path in given.items():
        if not Path(path).exists():
            raise FileNotFoundError(f"--teacher_paths {name}={path}: no such file or folder")
        if Path(path).is_file() and not args.teacher_normalization:
            raise ValueError(f"--teacher_paths {name}={path} is a checkpoint file without input statistics: give "
                             "--teacher_normalization (medical_mae | imagenet | cxr | half)")
    if args.teacher_epochs is not None:
        if args.teacher_epochs < 1 or budget["name"] == "paper":
            raise ValueError(f"--teacher_epochs {args.teacher_epochs}: a positive number, for the synthetic budgets "
                             "(the paper's teachers are given by --teacher_paths or trained by their preset)")
        budget = {**budget, "teacher_epochs": args.teacher_epochs}
    if budget["name"] == "paper" and dataset == "synthetic_cxr":
        raise ValueError("--preset paper runs the paper's recipe on chestxray14 or chexpert (224 px, ViT-Tiny/16)")
    return {**budget, "dataset": dataset, "teacher_names": list(dict.fromkeys(args.teachers)), "given": given}


def _teacher_paths(entries) -> dict[str, str]:
    out = {}
    for entry in entries or []:
        if "=" not in entry:
            raise ValueError(f"--teacher_paths takes NAME=PATH (e.g. S=vit-s_CXR_0.3M_mae.pth), got {entry!r}")
        name, path = entry.split("=", 1)
        out[name] = path
    return out


# ---------------------------------------------------------------------------------------------------------------
# Command lines of the stages
# ---------------------------------------------------------------------------------------------------------------
def _data_argv(args: Arguments, budget: dict, pretraining: bool) -> list[str]:
    dataset = budget["dataset"]
    if pretraining and args.pretrain_dataset:
        argv = ["--dataset", args.pretrain_dataset]
        for root in args.pretrain_data_root or []:
            argv += ["--data_root", root]
        return argv + ["--dataset_kwargs", "{}"]
    if dataset == "synthetic_cxr":
        return synthetic_data_argv(budget)
    return ["--dataset", dataset, "--data_root", args.data_root, "--dataset_kwargs", "{}"]


def _common(args: Arguments, seed: int) -> list[str]:
    argv = ["--seed", str(seed), "--progress_bar", str(args.progress_bar), "--figures", "False",
            "--save_total_limit", "1", "--logging_steps", "10", "--dataloader_num_workers",
            str(args.num_workers)]
    return argv + (["--num_threads", str(args.num_threads)] if args.num_threads else [])


def synthetic_data_argv(budget: dict) -> list[str]:
    """The synthetic chest X-ray set of a budget (its size and resolution; the data seed is the run's seed)."""
    return ["--dataset", "synthetic_cxr", "--dataset_kwargs",
            json.dumps({"num_images": budget["num_images"], "image_size": budget["image_size"]})]


def arch_argv(budget: dict, overrides: Optional[dict]) -> list[str]:
    """``--config_overrides`` of one architecture of a synthetic budget (nothing for the paper's presets)."""
    if overrides is None:
        return []
    return ["--config_overrides", json.dumps({**overrides, "image_size": budget["image_size"]})]


def pretrain_recipe(budget: dict, epochs_key: str, teacher: Optional[str] = None) -> list[str]:
    """The pre-training recipe of a budget (teacher MAE, plain student MAE or distillation share it)."""
    if budget["name"] == "paper":
        if teacher is not None:
            return ["--preset", "chestxray14_teacher", "--model_preset", PAPER_TEACHERS[teacher]]
        return ["--preset", "chestxray14"]
    return ["--preset", "demo_etmae_teacher", "--learning_rate", "1.5e-3", "--warmup_ratio", "0.05",
            "--num_train_epochs", str(budget[epochs_key]), "--per_device_train_batch_size", str(budget["batch_size"])]


def finetune_recipe(budget: dict) -> list[str]:
    """The multi-label fine-tuning recipe of a budget (layer-wise lr decay)."""
    if budget["name"] == "paper":
        return ["--preset", budget["dataset"]]
    return ["--preset", "demo_etmae", "--num_train_epochs", str(budget["finetune_epochs"]), "--learning_rate", "3e-3",
            "--layer_decay", "0.75", "--per_device_train_batch_size", "16"]


def plan_etmae(args: Arguments, budget: dict, runs_dir: Path, probe) -> list[Run]:
    """Teacher pre-trainings first, then per seed: student pre-trainings, fine-tunings and probes."""
    runs, teacher_dirs = [], {}
    for name in budget["teacher_names"]:
        if name in budget["given"]:
            given = Path(budget["given"][name])
            if given.is_file():  # a .pth: converted once into a folder that fine-tuning can start from
                folder = runs_dir / f"convert_teacher_{name}"
                runs.append(Run(folder.name, "call", ["--output_dir", str(folder)], 0, extra={"kind": "convert"},
                                call=lambda g=given, f=folder: convert_teacher(g, f, args.teacher_normalization,
                                                                               budget["dataset"])))
                given = folder
            teacher_dirs[name] = given
            continue
        folder = runs_dir / f"pretrain_teacher_{name}"
        arch = budget["teachers"][name]
        argv = [*pretrain_recipe(budget, "teacher_epochs", name), *_data_argv(args, budget, True),
                *(arch_argv(budget, arch) if isinstance(arch, dict) else []), *_common(args, 0), "--output_dir",
                str(folder)]
        runs.append(Run(folder.name, "pretrain", argv, 0))
        teacher_dirs[name] = folder
    students = {"plain MAE (no teacher)": None, **{f"distilled from teacher {n}": n for n in budget["teacher_names"]}}
    normalization = ["--teacher_normalization", args.teacher_normalization] if args.teacher_normalization else []
    for seed in budget["seeds"]:
        for row, teacher in students.items():
            tag = "mae" if teacher is None else f"from_{teacher}"
            pre = runs_dir / f"pretrain_student_{tag}_seed{seed}"
            argv = [*pretrain_recipe(budget, "student_epochs"), *_data_argv(args, budget, True),
                    *arch_argv(budget, budget["student"]), *_common(args, seed), "--output_dir", str(pre)]
            if teacher is None:
                argv += ["--task", "pretraining"]
            else:
                argv += ["--task", "distillation", "--teacher", str(teacher_dirs[teacher]), *normalization]
            runs.append(Run(pre.name, "pretrain", argv, seed))
            runs += _evaluations(args, budget, runs_dir, f"student_{tag}", f"Student, {row}", pre, seed, probe)
        scratch = runs_dir / f"finetune_student_scratch_seed{seed}"
        runs.append(Run(scratch.name, "finetune", [*finetune_recipe(budget), *_data_argv(args, budget, False),
                                                   *arch_argv(budget, budget["student"]), *_common(args, seed),
                                                   "--from_scratch", "--output_dir", str(scratch)], seed,
                        row="Student from scratch (no pre-training)", extra={"kind": "finetune"}))
        probe_dir = runs_dir / f"probe_student_scratch_seed{seed}"
        runs.append(Run(probe_dir.name, "call", ["--output_dir", str(probe_dir)], seed,
                        row="Student from scratch (no pre-training)", extra={"kind": "probe"},
                        call=lambda s=seed: probe(None, s)))
        finetune_teachers = args.finetune_teachers if args.finetune_teachers is not None else bool(budget["given"])
        for name in budget["teacher_names"]:
            evaluations = _evaluations(args, budget, runs_dir, f"teacher_{name}", f"Teacher {name}",
                                       teacher_dirs[name], seed, probe)
            runs += evaluations if finetune_teachers else evaluations[1:]
    return runs


def _evaluations(args, budget, runs_dir, tag, row, source: Path, seed: int, probe) -> list:
    """Fine-tuning and linear probe of one pre-trained encoder."""
    folder = runs_dir / f"finetune_{tag}_seed{seed}"
    argv = [*finetune_recipe(budget), *_data_argv(args, budget, False), *_common(args, seed), "--init_from",
            str(source), "--output_dir", str(folder)]
    probe_dir = runs_dir / f"probe_{tag}_seed{seed}"
    return [Run(folder.name, "finetune", argv, seed, row=row, extra={"kind": "finetune"}),
            Run(probe_dir.name, "call", ["--output_dir", str(probe_dir)], seed, row=row, extra={"kind": "probe"},
                call=lambda: probe(source, seed))]


# ---------------------------------------------------------------------------------------------------------------
# In-process steps: teacher conversion and linear probes
# ---------------------------------------------------------------------------------------------------------------
def convert_teacher(path: Path, folder: Path, normalization: str, dataset: str) -> dict:
    """A MAE / medical_mae ``.pth`` teacher as a medmae folder (encoder + processor) with the statistics it saw."""
    encoder = load_teacher(path)
    if normalization in TEACHER_SOURCE_STATISTICS:
        stats = TEACHER_SOURCE_STATISTICS[normalization][dataset]
        mean, std = stats["image_mean"], stats["image_std"]
    else:
        mean, std = NORMALIZATION_PRESETS[normalization]
    encoder.config.image_mean, encoder.config.image_std = list(mean), list(std)
    encoder.save_pretrained(folder)
    processor_for_config(encoder.config).save_pretrained(folder)
    return {"kind": "convert", "source_sha256": file_sha256(path), "image_mean": list(mean), "image_std": list(std)}


class Prober:
    """Linear probes of encoders on the fine-tuning dataset (loaded once, evaluation geometry, no augmentation)."""

    def __init__(self, args: Arguments, budget: dict):
        self.args, self.budget, self.splits = args, budget, None

    def _splits(self):
        if self.splits is None:
            kwargs = {"num_images": self.budget["num_images"], "image_size": self.budget["image_size"]} \
                if self.budget["dataset"] == "synthetic_cxr" else {}
            self.splits = load_dataset_by_name(self.budget["dataset"], self.args.data_root, **kwargs)
        return self.splits

    def _encoder(self, source: Optional[Path], seed: int):
        if source is None:  # the from-scratch row: the student architecture, randomly initialised
            if self.budget["name"] == "paper":
                config = ETMAEConfig.from_preset("vit_tiny_patch16_dec512d2b", teacher_hidden_size=None)
            else:
                config = ETMAEConfig.from_preset("tiny_test", teacher_hidden_size=None, **self.budget["student"],
                                                 image_size=self.budget["image_size"])
            torch.manual_seed(seed)
            return ETMAEModel(config), processor_for_config(config)
        folder = model_folder(source)
        return load_teacher(folder), MedMAEImageProcessor.from_pretrained(folder)

    def __call__(self, source: Optional[Path], seed: int) -> dict:
        splits = self._splits()
        encoder, processor = self._encoder(source, seed)
        recipe = "medical_mae" if self.budget["name"] == "paper" else "crop_flip"
        transform = MultiLabelTransform(processor, train=False, recipe=recipe)
        limit = self.budget["probe_images"]
        threads = torch.get_num_threads()
        torch.set_num_threads(self.args.num_threads or 1)
        try:
            train, test = (splits[name].select(range(min(limit, len(splits[name])))).with_transform(transform)
                           for name in ("train", "test"))
            features = encoder_features(encoder, train), encoder_features(encoder, test)
        finally:
            torch.set_num_threads(threads)
        names = label_names_of(splits, self.budget["dataset"], features[0][1].shape[1])
        return {"kind": "probe", "metrics": linear_probe(*features, names),
                "num_parameters": sum(p.numel() for p in encoder.parameters()), "seed": seed}


# ---------------------------------------------------------------------------------------------------------------
# Tables and verdicts
# ---------------------------------------------------------------------------------------------------------------
def collect(runs: list[Run], infos: dict, budget: dict, command: str) -> dict:
    rows: dict[str, dict] = {}
    for run in runs:
        if run.row is None:
            continue
        info = infos[run.name]
        entry = rows.setdefault(run.row, {"finetune": [], "probe": [], "per_label": {}, "num_parameters": None})
        metrics = info["metrics"]
        entry[run.extra["kind"]].append(metrics.get("mauc"))
        if run.extra["kind"] == "probe" and entry["num_parameters"] is None:
            entry["num_parameters"] = info["num_parameters"]  # the encoder's (no fine-tuning run)
        if run.extra["kind"] == "finetune":
            entry["num_parameters"] = info["num_parameters"]
            for key, value in metrics.items():
                if key.startswith("auc/"):
                    entry["per_label"].setdefault(key[4:], []).append(value)
    teachers = budget["teacher_names"]
    plain = "Student, plain MAE (no teacher)"
    claims = []
    for t in teachers:
        claims.append((f"distillation from teacher {t} beats plain MAE", f"Student, distilled from teacher {t}", plain))
    if len(teachers) > 1:
        claims.append((f"a larger teacher helps more ({teachers[-1]} over {teachers[0]})",
                       f"Student, distilled from teacher {teachers[-1]}", f"Student, distilled from teacher {teachers[0]}"))
    claims.append(("MAE pre-training beats training from scratch", plain, "Student from scratch (no pre-training)"))
    claims += [(f"teacher {t} is stronger than the plain student (sanity check)", f"Teacher {t}", plain)
               for t in teachers]
    verdicts = [verdict(claim, rows[better][kind], rows[worse][kind], f"mAUC ({kind})")
                for claim, better, worse in claims for kind in ("finetune", "probe")]
    setting = {k: budget[k] for k in ("dataset", "seeds", "image_size", "num_images", "teacher_epochs",
                                      "student_epochs", "finetune_epochs", "batch_size", "teacher_names")}
    return {"setting": {**setting, "preset": budget["name"], "teachers": budget["teachers"],
                        "student": budget["student"], "teacher_paths": budget["given"]},
            "command": command, "rows": rows, "verdicts": verdicts,
            "per_run": {run.name: {"seed": run.seed, "row": run.row, "metrics": infos[run.name].get("metrics")}
                        for run in runs},
            "configs": {run.name: infos[run.name].get("hyperparameters") for run in runs}}


def _params(count) -> str:
    return "-" if not count else (f"{count / 1e6:.1f}M" if count >= 1e6 else f"{count / 1e3:.0f}k")


def ablation_markdown(result: dict) -> str:
    setting, rows = result["setting"], result["rows"]
    lines = [f"# ETMAE on {setting['dataset']} ({setting['preset']} budget)", "",
             f"Test split; mean ± sd over seeds {', '.join(map(str, setting['seeds']))}; teachers pre-trained once "
             f"and shared. Command: `{result['command']}`", "",
             "## Table 2 layout", "", "| Model | #Params | mAUC(%) fine-tuned ↑ | mAUC(%) linear probe ↑ |",
             "|---|---|---|---|"]
    for name, entry in rows.items():
        lines.append(f"| {name} | {_params(entry['num_parameters'])} | {cell(entry['finetune'], True)} | "
                     f"{cell(entry['probe'], True)} |")
    labels = sorted({label for entry in rows.values() for label in entry["per_label"]})
    if labels:
        lines += ["", "## Per-label AUC(%) after fine-tuning", "", "| Model | " + " | ".join(labels) + " |",
                  "|---" * (len(labels) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(cell(entry["per_label"].get(label, []), True) for label in labels)
                  + " |" for name, entry in rows.items()]
    lines += ["", *verdict_lines(result["verdicts"], percent_metrics=("mAUC (finetune)", "mAUC (probe)"))]
    return "\n".join(lines) + "\n"


def reproduce(args: Arguments, command: str) -> dict:
    budget = check_arguments(args)
    out = Path(args.output_dir).expanduser().resolve()
    runs = plan_etmae(args, budget, out / "runs", Prober(args, budget))
    check_plan(out, {"method": "etmae", "dataset": budget["dataset"], "data_root": args.data_root,
                     "pretrain_dataset": args.pretrain_dataset, "preset": budget["name"],
                     "teacher_epochs": budget["teacher_epochs"],
                     "teachers": budget["teacher_names"], "teacher_paths": budget["given"], "seeds": budget["seeds"],
                     "runs": [r.name for r in runs]},
               keys=("method", "dataset", "data_root", "pretrain_dataset", "preset", "teacher_paths", "teacher_epochs"))
    print(f"medmae reproduce etmae: {len(runs)} runs ({budget['name']} budget, teachers {budget['teacher_names']}, "
          f"seeds {budget['seeds']}) in {out}", flush=True)
    return execute(out, runs, lambda infos: collect(runs, infos, budget, command), ablation_markdown)
