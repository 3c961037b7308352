# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Several datasets as ONE pre-training set: ``load_dataset_by_name("chestxray14+chexpert", root={...})``.

ETMAE distils on NIH ChestX-ray14 and CheXpert TOGETHER (paper section 4.1; the authors' code concatenates the
two). Pre-training needs images only, so the label vocabularies need not agree: each source is loaded by its own
loader (its own quirks, its own patient-disjoint official split), reduced to the shared columns and concatenated
split by split, with a ``source`` column saying where every row comes from (the teacher re-normalises each image
with the statistics of ITS source, see ``ETMAEConfig.teacher_source_statistics``).

Ids are prefixed with the source (``chestxray14:00000001_000.png``) so a split manifest covers both sources and
rebuilds each one exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import datasets
from datasets import DatasetDict, Features, Value, concatenate_datasets

from .data import load_split_manifest

COMBINED_FEATURES = Features({"image": datasets.Image(mode="L"), "image_id": Value("string"),
                              "patient_id": Value("string"), "source": Value("string")})


def parse_roots(name: str, root, sources: list[str]) -> dict[str, Path]:
    """``root`` as {source: folder}: a mapping, a JSON object, or ``"src=DIR;src=DIR"``; every source needs one."""
    if isinstance(root, str):
        text = root.strip()
        if text.startswith("{"):
            root = json.loads(text)
        else:
            pairs = [p for p in text.split(";") if p.strip()]
            if not all("=" in p for p in pairs):
                raise ValueError(f"dataset {name!r} combines {sources}: give one folder per source, e.g. "
                                 f"--data_root {sources[0]}=DIR1 --data_root {sources[-1]}=DIR2 (got {root!r})")
            root = dict(p.split("=", 1) for p in pairs)
    if not isinstance(root, Mapping):
        raise ValueError(f"dataset {name!r} needs root={{source: folder}} for {sources}, got {root!r}")
    unknown = sorted(set(root) - set(sources))
    if unknown:
        raise ValueError(f"dataset {name!r}: root names unknown source(s) {unknown}; it combines {sources}")
    missing = [s for s in sources if s not in root]
    if missing:
        raise ValueError(f"dataset {name!r}: no folder for source(s) {missing} (got {sorted(root)}); give "
                         + " ".join(f"--data_root {s}=DIR" for s in sources))
    folders = {s: Path(str(root[s])).expanduser() for s in sources}
    for source, folder in folders.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset {name!r}: the {source} folder {folder} does not exist")
    return folders


def _source_manifest(manifest, source: str):
    """The part of a combined split manifest that belongs to ``source`` (ids without the prefix)."""
    if manifest is None:
        return None
    payload = manifest if isinstance(manifest, Mapping) else load_split_manifest(manifest)
    prefix = f"{source}:"
    return {**payload, "splits": {split: [i[len(prefix):] for i in ids if i.startswith(prefix)]
                                  for split, ids in payload["splits"].items()}}


def load_combined(name: str, root, loaders: Mapping[str, callable], seed: int = 0, manifest=None,
                  **kwargs) -> DatasetDict:
    """Load every source with its loader (``seed``, ``manifest`` and ``kwargs`` passed on) and concatenate the
    splits; columns ``image``, ``image_id`` (``source:id``), ``patient_id`` (text) and ``source``."""
    sources = list(loaders)
    folders = parse_roots(name, root, sources)
    parts, infos = {}, {}
    for source in sources:
        loaded = loaders[source](folders[source], seed=seed, manifest=_source_manifest(manifest, source), **kwargs)
        infos[source] = getattr(loaded, "medmae_split_info", {})
        for split, ds in loaded.items():
            # columns are read without decoding a single image
            ids = [f"{source}:{i}" for i in ds["image_id"]]
            patients = [None if p is None else str(p) for p in ds["patient_id"]]
            ds = ds.select_columns(["image"]).cast_column("image", COMBINED_FEATURES["image"])
            ds = ds.add_column("image_id", ids).add_column("patient_id", patients)
            ds = ds.add_column("source", [source] * len(ids)).cast(COMBINED_FEATURES)
            parts.setdefault(split, []).append(ds)
    missing = [s for s, ds in parts.items() if len(ds) != len(sources)]
    if missing:
        raise ValueError(f"dataset {name!r}: split(s) {missing} exist in some sources only")
    out = DatasetDict({split: concatenate_datasets(ds) for split, ds in parts.items()})
    out.medmae_split_info = {"dataset": name, "seed": seed, "kind": "official", "sources": infos,
                             "validation": "patient-disjoint within each source"}
    return out
