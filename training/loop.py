# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""The training loop of ``pretrain`` and ``finetune`` (MAE's ``main_pretrain.py``): :func:`train` reads as the
run's narrative; the steps are in :mod:`medmae.training.engine`.

A script's job is a training task (``training/tasks/``; the family table ``training.families`` says which); the
run it gets:

* an ``Accelerator`` with mixed precision, gradient accumulation, trackers and a seedable sampler, so the shuffling
  order is a function of (seed, epoch) on every process (``training/runtime.py``);
* the optimiser of ``training/optim.py`` and a per-iteration schedule stepped once per optimizer step (it is NOT
  passed to ``accelerator.prepare``, whose scheduler wrapper steps ``num_processes`` times per step);
* checkpoints in ``checkpoints/step_N`` every ``save_steps`` optimizer steps (each epoch when 0) and at the end, in
  formats that cannot run code when loaded, each completed by a ``trainer_state.json`` written last
  (``training/checkpointing.py``);
* ``--resume_from_checkpoint latest|PATH`` restores weights, optimiser, scheduler and every RNG after checking
  that the checkpoint holds only medmae's files and that the run's arguments are the checkpoint's; the interrupted
  epoch continues with ``accelerator.skip_first_batches``. Training items are transformed under per-item seeds
  and the DataLoader owns its generator (``training/dataloading.py``), so the resumed run is bitwise identical to an
  uninterrupted one on CPU;
* a NaN/inf guard: a non-finite loss on any process stops every process BEFORE the backward pass, with a message
  naming the step and the last good checkpoint (which is kept);
* losses taken in fp32 (``loss.float()`` after the autocast region; the models compute them in fp32);
* the best model chosen on the VALIDATION split only (``best/``), loaded back at the end, exported to ``final/``
  with ``save_pretrained`` (safetensors, processor, remote code) and evaluated once on test;
* ``run_info.json``, ``metrics.json``, ``metrics.md``, ``figures/*.png``, ``logs/`` (trackers).
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Optional, Sequence

from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from .args import args_to_dict, parse_args
from .checkpointing import TrainState, load_checkpoint, resolve_resume
from .dataloading import run_dataloaders
from .engine import (Run, draw_figures, export_final, load_best, plan_steps, run_info, save, test_metrics,
                     train_one_epoch, validate, write_results)
from .families import family
from .optim import build_optimizer, build_scheduler
from .output_folder import OutputFolder, launcher_rank
from .presets import effective_batch_report, list_presets
from .provenance import tracker_config
from .runtime import configure_threads, make_accelerator, resolve_mixed_precision, setup_logging

logger = get_logger(__name__)


def train(task) -> dict:
    """Run ``task`` end to end in its locked output folder; returns the run_info dict (``run_info.json``)."""
    ra = task.run_args
    with OutputFolder(task.output_dir, resume=bool(ra.resume_from_checkpoint), overwrite=ra.overwrite,
                      main=launcher_rank() == 0):
        return _train(task)


def _train(task) -> dict:
    ra, oa = task.run_args, task.opt_args
    started = time.perf_counter()
    set_seed(ra.seed)
    task.build()
    num_parameters = sum(p.numel() for p in task.model.parameters())
    threads = configure_threads(ra.num_threads, num_parameters)
    precision = resolve_mixed_precision(ra.mixed_precision, ra.cpu, num_parameters)
    accelerator = make_accelerator(ra, oa, precision, task.find_unused_parameters)
    if accelerator.is_main_process:
        task.output_dir.mkdir(parents=True, exist_ok=True)

    train_items, train_dl, eval_dls = run_dataloaders(task, accelerator)
    lr = task.effective_lr(accelerator.num_processes)
    oa.weight_decay_rule = oa.weight_decay_rule or family(task.family).weight_decay_rule[task.script]
    optimizer = build_optimizer(task.model, oa.optimizer, lr, oa.weight_decay, (oa.adam_beta1, oa.adam_beta2),
                                oa.momentum, oa.layer_decay, oa.weight_decay_rule)
    model, optimizer, train_dl = accelerator.prepare(task.model, optimizer, train_dl)
    eval_dls = {name: accelerator.prepare(dl) for name, dl in eval_dls.items()}
    steps_per_epoch, total_steps, num_epochs, warmup = plan_steps(len(train_dl), oa)
    scheduler = build_scheduler(optimizer, total_steps, warmup, oa.lr_scheduler_type, oa.min_lr, oa.poly_power)

    hyperparameters = args_to_dict(task.model_args, task.data_args, oa, ra)
    state, resumed_from = TrainState(arguments=hyperparameters), None
    if ra.resume_from_checkpoint:
        resumed_from = resolve_resume(ra.resume_from_checkpoint, task.output_dir)
        state = load_checkpoint(accelerator, model, optimizer, scheduler, resumed_from, hyperparameters)
        logger.info(f"resumed from {resumed_from} (step {state.global_step}, epoch {state.epoch}, "
                    f"batch {state.batches_in_epoch})")
    if accelerator.log_with:  # the trackers make_accelerator resolved from --report_to
        accelerator.init_trackers(task.task, config=tracker_config({**hyperparameters, "lr_effective": lr}))
    announce(task, accelerator, lr, num_parameters, precision, threads, total_steps, num_epochs, steps_per_epoch)

    progress = tqdm(total=total_steps, initial=state.global_step, desc=task.task, dynamic_ncols=True,
                    disable=not (ra.progress_bar and accelerator.is_local_main_process))
    run = Run(task, accelerator, model, optimizer, scheduler, train_items, train_dl, eval_dls, state, total_steps,
              steps_per_epoch, num_epochs, warmup, lr, progress,
              last_saved=state.global_step if resumed_from else -1)
    try:
        model.train()
        done = state.global_step >= total_steps
        for epoch in range(state.epoch, num_epochs):
            if done:
                break
            done = train_one_epoch(run, epoch)
            if not ra.eval_steps:
                validate(run)
            if not ra.save_steps and not done:
                save(run)
        if run.last_saved != state.global_step:
            save(run)
    finally:
        progress.close()

    load_best(run)  # the chosen model: best on validation (never on test), else the last weights
    export_final(run)
    eval_split, metrics = test_metrics(run)
    figures = draw_figures(run)
    state.wall_time_s += time.perf_counter() - run.clock
    info = run_info(run, hyperparameters, eval_split, metrics, figures, dict(
        started=started, num_parameters=num_parameters, mixed_precision=precision, resumed_from=resumed_from))
    write_results(run, info, eval_split, metrics)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return info


def announce(task, accelerator, lr, num_parameters, precision, threads, total_steps, num_epochs, steps_per_epoch):
    """The run in two lines (and a warning when the effective batch differs from the recipe's)."""
    ra, oa = task.run_args, task.opt_args
    batch_line, batch_warning = effective_batch_report(task.script, ra.preset, oa.per_device_train_batch_size,
                                                       oa.gradient_accumulation_steps, accelerator.num_processes, lr,
                                                       scaled=oa.learning_rate is None)
    logger.info(batch_line)
    if batch_warning and accelerator.is_main_process:
        warnings.warn(batch_warning, stacklevel=3)
    logger.info(
        f"[{task.family}/{task.task}] {num_parameters:,} parameters | {accelerator.num_processes} process(es) on "
        f"{accelerator.device} | precision {precision} | threads {threads} | lr {lr:.3g} | "
        f"{len(task.datasets['train'])} train items | {total_steps} steps ({num_epochs} epochs x {steps_per_epoch}) "
        f"| output {task.output_dir}")


def run_script(script: str, argv: Optional[Sequence[str]] = None) -> dict:
    """``main`` of ``pretrain`` / ``finetune``: ``--list_presets``, or parse the arguments and train the family's
    task (``training.families``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list_presets" in argv or "--list-presets" in argv:
        print("\n".join(list_presets(script)))
        return {}
    setup_logging()
    arguments = parse_args(script, argv)
    task = family(arguments[0].family).task_class(script)(*arguments)
    task.script = script
    return train(task)
