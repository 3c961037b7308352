# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""The steps of a run (MAE's ``engine_pretrain.py``): one optimizer step, one epoch, validation with the choice
of the best model, checkpoints, and the end of the run (best weights back, ``final/``, test, figures, run_info).

:class:`Run` holds what the steps share; :func:`medmae.training.loop.train` builds it and calls them in order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate.logging import get_logger
from safetensors.torch import load_file

from .. import __version__
from .checkpointing import TrainState, checkpoint_dirs, save_checkpoint
from .dataloading import EpochSeededDataset, worker_errors
from .figures import loss_curves
from .output_folder import disk_full_errors
from .provenance import git_commit, write_json


logger = get_logger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run was stopped before the update."""


@dataclass
class Run:
    """What the steps of one run share. ``model``, ``optimizer`` and the DataLoaders are accelerate-prepared."""

    task: Any  # the TrainingTask
    accelerator: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_items: EpochSeededDataset
    train_dl: Any
    eval_dls: dict
    state: TrainState
    total_steps: int
    steps_per_epoch: int
    num_epochs: int
    warmup_steps: int
    lr: float
    progress: Any  # a tqdm bar (disabled off the local main process)
    window: dict = field(default_factory=dict)  # the logged values of the steps since the last log
    last_saved: int = -1  # global step of the last checkpoint
    clock: float = field(default_factory=time.perf_counter)  # start of the time not yet in state.wall_time_s

    @property
    def out(self) -> Path:
        return self.task.output_dir

    @property
    def best_dir(self) -> Path:
        return self.task.output_dir / "best"


def plan_steps(batches_per_epoch: int, opt_args) -> tuple[int, int, int, int]:
    """(optimizer steps per epoch, total steps, epochs, warm-up steps) from the epochs or ``--max_steps`` and the
    warm-up in steps, as a ratio of the total, or in epochs."""
    o = opt_args
    steps_per_epoch = max(math.ceil(batches_per_epoch / o.gradient_accumulation_steps), 1)
    total_steps = o.max_steps or steps_per_epoch * o.num_train_epochs
    if total_steps <= 0:
        raise ValueError(f"--num_train_epochs {o.num_train_epochs} / --max_steps {o.max_steps} give {total_steps} "
                         "optimizer steps: nothing would be trained (an untrained model would be exported)")
    warmup = o.warmup_steps if o.warmup_steps is not None else round(o.warmup_ratio * total_steps) \
        if o.warmup_ratio is not None else round(o.warmup_epochs * steps_per_epoch)
    return steps_per_epoch, total_steps, math.ceil(total_steps / steps_per_epoch), warmup


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------
def train_one_epoch(run: Run, epoch: int) -> bool:
    """The epoch's remaining batches (after a mid-epoch resume, from where the checkpoint left off), with
    logging, validation and checkpoints every ``logging_steps`` / ``eval_steps`` / ``save_steps``. Returns True
    when the last optimizer step of the run is done."""
    state, accelerator, ra = run.state, run.accelerator, run.task.run_args
    state.epoch = epoch
    run.train_dl.set_epoch(epoch)
    run.train_items.set_epoch(epoch)
    skip = state.batches_in_epoch
    loader = accelerator.skip_first_batches(run.train_dl, skip) if skip else run.train_dl
    done = False
    for batch in worker_errors(loader, run.task.data_args.dataloader_num_workers):
        training_step(run, batch)
        if not accelerator.sync_gradients:
            continue
        if not accelerator.optimizer_step_was_skipped:
            run.scheduler.step()
        state.global_step += 1
        run.progress.update(1)
        if state.global_step % max(ra.logging_steps, 1) == 0 or state.global_step == run.total_steps:
            log_training(run)
        if ra.eval_steps and state.global_step % ra.eval_steps == 0:
            validate(run)
        if ra.save_steps and state.global_step % ra.save_steps == 0:
            save(run)
        if state.global_step >= run.total_steps:
            done = True
            break
    if not done or state.batches_in_epoch >= len(run.train_dl):
        state.epoch, state.batches_in_epoch = epoch + 1, 0
    return done


def training_step(run: Run, batch: dict) -> None:
    """Forward under autocast, the loss in fp32, the non-finite guard BEFORE the backward (every process stops
    together), backward, clipping and the optimizer step (accumulated by ``accelerator.accumulate``)."""
    task, accelerator, ra, oa, state = run.task, run.accelerator, run.task.run_args, run.task.opt_args, run.state
    task.global_step, task.warmup_steps = state.global_step, run.warmup_steps
    task.diagnostics_due = (state.global_step + 1) % max(ra.logging_steps, 1) == 0 \
        or state.global_step + 1 == run.total_steps
    with accelerator.accumulate(run.model):
        with accelerator.autocast():
            loss, parts = task.compute_loss(run.model, batch)
        loss = loss.float()
        if ra.debug_nan_at_step is not None and state.global_step + 1 >= ra.debug_nan_at_step:
            loss = loss * float("nan")
        finite, means = _mean_parts(accelerator, loss, parts)
        if not finite:
            good = checkpoint_dirs(run.out)
            raise NonFiniteLossError(
                f"non-finite training loss ({means}) at optimizer step {state.global_step + 1}, epoch {state.epoch}; "
                f"the run was stopped before the update. Last good checkpoint: "
                f"{good[-1] if good else 'none (no checkpoint was written yet)'}. Try a lower learning rate, "
                "gradient clipping (--max_grad_norm) or --mixed_precision no.")
        accelerator.backward(loss)
        if accelerator.sync_gradients and oa.max_grad_norm:
            accelerator.clip_grad_norm_(run.model.parameters(), oa.max_grad_norm)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    state.batches_in_epoch += 1
    for name, value in means.items():
        run.window.setdefault(name, []).append(value)
    if ra.debug_step_delay:
        time.sleep(ra.debug_step_delay)


def log_training(run: Run) -> None:
    """The mean of each logged value since the last log, and the learning rate, into the history and trackers."""
    logs = {name: sum(v) / len(v) for name, v in run.window.items()}
    logs["lr"] = max(g["lr"] for g in run.optimizer.param_groups)
    run.window.clear()
    run.state.history.append({"step": run.state.global_step, "epoch": run.state.epoch, "split": "train", **logs})
    run.accelerator.log({f"train/{k}": v for k, v in logs.items()}, step=run.state.global_step)
    run.progress.set_postfix(loss=f"{logs['loss']:.4g}")


def _mean_parts(accelerator, loss: torch.Tensor, parts: dict) -> tuple[bool, dict[str, float]]:
    """Reduce the loss and its parts over processes in one collective; (all finite, means)."""
    names = ["loss", *parts]
    values = torch.stack([loss.detach().float().reshape(())] +
                         [p.detach().float().reshape(()) for p in parts.values()]).to(accelerator.device)
    values = accelerator.reduce(values, reduction="mean") if accelerator.num_processes > 1 else values
    finite = bool(torch.isfinite(values).all())
    return finite, dict(zip(names, values.tolist()))


# ----------------------------------------------------------------------------------------------------
# Validation, checkpoints
# ----------------------------------------------------------------------------------------------------
def validate(run: Run) -> None:
    """The task's metrics on the validation split (none: nothing); a better ``metric_for_best_model`` value
    exports the model to ``best/`` (the validation split alone chooses it, never test)."""
    if "validation" not in run.eval_dls:
        return
    task, state, accelerator = run.task, run.state, run.accelerator
    metrics = task.evaluate(run.model, run.eval_dls["validation"], accelerator)
    run.model.train()
    state.history.append({"step": state.global_step, "epoch": state.epoch, "split": "validation", **metrics})
    accelerator.log({f"validation/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                    step=state.global_step)
    name = task.metric_for_best
    if name is not None:
        if name not in metrics:
            raise ValueError(f"metric_for_best_model {name!r} is not among the validation metrics {sorted(metrics)}")
        if _is_better(metrics[name], state.best_metric, task.greater_is_better):
            state.best_metric, state.best_step = float(metrics[name]), state.global_step
            if accelerator.is_main_process:
                with disk_full_errors(run.best_dir, "the best model"):
                    task.export(accelerator.unwrap_model(run.model), run.best_dir)
            accelerator.wait_for_everyone()
    run.progress.set_postfix({k: f"{v:.3g}" for k, v in list(metrics.items())[:3] if isinstance(v, float)})


def _is_better(value: float, best: Optional[float], greater: bool) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or (value > best if greater else value < best)


def save(run: Run) -> None:
    """A checkpoint of everything the run needs to continue exactly (``training/checkpointing.py``)."""
    run.state.wall_time_s += time.perf_counter() - run.clock
    run.clock = time.perf_counter()
    save_checkpoint(run.accelerator, run.model, run.optimizer, run.scheduler, run.state, run.out,
                    run.task.run_args.save_total_limit)
    run.last_saved = run.state.global_step


# ----------------------------------------------------------------------------------------------------
# The end of a run
# ----------------------------------------------------------------------------------------------------
def load_best(run: Run) -> None:
    """Back to the best validation weights (``best/``), when a metric chose them; else the last weights stay."""
    unwrapped = run.accelerator.unwrap_model(run.model)
    if run.task.metric_for_best is None or not (run.best_dir / "model.safetensors").is_file():
        return
    missing, unexpected = unwrapped.load_state_dict(load_file(str(run.best_dir / "model.safetensors")), strict=False)
    if [k for k in missing if k in dict(unwrapped.named_parameters())] or unexpected:
        raise RuntimeError(f"best/ does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    logger.info(f"best validation {run.task.metric_for_best} = {run.state.best_metric:.4f} at step "
                f"{run.state.best_step}")


def export_final(run: Run) -> None:
    """The chosen model in ``final/`` (``save_pretrained``: safetensors, processor, remote code)."""
    final_dir = run.out / "final"
    if run.accelerator.is_main_process:
        with disk_full_errors(final_dir, "the final model"):
            run.task.export(run.accelerator.unwrap_model(run.model), final_dir)
    run.accelerator.wait_for_everyone()


def test_metrics(run: Run) -> tuple[Optional[str], dict]:
    """(split, metrics) of the chosen model on test (``--eval_test``), else on validation, else nothing."""
    dls = run.eval_dls
    split = "test" if run.task.run_args.eval_test and "test" in dls else ("validation" if "validation" in dls else None)
    return split, (run.task.evaluate(run.model, dls[split], run.accelerator) if split else {})


def draw_figures(run: Run) -> list[Path]:
    """Loss curves and the task's own figures in ``figures/`` (main process, ``--figures``)."""
    if not (run.accelerator.is_main_process and run.task.run_args.figures):
        return []
    figures_dir = run.out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    title = f"{run.out.name}: {run.task.family} {run.task.task}"  # every figure names its run
    return [loss_curves(run.state.history, figures_dir / "loss_curves.png", title=title),
            *run.task.figures(run.accelerator.unwrap_model(run.model), run.accelerator, figures_dir, title)]


def run_info(run: Run, hyperparameters: dict, eval_split: Optional[str], metrics: dict, figures: list[Path],
             context: dict) -> dict:
    """``run_info.json``: what was trained on what, with which arguments, how it scored, and where it came from.
    ``context``: ``num_parameters``, ``mixed_precision``, ``resumed_from``, ``started`` (``perf_counter``)."""
    task, state = run.task, run.state
    validations = [h for h in state.history if h["split"] == "validation"]
    chosen = [h for h in validations if h["step"] == state.best_step] if state.best_step is not None else validations
    validation_metrics = chosen[-1] if chosen else None
    return {
        "family": task.family,
        "task": task.task,
        "dataset": task.data_args.dataset,
        "split": task.split_info.get("split"),
        "uncertainty_policy": task.split_info.get("uncertainty_policy"),
        "hyperparameters": {**hyperparameters, "lr_effective": run.lr, "total_steps": run.total_steps,
                            "warmup_steps": run.warmup_steps, "steps_per_epoch": run.steps_per_epoch},
        "metrics": metrics,
        "eval_split": eval_split,
        "validation_metrics": {k: v for k, v in (validation_metrics or {}).items() if k not in ("split",)} or None,
        "best_step": state.best_step,
        "metric_for_best": task.metric_for_best,
        "git_commit": git_commit(),
        "medmae_version": __version__,
        "seed": task.run_args.seed,
        "wall_time_s": round(state.wall_time_s, 2),
        "wall_time_process_s": round(time.perf_counter() - context["started"], 2),
        "num_parameters": context["num_parameters"],
        "num_processes": run.accelerator.num_processes,
        "mixed_precision": context["mixed_precision"],
        "resumed_from": context["resumed_from"].name if context["resumed_from"] else None,
        "figures": [str(Path(p).relative_to(run.out)) for p in figures if p],
        **task.run_info_extra(),
    }


def write_results(run: Run, info: dict, eval_split: Optional[str], metrics: dict) -> None:
    """``run_info.json``, ``metrics.json`` and ``metrics.md`` (main process)."""
    if run.accelerator.is_main_process:
        write_json(run.out / "run_info.json", info)
        write_json(run.out / "metrics.json", {"split": eval_split, "metrics": metrics})
        (run.out / "metrics.md").write_text(run.task.metrics_markdown(metrics, eval_split or "-"))
