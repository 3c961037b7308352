# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""``medmae prepare``: build a dataset's index once, decode and shrink every image once, and save the result.

    medmae prepare --dataset chestxray14 --data_root /data/NIH --image_size 256 --output_dir /data/nih-256 --num_proc 8
    medmae pretrain --preset chestxray14_teacher --dataset_path /data/nih-256 --output_dir runs/teacher

Why: the loaders of :mod:`medmae.training.data` rebuild the index on every run and in every process (29-50 s and
1.1 GiB for NIH's 112,120 rows), and a 1024 x 1024 NIH PNG costs ~37 ms to decode and transform. A prepared folder
loads in well under a second (``datasets.load_from_disk``, memory-mapped) and holds images already at the size the
run needs.

What is written (``PREP`` = ``--output_dir``), into ``PREP.tmp-<pid>`` first and renamed to ``PREP`` at the end, so
an interrupted or failed preparation never leaves a half-written ``PREP``:

* the ``datasets.DatasetDict`` (``save_to_disk``; ``datasets.load_from_disk(PREP)`` reads it too) with the loader's
  columns unchanged -- labels, ids, metadata -- except ``image`` and ``mask``, stored resized and lossless, by
  default uncompressed (``--image_format uncompressed``: BMP, or TIFF for modes BMP cannot hold; through
  ``datasets`` a 256 px image decodes in ~0.3 ms against ~2.7 ms as PNG, at about twice PNG's size: 66 kB per
  256 x 256 grayscale image, ~7.4 GB for NIH) or as PNG (``--image_format png``, zlib level 1);
* ``split_manifest.json``: the ids of every split (:func:`medmae.training.data.write_split_manifest`);
* ``medmae_prepared.json``: the fingerprint (dataset, medmae version, image_size, resize rule, source root, loader
  arguments, rows per split, the SHA-256 of the index -- ids and labels --, the size and SHA-256 of the source's
  label and list files, and what the loader recorded about its splits);
* ``README.md``: a short dataset card.

Resize rule (:func:`resized_size`): the aspect ratio is kept; an image whose shorter side exceeds ``image_size`` is
shrunk so that its shorter side is exactly ``image_size`` and its longer side ``round(longer * image_size /
shorter)``, with PIL's antialiased bicubic filter; smaller images are stored unchanged (never enlarged). Masks get
exactly the image's new size, with nearest neighbour (values stay 0/1 or class ids). Images are decoded in the mode
of the loader's ``Image`` feature (``L`` for the four medical sets), as the raw loaders decode them.

Every image (and mask) is decoded completely once (a truncated file is found here, named by its path), with
``num_proc`` worker processes (``datasets.Dataset.map``). The loaders' own header check is skipped
(``check_images="none"``) unless ``--dataset_kwargs`` sets it, or sets ``on_bad_image="skip"`` (then the loader
decodes every file first and leaves the unreadable ones out, with its warning).

Using it: ``--dataset_path PREP`` in place of ``--data_root`` (``medmae pretrain|finetune|evaluate``) or
:func:`~medmae.training.prepared.load_prepared`. The images go through the run's usual transforms. A folder that
does not fit the run is refused with a message naming the mismatch: another dataset, a prepared ``image_size`` below
the size the run reads (its input size; ``size / 0.875`` for the ``medical_mae`` evaluation resize), other loader
arguments (split seed, ``--dataset_kwargs``), an index that no longer hashes to the recorded value (files edited
after), or, when the source folder is still there, a label or list file or the names in its top two folder levels
changed since. ``--dataset_path PREP --data_root DIR`` builds ``PREP`` first when it does not exist (at the run's
size; in distributed runs on the main process first, under accelerate's ``main_process_first``).

Reading a prepared folder back and checking it against a run (the fingerprint's pieces, :func:`read_fingerprint`,
:func:`load_prepared`, :class:`PreparedDatasetError`) is :mod:`medmae.training.prepared`; this module builds and
writes the folder and holds :func:`prepared_splits`, ``--dataset_path`` of the training scripts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from PIL import Image as PILImage

import datasets
from datasets import DatasetDict

from .. import __version__
from . import data, registry
from .args import json_dict, parse_args
from .prepared import (FINGERPRINT_FILE, LOADERS, PREPARED_FORMAT, PreparedDatasetError, _data_folders, _root_record,
                       _row_kwargs, _sha256, _source_roots, dataset_key, index_sha256, load_prepared, read_fingerprint,
                       source_files, source_listing)
from .transforms import EVAL_CROP_PCT

# PreparedDatasetError, load_prepared and index_sha256 live in prepared.py and stay names of this module too: the
# README and the dataset card (_card) name medmae.training.prepare.load_prepared

__all__ = ["PreparedDatasetError", "PrepareArguments", "prepare_dataset", "load_prepared", "prepared_splits",
           "resized_size", "index_sha256", "main"]

MANIFEST_FILE = "split_manifest.json"
CARD_FILE = "README.md"
RESIZE_RULE = ("shorter side to image_size (never enlarged), longer side round(longer * image_size / shorter); "
               "images PIL bicubic (antialiased), masks nearest neighbour")
IMAGE_FORMATS = ("uncompressed", "png")
BMP_MODES = ("1", "L", "P", "RGB", "RGBA")  # what PIL writes as BMP (and PIL identifies BMP first, so it opens fastest)
GENERATED_OR_SAVED = ("synthetic_ultrasound", "synthetic_cxr")


@dataclass
class PrepareArguments:
    dataset: Optional[str] = field(default=None, metadata={
        "help": "busi | siim_acr | chestxray14 | chexpert | chestxray14+chexpert | imagefolder | csv | segfolder"})
    data_root: Optional[str] = field(default=None, metadata={
        "help": "dataset folder as published (a combined set: --data_root chestxray14=DIR1 --data_root chexpert=DIR2)"})
    image_size: Optional[int] = field(default=None, metadata={
        "help": "shorter side of the stored images (larger images are shrunk to it, smaller ones kept)"})
    output_dir: Optional[str] = field(default=None, metadata={"help": "the prepared folder to write (PREP)"})
    num_proc: int = field(default=1, metadata={"help": "worker processes that decode and resize"})
    image_format: str = field(default="uncompressed", metadata={
        "help": "uncompressed (BMP/TIFF: ~9x faster to decode than PNG, ~2x its size) | png (zlib level 1)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing prepared folder at --output_dir"})
    dataset_kwargs: Optional[str] = field(default=None, metadata={
        "help": "JSON dict passed to the loader, as in the training scripts (e.g. '{\"uncertainty\": \"ones\"}'; "
                "csv: '{\"csv\": \"labels.csv\", \"label_columns\": [...]}')"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/validation/test split"})
    manifest: Optional[str] = field(default=None, metadata={"help": "split manifest to rebuild exact splits"})


# ----------------------------------------------------------------------------------------------------
# Small pieces
# ----------------------------------------------------------------------------------------------------
def resized_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """(width, height) after the resize rule: shorter side -> ``image_size`` when it is larger, aspect kept."""
    shorter = min(width, height)
    if shorter <= image_size:
        return width, height
    if width <= height:
        return image_size, max(1, round(height * image_size / width))
    return max(1, round(width * image_size / height)), image_size


def required_size(input_size: Optional[int], augmentation: Optional[str]) -> Optional[int]:
    """The smallest prepared ``image_size`` a run reads without enlarging: its input size, or the ``medical_mae``
    evaluation resize ``int(size / 0.875)`` (transforms.py)."""
    if not input_size:
        return None
    return int(input_size / EVAL_CROP_PCT) if augmentation == "medical_mae" else int(input_size)


# ----------------------------------------------------------------------------------------------------
# Decoding and resizing (runs in the map workers)
# ----------------------------------------------------------------------------------------------------
def _encoded(image: PILImage.Image, image_format: str) -> dict:
    """An ``Image`` cell of ``image`` as lossless bytes: uncompressed (BMP; TIFF for other modes) or PNG."""
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="BMP" if image.mode in BMP_MODES else "TIFF")
    return {"bytes": buffer.getvalue(), "path": None}


def _decoded(cell: dict, feature: datasets.Image, what: str) -> PILImage.Image:
    """The cell decoded as the raw dataset decodes it (the feature's mode); an unreadable file names itself."""
    try:
        image = feature.decode_example(cell)
        image.load()
        return image
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError ... for broken files
        raise data.CorruptImageError(f"cannot read {what}: {type(error).__name__}: {error}") from None


def _resizable(image: PILImage.Image) -> PILImage.Image:
    """Palette, bilevel and alpha modes as L / RGB (PIL resizes those with nearest neighbour or not at all); the
    training transforms convert to L or RGB in the same way afterwards."""
    if image.mode in ("L", "RGB", "I", "F", "I;16"):
        return image
    return image.convert("L" if image.mode in ("1", "LA", "La") else "RGB")


def _resize_batch(batch: dict, image_size: int, image_feature: datasets.Image,
                  mask_feature: Optional[datasets.Image], image_format: str) -> dict:
    """``datasets.map`` function: every ``image`` (and ``mask``) decoded, resized and stored as ``image_format``."""
    images, masks = [], []
    for i, cell in enumerate(batch["image"]):
        name = _cell_name(cell, batch, i)
        image = _decoded(cell, image_feature, f"image {name}")
        size = resized_size(*image.size, image_size)
        if size == image.size:
            images.append(_encoded(image, image_format))
        else:
            images.append(_encoded(_resizable(image).resize(size, PILImage.Resampling.BICUBIC), image_format))
        if mask_feature is not None:
            mask = _decoded(batch["mask"][i], mask_feature, f"mask of {name}")
            if mask.size != image.size:
                raise data.DatasetFormatError(f"mask of {name} is {mask.size} (WxH) but the image is {image.size}")
            mask = mask if size == mask.size else mask.resize(size, PILImage.Resampling.NEAREST)
            masks.append(_encoded(mask, image_format))
    return {"image": images, **({"mask": masks} if mask_feature is not None else {})}


def _cell_name(cell: dict, batch: dict, i: int) -> str:
    ids = batch.get("image_id")
    image_id = f"image_id {ids[i]!r}" if ids is not None else f"row {i}"
    return f"file {cell['path']} ({image_id})" if cell.get("path") else f"{image_id} (stored as bytes)"


def _resize_split(ds: datasets.Dataset, image_size: int, num_proc: int, cache_dir: Path, split: str,
                  image_format: str):
    features = ds.features
    image_feature = features["image"]
    mask_feature = features["mask"] if isinstance(features.get("mask"), datasets.Image) else None
    raw = {"image": datasets.Image(decode=False), **({"mask": datasets.Image(decode=False)} if mask_feature else {})}
    undecoded = ds.cast(datasets.Features({**features, **raw}))
    cache_dir.mkdir(parents=True, exist_ok=True)
    return undecoded.map(
        _resize_batch, batched=True, batch_size=64, writer_batch_size=256, features=features,
        num_proc=num_proc if num_proc > 1 and len(ds) > 1 else None, load_from_cache_file=False,
        cache_file_name=str(cache_dir / f"{split}.arrow"), desc=f"decode + resize {split}",
        fn_kwargs={"image_size": image_size, "image_feature": image_feature, "mask_feature": mask_feature,
                   "image_format": image_format})


# ----------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------
def _check_output(out: Path, overwrite: bool, roots: Mapping[str, Path]) -> None:
    """Refuse a non-empty output folder (unless ``overwrite`` and it is a prepared folder) and any overlap with the
    source folders (the output must never be written inside the data, nor the data deleted with it)."""
    resolved = out.expanduser().resolve()
    for root in roots.values():
        if resolved == root or root in resolved.parents or resolved in root.parents:
            raise PreparedDatasetError(f"--output_dir {out} overlaps the dataset folder {root}; write the prepared "
                                       "folder elsewhere")
    if out.exists() and not out.is_dir():
        raise PreparedDatasetError(f"--output_dir {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise PreparedDatasetError(f"--output_dir {out} exists and is not empty; choose another folder, or pass "
                                       "--overwrite to replace a prepared dataset there")
        if not (out / FINGERPRINT_FILE).is_file():
            raise PreparedDatasetError(f"--output_dir {out} holds files but no {FINGERPRINT_FILE}: it is not a medmae "
                                       "prepared dataset, so --overwrite will not delete it")


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` to ``out`` (replacing a previous prepared folder only with ``overwrite``)."""
    old = None
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise PreparedDatasetError(f"--output_dir {out} was filled by someone else while preparing; the result is "
                                       f"left in {tmp}")
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        out.rename(old)
    elif out.is_dir():
        out.rmdir()
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)


def _card(fingerprint: dict, features: datasets.Features) -> str:
    counts = ", ".join(f"{name} {n:,}" for name, n in fingerprint["num_rows"].items())
    columns = "\n".join(f"| `{name}` | {_feature_text(feature)} |" for name, feature in features.items())
    info = json.dumps(fingerprint["split_info"], indent=1, default=str)
    return f"""# {fingerprint['dataset']} prepared at {fingerprint['image_size']} px (medmae)

Written by `medmae prepare` (medmae {fingerprint['medmae_version']}, {fingerprint['created_utc']}) from the dataset
folder as published. A `datasets.DatasetDict` (`save_to_disk`): `datasets.load_from_disk(PREP)`,
`medmae.training.prepare.load_prepared(PREP)` (checks the fingerprint) or `--dataset_path PREP` in
`medmae pretrain|finetune|evaluate`.

* Rows: {fingerprint['num_rows_total']:,} ({counts}); split manifest in `{MANIFEST_FILE}`.
* Images: {RESIZE_RULE}; stored {fingerprint['image_format']} (lossless: BMP/TIFF or PNG).
* Loader arguments: `{json.dumps(fingerprint['loader_kwargs'], sort_keys=True)}`.
* Index SHA-256 (ids and labels): `{fingerprint['index_sha256']}`; fingerprint in `{FINGERPRINT_FILE}`.
* Pixel statistics were not computed; the model's processor (`image_mean` / `image_std`) normalises the images.

| column | feature |
|---|---|
{columns}

What the loader recorded about the splits:

```json
{info}
```

The images are the dataset publisher's: its licence and terms of use apply to this folder as to the original.
"""


def _feature_text(feature) -> str:
    if isinstance(feature, datasets.ClassLabel):
        return f"ClassLabel({', '.join(feature.names)})"
    if isinstance(feature, datasets.Image):
        return f"Image(mode={feature.mode})"
    return str(feature)


def prepare_dataset(dataset: str, data_root, image_size: int, output_dir, *, loader_kwargs: Optional[Mapping] = None,
                    num_proc: int = 1, overwrite: bool = False, image_format: str = "uncompressed") -> Path:
    """Build the index with the dataset's loader, decode and resize every image with ``num_proc`` workers and write
    the prepared folder ``output_dir`` (see the module docstring); returns its path. Nothing is left at
    ``output_dir`` when anything fails."""
    key = dataset_key(dataset)
    if not key or key in GENERATED_OR_SAVED or key.startswith("hf:"):
        raise PreparedDatasetError(f"--dataset {dataset!r}: nothing to prepare (the synthetic sets are generated at the "
                                   "run's size; hf: datasets are already saved datasets); give a dataset folder such "
                                   "as busi, siim_acr, chestxray14, chexpert, imagefolder")
    if not isinstance(image_size, int) or image_size < 1:
        raise PreparedDatasetError(f"--image_size must be a positive whole number of pixels, got {image_size!r}")
    if num_proc < 1:
        raise PreparedDatasetError(f"--num_proc must be >= 1, got {num_proc}")
    if image_format not in IMAGE_FORMATS:
        raise PreparedDatasetError(f"--image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    out = Path(output_dir).expanduser()
    roots = _source_roots(dataset, data_root)
    _check_output(out, overwrite, roots)
    kwargs = dict(loader_kwargs or {})
    manifest = kwargs.get("manifest")
    started = time.perf_counter()
    index = registry.load_dataset_by_name(dataset, data_root, **_with_check(key, kwargs))
    index_seconds = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        resized = DatasetDict({split: _resize_split(ds, image_size, num_proc, tmp / "_cache", split, image_format)
                               for split, ds in index.items()})
        resized.save_to_disk(str(tmp))
        shutil.rmtree(tmp / "_cache")
        resized.medmae_split_info = getattr(index, "medmae_split_info", {})
        data.write_split_manifest(resized, tmp / MANIFEST_FILE)
        fingerprint = {
            "format": PREPARED_FORMAT, "dataset": key, "medmae_version": __version__, "image_size": image_size,
            "resize": RESIZE_RULE, "image_format": image_format,
            "source_root": _root_record(roots),
            "loader_kwargs": _row_kwargs(dataset, kwargs),
            "manifest_sha256": _sha256(Path(manifest)) if isinstance(manifest, (str, os.PathLike)) else None,
            "num_rows": {split: len(ds) for split, ds in index.items()},
            "num_rows_total": sum(len(ds) for ds in index.values()),
            "index_sha256": index_sha256(index),
            "source_files": source_files(_data_folders(key, roots)),
            "source_listing": source_listing(_data_folders(key, roots)),
            "split_info": getattr(index, "medmae_split_info", {}),
            "created_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "seconds": {"index": round(index_seconds, 2), "total": round(time.perf_counter() - started, 2)},
        }
        (tmp / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=1, default=str))
        (tmp / CARD_FILE).write_text(_card(fingerprint, index[next(iter(index))].features))
        _publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _with_check(key: str, kwargs: dict) -> dict:
    """The loader's own per-file check: none (every file is decoded completely in the resize step), unless the
    caller chose one or asked to skip unreadable files (then the loader must decode them to leave them out)."""
    if key not in LOADERS and key not in data.COMBINED_DATASETS:
        return kwargs
    return {**kwargs, "check_images": kwargs.get("check_images",
                                                 "full" if kwargs.get("on_bad_image") == "skip" else "none")}


# ----------------------------------------------------------------------------------------------------
# Runs: --dataset_path (prepared first when missing)
# ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _main_process_first():
    """accelerate's ``main_process_first`` in a distributed launch (WORLD_SIZE > 1); nothing otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    with PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).main_process_first():
        yield


def prepared_splits(data_args, loader_kwargs: Mapping, input_size: Optional[int] = None) -> DatasetDict:
    """``--dataset_path`` of the training scripts (called by ``dataloading.load_splits``): the prepared folder checked
    against the run (dataset, size, loader arguments; ``--manifest`` re-splits it). With ``--data_root`` as well, a
    missing folder is prepared first from it at the size the run reads (on the main process first)."""
    path = Path(data_args.dataset_path).expanduser()
    kwargs = dict(loader_kwargs)
    manifest = kwargs.pop("manifest", None)
    needed = required_size(input_size or getattr(data_args, "image_size", None), getattr(data_args, "augmentation",
                                                                                            None))
    if data_args.data_root is not None:
        with _main_process_first():
            if not path.exists():
                if needed is None:
                    raise PreparedDatasetError(f"--dataset_path {path} does not exist; give --image_size to prepare it")
                print(f"preparing {data_args.dataset} from {data_args.data_root} at {needed} px into {path}",
                      flush=True)
                prepare_dataset(data_args.dataset, data_args.data_root, needed, path, loader_kwargs=kwargs)
    return load_prepared(path, dataset=data_args.dataset, image_size=needed, loader_kwargs=kwargs, manifest=manifest,
                         source_root=data_args.data_root)


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    """``medmae prepare --dataset NAME --data_root DIR --image_size N --output_dir PREP [--num_proc N]``."""
    (args,) = parse_args("prepare", list(sys.argv[1:] if argv is None else argv), (PrepareArguments,))
    missing = [f"--{n}" for n in ("dataset", "data_root", "image_size", "output_dir") if getattr(args, n) is None]
    if missing:
        raise PreparedDatasetError(f"medmae prepare needs {' '.join(missing)}")
    kwargs: dict[str, Any] = {**json_dict(args.dataset_kwargs, "dataset_kwargs"), "seed": args.split_seed}
    if args.manifest:
        kwargs["manifest"] = args.manifest
    started = time.perf_counter()
    out = prepare_dataset(args.dataset, args.data_root, args.image_size, args.output_dir, loader_kwargs=kwargs,
                          num_proc=args.num_proc, overwrite=args.overwrite, image_format=args.image_format)
    fingerprint = read_fingerprint(out)
    seconds = time.perf_counter() - started
    rows = fingerprint["num_rows_total"]
    print(f"prepared {fingerprint['dataset']}: {rows:,} rows ({', '.join(f'{k} {v:,}' for k, v in fingerprint['num_rows'].items())}) "
          f"at {args.image_size} px in {seconds:.1f} s (index {fingerprint['seconds']['index']:.1f} s, "
          f"{rows / max(seconds, 1e-9):.1f} images/s with {args.num_proc} process(es)) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
