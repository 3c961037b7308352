# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""A folder written by ``medmae prepare`` read back and checked against a run: the fingerprint's pieces (index hash,
the source's label / list files and listing, the loader arguments that decide the rows), :func:`read_fingerprint`
and :func:`load_prepared` (every mismatch named in one :class:`PreparedDatasetError`).

What a prepared folder holds, the resize rule and which runs are refused are described in
:mod:`medmae.training.prepare`, which builds and writes the folder and holds ``--dataset_path``'s
:func:`~medmae.training.prepare.prepared_splits`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa

import datasets
from datasets import DatasetDict, concatenate_datasets

from .. import __version__
from . import data, own_data
from .combined import parse_roots
from .data.busi import _busi_folder
from .data.chexpert import _chexpert_folder
from .data.splits import _assignment_from_manifest

__all__ = ["PreparedDatasetError", "read_fingerprint", "load_prepared", "index_sha256", "source_files",
           "source_listing", "dataset_key"]

PREPARED_FORMAT = "medmae-prepared/1"
FINGERPRINT_FILE = "medmae_prepared.json"
INDEX_COLUMNS = ("image_id", "label", "labels", "label_mask", "source")  # what the index hash covers
LABEL_FILE_SUFFIXES = (".csv", ".txt", ".json")  # the source's label / list files (depth <= 2), re-checked on load
ROW_NEUTRAL_KWARGS = ("check_images", "image_cache_dir")  # loader options that do not change the rows
LOADERS = {"busi": data.load_busi, "siim_acr": data.load_siim_acr, "chestxray14": data.load_chestxray14,
           "chexpert": data.load_chexpert, "imagefolder": own_data.load_imagefolder, "csv": own_data.load_csv,
           "segfolder": own_data.load_segfolder}


class PreparedDatasetError(ValueError):
    """A prepared folder cannot be written or does not fit the run; the message names the mismatch."""


# ----------------------------------------------------------------------------------------------------
# The fingerprint's pieces (prepare.py writes them, load_prepared checks them)
# ----------------------------------------------------------------------------------------------------
def dataset_key(name: Optional[str]) -> str:
    """The normalised dataset name, as :func:`medmae.training.registry.load_dataset_by_name` reads it."""
    return str(name or "").strip().lower().replace("-", "_")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _column_bytes(column: pa.ChunkedArray) -> bytes:
    """A canonical byte form of one index column (independent of how the table is chunked)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        lengths = array.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        values = np.asarray(array.flatten().fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)
        return lengths.tobytes() + values.tobytes()
    if pa.types.is_integer(array.type):
        return array.fill_null(-(2 ** 62)).to_numpy(zero_copy_only=False).astype(np.int64).tobytes()
    return json.dumps(array.to_pylist()).encode()


def index_sha256(splits: Mapping) -> str:
    """SHA-256 of the index: per split (sorted by name), its size and the columns ``image_id``, ``label``,
    ``labels``, ``label_mask``, ``source`` (those present), in row order. Reads no image."""
    digest = hashlib.sha256()
    for name in sorted(splits):
        ds = splits[name]
        columns = [c for c in INDEX_COLUMNS if c in ds.column_names]
        digest.update(json.dumps([name, len(ds), columns]).encode())
        table = ds.select_columns(columns).with_format("arrow")[:] if len(ds) else None
        for column in columns:
            if table is not None:
                digest.update(_column_bytes(table.column(column)))
    return digest.hexdigest()


def _source_roots(dataset: str, root) -> dict[str, Path]:
    """{source: resolved folder}; one entry ``""`` for a single dataset."""
    if dataset_key(dataset) in data.COMBINED_DATASETS:
        sources = list(data.COMBINED_DATASETS[dataset_key(dataset)])
        return {s: p.resolve() for s, p in parse_roots(dataset, root, sources).items()}
    if root is None:
        raise PreparedDatasetError(f"--dataset {dataset} needs --data_root (the dataset folder as published)")
    folder = Path(str(root)).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"--dataset {dataset}: dataset folder not found: {folder}")
    return {"": folder.resolve()}


def _data_folders(dataset: str, roots: Mapping[str, Path]) -> dict[str, Path]:
    """The folders the loaders actually read below each root (BUSI's ``Dataset_BUSI_with_GT/``, CheXpert's
    ``CheXpert-v1.0-small/`` when the parent was given): where the source's label files and listing are taken."""
    inner = {"busi": _busi_folder, "chexpert": _chexpert_folder}
    key = dataset_key(dataset)
    return {source: inner[source or key](root) if (source or key) in inner else root for source, root in roots.items()}


def _root_record(roots: Mapping[str, Path]):
    """The source root as the fingerprint records it: a path, or {source: path} for a combined set."""
    return str(roots[""]) if list(roots) == [""] else {s: str(p) for s, p in roots.items()}


def source_files(roots: Mapping[str, Path]) -> list[dict]:
    """Size and SHA-256 of the label and list files (``.csv``, ``.txt``, ``.json``) at depth <= 2 of each root --
    what decides the labels and splits; the images themselves are not re-hashed."""
    found = []
    for source, root in sorted(roots.items()):
        for path in sorted(_shallow_files(root)):
            relative = path.relative_to(root).as_posix()
            found.append({"path": f"{source}:{relative}" if source else relative, "size": path.stat().st_size,
                          "sha256": _sha256(path)})
    return found


def source_listing(roots: Mapping[str, Path]) -> dict:
    """Entry count and SHA-256 of the sorted names at depth <= 2 of each root (``os.scandir``, no ``stat``): files
    added, removed or renamed there -- a BUSI class folder, NIH's flat ``images/`` -- change it."""
    names = []
    for source, root in sorted(roots.items()):
        with os.scandir(root) as top:
            for entry in top:
                names.append(f"{source}:{entry.name}")
                if entry.is_dir():
                    with os.scandir(entry.path) as inner:
                        names += [f"{source}:{entry.name}/{e.name}" for e in inner]
    names.sort()
    return {"entries": len(names), "sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()}


def _shallow_files(root: Path) -> list[Path]:
    files = []
    for entry in root.iterdir():
        if entry.is_file() and entry.suffix.lower() in LABEL_FILE_SUFFIXES:
            files.append(entry)
        elif entry.is_dir():
            files += [f for f in entry.iterdir() if f.is_file() and f.suffix.lower() in LABEL_FILE_SUFFIXES]
    return files


def _row_kwargs(dataset: str, kwargs: Mapping) -> dict:
    """The loader arguments that decide the rows, without those equal to the loader's defaults (so a preset's
    explicit ``{"uncertainty": "mixed"}`` matches a folder prepared without it) and without row-neutral ones."""
    loader = LOADERS.get(dataset_key(dataset))
    defaults = {}
    if loader is not None:
        defaults = {n: p.default for n, p in inspect.signature(loader).parameters.items()
                    if p.default is not inspect.Parameter.empty}
    out = {}
    for name, value in kwargs.items():
        if name in ROW_NEUTRAL_KWARGS or name == "manifest":
            continue
        if name in defaults and _same(value, defaults[name]):
            continue
        out[name] = value
    out.setdefault("seed", 0)
    return json.loads(json.dumps(out, default=str, sort_keys=True))


def _same(a, b) -> bool:
    return json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)


# ----------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------
def read_fingerprint(path) -> dict:
    """The ``medmae_prepared.json`` of a prepared folder; a folder without one is refused."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"prepared dataset folder not found: {folder} (write it with medmae prepare)")
    file = folder / FINGERPRINT_FILE
    if not file.is_file():
        raise PreparedDatasetError(f"{folder} is not a medmae prepared dataset (no {FINGERPRINT_FILE}); write one "
                                   "with medmae prepare")
    fingerprint = json.loads(file.read_text())
    if fingerprint.get("format") != PREPARED_FORMAT:
        raise PreparedDatasetError(f"{folder}: prepared format {fingerprint.get('format')!r}, this medmae reads "
                                   f"{PREPARED_FORMAT!r}; prepare it again with this version")
    return fingerprint


def _mismatches(fingerprint: dict, dataset, image_size, loader_kwargs, source_root) -> list[str]:
    found = []
    if dataset is not None and dataset_key(dataset) != fingerprint["dataset"]:
        found.append(f"it was prepared for --dataset {fingerprint['dataset']}, this run reads --dataset "
                     f"{dataset_key(dataset)}")
    if image_size is not None and fingerprint["image_size"] < image_size:
        found.append(f"it was prepared at image_size {fingerprint['image_size']}, below the {image_size} px this run "
                     "reads (its images would be enlarged)")
    if loader_kwargs is not None:
        given = _row_kwargs(fingerprint["dataset"], loader_kwargs)
        for name in sorted(set(given) | set(fingerprint["loader_kwargs"])):
            if not _same(given.get(name), fingerprint["loader_kwargs"].get(name)):
                found.append(f"loader argument {name!r} is {fingerprint['loader_kwargs'].get(name)!r} there and "
                             f"{given.get(name)!r} in this run")
    if source_root is not None:
        recorded = fingerprint["source_root"]
        given_root = _root_record(_source_roots(fingerprint["dataset"], source_root))
        if not _same(given_root, recorded):
            found.append(f"it was prepared from {recorded}, this run gives --data_root {given_root}")
    return found


def _stale_sources(fingerprint: dict) -> list[str]:
    """Differences between the source's label / list files now and when the folder was prepared ([] when the
    source folder is not there: a prepared folder may travel without it; a warning says so)."""
    recorded = fingerprint["source_root"]
    roots = {"": Path(recorded)} if isinstance(recorded, str) else \
        {s: Path(p) for s, p in recorded.items()}
    missing = [str(p) for p in roots.values() if not p.is_dir()]
    if missing:
        warnings.warn(f"the source folder(s) {missing} of this prepared dataset are not here; its label files were "
                      "not re-checked", stacklevel=3)
        return []
    roots = _data_folders(fingerprint["dataset"], roots)
    then = {f["path"]: f for f in fingerprint["source_files"]}
    now = {f["path"]: f for f in source_files(roots)}
    changes = [f"{p} was removed" for p in sorted(set(then) - set(now))]
    changes += [f"{p} was added" for p in sorted(set(now) - set(then))]
    changes += [f"{p} changed (size {then[p]['size']} -> {now[p]['size']}, sha256 {then[p]['sha256'][:12]} -> "
                f"{now[p]['sha256'][:12]})" for p in sorted(set(then) & set(now)) if then[p]["sha256"] != now[p]["sha256"]]
    listing = source_listing(roots)
    if listing != fingerprint["source_listing"]:
        changes.append(f"folder listing (top two levels) changed: {fingerprint['source_listing']['entries']} entries "
                       f"then, {listing['entries']} now, or files renamed")
    return [f"the source's {c}" for c in changes]


def load_prepared(path, *, dataset: Optional[str] = None, image_size: Optional[int] = None,
                  loader_kwargs: Optional[Mapping] = None, manifest=None, source_root=None,
                  check_source: bool = True) -> DatasetDict:
    """A prepared folder as a ``DatasetDict`` (memory-mapped; ``medmae_split_info`` as the loader recorded it and
    ``medmae_prepared`` = the fingerprint). Refused, with every mismatch named: another ``dataset``, a prepared
    size below ``image_size``, other ``loader_kwargs``, another ``source_root``, row counts or an index hash that
    differ from the fingerprint (files edited after), or changed source label files (``check_source``).
    ``manifest`` re-splits the prepared rows exactly as a split manifest says."""
    folder = Path(path).expanduser()
    fingerprint = read_fingerprint(folder)
    problems = _mismatches(fingerprint, dataset, image_size, loader_kwargs, source_root)
    if problems:
        raise PreparedDatasetError(f"prepared dataset {folder} does not fit: " + "; ".join(problems))
    splits = datasets.load_from_disk(str(folder))
    if not isinstance(splits, DatasetDict):
        raise PreparedDatasetError(f"{folder} holds one split, not a prepared DatasetDict")
    counts = {split: len(ds) for split, ds in splits.items()}
    problems = [f"rows per split {counts}, the fingerprint says {fingerprint['num_rows']}"] \
        if counts != fingerprint["num_rows"] else []
    if not problems and index_sha256(splits) != fingerprint["index_sha256"]:
        problems.append("its ids or labels no longer hash to the recorded index_sha256 (edited after preparation)")
    if check_source and not problems:
        problems += _stale_sources(fingerprint)
    if problems:
        raise PreparedDatasetError(f"prepared dataset {folder} is stale: " + "; ".join(problems)
                                   + "; prepare it again (medmae prepare ... --overwrite)")
    if fingerprint["medmae_version"] != __version__:
        warnings.warn(f"{folder} was prepared by medmae {fingerprint['medmae_version']}, this is {__version__}",
                      stacklevel=2)
    if manifest is not None:
        splits = _resplit(splits, manifest, fingerprint["dataset"])
    splits.medmae_split_info = fingerprint["split_info"]
    splits.medmae_prepared = fingerprint
    return splits


def _resplit(splits: DatasetDict, manifest, dataset: str) -> DatasetDict:
    """The prepared rows in the splits of ``manifest`` (a path or a loaded manifest), as the raw loaders do."""
    payload = manifest if isinstance(manifest, Mapping) else data.load_split_manifest(manifest)
    if set(payload["splits"]) == set(splits) and all(
            [str(i) for i in splits[name]["image_id"]] == list(ids) for name, ids in payload["splits"].items()):
        return splits
    everything = concatenate_datasets([splits[name] for name in splits])
    ids = [str(i) for i in everything["image_id"]]
    assignment = _assignment_from_manifest(ids, payload, dataset)
    return DatasetDict({name: everything.select(rows) for name, rows in assignment.items()})
