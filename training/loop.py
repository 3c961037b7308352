# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""The shared Accelerate training loop of ``pretrain`` and ``finetune`` (one concept, one place).

A script describes its job as a :class:`TrainingTask` (model, data, loss, validation metrics, export,
figures); :func:`train` runs it:

* an ``Accelerator`` with mixed precision, gradient accumulation, TensorBoard, and
  ``DataLoaderConfiguration(use_seedable_sampler=True)`` so the shuffling order is a function of
  (seed, epoch) on every process (``dl.set_epoch(epoch)``);
* the optimiser from :mod:`medmae.training.optim` and a per-iteration ``LambdaLR`` stepped once per
  optimizer step (it is NOT passed to ``accelerator.prepare``, whose scheduler wrapper steps
  ``num_processes`` times per step);
* checkpoints in ``checkpoints/step_N`` every ``save_steps`` optimizer steps (each epoch when 0) and at the
  end, in formats that cannot run code when loaded (:mod:`medmae.training.checkpointing`), each completed by a
  ``trainer_state.json`` written last (a checkpoint without it is incomplete and never resumed from);
* ``--resume_from_checkpoint latest|PATH`` restores weights, optimiser, scheduler and every RNG after checking that
  the checkpoint holds only medmae's files and that the run's arguments are the checkpoint's; the interrupted
  epoch continues with ``accelerator.skip_first_batches``. The DataLoader owns a ``torch.Generator``, so
  building a new iterator on resume draws nothing from the global RNG and the resumed run is bitwise
  identical to an uninterrupted one on CPU;
* a NaN/inf guard: a non-finite loss on any process stops every process BEFORE the backward pass, with
  a message naming the step and the last good checkpoint (which is kept);
* losses taken in fp32 (``loss.float()`` after the autocast region; the models compute them in fp32);
* the best model chosen on the VALIDATION split only (``best/``), loaded back at the end, exported to
  ``final/`` with ``save_pretrained`` (safetensors, processor, remote code) and evaluated once on test;
* ``run_info.json``, ``metrics.json``, ``metrics.md``, ``figures/*.png``, ``logs/`` (TensorBoard).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import subprocess
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from .args import args_to_dict, effective_batch_report, json_dict
from .checkpointing import TrainState, checkpoint_dirs, load_checkpoint, resolve_resume, save_checkpoint
from .optim import build_optimizer, build_scheduler, scaled_lr
from .output_folder import OutputFolder, disk_full_errors, launcher_rank
from .prepare import prepared_splits
from .registry import load_dataset_by_name

TINY_MODEL_PARAMETERS = 5_000_000


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run was stopped before the update."""


# ----------------------------------------------------------------------------------------------------
# Device, precision, threads
# ----------------------------------------------------------------------------------------------------
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
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

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
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import ProjectConfiguration

    AcceleratorState._reset_state()
    GradientState._reset_state()
    out = Path(run_args.output_dir)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    return Accelerator(
        cpu=run_args.cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=opt_args.gradient_accumulation_steps,
        log_with=trackers(run_args.report_to),
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=handlers,
    )


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------
def load_splits(data_args, input_size: Optional[int] = None, **extra):
    """``training.registry.load_dataset_by_name`` with ``--dataset_kwargs`` and the split seed, or with
    ``--dataset_path`` the prepared folder (``training/prepare.py``; checked against the dataset, the loader arguments
    and ``input_size``, the run's image size); truncation by ``max_train_samples`` / ``max_eval_samples``. Errors
    (unknown name, missing folder, a prepared folder that does not fit) name the problem."""
    kwargs = {**json_dict(data_args.dataset_kwargs, "dataset_kwargs"), **own_data_arguments(data_args), **extra}
    kwargs.setdefault("seed", data_args.split_seed)
    if data_args.manifest:
        kwargs["manifest"] = data_args.manifest
    if getattr(data_args, "dataset_path", None):
        splits = prepared_splits(data_args, kwargs, input_size)
    else:
        try:
            splits = load_dataset_by_name(data_args.dataset, data_args.data_root, **kwargs)
        except TypeError as error:
            raise ValueError(f"dataset {data_args.dataset!r} does not accept {sorted(kwargs)}: {error}") from error
    if data_args.max_train_samples and "train" in splits:
        splits["train"] = splits["train"].select(range(min(data_args.max_train_samples, len(splits["train"]))))
    if data_args.max_eval_samples:
        for name in ("validation", "test"):
            if name in splits:
                splits[name] = splits[name].select(range(min(data_args.max_eval_samples, len(splits[name]))))
    return splits


def own_data_arguments(data_args) -> dict:
    """The column mappings of ``--dataset csv`` / ``hf:NAME`` (refused with the other datasets, where they would be
    ignored)."""
    given = {name: getattr(data_args, name, None) for name in ("csv", "image_column", "label_columns", "group_column",
                                                               "mask_column")}
    given = {k: v for k, v in given.items() if v}
    key = str(data_args.dataset).strip().lower()
    allowed = {"csv": {"csv", "image_column", "label_columns", "group_column"}}.get(
        key, {"image_column", "label_columns", "mask_column"} if key.startswith("hf:") else set())
    if set(given) - allowed:
        raise ValueError(f"--{' --'.join(sorted(set(given) - allowed))} do(es) not apply to --dataset "
                         f"{data_args.dataset} (csv takes --csv --image_column --label_columns --group_column; "
                         "hf:NAME takes --image_column --label_columns --mask_column)")
    if key == "csv" and "csv" not in given:
        raise ValueError("--dataset csv needs --csv FILE (image paths relative to --data_root, and labels)")
    return given


def split_record(splits, data_args, out_dir: Optional[Path]) -> dict:
    """The ``split`` entry of run_info.json; writes ``split_manifest.json`` when the splits have ids."""
    from .data import write_split_manifest

    info = dict(getattr(splits, "medmae_split_info", {}) or {})
    key = data_args.dataset.strip().lower().replace("-", "_")
    kind = info.get("kind") or ("official" if key in ("chestxray14", "chexpert") else "seeded")
    record = {"kind": kind, "seed": info.get("seed", data_args.split_seed),
              "fractions": info.get("splits") or info.get("fractions")
              or {k: info[k] for k in ("test_fraction", "val_fraction") if k in info} or None,
              "counts": {name: len(ds) for name, ds in splits.items()}, "manifest_sha256": None}
    # the main process writes the manifest (and records its hash in run_info.json, which it alone writes)
    if out_dir is not None and launcher_rank() == 0 and all("image_id" in ds.column_names for ds in splits.values()):
        path = write_split_manifest(splits, out_dir / "split_manifest.json")
        record["manifest_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return record


def attach_transforms(splits, kind: str, processor, data_args, passthrough: Sequence[str] = (),
                      num_seg_classes: int = 2) -> dict:
    """Each split with its ``training.transforms`` transform (augmentation on ``train`` only).

    kind: ``image`` (pre-training: ``pixel_values``), ``multilabel`` (+ ``labels`` [K] float, ``label_mask``) or
    ``segcls`` (+ ``labels`` mask [H, W], ``class_labels``). Without ``crop_scale_min`` the training geometry is a
    flip only (scale and ratio 1). Augmentation draws from torch's global RNG, which checkpoints restore.
    """
    from .transforms import ClassificationTransform, MultiLabelTransform, SegmentationTransform

    low = data_args.crop_scale_min
    crop = dict(crop_scale=(low, 1.0)) if low and low < 1 else dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    crop["recipe"] = data_args.augmentation
    make = {"image": lambda train: ClassificationTransform(processor, train, hflip=data_args.hflip, label_column=None,
                                                           passthrough=tuple(passthrough), **crop),
            "multilabel": lambda train: MultiLabelTransform(processor, train, hflip=data_args.hflip, **crop),
            "singlelabel": lambda train: ClassificationTransform(processor, train, hflip=data_args.hflip, **crop),
            "segcls": lambda train: SegmentationTransform(processor, train, hflip=data_args.hflip,
                                                          num_classes=num_seg_classes, **crop)}
    if kind not in make:
        raise ValueError(f"unknown transform kind {kind!r}")
    return {name: ds.with_transform(make[kind](name == "train")) for name, ds in splits.items()}


class EpochSeededDataset(torch.utils.data.Dataset):
    """Training items transformed under their own seed ``f(seed, epoch, index)`` (torch RNG forked per item).

    Why: an accelerate DataLoader fetches one batch AHEAD, so augmentation drawn from the global RNG would be
    consumed before a checkpoint is written and drawn again after a resume. Seeding each item makes the random
    crops and flips a function of (seed, epoch, index) only -- identical across resumes, workers and process
    counts -- and leaves the global RNG to the model (masking noise, dropout), whose state checkpoints restore.
    """

    def __init__(self, dataset, seed: int, python_and_numpy: bool = False):
        self.dataset, self.seed, self.epoch = dataset, seed, 0
        # timm's RandAugment also draws from Python's and numpy's generators; seeding (and restoring) those costs
        # about 0.25 ms per item, so it is done only for the recipes that need it
        self.python_and_numpy = python_and_numpy

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self._seeded_item(index)
        except Exception as error:  # name the item: the worker's traceback shows the note
            error.add_note(f"medmae: while loading training item {index} (epoch {self.epoch}); "
                           f"image_id {self._image_id(index)!r}")
            raise

    def _image_id(self, index) -> Optional[str]:
        if "image_id" not in (getattr(self.dataset, "column_names", None) or []):
            return None
        try:  # the id column only (no image decoding), without the transform
            return str(self.dataset.select_columns(["image_id"]).with_format(None)[int(index)]["image_id"])
        except Exception:  # the id is a courtesy; the original error is what matters
            return None

    def _seeded_item(self, index):
        seed = ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(index)) % (2**63)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if not self.python_and_numpy:
                return self.dataset[index]
            python_state, numpy_state = random.getstate(), np.random.get_state()
            try:
                random.seed(seed)
                np.random.seed(seed % 2**32)
                return self.dataset[index]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


def worker_errors(loader, num_workers: int):
    """Iterate ``loader``; a DataLoader worker that died (killed for memory, shared memory exhausted) becomes an
    error saying so and what to do (a failing item keeps its own error, which names the item)."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except RuntimeError as error:
            if "DataLoader worker" not in str(error) or "Caught" in str(error):
                raise
            raise RuntimeError(
                f"a DataLoader worker process died ({error}). With --dataloader_num_workers {num_workers}, this is "
                "usually memory: the machine's RAM or its shared memory (/dev/shm; in Docker, --shm-size). Use fewer "
                "--dataloader_num_workers (0 loads in the training process and shows the failing item), then "
                "--resume_from_checkpoint latest") from error
        yield batch


MAX_AUTO_WORKERS = 8


def local_processes(accelerator) -> int:
    """Processes of this run on this machine (``LOCAL_WORLD_SIZE``, set by torchrun and accelerate launch)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))


def resolve_num_workers(requested: Optional[int], dataset: str, local_processes: int) -> int:
    """``--dataloader_num_workers``: the user's value, else 0 for the generated ``synthetic_*`` sets (already in
    memory: a worker would only add start-up), else the CPUs this process may use divided by the processes on
    this machine, minus one for the training step itself, in 0..``MAX_AUTO_WORKERS``."""
    if requested is not None:
        if requested < 0:
            raise ValueError(f"--dataloader_num_workers must be 0 or more, got {requested}")
        return requested
    if str(dataset).strip().lower().startswith("synthetic"):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_AUTO_WORKERS, cpus // max(local_processes, 1) - 1))


def make_dataloader(dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
                    drop_last: bool = False, pin_memory: bool = False) -> DataLoader:
    """A DataLoader with its own generator: iterators draw their base seed from it, never from the global RNG
    (which is what makes mid-epoch resume exact). Workers are not persistent: each epoch starts them afresh, so
    the epoch's item seeds (``EpochSeededDataset.set_epoch``) reach them. ``pin_memory`` for CUDA runs."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=False, pin_memory=pin_memory)


def model_config(model_args, data_args, **fields):
    """The model config of a new model: ``model_preset`` + ``config_overrides`` + ``image_size`` /
    ``normalization`` / ``mask_ratio`` / ``drop_path_rate`` flags + ``fields`` (later wins)."""
    from ..configuration import ETMAEConfig, SDDAMAEConfig
    from ..modeling.image_processing_medmae import NORMALIZATION_PRESETS

    values = json_dict(model_args.config_overrides, "config_overrides")
    if data_args is not None and data_args.image_size:
        values.setdefault("image_size", data_args.image_size)
    if model_args.normalization:
        if model_args.normalization not in NORMALIZATION_PRESETS:
            raise ValueError(f"unknown normalization {model_args.normalization!r}; choose one of "
                             f"{', '.join(NORMALIZATION_PRESETS)}")
        mean, std = NORMALIZATION_PRESETS[model_args.normalization]
        values.setdefault("image_mean", mean)
        values.setdefault("image_std", std)
    if model_args.mask_ratio is not None:
        values.setdefault("mask_ratio", model_args.mask_ratio)
    if model_args.drop_path_rate is not None:
        values.setdefault("drop_path_rate", model_args.drop_path_rate)
    values.update(fields)
    config_cls = ETMAEConfig if model_args.family == "etmae" else SDDAMAEConfig
    return config_cls.from_preset(model_args.model_preset, **values)


def synthetic_defaults(data_args, image_size: int) -> dict:
    """Generate synthetic sets directly at the model's input size (no resize work per step)."""
    if data_args.dataset.strip().lower().replace("-", "_").startswith("synthetic"):
        return {"image_size": json_dict(data_args.dataset_kwargs, "dataset_kwargs").get("image_size", image_size)}
    return {}


# ----------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------
class TrainingTask:
    """What a script trains. Subclasses set ``family``/``task`` and implement :meth:`build`,
    :meth:`compute_loss` and :meth:`evaluate`; the rest has defaults."""

    script: str = ""  # pretrain | finetune (set by run_script)
    family: str = ""
    task: str = ""
    metric_for_best: Optional[str] = None  # a key of evaluate()'s dict; None keeps the last weights
    greater_is_better: bool = True
    find_unused_parameters: bool = False  # DDP: modules that get no gradient
    # set by the loop before each batch: optimizer steps done, warm-up length, and whether this is a logging step
    global_step: int = 0
    warmup_steps: int = 0
    diagnostics_due: bool = False

    def __init__(self, model_args, data_args, opt_args, run_args):
        self.model_args, self.data_args, self.opt_args, self.run_args = model_args, data_args, opt_args, run_args
        self.model = None
        self.processor = None
        self.datasets: dict = {}
        self.split_info: dict = {}
        self.label_names: list = []
        if run_args.metric_for_best_model:
            self.metric_for_best = None if run_args.metric_for_best_model == "none" else \
                run_args.metric_for_best_model
        self.output_dir = Path(run_args.output_dir)

    # -- to implement --------------------------------------------------------------------------------
    def build(self) -> None:
        """Set ``model``, ``processor``, ``datasets`` (``train`` and optionally ``validation``/``test``, torch
        datasets yielding dicts of tensors) and ``split_info``. Runs after seeding, on every process."""
        raise NotImplementedError

    def compute_loss(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, named scalar parts for logging) under autocast."""
        raise NotImplementedError

    def evaluate(self, model, dataloader, accelerator) -> dict[str, float]:
        """Metrics on a prepared dataloader; called on every process (gather with ``gather_for_metrics``)."""
        raise NotImplementedError

    # -- defaults ------------------------------------------------------------------------------------
    def export(self, model, directory: Path) -> None:
        model.save_pretrained(directory)
        if self.processor is not None:
            self.processor.save_pretrained(directory)

    def figures(self, model, accelerator, figures_dir: Path, title: str) -> list[Path]:
        return []

    def metrics_markdown(self, metrics: dict, split: str) -> str:
        rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, (int, float)))
        return f"| metric ({split}) | value |\n|---|---|\n{rows}\n"

    def run_info_extra(self) -> dict:
        """Provenance of the starting weights (``--init_from``); subclasses add their own keys."""
        if not self.model_args.init_from:
            return {}
        return {"base_model": Path(self.model_args.init_from).name,
                "source_checkpoint_sha256": weights_sha256(self.model_args.init_from)}

    def effective_lr(self, num_processes: int) -> float:
        o = self.opt_args
        if o.learning_rate is not None:
            return o.learning_rate
        if o.blr is not None:
            return scaled_lr(o.blr, o.per_device_train_batch_size * o.gradient_accumulation_steps * num_processes)
        raise ValueError("give --learning_rate (absolute) or --blr (scaled by effective batch / 256)")


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------
def git_commit() -> Optional[str]:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def weights_sha256(path) -> Optional[str]:
    """SHA-256 of a checkpoint file, or of ``model.safetensors`` in a folder (``final/`` of a run folder)."""
    from ..modeling.convert import file_sha256

    path = Path(path)
    for candidate in (path, path / "model.safetensors", path / "final" / "model.safetensors"):
        if candidate.is_file():
            return file_sha256(candidate)
    return None


def model_folder(path) -> Path:
    """A run folder -> its ``final/``; a ``save_pretrained`` folder -> itself."""
    path = Path(path)
    if (path / "final" / "config.json").is_file():
        return path / "final"
    if (path / "config.json").is_file():
        return path
    raise FileNotFoundError(f"{path} is neither a save_pretrained folder nor a run folder with final/")


def _tb_config(values: dict) -> dict:
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}


def _mean_parts(accelerator, loss: torch.Tensor, parts: dict) -> tuple[bool, dict[str, float]]:
    """Reduce the loss and its parts over processes in one collective; (all finite, means)."""
    names = ["loss", *parts]
    values = torch.stack([loss.detach().float().reshape(())] +
                         [p.detach().float().reshape(()) for p in parts.values()]).to(accelerator.device)
    values = accelerator.reduce(values, reduction="mean") if accelerator.num_processes > 1 else values
    finite = bool(torch.isfinite(values).all())
    return finite, dict(zip(names, values.tolist()))


def _is_better(value: float, best: Optional[float], greater: bool) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or (value > best if greater else value < best)


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))


# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------
def train(task: TrainingTask) -> dict:
    """Run ``task`` end to end in its locked output folder; returns the run_info dict (``run_info.json``)."""
    ra = task.run_args
    with OutputFolder(task.output_dir, resume=bool(ra.resume_from_checkpoint), overwrite=ra.overwrite,
                      main=launcher_rank() == 0):
        return _train(task)


def _train(task: TrainingTask) -> dict:
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    ra, oa = task.run_args, task.opt_args
    out = task.output_dir
    started = time.perf_counter()
    set_seed(ra.seed)
    task.build()
    model = task.model
    num_parameters = sum(p.numel() for p in model.parameters())
    threads = configure_threads(ra.num_threads, num_parameters)
    precision = resolve_mixed_precision(ra.mixed_precision, ra.cpu, num_parameters)
    accelerator = make_accelerator(ra, oa, precision, task.find_unused_parameters)
    if accelerator.distributed_type.value in ("DEEPSPEED", "FSDP", "MEGATRON_LM"):
        raise ValueError(f"{accelerator.distributed_type.value} is not supported yet: medmae's checkpoints and its "
                         "best-model reload assume every process holds the whole model (use DDP: --multi_gpu)")
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        task.split_info = task.split_info or {}

    train_set = task.datasets["train"]
    if len(train_set) < oa.per_device_train_batch_size * accelerator.num_processes:
        raise ValueError(f"the training split has {len(train_set)} items, fewer than one global batch "
                         f"({oa.per_device_train_batch_size} x {accelerator.num_processes} processes)")
    train_items = EpochSeededDataset(train_set, ra.seed,
                                     python_and_numpy=getattr(task.data_args, "augmentation", None) == "medical_mae")
    workers = resolve_num_workers(task.data_args.dataloader_num_workers, task.data_args.dataset,
                                  local_processes(accelerator))
    task.data_args.dataloader_num_workers = workers  # recorded in run_info as resolved
    pin = accelerator.device.type == "cuda"
    train_dl = make_dataloader(train_items, oa.per_device_train_batch_size, True, ra.seed, workers, drop_last=True,
                               pin_memory=pin)
    eval_dls = {name: make_dataloader(task.datasets[name], oa.per_device_train_batch_size, False, ra.seed, workers,
                                      pin_memory=pin)
                for name in ("validation", "test") if name in task.datasets and len(task.datasets[name])}
    lr = task.effective_lr(accelerator.num_processes)
    optimizer = build_optimizer(model, oa.optimizer, lr, oa.weight_decay, (oa.adam_beta1, oa.adam_beta2),
                                oa.momentum, oa.layer_decay)
    model, optimizer, train_dl = accelerator.prepare(model, optimizer, train_dl)
    eval_dls = {name: accelerator.prepare(dl) for name, dl in eval_dls.items()}

    steps_per_epoch = max(math.ceil(len(train_dl) / oa.gradient_accumulation_steps), 1)
    total_steps = oa.max_steps or steps_per_epoch * oa.num_train_epochs
    if total_steps <= 0:
        raise ValueError(f"--num_train_epochs {oa.num_train_epochs} / --max_steps {oa.max_steps} give {total_steps} "
                         "optimizer steps: nothing would be trained (an untrained model would be exported)")
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = oa.warmup_steps if oa.warmup_steps is not None else round(oa.warmup_ratio * total_steps) \
        if oa.warmup_ratio is not None else round(oa.warmup_epochs * steps_per_epoch)
    scheduler = build_scheduler(optimizer, total_steps, warmup, oa.lr_scheduler_type, oa.min_lr, oa.poly_power)

    hyperparameters = args_to_dict(task.model_args, task.data_args, oa, ra)
    state = TrainState(arguments=hyperparameters)
    resumed_from = None
    if ra.resume_from_checkpoint:
        resumed_from = resolve_resume(ra.resume_from_checkpoint, out)
        state = load_checkpoint(accelerator, model, optimizer, scheduler, resumed_from, hyperparameters)
        accelerator.print(f"resumed from {resumed_from} (step {state.global_step}, epoch {state.epoch}, "
                          f"batch {state.batches_in_epoch})")
    if accelerator.log_with:  # the trackers make_accelerator resolved from --report_to
        accelerator.init_trackers(task.task, config=_tb_config({**hyperparameters, "lr_effective": lr}))

    batch_line, batch_warning = effective_batch_report(task.script, ra.preset, oa.per_device_train_batch_size,
                                                       oa.gradient_accumulation_steps, accelerator.num_processes, lr,
                                                       scaled=oa.learning_rate is None)
    accelerator.print(batch_line)
    if batch_warning and main:
        warnings.warn(batch_warning, stacklevel=2)
    accelerator.print(
        f"[{task.family}/{task.task}] {num_parameters:,} parameters | {accelerator.num_processes} process(es) on "
        f"{accelerator.device} | precision {precision} | threads {threads} | lr {lr:.3g} | {len(train_set)} train "
        f"items | {total_steps} steps ({num_epochs} epochs x {steps_per_epoch}) | output {out}")
    metric_name = task.metric_for_best
    best_dir = out / "best"
    window: dict[str, list] = {}
    last_saved = state.global_step if resumed_from else -1
    clock = [time.perf_counter()]  # start of the time not yet added to state.wall_time_s
    progress = tqdm(total=total_steps, initial=state.global_step, desc=f"{task.task}", dynamic_ncols=True,
                    disable=not (ra.progress_bar and accelerator.is_local_main_process))

    def validate():
        if "validation" not in eval_dls:
            return
        metrics = task.evaluate(model, eval_dls["validation"], accelerator)
        model.train()
        entry = {"step": state.global_step, "epoch": state.epoch, "split": "validation", **metrics}
        state.history.append(entry)
        accelerator.log({f"validation/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                        step=state.global_step)
        if metric_name is not None:
            if metric_name not in metrics:
                raise ValueError(f"metric_for_best_model {metric_name!r} is not among the validation metrics "
                                 f"{sorted(metrics)}")
            if _is_better(metrics[metric_name], state.best_metric, task.greater_is_better):
                state.best_metric, state.best_step = float(metrics[metric_name]), state.global_step
                if main:
                    with disk_full_errors(best_dir, "the best model"):
                        task.export(accelerator.unwrap_model(model), best_dir)
                accelerator.wait_for_everyone()
        progress.set_postfix({k: f"{v:.3g}" for k, v in list(metrics.items())[:3] if isinstance(v, float)})

    def checkpoint():
        nonlocal last_saved
        state.wall_time_s += time.perf_counter() - clock[0]
        clock[0] = time.perf_counter()
        save_checkpoint(accelerator, model, optimizer, scheduler, state, out, ra.save_total_limit)
        last_saved = state.global_step

    done = state.global_step >= total_steps
    try:
        model.train()
        for epoch in range(state.epoch, num_epochs):
            if done:
                break
            state.epoch = epoch
            train_dl.set_epoch(epoch)
            train_items.set_epoch(epoch)
            skip = state.batches_in_epoch
            loader = accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
            for batch in worker_errors(loader, task.data_args.dataloader_num_workers):
                task.global_step, task.warmup_steps = state.global_step, warmup
                task.diagnostics_due = (state.global_step + 1) % max(ra.logging_steps, 1) == 0 \
                    or state.global_step + 1 == total_steps
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        loss, parts = task.compute_loss(model, batch)
                    loss = loss.float()
                    if ra.debug_nan_at_step is not None and state.global_step + 1 >= ra.debug_nan_at_step:
                        loss = loss * float("nan")
                    finite, means = _mean_parts(accelerator, loss, parts)
                    if not finite:
                        good = checkpoint_dirs(out)
                        raise NonFiniteLossError(
                            f"non-finite training loss ({means}) at optimizer step {state.global_step + 1}, "
                            f"epoch {epoch}; the run was stopped before the update. Last good checkpoint: "
                            f"{good[-1] if good else 'none (no checkpoint was written yet)'}. Try a lower "
                            "learning rate, gradient clipping (--max_grad_norm) or --mixed_precision no.")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and oa.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), oa.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                state.batches_in_epoch += 1
                for name, value in means.items():
                    window.setdefault(name, []).append(value)
                if ra.debug_step_delay:
                    time.sleep(ra.debug_step_delay)
                if not accelerator.sync_gradients:
                    continue
                if not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                state.global_step += 1
                progress.update(1)
                if state.global_step % max(ra.logging_steps, 1) == 0 or state.global_step == total_steps:
                    logs = {name: sum(v) / len(v) for name, v in window.items()}
                    logs["lr"] = max(g["lr"] for g in optimizer.param_groups)
                    window.clear()
                    state.history.append({"step": state.global_step, "epoch": epoch, "split": "train", **logs})
                    accelerator.log({f"train/{k}": v for k, v in logs.items()}, step=state.global_step)
                    progress.set_postfix(loss=f"{logs['loss']:.4g}")
                if ra.eval_steps and state.global_step % ra.eval_steps == 0:
                    validate()
                if ra.save_steps and state.global_step % ra.save_steps == 0:
                    checkpoint()
                if state.global_step >= total_steps:
                    done = True
                    break
            if not done or state.batches_in_epoch >= len(train_dl):
                state.epoch, state.batches_in_epoch = epoch + 1, 0
            if not ra.eval_steps:
                validate()
            if not ra.save_steps and not done:
                checkpoint()
        if last_saved != state.global_step:
            checkpoint()
    finally:
        progress.close()

    # ---- the chosen model: best on validation (never on test), else the last weights ----------------
    unwrapped = accelerator.unwrap_model(model)
    if metric_name is not None and (best_dir / "model.safetensors").is_file():
        from safetensors.torch import load_file

        missing, unexpected = unwrapped.load_state_dict(load_file(str(best_dir / "model.safetensors")), strict=False)
        if [k for k in missing if k in dict(unwrapped.named_parameters())] or unexpected:
            raise RuntimeError(f"best/ does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        accelerator.print(f"best validation {metric_name} = {state.best_metric:.4f} at step {state.best_step}")
    final_dir = out / "final"
    if main:
        with disk_full_errors(final_dir, "the final model"):
            task.export(unwrapped, final_dir)
    accelerator.wait_for_everyone()
    eval_split = "test" if ra.eval_test and "test" in eval_dls else ("validation" if "validation" in eval_dls else None)
    metrics = task.evaluate(model, eval_dls[eval_split], accelerator) if eval_split else {}
    validations = [h for h in state.history if h["split"] == "validation"]
    chosen = [h for h in validations if h["step"] == state.best_step] if state.best_step is not None else validations
    validation_metrics = chosen[-1] if chosen else None

    figures = []
    if main and ra.figures:
        from .figures import loss_curves

        figures_dir = out / "figures"
        figures_dir.mkdir(parents=True, exist_ok=True)
        title = f"{out.name}: {task.family} {task.task}"  # every figure names its run
        figures.append(loss_curves(state.history, figures_dir / "loss_curves.png", title=title))
        figures.extend(task.figures(unwrapped, accelerator, figures_dir, title))
    state.wall_time_s += time.perf_counter() - clock[0]
    info = {
        "family": task.family,
        "task": task.task,
        "dataset": task.data_args.dataset,
        "split": task.split_info.get("split"),
        "uncertainty_policy": task.split_info.get("uncertainty_policy"),
        "hyperparameters": {**hyperparameters, "lr_effective": lr, "total_steps": total_steps,
                            "warmup_steps": warmup, "steps_per_epoch": steps_per_epoch},
        "metrics": metrics,
        "eval_split": eval_split,
        "validation_metrics": {k: v for k, v in (validation_metrics or {}).items() if k not in ("split",)} or None,
        "best_step": state.best_step,
        "metric_for_best": metric_name,
        "git_commit": git_commit(),
        "medmae_version": _version(),
        "seed": ra.seed,
        "wall_time_s": round(state.wall_time_s, 2),
        "wall_time_process_s": round(time.perf_counter() - started, 2),
        "num_parameters": num_parameters,
        "num_processes": accelerator.num_processes,
        "mixed_precision": precision,
        "resumed_from": resumed_from.name if resumed_from else None,
        "figures": [str(Path(p).relative_to(out)) for p in figures if p],
        **task.run_info_extra(),
    }
    if main:
        _write_json(out / "run_info.json", info)
        _write_json(out / "metrics.json", {"split": eval_split, "metrics": metrics})
        (out / "metrics.md").write_text(task.metrics_markdown(metrics, eval_split or "-"))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return info


def run_script(script: str, task_cls, argv=None) -> dict:
    """``main`` of ``pretrain`` / ``finetune``: ``--list_presets`` or parse the arguments and train."""
    import sys

    from .args import list_presets, parse_args

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list_presets" in argv or "--list-presets" in argv:
        print("\n".join(list_presets(script)))
        return {}
    task = task_cls(*parse_args(script, argv))
    task.script = script
    return train(task)


def _version() -> str:
    from .. import __version__

    return __version__


@contextlib.contextmanager
def fixed_rng(seed: int, device=None):
    """Evaluate with a fixed seed without touching the training RNG streams (masking noise in validation)."""
    devices = [device] if device is not None and getattr(device, "type", "cpu") == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
