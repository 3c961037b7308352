# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""SDDA-MAE's ablation (Tables 1-4, Figures 2/3) over seeds: ``medmae reproduce sdda``.

    medmae reproduce sdda --dataset synthetic_ultrasound --seeds 0 1 2 --output_dir ablation_sdda
    medmae reproduce sdda --dataset busi --data_root /data/BUSI --preset paper --seeds 0 1 2 --output_dir busi_abl

The SDDA-MAE ablation (paper Tables 1-4, Figures 2/3) is a small graph of ordinary ``pretrain`` / ``finetune``
runs, one folder each under ``runs/``:

* pre-training per seed: ``dat`` (dual attention only, ``sd_weight=0``) and ``dat_sd`` (with self-distillation),
  at the paper's mask ratio, plus ``dat_sd`` at every other ``--mask_ratios`` value;
* fine-tuning per seed: Only Encoder (DAT), Only Encoder (DAT & SD), Encoder & Decoder (DAT), Encoder & Decoder
  (DAT & SD), from scratch (no pre-training), and Encoder & Decoder (DAT & SD) at every other mask ratio.

Each pre-training is shared by the rows that use it. A finished run (``run_info.json``) is read back, an
interrupted one continues from its last checkpoint (``--resume latest``), so the same command continues a partial
sweep; ``plan.json`` records the sweep and a different sweep in the same folder is refused. The tables
(``ablation.md``, ``ablation.json``, ``mask_ratio.png``) are written only when every run has finished, each
through a temporary file, so a failed or interrupted sweep never leaves a half-written table.

The seed changes the training (initialisation, masking, augmentation, batch order); the data and its split stay
fixed, so rows are compared pairwise per seed (verdict rule: ``training/sweep.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .figures import _plt
from .sweep import (
    Run,
    SweepArguments,
    cell,
    check_dataset,
    check_plan,
    mean_sd,
    execute,
    resolve_budget,
    verdict,
    verdict_lines,
)


# ---------------------------------------------------------------------------------------------------------------
# Budgets: what one pre-training / fine-tuning run of the sweep costs.
# ---------------------------------------------------------------------------------------------------------------
SDDA_BUDGETS = {
    # the test suite's end-to-end check (a few minutes on 2 CPU cores): not a result
    "quick": dict(model_preset="tiny_test", image_size=32, num_images=48, pretrain_epochs=1, finetune_epochs=1,
                  batch_size=8, mask_ratios=(0.6, 0.4), seeds=(0, 1), figures=False),
    # the laptop budget: tiny model, 64 px, 400 synthetic images (about 30 minutes for 3 seeds on 2 CPU cores)
    "default": dict(model_preset="tiny_test", image_size=64, num_images=400, pretrain_epochs=8, finetune_epochs=10,
                    batch_size=16, mask_ratios=(0.6, 0.4, 0.8), seeds=(0, 1, 2), figures=False),
    # the paper's Setting (512 px, its epochs, batch sizes and learning rates): for a GPU
    "paper": dict(model_preset="sdda_mae_512", image_size=512, num_images=None, pretrain_epochs=None,
                  finetune_epochs=None, batch_size=None, mask_ratios=(0.6, 0.4, 0.5, 0.7, 0.8), seeds=(0, 1, 2),
                  figures=True),
}
SDDA_DATASETS = {"busi": "busi", "siim_acr": "siim_acr", "synthetic_ultrasound": "busi"}  # -> the paper's recipe
PAPER_MASK_RATIO = 0.6

# Rows of the paper's Tables 1-4: (name, pre-training ("dat" | "dat_sd" | None), transfer).
SDDA_ROWS = [
    ("Only Encoder (DAT)", "dat", "encoder"),
    ("Only Encoder (DAT & SD)", "dat_sd", "encoder"),
    ("Encoder & Decoder (DAT)", "dat", "encoder_decoder"),
    ("Encoder & Decoder (DAT & SD)", "dat_sd", "encoder_decoder"),
    ("From scratch (no pre-training)", None, None),
]
# Claims of the paper checked by paired differences of rows: (claim, better row, worse row).
SDDA_CLAIMS = [
    ("SD helps the encoder-only transfer", "Only Encoder (DAT & SD)", "Only Encoder (DAT)"),
    ("SD helps the encoder & decoder transfer", "Encoder & Decoder (DAT & SD)", "Encoder & Decoder (DAT)"),
    ("transferring the decoder helps", "Encoder & Decoder (DAT & SD)", "Only Encoder (DAT & SD)"),
    ("pre-training helps (vs. from scratch)", "Encoder & Decoder (DAT & SD)", "From scratch (no pre-training)"),
]
SEG_METRICS = ("dice", "jaccard", "hd95", "asd")
CLS_METRICS = ("accuracy", "precision", "recall")
LOWER_IS_BETTER = {"hd95", "asd"}


@dataclass
class Arguments(SweepArguments):
    output_dir: str = field(default="reproduce_sdda", metadata={"help": "folder of runs/ and the tables"})
    dataset: str = field(default="synthetic_ultrasound", metadata={
        "help": "busi | siim_acr | synthetic_ultrasound"})
    data_root: Optional[str] = field(default=None, metadata={"help": "dataset folder (busi, siim_acr)"})
    mask_ratios: Optional[list[float]] = field(default=None, metadata={
        "help": "pre-training mask ratios of the Figures 2/3 sweep (0.6, the paper's, is always run)"})
    sd_weight: Optional[float] = field(default=None, metadata={
        "help": "weight of the SD term in the (DAT & SD) pre-trainings (default: the model config's)"})


# ---------------------------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------------------------
def check_arguments(args: Arguments) -> dict:
    """Validate everything before any file is written; returns the budget with seeds and mask ratios resolved."""
    dataset = check_dataset("sdda", args.dataset, SDDA_DATASETS, args.data_root)
    budget = resolve_budget(args, SDDA_BUDGETS)
    ratios = list(args.mask_ratios) if args.mask_ratios is not None else list(budget["mask_ratios"])
    if args.mask_ratios is not None and not args.mask_ratios:
        raise ValueError("--mask_ratios is empty: give at least one ratio in (0, 1), e.g. --mask_ratios 0.4 0.6 0.8")
    bad = [r for r in ratios if not 0.0 < r < 1.0]
    if bad:
        raise ValueError(f"--mask_ratios must lie in (0, 1), got {bad}")
    if args.sd_weight is not None and args.sd_weight <= 0:
        raise ValueError(f"--sd_weight must be positive (the (DAT) rows already run without SD), got {args.sd_weight}")
    ratios = sorted(set(ratios) | {PAPER_MASK_RATIO})
    return {**budget, "dataset": dataset, "mask_ratios": ratios}


def _common_argv(args: Arguments, budget: dict, seed: int) -> list[str]:
    dataset = budget["dataset"]
    argv = ["--dataset", dataset, "--seed", str(seed), "--image_size", str(budget["image_size"]),
            "--model_preset", budget["model_preset"], "--progress_bar", str(args.progress_bar),
            "--figures", str(budget["figures"]), "--save_total_limit", "1", "--logging_steps", "5",
            "--dataloader_num_workers", str(args.num_workers)]
    if args.data_root:
        argv += ["--data_root", args.data_root]
    if dataset.startswith("synthetic"):
        kwargs = {"image_size": budget["image_size"]}
        if budget["num_images"]:
            kwargs["num_images"] = budget["num_images"]
        argv += ["--dataset_kwargs", json.dumps(kwargs)]
    else:  # the laptop recipe's synthetic-set arguments do not apply to a real dataset
        argv += ["--dataset_kwargs", "{}"]
    if args.num_threads:
        argv += ["--num_threads", str(args.num_threads)]
    return argv


def _recipe(script: str, budget: dict) -> list[str]:
    """The preset of a stage: the paper's recipe of the dataset, or the laptop recipe (``demo``)."""
    if budget["name"] == "paper":
        return ["--preset", SDDA_DATASETS[budget["dataset"]]]
    epochs = budget["pretrain_epochs" if script == "pretrain" else "finetune_epochs"]
    return ["--preset", "demo", "--num_train_epochs", str(epochs), "--per_device_train_batch_size",
            str(budget["batch_size"])]


def _ratio_tag(ratio: float) -> str:
    return f"mr{round(ratio * 100):02d}"


def plan_sdda(args: Arguments, budget: dict, runs_dir: Path) -> list[Run]:
    """Every run of the sweep, pre-trainings before the fine-tunings that start from them."""
    pretrainings, finetunings = [], []
    for seed in budget["seeds"]:
        common = _common_argv(args, budget, seed)
        sources = {}
        for ratio in budget["mask_ratios"]:
            kinds = ("dat", "dat_sd") if ratio == PAPER_MASK_RATIO else ("dat_sd",)
            for kind in kinds:
                name = f"pretrain_{kind}_{_ratio_tag(ratio)}_seed{seed}"
                overrides = {"sd_weight": 0.0} if kind == "dat" else (
                    {"sd_weight": args.sd_weight} if args.sd_weight is not None else {})
                argv = [*_recipe("pretrain", budget), *common, "--mask_ratio", str(ratio),
                        "--output_dir", str(runs_dir / name)]
                if overrides:
                    argv += ["--config_overrides", json.dumps(overrides)]
                pretrainings.append(Run(name, "pretrain", argv, seed, extra={"mask_ratio": ratio}))
                sources[(kind, ratio)] = runs_dir / name
        for row, kind, transfer in SDDA_ROWS:
            name = "finetune_" + ("scratch" if kind is None else f"{kind}_{transfer}") + f"_seed{seed}"
            argv = [*_recipe("finetune", budget), *common, "--output_dir", str(runs_dir / name)]
            argv += ["--from_scratch"] if kind is None else \
                ["--init_from", str(sources[(kind, PAPER_MASK_RATIO)]), "--transfer", transfer]
            finetunings.append(Run(name, "finetune", argv, seed, row=row, extra={"mask_ratio": PAPER_MASK_RATIO}))
        for ratio in budget["mask_ratios"]:
            if ratio == PAPER_MASK_RATIO:
                continue
            name = f"finetune_dat_sd_encoder_decoder_{_ratio_tag(ratio)}_seed{seed}"
            argv = [*_recipe("finetune", budget), *common, "--output_dir", str(runs_dir / name),
                    "--init_from", str(sources[("dat_sd", ratio)]), "--transfer", "encoder_decoder"]
            finetunings.append(Run(name, "finetune", argv, seed, extra={"mask_ratio": ratio}))
    return pretrainings + finetunings


# ---------------------------------------------------------------------------------------------------------------
# Running (resumable)
# ---------------------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------------------------
# Tables and verdicts
# ---------------------------------------------------------------------------------------------------------------
def ablation_markdown(result: dict) -> str:
    rows, setting = result["rows"], result["setting"]
    seeds = ", ".join(map(str, setting["seeds"]))
    convention = result["distance_convention"]
    lines = [f"# SDDA-MAE ablation on {setting['dataset']} ({setting['preset']} budget)", "",
             f"Test split; mean ± sd over seeds {seeds} ({len(setting['seeds'])} runs per row); mask ratio "
             f"{PAPER_MASK_RATIO}; HD95 / ASD in pixels ({convention} convention). Command: `{result['command']}`",
             "", "## Segmentation (Tables 1 / 3)", "",
             f"| Method | Dice(%) ↑ | Jaccard(%) ↑ | HD95 ({convention}) ↓ | ASD ↓ |", "|---|---|---|---|---|"]
    for name, per in rows.items():
        lines.append(f"| {name} | {cell(per['dice'], True)} | {cell(per['jaccard'], True)} | "
                     f"{cell(per['hd95'], False)} | {cell(per['asd'], False)} |")
    lines += ["", "## Classification (Tables 2 / 4)", "", "| Method | ACC(%) ↑ | PRE(%) ↑ | REC(%) ↑ |",
              "|---|---|---|---|"]
    for name, per in rows.items():
        lines.append(f"| {name} | {cell(per['accuracy'], True)} | {cell(per['precision'], True)} | "
                     f"{cell(per['recall'], True)} |")
    if len(result["mask_ratio"]) > 1:
        lines += ["", "## Mask ratio (Figures 2 / 3): Encoder & Decoder (DAT & SD)", "",
                  "| mask ratio | Dice(%) ↑ | ACC(%) ↑ |", "|---|---|---|"]
        for ratio, per in result["mask_ratio"].items():
            lines.append(f"| {ratio} | {cell(per['dice'], True)} | {cell(per['accuracy'], True)} |")
    lines += ["", *verdict_lines(result["verdicts"], percent_metrics=("dice", "accuracy"))]
    return "\n".join(lines) + "\n"


def mask_ratio_figure(result: dict, path: Path) -> Path:
    plt = _plt()
    ratios = [float(r) for r in result["mask_ratio"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric, label in ((axes[0], "dice", "Dice (%)"), (axes[1], "accuracy", "ACC (%)")):
        stats = [mean_sd(per[metric]) for per in result["mask_ratio"].values()]
        ax.errorbar(ratios, [100 * (m or 0) for m, _, _ in stats], yerr=[100 * (s or 0) for _, s, _ in stats],
                    marker="o", capsize=3)
        ax.set_xlabel("pre-training mask ratio")
        ax.set_ylabel(label)
    fig.suptitle(f"SDDA-MAE mask ratio, {result['setting']['dataset']} ({result['setting']['preset']}): mean ± sd "
                 f"over {len(result['setting']['seeds'])} seeds", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name("tmp_" + path.name)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def collect(runs: list[Run], infos: dict, budget: dict, command: str) -> dict:
    """The per-seed numbers of every row and mask ratio, and the verdicts."""
    metrics = SEG_METRICS + CLS_METRICS
    rows = {name: {m: [] for m in metrics} for name, _, _ in SDDA_ROWS}
    ratios = {str(r): {m: [] for m in metrics} for r in budget["mask_ratios"]}
    per_seed, conventions = [], set()
    for run in runs:
        if run.script != "finetune":
            continue
        values = infos[run.name]["metrics"]
        conventions.add(values.get("distance_convention", "medpy"))
        per_seed.append({"run": run.name, "row": run.row, "seed": run.seed, "mask_ratio": run.extra["mask_ratio"],
                         **{m: values.get(m) for m in metrics}})
        if run.row is not None:
            for m in metrics:
                rows[run.row][m].append(values.get(m))
        if run.row is None or run.row == "Encoder & Decoder (DAT & SD)":
            for m in metrics:
                ratios[str(run.extra["mask_ratio"])][m].append(values.get(m))
    verdicts = [verdict(claim, rows[better][metric], rows[worse][metric], metric, metric in LOWER_IS_BETTER)
                for claim, better, worse in SDDA_CLAIMS for metric in ("dice", "accuracy")]
    setting = {k: budget[k] for k in ("dataset", "seeds", "mask_ratios", "model_preset", "image_size", "num_images",
                                      "pretrain_epochs", "finetune_epochs", "batch_size")}
    return {"setting": {**setting, "preset": budget["name"]}, "command": command, "rows": rows, "mask_ratio": ratios,
            "verdicts": verdicts, "per_seed": per_seed, "distance_convention": "/".join(sorted(conventions)),
            "configs": {run.name: infos[run.name].get("hyperparameters") for run in runs}}


# ---------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------
def reproduce(args: Arguments, command: str) -> dict:
    budget = check_arguments(args)
    out = Path(args.output_dir).expanduser().resolve()
    runs = plan_sdda(args, budget, out / "runs")
    check_plan(out, {"method": "sdda", "dataset": budget["dataset"], "data_root": args.data_root,
                     "preset": budget["name"], "sd_weight": args.sd_weight, "seeds": budget["seeds"],
                     "mask_ratios": budget["mask_ratios"], "runs": [r.name for r in runs]},
               keys=("method", "dataset", "data_root", "preset", "sd_weight"))
    print(f"medmae reproduce sdda: {len(runs)} runs ({budget['name']} budget, seeds {budget['seeds']}, mask ratios "
          f"{budget['mask_ratios']}) in {out}", flush=True)
    figure = (lambda result, folder: mask_ratio_figure(result, folder / "mask_ratio.png")) \
        if len(budget["mask_ratios"]) > 1 else None
    return execute(out, runs, lambda infos: collect(runs, infos, budget, command), ablation_markdown, figure)


