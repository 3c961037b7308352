# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""``medmae demo``: both papers' methods end to end on the built-in synthetic sets, on a laptop CPU.

1. generate the synthetic ultrasound (BUSI-like) and chest-X-ray (NIH-like) sets;
2-6. ETMAE, seed 0 of ``medmae reproduce etmae`` (the setting measured over 3 seeds in the README):
   pre-train teacher S (6 x 96-d MAE, 25 epochs), distil a tiny student (4 x 32-d) from it and, as the control,
   pre-train the same student as a plain MAE for the same steps; fine-tune both students for multi-label
   classification with layer-wise lr decay, evaluate mAUC on the test split;
7-8. SDDA-MAE: pre-train with self-distillation, fine-tune joint segmentation + classification with
   encoder+decoder transfer, evaluate Dice / Jaccard / HD95 / ASD and ACC / PRE / REC on the test split;
9. write ``results.md`` / ``results.json`` (with the seconds of every stage), the figures of every run, and
   Hub-ready folders (model + processor + card) under the output directory, and print where they are.

Every stage is an ordinary ``pretrain`` / ``finetune`` run (same code path as ``medmae pretrain``). The stages run
in two processes at once, one per core: the teacher chain (teacher, distilled student, its fine-tuning: the
longest) beside everything else; ``--lanes 1`` runs them one after another with identical results. Models run with one CPU thread (tiny matrices: more threads are slower on
2 cores) in fp32 (measured: bf16 autocast on an avx512_bf16 CPU was 2-4x SLOWER at this size). Checkpoints
are chosen on validation; the table reports test.

``--quick`` runs the same pipeline with a few steps per stage (about a minute): the test suite's end-to-end
check, not a result.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import transformers

from . import finetune, pretrain, reproduce_etmae
from .args import parse_args
from .evaluate import classification_table, compute_metrics, mauc_table, segmentation_table
from .synthetic import make_synthetic_cxr, make_synthetic_ultrasound, save_example_grid

# ETMAE's setting is ``medmae reproduce etmae`` (default budget; the demo is its seed 0: teacher S, 6 x 96-d, 25
# epochs; tiny student 4 x 32-d, 8 epochs; 12 fine-tuning epochs), measured over 3 seeds in the README.
ETMAE_BUDGETS = {scale: {**reproduce_etmae.ETMAE_BUDGETS[name], "name": name}
                 for scale, name in (("full", "default"), ("quick", "quick"))}
# SDDA-MAE: 64 px synthetic ultrasound, the ``demo`` preset (tiny SDDA-MAE); images and epochs per stage.
SDDA_SCHEDULES = {"full": dict(us_images=480, sdda_pre_epochs=12, sdda_ft_epochs=12),
                  "quick": dict(us_images=64, sdda_pre_epochs=1, sdda_ft_epochs=1)}
US_SIZE = 64


@dataclass
class DemoArguments:
    output_dir: str = field(default="medmae_demo", metadata={"help": "where runs, results and hub folders go"})
    quick: bool = field(default=False, metadata={"help": "a 1-minute smoke run of the whole pipeline"})
    seed: int = field(default=0)
    num_threads: Optional[int] = field(default=None, metadata={"help": "CPU threads (default 1: tiny models)"})
    mixed_precision: str = field(default="auto")
    hub: bool = field(default=True, metadata={"help": "export Hub-ready folders (medmae.hub_cards)"})
    progress_bar: bool = field(default=True)
    num_workers: int = field(default=0, metadata={
        "help": "DataLoader workers per stage (default 0: the two lanes of stages already use both cores)"})
    lanes: int = field(default=2, metadata={
        "help": "stages run in this many processes at once (the teacher chain beside the rest); 1: one after another. "
                "Results are identical either way (every stage is seeded on its own)"})


def _json(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"))


def stage_argv(name: str, args: DemoArguments, runs: Path, scale: str) -> list[str]:
    """The command line of one stage (what ``medmae pretrain|finetune`` would be given); ``scale``: full | quick."""
    etmae, sdda = ETMAE_BUDGETS[scale], SDDA_SCHEDULES[scale]
    cxr = reproduce_etmae.synthetic_data_argv(etmae)
    us = ["--dataset", "synthetic_ultrasound", "--dataset_kwargs", _json({"num_images": sdda["us_images"],
                                                                          "image_size": US_SIZE})]
    common = ["--seed", str(args.seed), "--mixed_precision", args.mixed_precision, "--logging_steps", "5",
              "--dataloader_num_workers", str(args.num_workers),
              "--progress_bar", str(args.progress_bar), "--save_total_limit", "1", "--overwrite"]
    if args.num_threads:
        common += ["--num_threads", str(args.num_threads)]
    student = [*reproduce_etmae.pretrain_recipe(etmae, "student_epochs"), *cxr,
               *reproduce_etmae.arch_argv(etmae, etmae["student"])]
    etmae_cls = [*reproduce_etmae.finetune_recipe(etmae), *cxr]
    table = {
        "etmae_teacher": [*reproduce_etmae.pretrain_recipe(etmae, "teacher_epochs"), *cxr,
                          *reproduce_etmae.arch_argv(etmae, etmae["teachers"]["S"])],
        "etmae_student_distilled": [*student, "--task", "distillation", "--teacher", str(runs / "etmae_teacher")],
        "etmae_student_mae": [*student, "--task", "pretraining"],
        "etmae_cls_distilled": [*etmae_cls, "--init_from", str(runs / "etmae_student_distilled")],
        "etmae_cls_mae": [*etmae_cls, "--init_from", str(runs / "etmae_student_mae")],
        "sdda_pretrain": ["--preset", "demo", *us, "--num_train_epochs", str(sdda["sdda_pre_epochs"])],
        "sdda_finetune": ["--preset", "demo", *us, "--num_train_epochs", str(sdda["sdda_ft_epochs"]), "--init_from",
                          str(runs / "sdda_pretrain"), "--transfer", "encoder_decoder"],
    }
    return [*table[name], *common, "--output_dir", str(runs / name)]


STAGES = [("etmae_teacher", "pretrain"), ("etmae_student_distilled", "pretrain"), ("etmae_student_mae", "pretrain"),
          ("etmae_cls_distilled", "finetune"), ("etmae_cls_mae", "finetune"), ("sdda_pretrain", "pretrain"),
          ("sdda_finetune", "finetune")]
# Two chains that share nothing: the teacher -> distilled student -> its fine-tuning, and everything else.
LANES = (("etmae_teacher", "etmae_student_distilled", "etmae_cls_distilled"),
         ("etmae_student_mae", "etmae_cls_mae", "sdda_pretrain", "sdda_finetune"))


def run_lane(names: Sequence[str], args: DemoArguments, runs: Path, scale: str) -> dict:
    """Run the stages ``names`` one after another in this process; ``{name: (run_info, seconds)}``."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    scripts = {"pretrain": pretrain.main, "finetune": finetune.main}
    number = {name: index for index, (name, _) in enumerate(STAGES, start=2)}
    done = {}
    for name in names:
        t0 = time.perf_counter()
        info = scripts[dict(STAGES)[name]](stage_argv(name, args, runs, scale))
        done[name] = (info, round(time.perf_counter() - t0, 1))
        shown = {k: round(v, 4) for k, v in info["metrics"].items() if isinstance(v, float) and "/" not in k}
        print(f"[{number[name]}/{len(STAGES) + 2}] {name}: {done[name][1]} s, {info['eval_split']} {shown}: "
              f"{runs / name}", flush=True)
    return done


def run_stages(args: DemoArguments, runs: Path, scale: str) -> dict:
    """Every stage, in ``args.lanes`` processes (a spawned process per lane) or in this one."""
    if args.lanes <= 1:
        return run_lane([name for name, _ in STAGES], args, runs, scale)
    with ProcessPoolExecutor(len(LANES), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_lane, lane, args, runs, scale) for lane in LANES]
        return {name: result for future in futures for name, result in future.result().items()}


def trivial_baselines(sdda: dict, seed: int) -> dict:
    """What chance gives on the test splits: mAUC 0.5; all-background masks and the majority class."""
    test = make_synthetic_ultrasound(num_images=sdda["us_images"], image_size=US_SIZE, seed=seed)
    train_labels = np.asarray(test["train"]["label"])
    masks = np.stack([np.asarray(m) for m in test["test"]["mask"]]) > 0
    labels = np.asarray(test["test"]["label"])
    majority = np.bincount(train_labels, minlength=3).argmax()
    probs = np.eye(3)[np.full(len(labels), majority)]
    sdda = compute_metrics("segcls", {"seg_pred": np.zeros_like(masks, dtype=np.int64), "seg_true": masks.astype(np.int64),
                                      "cls_prob": probs, "cls_true": labels})
    return {"etmae": {"mauc": 0.5}, "sdda_mae": sdda}


def results_tables(payload: dict) -> str:
    """The demo's result tables from its ``results.json`` payload (also what README.md shows, see
    ``medmae.training.demo_readme``)."""
    runs, baselines = payload["runs"], payload["baselines"]
    et = {"ETMAE student, distilled from the teacher": runs["etmae_cls_distilled"]["metrics"],
          "same student, MAE pre-training without distillation": runs["etmae_cls_mae"]["metrics"],
          "chance": baselines["etmae"]}
    params = {name: runs["etmae_cls_distilled"]["num_parameters"] for name in list(et)[:2]}
    sd = {"SDDA-MAE, Encoder & Decoder (DAT & SD)": runs["sdda_finetune"]["metrics"],
          "trivial (all background, majority class)": baselines["sdda_mae"]}
    teacher, student = runs["etmae_teacher"]["num_parameters"], runs["etmae_student_distilled"]["num_parameters"]
    return "\n".join([
        f"ETMAE, multi-label classification on the synthetic chest X-rays ({payload['etmae_image_size']} px). "
        f"Teacher MAE {teacher / 1e3:.0f}k parameters -> student {student / 1e3:.0f}k (pre-training, with the "
        "projection head); both students fine-tuned with layer-wise lr decay.", "",
        mauc_table(et, "synthetic_cxr (test)", params),
        f"SDDA-MAE, joint segmentation + classification on the synthetic ultrasound ({US_SIZE} px).", "",
        segmentation_table(sd, "synthetic_ultrasound (test)"), classification_table(sd, "synthetic_ultrasound (test)")])


def results_markdown(payload: dict) -> str:
    title = "# medmae demo results" + (" (--quick: a smoke run, not a result)" if payload["quick"] else "")
    times = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in payload["stage_seconds"].items())
    return "\n".join([title, "", "Synthetic data, test splits, models chosen on validation, seed "
                       f"{payload['seed']}. Wall time {payload['wall_time_s']:.0f} s ({times}).", "",
                       results_tables(payload)])


def _export_hub(runs: Path, hub: Path, names: Sequence[str]) -> tuple[list[Path], Optional[str]]:
    if importlib.util.find_spec("medmae.hub_cards.export") is None:
        return [], "medmae.hub_cards.export is not installed: final/ folders hold save_pretrained + processor only"
    # imported only once find_spec has found it: an installation without hub_cards still runs the demo
    from ..hub_cards.export import export_folder

    done = []
    for name in names:
        done.append(export_folder(runs / name, hub / name, overwrite=True))
    return done, None


def main(argv: Optional[Sequence[str]] = None) -> dict:
    (args,) = parse_args("demo", list(sys.argv[1:] if argv is None else argv), (DemoArguments,))
    scale = "quick" if args.quick else "full"
    etmae, sdda = ETMAE_BUDGETS[scale], SDDA_SCHEDULES[scale]
    out = Path(args.output_dir).expanduser().resolve()
    runs = out / "runs"
    started = time.perf_counter()
    total = len(STAGES) + 2
    print(f"medmae demo{' --quick' if args.quick else ''}: {total} stages, everything written under {out}")

    (out / "figures").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cxr = make_synthetic_cxr(num_images=etmae["num_images"], image_size=etmae["image_size"], seed=args.seed)
    us = make_synthetic_ultrasound(num_images=sdda["us_images"], image_size=US_SIZE, seed=args.seed)
    save_example_grid(cxr["train"], out / "figures" / "synthetic_cxr.png", num_examples=8)
    save_example_grid(us["train"], out / "figures" / "synthetic_ultrasound.png", num_examples=8)
    timings = {"synthetic_sets": round(time.perf_counter() - t0, 1)}
    print(f"[1/{total}] synthetic sets: {etmae['num_images']} chest X-rays ({etmae['image_size']} px, "
          f"{len(cxr['train'][0]['labels'])} findings), {sdda['us_images']} ultrasound images ({US_SIZE} px, masks + "
          f"3 classes) in {timings['synthetic_sets']} s: {out / 'figures'}")

    t0 = time.perf_counter()
    done = run_stages(args, runs, scale)
    infos = {name: done[name][0] for name, _ in STAGES}
    timings.update({name: done[name][1] for name, _ in STAGES})
    timings["training_stages_wall"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    baselines = trivial_baselines(sdda, args.seed)
    hub_dirs, note = [], None
    if args.hub:
        hub_dirs, note = _export_hub(runs, out / "hub", ["etmae_student_distilled", "etmae_cls_distilled",
                                                         "sdda_pretrain", "sdda_finetune"])
    timings["baselines_and_export"] = round(time.perf_counter() - t0, 1)
    payload = {"wall_time_s": round(time.perf_counter() - started, 1), "stage_seconds": timings, "quick": args.quick,
               "seed": args.seed, "etmae_image_size": etmae["image_size"],
               "runs": {name: {"metrics": info["metrics"], "eval_split": info["eval_split"],
                               "num_parameters": info["num_parameters"]} for name, info in infos.items()},
               "baselines": baselines, "hub": [str(p) for p in hub_dirs], "hub_note": note}
    text = results_markdown(payload)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    print("\n" + text)
    print(f"[{total}/{total}] results: {out / 'results.md'} (and results.json)")
    print(f"      figures: {out / 'figures'} and {runs}/*/figures")
    print(f"      hub-ready folders: {out / 'hub'}" if hub_dirs else f"      hub folders: {note}")
    print(f"      wall time {payload['wall_time_s']:.0f} s")
    return payload


if __name__ == "__main__":
    main()
