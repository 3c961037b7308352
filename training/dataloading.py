# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""From a dataset's splits to batches: loading by name or from a prepared folder, the split record, the
transforms, per-item seeds, and DataLoaders.

* :func:`load_splits`: ``training.registry.load_dataset_by_name`` or ``--dataset_path`` (``training/prepare.py``);
* :func:`attach_transforms`: ``training.transforms`` per split (augmentation on ``train`` only);
* :class:`EpochSeededDataset`: each training item transformed under its own seed ``f(seed, epoch, index)``, which
  is what keeps mid-epoch resume exact with workers and prefetching;
* :func:`make_dataloader`: a DataLoader owning its generator (never the global RNG);
  ``--dataloader_num_workers`` default from :func:`resolve_num_workers`.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from .args import json_dict
from .data import write_split_manifest
from .output_folder import launcher_rank
from .prepare import prepared_splits
from .registry import load_dataset_by_name
from .runtime import local_processes
from .transforms import ClassificationTransform, MultiLabelTransform, SegmentationTransform



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
        self.dataset, self.seed = dataset, seed
        # the epoch in shared memory: persistent DataLoader workers (separate processes holding their own copy of
        # this object since the first epoch) read the value set_epoch writes here
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        # timm's RandAugment also draws from Python's and numpy's generators; seeding (and restoring) those costs
        # about 0.25 ms per item, so it is done only for the recipes that need it
        self.python_and_numpy = python_and_numpy

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating the epoch (the workers fetch its first items when the iterator is created)."""
        self._epoch.fill_(epoch)

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


def resolve_num_workers(requested: Optional[int], dataset: str, processes_here: int) -> int:
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
    return max(0, min(MAX_AUTO_WORKERS, cpus // max(processes_here, 1) - 1))



def make_dataloader(dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
                    drop_last: bool = False, pin_memory: bool = False,
                    persistent_workers: bool = False) -> DataLoader:
    """A DataLoader with its own generator: iterators draw their base seed from it, never from the global RNG
    (which is what makes mid-epoch resume exact). ``persistent_workers`` keeps the workers across epochs (the
    epoch's item seeds reach them through ``EpochSeededDataset``'s shared epoch); ``pin_memory`` for CUDA runs."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed), pin_memory=pin_memory,
                      persistent_workers=persistent_workers and num_workers > 0)



def synthetic_defaults(data_args, image_size: int) -> dict:
    """Generate synthetic sets directly at the model's input size (no resize work per step)."""
    if data_args.dataset.strip().lower().replace("-", "_").startswith("synthetic"):
        return {"image_size": json_dict(data_args.dataset_kwargs, "dataset_kwargs").get("image_size", image_size)}
    return {}


def run_dataloaders(task, accelerator) -> tuple[EpochSeededDataset, DataLoader, dict[str, DataLoader]]:
    """The training items (seeded per epoch), their shuffled DataLoader of whole batches, and one DataLoader per
    evaluation split (``validation``, ``test``) that has items. ``--dataloader_num_workers`` is resolved here and
    recorded back into the arguments (run_info shows the value used), and so is ``--dataloader_persistent_workers``
    (default: persistent when there are workers)."""
    d, oa, ra = task.data_args, task.opt_args, task.run_args
    train_set = task.datasets["train"]
    if len(train_set) < oa.per_device_train_batch_size * accelerator.num_processes:
        raise ValueError(f"the training split has {len(train_set)} items, fewer than one global batch "
                         f"({oa.per_device_train_batch_size} x {accelerator.num_processes} processes)")
    items = EpochSeededDataset(train_set, ra.seed, python_and_numpy=getattr(d, "augmentation", None) == "medical_mae")
    d.dataloader_num_workers = resolve_num_workers(d.dataloader_num_workers, d.dataset, local_processes(accelerator))
    if d.dataloader_persistent_workers is None:
        d.dataloader_persistent_workers = d.dataloader_num_workers > 0
    options = dict(num_workers=d.dataloader_num_workers, pin_memory=accelerator.device.type == "cuda",
                   persistent_workers=d.dataloader_persistent_workers)
    train_dl = make_dataloader(items, oa.per_device_train_batch_size, True, ra.seed, drop_last=True, **options)
    eval_dls = {name: make_dataloader(task.datasets[name], oa.per_device_train_batch_size, False, ra.seed, **options)
                for name in ("validation", "test") if name in task.datasets and len(task.datasets[name])}
    return items, train_dl, eval_dls
