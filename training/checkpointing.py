# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Training checkpoints that cannot run code when they are loaded, and the resume rules.

A checkpoint ``checkpoints/step_N`` holds exactly these files (nothing is ever unpickled):

=============================  ==============================================================================
``model.safetensors``          the weights (safetensors)
``optimizer.pt``               the optimizer state, read with ``torch.load(weights_only=True)``
``scaler.pt``                  the fp16 gradient scaler's state, when there is one (``weights_only=True``)
``scheduler.json``             the learning-rate scheduler's ``state_dict``
``rng_state_{rank}.json``      Python's and numpy's generators and accelerate's micro-step counter, per process
``rng_state_{rank}.safetensors``  torch's CPU and CUDA generator states, per process
``trainer_state.json``         :class:`TrainState` with the run's arguments; written LAST, so a folder without it
                               is an incomplete checkpoint and never resumed from
=============================  ==============================================================================

``accelerator.save_state`` is not used: it stores the scheduler (``register_for_checkpointing``) and the RNG
states as pickles that ``load_state`` reads with ``weights_only=False``, so a planted ``custom_checkpoint_0.pkl``
would run code on ``--resume_from_checkpoint``. Here any other file in a checkpoint is refused before anything is
read. The shuffling order needs no state: the seedable sampler's order is a function of (seed, epoch).

On resume every argument that shapes the trajectory must equal the checkpoint's (:data:`RESUMABLE_CHANGES` lists
the few that may change); otherwise the run is refused, naming each difference -- a changed ``--blr`` would
otherwise keep the old optimizer state while ``run_info.json`` recorded the new value. A checkpoint written before
the arguments took transformers' names (``lr``, ``num_epochs``, ...) is compared under the new names.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from .args import renamed_fields
from .output_folder import DiskFullError, disk_full_errors

STATE_FILE = "trainer_state.json"
FIXED_FILES = ("model.safetensors", "optimizer.pt", "scaler.pt", "scheduler.json", STATE_FILE)
PER_PROCESS = re.compile(r"rng_state_\d+\.(json|safetensors)")
# Arguments that do not change what is computed: how it is shown, stored or parallelised on this machine.
RESUMABLE_CHANGES = frozenset({
    "resume_from_checkpoint", "output_dir", "preset", "config", "dataloader_num_workers",
    "dataloader_persistent_workers", "num_threads", "progress_bar", "report_to",
    "figures", "save_steps", "save_total_limit", "eval_test", "debug_step_delay", "overwrite"})


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unknown files in it, or arguments that differ from the run's."""


@dataclass
class TrainState:
    global_step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    batches_in_epoch: int = 0  # micro-batches of ``epoch`` already consumed
    best_metric: Optional[float] = None
    best_step: Optional[int] = None
    wall_time_s: float = 0.0
    history: list = field(default_factory=list)  # {"step", "epoch", "split": "train"|"validation", name: value}
    arguments: dict = field(default_factory=dict)  # the run's arguments (args_to_dict), compared on resume

    def save(self, path: Path) -> None:
        _write_text_atomic(path / STATE_FILE, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> "TrainState":
        return cls(**json.loads((Path(path) / STATE_FILE).read_text()))


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def checkpoint_dirs(output_dir) -> list[Path]:
    """Complete checkpoints (with ``trainer_state.json``), oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if (p / STATE_FILE).is_file() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def resolve_resume(resume: str, output_dir) -> Path:
    """``latest`` -> the newest complete checkpoint of the run; a path -> that checkpoint (or a run folder)."""
    if resume == "latest":
        found = checkpoint_dirs(output_dir)
        if not found:
            raise FileNotFoundError(f"--resume_from_checkpoint latest: no complete checkpoint under "
                                    f"{Path(output_dir) / 'checkpoints'}")
        return found[-1]
    path = Path(resume)
    if (path / STATE_FILE).is_file():
        return path
    found = checkpoint_dirs(path)
    if found:
        return found[-1]
    raise FileNotFoundError(f"--resume_from_checkpoint {resume}: not a complete checkpoint ({STATE_FILE} missing)")


# ----------------------------------------------------------------------------------------------------
# Random generators, per process
# ----------------------------------------------------------------------------------------------------
def _rng_payload(step: int) -> tuple[dict, dict]:
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    plain = {"accelerate_step": step, "python": [version, list(python_state), gauss],
             "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)]}
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"torch_cuda_{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    return plain, tensors


def _restore_rng(plain: dict, tensors: dict) -> None:
    version, python_state, gauss = plain["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, position, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[f"torch_cuda_{i}"] for i in range(len([k for k in tensors if k.startswith("torch_cuda_")]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------------------------------
# Save and load
# ----------------------------------------------------------------------------------------------------
def save_checkpoint(accelerator, model, optimizer, scheduler, state: TrainState, output_dir: Path,
                    keep: int) -> Path:
    """Write ``checkpoints/step_N`` (every process its generators, the main process the rest), then
    ``trainer_state.json`` last, then delete all but the ``keep`` newest complete checkpoints."""
    path = Path(output_dir) / "checkpoints" / f"step_{state.global_step}"
    path.mkdir(parents=True, exist_ok=True)
    rank = accelerator.process_index
    plain, tensors = _rng_payload(accelerator.step)
    try:
        with disk_full_errors(path, "a checkpoint"):
            _write_text_atomic(path / f"rng_state_{rank}.json", json.dumps(plain))
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / f"rng_state_{rank}.safetensors"))
            if accelerator.is_main_process:
                save_model(accelerator.unwrap_model(model), str(path / "model.safetensors"))
                torch.save(optimizer.state_dict(), path / "optimizer.pt")
                if accelerator.scaler is not None:
                    torch.save(accelerator.scaler.state_dict(), path / "scaler.pt")
                _write_text_atomic(path / "scheduler.json", json.dumps(scheduler.state_dict()))
    except DiskFullError:
        shutil.rmtree(path, ignore_errors=True)  # an incomplete checkpoint only takes space
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state.save(path)
        for old in checkpoint_dirs(output_dir)[:-max(keep, 1)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def check_checkpoint_files(path: Path, num_processes: int) -> None:
    """Refuse a checkpoint holding any file medmae does not write (e.g. a pickle planted beside the weights), or
    missing one it needs, naming the files."""
    names = sorted(p.name for p in Path(path).iterdir())
    foreign = [n for n in names if n not in FIXED_FILES and not PER_PROCESS.fullmatch(n)]
    if foreign:
        raise CheckpointError(
            f"{path}: refusing to resume from a checkpoint with files medmae does not write: {', '.join(foreign)} "
            "(medmae checkpoints hold only safetensors, JSON and weights_only tensors; a checkpoint of accelerate's "
            "save_state, or one with planted files, is not loaded)")
    needed = ["model.safetensors", "optimizer.pt", "scheduler.json", STATE_FILE]
    needed += [f"rng_state_{r}.{ext}" for r in range(num_processes) for ext in ("json", "safetensors")]
    missing = [n for n in needed if n not in names]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}"
                              + (" (it was written by another number of processes?)" if any(
                                  n.startswith("rng_state_") for n in missing) else ""))


def check_resume_arguments(saved: dict, current: dict, path: Path) -> None:
    """Every argument that shapes the run must be the checkpoint's; list each one that is not."""
    if not saved:
        raise CheckpointError(f"{path}: the checkpoint records no arguments (written by medmae < 0.2); "
                              "it cannot be checked against this run, so it is not resumed")
    renamed = renamed_fields()
    saved = {renamed.get(key, key): value for key, value in saved.items()}  # written under the old names
    changed = [f"--{key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}"
               for key in sorted(set(saved) | set(current))
               if key not in RESUMABLE_CHANGES and saved.get(key) != current.get(key)]
    if changed:
        raise CheckpointError(
            f"--resume_from_checkpoint {path}: these arguments differ from the run being resumed, and the optimizer "
            "state, schedule and data order were built with the old values: " + "; ".join(changed)
            + ". Resume with the same arguments, or start a new run (another --output_dir, --init_from the weights).")


def load_checkpoint(accelerator, model, optimizer, scheduler, path: Path, arguments: dict) -> TrainState:
    """Restore a checkpoint written by :func:`save_checkpoint` after checking its files and arguments."""
    path = Path(path)
    check_checkpoint_files(path, accelerator.num_processes)
    state = TrainState.load(path)
    check_resume_arguments(state.arguments, arguments, path)
    load_model(accelerator.unwrap_model(model), str(path / "model.safetensors"), strict=True)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    if accelerator.scaler is not None and (path / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(torch.load(path / "scaler.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text()))
    rank = accelerator.process_index
    plain = json.loads((path / f"rng_state_{rank}.json").read_text())
    _restore_rng(plain, load_file(str(path / f"rng_state_{rank}.safetensors")))
    accelerator.step = plain["accelerate_step"]
    return state
