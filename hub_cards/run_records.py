# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Run records (``run_info.json``): references they hold, and the local paths and data names kept out of exports."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

# run_info keys that name places on the training machine, dropped wherever they appear.
_PATH_KEY = re.compile(r"(^|_)(dir|root|path|file|folder|output|cache|home|manifest|csv)s?$", re.IGNORECASE)
# Data file names (images, tables, arrays) are training-data identifiers.
_DATA_FILE = re.compile(r"\.(png|jpe?g|bmp|tiff?|dcm|dicom|nii(\.gz)?|nrrd|mha|csv|tsv|npy|npz|h5|hdf5|parquet|arrow)$",
                        re.IGNORECASE)
# Absolute paths in text (not URLs): /home/x, /tmp/x, C:\x, ~/x.
_ABSOLUTE_PATH = re.compile(
    r"(?<![\w.:/-])(?:/(?:home|tmp|Users|mnt|data|scratch|work|root|var|media|srv|opt|private|gpfs|nfs|storage)/[\w.-]"
    r"|~/[\w.-]|[A-Za-z]:\\[\w.-])"
)


def _looks_like_local_path(value: str) -> bool:
    text = value.strip()
    return bool(
        text.startswith(("/", "~", "./", "../", "file:"))
        or re.match(r"^[A-Za-z]:[\\/]", text)
        or "\\" in text
        or (text.count("/") > 1 and "://" not in text)  # a repo id has one slash; a/b/c is a path
        or _DATA_FILE.search(text)
        or _ABSOLUTE_PATH.search(text)
    )


def sanitize_run_info(run_info: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """Drop every entry that names a local path, a dataset root or a data file.

    Returns (clean copy, dotted names of the dropped entries). Keys such as ``data_dir``, ``output_root``,
    ``train_csv`` are dropped whatever their value; string values that look like paths or data file names
    are dropped under any key. Hub repo ids (``org/name``) and hashes are kept.
    """
    dropped: list[str] = []

    def clean(value, where: str):
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                name = f"{where}.{key}" if where else str(key)
                if _PATH_KEY.search(str(key)) and not str(key).endswith(("sha256", "_kind")):
                    dropped.append(name)
                    continue
                cleaned = clean(item, name)
                if cleaned is not _DROP:
                    out[key] = cleaned
            return out
        if isinstance(value, (list, tuple)):
            items = [clean(item, f"{where}[{i}]") for i, item in enumerate(value)]
            return [item for item in items if item is not _DROP]
        if isinstance(value, str) and _looks_like_local_path(value):
            dropped.append(where)
            return _DROP
        if isinstance(value, Path):
            dropped.append(where)
            return _DROP
        return value

    _DROP = object()
    return clean(dict(run_info), ""), dropped


# What a run records about local folders and files: the user's own names (a folder may be named after a patient).
# Never shipped: provenance is a Hub repo id given to export explicitly (--base-model, --teacher), a SHA-256, or
# nothing. Their values also join the leak scan.
LOCAL_REFERENCES = ("base_model", "teacher")
LOCAL_ARGUMENTS = ("init_from", "teacher", "config", "resume", "resume_from_checkpoint", "output_dir", "manifest",
                   "model", "data_root", "dataset_path")


def strip_local_names(run_info: Mapping[str, Any]) -> tuple[dict, list[str], list[str]]:
    """(run_info without the run's local folder / file names, dotted names of the dropped entries, the dropped
    values and their path components, for the leak scan)."""
    info = dict(run_info)
    dropped, names = [], []
    for key in LOCAL_REFERENCES:
        if info.get(key) is not None:
            value = info.pop(key)
            dropped.append(key)
            names.append(json.dumps(value) if isinstance(value, Mapping) else str(value))
    hyperparameters = dict(info.get("hyperparameters") or {})
    for key in LOCAL_ARGUMENTS:
        if hyperparameters.get(key) not in (None, "", "<data_root>"):
            names.append(str(hyperparameters[key]))
            dropped.append(f"hyperparameters.{key}")
        hyperparameters.pop(key, None)
    if "hyperparameters" in info:
        info["hyperparameters"] = hyperparameters
    basenames = [re.split(r"[\\/]", name.rstrip("/\\"))[-1] for name in names]
    return info, dropped, [name for name in dict.fromkeys([*names, *basenames]) if is_distinctive(name)]


# Folder names medmae itself uses or suggests: too common to scan for (they would match the card's own text).
_GENERIC_NAMES = {"final", "best", "checkpoints", "runs", "model", "models", "output", "outputs", "export",
                  "exports", "pretrain", "finetune", "teacher", "student", "etmae", "sdda_mae", "sdda-mae", "medmae"}


def is_distinctive(name: str) -> bool:
    """A local name worth scanning the export for: at least 6 characters and not a generic folder name."""
    return len(name) >= 6 and name.lower() not in _GENERIC_NAMES


def manifest_ids(path: Path) -> list[str]:
    """Ids listed in a split manifest (they are training-data file names: they must never be shipped)."""
    payload = json.loads(path.read_text())
    return [str(x) for ids in payload.get("splits", {}).values() for x in ids]


def _searchable_text(path: Path) -> str:
    """The text of a file that could carry a path: the whole file, or the JSON header of a safetensors file."""
    if path.suffix == ".safetensors":
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            return handle.read(header_len).decode("utf-8", errors="replace")
    return path.read_bytes().decode("utf-8", errors="replace")


def find_leaks(folder, forbidden: Iterable[str] = (), names: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(file, offending text) for every absolute path or forbidden string (local paths, dataset roots,
    training-data ids) found in the files of ``folder``, and every local folder / file name of ``names`` found as
    a whole name (not inside a longer one: ``etmae_teacher`` is not found in ``demo_etmae_teacher``)."""
    needles = {s for s in forbidden if s and len(s) >= 4 and s not in ("/", os.sep)}
    patterns = {name: re.compile(rf"(?<![\w.-]){re.escape(name)}(?![\w-])") for name in names if name}
    leaks = []
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file():
            continue
        text = _searchable_text(path)
        leaks += [(path.name, needle) for needle in sorted(needles) if needle in text]
        leaks += [(path.name, name) for name, pattern in sorted(patterns.items()) if pattern.search(text)]
        match = _ABSOLUTE_PATH.search(text)
        if match:
            leaks.append((path.name, text[match.start(): match.start() + 60].split()[0]))
    return leaks


def run_reference(run_info: Mapping[str, Any], key: str) -> Optional[str]:
    """``run_info[key]`` (``teacher`` / ``base_model``) as text: a repo id or description, also when the run
    recorded it as ``{"repo_id": ..., "description": ...}``."""
    value = run_info.get(key)
    if isinstance(value, Mapping):
        value = value.get("repo_id") or value.get("description")
    return str(value) if value else None

