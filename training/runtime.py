# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""The run's machinery before any data or model: threads, precision, trackers, the ``Accelerator``, and a
fixed-seed context for evaluation.

* ``--mixed_precision auto`` (:func:`resolve_mixed_precision`): the launcher's config, else bf16 on CUDA, fp32 for
  tiny models on the CPU; ``--num_threads`` default 1 for tiny models (:func:`configure_threads`).
* ``--report_to``: accelerate's tracker names, checked (:func:`trackers`).
* :func:`setup_logging`: medmae's messages (the ``medmae`` loggers; ``accelerate.logging.get_logger`` in the loop)
  on stdout from the main process only, as transformers' example scripts set theirs up;
* :func:`make_accelerator`: mixed precision, gradient accumulation, trackers, and
  ``DataLoaderConfiguration(use_seedable_sampler=True)`` so the shuffling order is a function of (seed, epoch) on
  every process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState, GradientState
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
from accelerate.utils import ProjectConfiguration

from .output_folder import launcher_rank

TINY_MODEL_PARAMETERS = 5_000_000


def cpu_supports_bf16() -> bool:
    """AMX or AVX512-BF16 in /proc/cpuinfo (where CPU bf16 autocast is fast)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags



def resolve_mixed_precision(choice: str, cpu: bool, num_parameters: int) -> str:
    """``auto``: the ``mixed_precision`` of the accelerate config the run was launched with, else bf16 on a CUDA
    device that supports it; on a CPU with AMX/avx512_bf16 only for models of at
    least ``TINY_MODEL_PARAMETERS`` (measured: for the demo's sub-million-parameter models bf16 autocast on CPU
    is slower than fp32, the casts costing more than the matmuls save); fp32 otherwise. fp16 on CPU is
    refused (autocast would silently do nothing)."""
    if choice not in ("auto", "no", "bf16", "fp16"):
        raise ValueError(f"mixed_precision must be auto, no, bf16 or fp16, got {choice!r}")
    launched_with = os.environ.get("ACCELERATE_MIXED_PRECISION")  # set by `accelerate launch` from its config file
    if choice == "auto" and launched_with:
        return resolve_mixed_precision(launched_with, cpu, num_parameters)
    on_cuda = torch.cuda.is_available() and not cpu
    if choice == "auto":
        if on_cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_supports_bf16() and num_parameters >= TINY_MODEL_PARAMETERS else "no"
    if choice == "fp16" and not on_cuda:
        raise ValueError("fp16 mixed precision needs a CUDA device; use bf16 or no on the CPU")
    return choice



def configure_threads(num_threads: Optional[int], num_parameters: int) -> int:
    """torch CPU threads: the user's value, else 1 for tiny models (on 2 cores, 2 threads were 10-100x slower
    for matrices this small: thread wake-up dominates), else torch's default."""
    if num_threads is None and num_parameters < TINY_MODEL_PARAMETERS:
        num_threads = 1
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()



def trackers(report_to: Optional[str]) -> Optional[list[str]]:
    """``--report_to``: accelerate's tracker names (comma list), ``all`` (every installed one) or ``none``. A name
    accelerate does not know, or a tracker that is not installed, is an error (accelerate would drop it with a log
    line and the run would record nothing)."""
    names = [n.strip().lower() for n in str(report_to or "none").split(",") if n.strip()]
    if names in ([], ["none"]):
        return None
    available = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    if names == ["all"]:
        return sorted(available) or None
    unknown = [n for n in names if n not in LOGGER_TYPE_TO_CLASS]
    if unknown:
        raise ValueError(f"--report_to {report_to}: unknown tracker(s) {unknown}; choose from "
                         f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}, all or none")
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"--report_to {report_to}: {', '.join(missing)} not installed (pip install {' '.join(missing)}), "
                         f"installed: {', '.join(sorted(available)) or 'none'}")
    return names



def make_accelerator(run_args, opt_args, mixed_precision: str, find_unused_parameters: bool = False):
    """A fresh Accelerator for one run. The per-run singleton state of a previous run in the same process
    (``medmae demo``, tests) is forgotten first; the process group, if any, is kept."""
    AcceleratorState._reset_state()
    GradientState._reset_state()
    out = Path(run_args.output_dir)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    accelerator = Accelerator(
        cpu=run_args.cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=opt_args.gradient_accumulation_steps,
        log_with=trackers(run_args.report_to),
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=handlers,
    )
    if accelerator.distributed_type.value in ("DEEPSPEED", "FSDP", "MEGATRON_LM"):
        raise ValueError(f"{accelerator.distributed_type.value} is not supported yet: medmae's checkpoints and its "
                         "best-model reload assume every process holds the whole model (use DDP: --multi_gpu)")
    return accelerator



def local_processes(accelerator) -> int:
    """Processes of this run on this machine (``LOCAL_WORLD_SIZE``, set by torchrun and accelerate launch)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))



@contextlib.contextmanager
def fixed_rng(seed: int, device=None):
    """Evaluate with a fixed seed without touching the training RNG streams (masking noise in validation)."""
    devices = [device] if device is not None and getattr(device, "type", "cpu") == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _Stdout(logging.StreamHandler):
    """A handler writing to whatever ``sys.stdout`` is when a message is emitted (pytest and notebooks swap it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _):
        pass


def _main_process(record: logging.LogRecord) -> bool:
    return launcher_rank() == 0


def setup_logging(level: Optional[int] = None) -> logging.Logger:
    """The ``medmae`` logger: messages as plain lines on stdout, from the main process only (the launcher's rank;
    accelerate's ``get_logger`` adapters also check the accelerator's), at ``level`` (default: INFO, or
    ``ACCELERATE_LOG_LEVEL``). Idempotent; not propagated to the root logger, as transformers does for its own."""
    logger = logging.getLogger("medmae")
    if not any(isinstance(handler, _Stdout) for handler in logger.handlers):
        handler = _Stdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_main_process)
        logger.addHandler(handler)
    logger.setLevel(level or os.environ.get("ACCELERATE_LOG_LEVEL", "INFO").upper())
    logger.propagate = False
    return logger
