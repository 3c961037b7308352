# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""The files of a training run and of an exported Hub folder: names, allow-list, digests and file manifest."""

from __future__ import annotations

import fnmatch
import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Optional

import torch
from safetensors.torch import save

from ..modeling.convert import file_sha256

RUN_INFO_FILE = "run_info.json"
RUN_MODEL_DIR = "final"
RUN_MANIFEST_FILE = "split_manifest.json"
REFERENCE_FILE = "reference_sample.safetensors"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
MANIFEST_FILE = "medmae_manifest.json"
MANIFEST_FORMAT = "medmae-export-manifest/1"
#: The only files an exported (and pushed) folder may hold: exact names, then patterns for the remote code.
ALLOWED_FILES = ("config.json", WEIGHTS_FILE, "preprocessor_config.json", REFERENCE_FILE, CARD_FILE, MANIFEST_FILE)
ALLOWED_PATTERNS = ("*.py",)


class ExportError(ValueError):
    """The source cannot be exported as asked (nothing is left in ``out_dir``)."""


def is_allowed_file(name: str) -> bool:
    return name in ALLOWED_FILES or any(fnmatch.fnmatch(name, p) for p in ALLOWED_PATTERNS)


def check_allowed_files(folder: Path) -> list[str]:
    """Sorted names of the files of ``folder``; ExportError naming any file or folder outside the allow-list."""
    names, refused = [], []
    for entry in sorted(Path(folder).iterdir()):
        if entry.is_file() and is_allowed_file(entry.name):
            names.append(entry.name)
        else:
            refused.append(entry.name + ("/" if entry.is_dir() else ""))
    if refused:
        raise ExportError(f"{folder} holds files outside the Hub allow-list ({', '.join(ALLOWED_FILES)}, remote code "
                          f"*.py): {', '.join(refused)}. Optimizer states, logs and data are never uploaded.")
    return names


def file_digests(folder: Path, exclude: Iterable[str] = ()) -> dict[str, str]:
    """``{file name: SHA-256}`` of the files of ``folder`` (sorted), except ``exclude``."""
    return {p.name: file_sha256(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name not in exclude}


def write_manifest(folder: Path, known: Optional[Mapping[str, str]] = None) -> Path:
    """``medmae_manifest.json``: the SHA-256 of every other shipped file (the card included), written last.
    ``known``: digests already computed for files not written since (each file is hashed once)."""
    known = dict(known or {})
    files = {p.name: known.get(p.name) or file_sha256(p) for p in sorted(Path(folder).iterdir())
             if p.is_file() and p.name != MANIFEST_FILE}
    payload = {"format": MANIFEST_FORMAT, "files": files}
    path = Path(folder) / MANIFEST_FILE
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str]) -> None:
    """``safetensors.torch.save_file`` with a reproducible header: safetensors serialises its header from a hash
    map, so the same tensors and metadata give different bytes (and SHA-256) from run to run. The header JSON is
    rewritten with sorted keys at the same length (data offsets are relative to the end of the header)."""
    data = save(dict(tensors), metadata=dict(metadata))
    length = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8: 8 + length]), separators=(",", ":"), sort_keys=True).encode()
    if len(header) > length:
        raise AssertionError("canonical safetensors header is longer than the original")
    Path(path).write_bytes(data[:8] + header.ljust(length, b" ") + data[8 + length:])


def folder_listing(folder) -> list[tuple[str, int]]:
    """(name, size in bytes) of the files of an exported folder."""
    return [(p.name, p.stat().st_size) for p in sorted(Path(folder).iterdir()) if p.is_file()]


def human_size(size: int) -> str:
    """A file size for people: ``512 B``, ``1.5 KiB``, ``3.2 MiB``."""
    exponent = min(int(math.log(size, 1024)), 3) if size > 0 else 0
    return f"{size / 1024**exponent:.1f} {['B', 'KiB', 'MiB', 'GiB'][exponent]}" if exponent else f"{size} B"
