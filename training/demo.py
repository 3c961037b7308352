# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""``medmae demo``: both papers' methods end to end on the built-in synthetic sets, on a laptop CPU.

1. generate the synthetic ultrasound (BUSI-like) and chest-X-ray (NIH-like) sets;
2. ETMAE: pre-train a small teacher MAE, distil a tiny student from it (and, as the control, pre-train the same
   student as a plain MAE for the same steps), fine-tune both students for multi-label classification with
   layer-wise lr decay, evaluate mAUC on the test split;
3. SDDA-MAE: pre-train with self-distillation, fine-tune joint segmentation + classification with
   encoder+decoder transfer, evaluate Dice / Jaccard / HD95 / ASD and ACC / PRE / REC on the test split;
4. write ``results.md`` / ``results.json``, the figures of every run, and Hub-ready folders (model + processor
   + card) under the output directory, and print where they are.

Every stage is an ordinary ``pretrain`` / ``finetune`` run (same code path as ``medmae pretrain``), all in one
process to pay the import cost once. Models run with one CPU thread (tiny matrices: more threads are slower on
2 cores) in fp32 (measured: bf16 autocast on an avx512_bf16 CPU was 2-4x SLOWER at this size). Checkpoints
are chosen on validation; the table reports test.

``--quick`` runs the same pipeline with a few steps per stage (about a minute): the test suite's end-to-end
check, not a result.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .args import parse_args

# Model sizes: 64 px chest X-rays with 8 px patches (64 tokens); 64 px ultrasound for SDDA-MAE tiny.
CXR_SIZE = 64
TEACHER = {"image_size": CXR_SIZE, "patch_size": 8, "hidden_size": 64, "num_hidden_layers": 4,
           "num_attention_heads": 4, "intermediate_size": 128, "decoder_hidden_size": 32,
           "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2, "decoder_intermediate_size": 64}
# tiny_test: 32 wide, 4 blocks, 2 heads (aligned with the teacher at block 2 = 3/4 depth)
STUDENT = {"image_size": CXR_SIZE, "patch_size": 8}

SCHEDULES = {
    # images, epochs per stage; chosen by measuring on 2 CPU cores (see the README's Training section).
    "full": dict(cxr_images=2000, us_images=480, teacher_epochs=20, student_epochs=8, cls_epochs=12,
                 sdda_pre_epochs=12, sdda_ft_epochs=12),
    "quick": dict(cxr_images=96, us_images=64, teacher_epochs=1, student_epochs=1, cls_epochs=1,
                  sdda_pre_epochs=1, sdda_ft_epochs=1),
}


@dataclass
class DemoArguments:
    output_dir: str = field(default="medmae_demo", metadata={"help": "where runs, results and hub folders go"})
    quick: bool = field(default=False, metadata={"help": "a 1-minute smoke run of the whole pipeline"})
    seed: int = field(default=0)
    num_threads: Optional[int] = field(default=None, metadata={"help": "CPU threads (default 1: tiny models)"})
    mixed_precision: str = field(default="auto")
    hub: bool = field(default=True, metadata={"help": "export Hub-ready folders (medmae.hub_cards)"})
    progress_bar: bool = field(default=True)
    num_workers: int = field(default=1, metadata={
        "help": "DataLoader workers: 1 decodes and augments on the second core while the model trains on the first"})


def _json(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"))


def stage_argv(name: str, args: DemoArguments, runs: Path, schedule: dict) -> list[str]:
    """The command line of one stage (what ``medmae pretrain|finetune`` would be given)."""
    cxr = ["--dataset", "synthetic_cxr", "--dataset_kwargs", _json({"num_images": schedule["cxr_images"],
                                                                    "image_size": CXR_SIZE})]
    us = ["--dataset", "synthetic_ultrasound", "--dataset_kwargs", _json({"num_images": schedule["us_images"],
                                                                          "image_size": 64})]
    common = ["--seed", str(args.seed), "--mixed_precision", args.mixed_precision, "--logging_steps", "5",
              "--num_workers", str(args.num_workers),
              "--progress_bar", str(args.progress_bar), "--save_total_limit", "1"]
    if args.num_threads:
        common += ["--num_threads", str(args.num_threads)]
    etmae_pre = ["--preset", "demo_etmae_teacher", *cxr, "--lr", "1.5e-3", "--warmup_ratio", "0.05"]
    etmae_cls = ["--preset", "demo_etmae", *cxr, "--num_epochs", str(schedule["cls_epochs"]), "--lr", "3e-3",
                 "--layer_decay", "0.75", "--batch_size", "16"]
    table = {
        "etmae_teacher": [*etmae_pre, "--config_overrides", _json(TEACHER), "--num_epochs",
                          str(schedule["teacher_epochs"])],
        "etmae_student_distilled": [*etmae_pre, "--config_overrides", _json(STUDENT), "--teacher",
                                    str(runs / "etmae_teacher"), "--task", "distillation", "--num_epochs",
                                    str(schedule["student_epochs"])],
        "etmae_student_mae": [*etmae_pre, "--config_overrides", _json(STUDENT), "--num_epochs",
                              str(schedule["student_epochs"])],
        "etmae_cls_distilled": [*etmae_cls, "--init_from", str(runs / "etmae_student_distilled")],
        "etmae_cls_mae": [*etmae_cls, "--init_from", str(runs / "etmae_student_mae")],
        "sdda_pretrain": ["--preset", "demo", *us, "--num_epochs", str(schedule["sdda_pre_epochs"])],
        "sdda_finetune": ["--preset", "demo", *us, "--num_epochs", str(schedule["sdda_ft_epochs"]), "--init_from",
                          str(runs / "sdda_pretrain"), "--transfer", "encoder_decoder"],
    }
    return [*table[name], *common, "--output_dir", str(runs / name)]


STAGES = [("etmae_teacher", "pretrain"), ("etmae_student_distilled", "pretrain"), ("etmae_student_mae", "pretrain"),
          ("etmae_cls_distilled", "finetune"), ("etmae_cls_mae", "finetune"), ("sdda_pretrain", "pretrain"),
          ("sdda_finetune", "finetune")]


def trivial_baselines(schedule: dict, seed: int) -> dict:
    """What chance gives on the test splits: mAUC 0.5; all-background masks and the majority class."""
    from .evaluate import compute_metrics
    from .synthetic import make_synthetic_ultrasound

    test = make_synthetic_ultrasound(num_images=schedule["us_images"], image_size=64, seed=seed)
    train_labels = np.asarray(test["train"]["label"])
    masks = np.stack([np.asarray(m) for m in test["test"]["mask"]]) > 0
    labels = np.asarray(test["test"]["label"])
    majority = np.bincount(train_labels, minlength=3).argmax()
    probs = np.eye(3)[np.full(len(labels), majority)]
    sdda = compute_metrics("segcls", {"seg_pred": np.zeros_like(masks, dtype=np.int64), "seg_true": masks.astype(np.int64),
                                      "cls_prob": probs, "cls_true": labels})
    return {"etmae": {"mauc": 0.5}, "sdda_mae": sdda}


def results_markdown(infos: dict, baselines: dict, wall_time: float, quick: bool) -> str:
    from .evaluate import classification_table, mauc_table, segmentation_table

    et = {"ETMAE student, distilled from the teacher (ours)": infos["etmae_cls_distilled"]["metrics"],
          "same student, MAE pre-training without distillation": infos["etmae_cls_mae"]["metrics"],
          "chance": baselines["etmae"]}
    params = {name: infos["etmae_cls_distilled"]["num_parameters"] for name in list(et)[:2]}
    sd_name = "SDDA-MAE, Encoder & Decoder (DAT & SD)"
    sd = {sd_name: infos["sdda_finetune"]["metrics"],
          "trivial (all background, majority class)": baselines["sdda_mae"]}
    teacher = infos["etmae_teacher"]["num_parameters"]
    student = infos["etmae_student_distilled"]["num_parameters"]
    lines = [f"# medmae demo results{' (--quick: a smoke run, not a result)' if quick else ''}", "",
             f"Synthetic data, test splits, models chosen on validation. Wall time {wall_time:.0f} s.", "",
             f"## ETMAE (multi-label classification, synthetic chest X-ray, {CXR_SIZE} px)", "",
             f"Teacher MAE {teacher / 1e3:.0f}k parameters -> student {student / 1e3:.0f}k (pre-training, with the "
             "projection head); students fine-tuned with layer-wise lr decay.", "",
             mauc_table(et, "synthetic_cxr (test)", params), "",
             "## SDDA-MAE (joint segmentation + classification, synthetic ultrasound, 64 px)", "",
             segmentation_table(sd, "synthetic_ultrasound (test)"), "",
             classification_table(sd, "synthetic_ultrasound (test)")]
    return "\n".join(lines)


def _export_hub(runs: Path, hub: Path, names: Sequence[str]) -> tuple[list[Path], Optional[str]]:
    if importlib.util.find_spec("medmae.hub_cards.export") is None:
        return [], "medmae.hub_cards.export is not installed: final/ folders hold save_pretrained + processor only"
    from ..hub_cards.export import export_folder

    done = []
    for name in names:
        done.append(export_folder(runs / name, hub / name, overwrite=True))
    return done, None


def main(argv: Optional[Sequence[str]] = None) -> dict:
    import transformers

    from . import finetune, pretrain

    (args,) = parse_args("demo", list(sys.argv[1:] if argv is None else argv), (DemoArguments,))
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    schedule = SCHEDULES["quick" if args.quick else "full"]
    out = Path(args.output_dir).expanduser().resolve()
    runs = out / "runs"
    started = time.perf_counter()
    print(f"medmae demo{' --quick' if args.quick else ''}: output in {out}")

    from .synthetic import make_synthetic_cxr, make_synthetic_ultrasound, save_example_grid

    (out / "figures").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cxr = make_synthetic_cxr(num_images=schedule["cxr_images"], image_size=CXR_SIZE, seed=args.seed)
    us = make_synthetic_ultrasound(num_images=schedule["us_images"], image_size=64, seed=args.seed)
    save_example_grid(cxr["train"], out / "figures" / "synthetic_cxr.png", num_examples=8)
    save_example_grid(us["train"], out / "figures" / "synthetic_ultrasound.png", num_examples=8)
    print(f"[1/4] synthetic sets: {schedule['cxr_images']} chest X-rays ({CXR_SIZE} px, {len(cxr['train'][0]['labels'])} "
          f"findings), {schedule['us_images']} ultrasound images (64 px, masks + 3 classes) in "
          f"{time.perf_counter() - t0:.1f} s")

    infos, timings = {}, {}
    scripts = {"pretrain": pretrain.main, "finetune": finetune.main}
    for index, (name, script) in enumerate(STAGES):
        step = "2/4" if name.startswith("etmae") else "3/4"
        t0 = time.perf_counter()
        infos[name] = scripts[script](stage_argv(name, args, runs, schedule))
        timings[name] = round(time.perf_counter() - t0, 1)
        shown = {k: round(v, 4) for k, v in infos[name]["metrics"].items()
                 if isinstance(v, float) and "/" not in k}
        print(f"[{step}] {name}: {timings[name]} s, {infos[name]['eval_split']} {shown}")

    baselines = trivial_baselines(schedule, args.seed)
    hub_dirs, note = [], None
    if args.hub:
        hub_dirs, note = _export_hub(runs, out / "hub", ["etmae_student_distilled", "etmae_cls_distilled",
                                                         "sdda_pretrain", "sdda_finetune"])
    wall = time.perf_counter() - started
    text = results_markdown(infos, baselines, wall, args.quick)
    (out / "results.md").write_text(text)
    payload = {"wall_time_s": round(wall, 1), "stage_seconds": timings, "quick": args.quick,
               "runs": {name: {"metrics": info["metrics"], "eval_split": info["eval_split"],
                               "num_parameters": info["num_parameters"]} for name, info in infos.items()},
               "baselines": baselines, "hub": [str(p) for p in hub_dirs], "hub_note": note}
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    print("\n" + text)
    print(f"[4/4] results: {out / 'results.md'} (and results.json)")
    print(f"      figures: {out / 'figures'} and {runs}/*/figures")
    print(f"      hub-ready folders: {out / 'hub'}" if hub_dirs else f"      hub folders: {note}")
    print(f"      wall time {wall:.0f} s")
    return payload


if __name__ == "__main__":
    main()
