"""Splits shared by the loaders: hash-ordered stratified and group (patient) splits, stratified k-fold, the
train/validation/test assignment, split manifests, and :func:`_build` of the ``DatasetDict``.

Splits are seeded and stable across runs, platforms and library versions: items are ordered by
``sha256(f"{seed}:{image_id}")`` (not by a numpy random stream, whose algorithm may change), and
quotas are computed with the largest-remainder rule. :func:`write_split_manifest` saves the ids
of every split with the seed and fractions; pass the file back as ``manifest=`` to any loader to
rebuild the same splits exactly (e.g. from a checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, Features

from .common import DatasetFormatError

MANIFEST_FORMAT = "medmae-split-manifest/1"


# ============================================================================ splits


def _hash_rank(item_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).digest()


def _hash_order(ids: Sequence[str], seed: int) -> list[int]:
    """Indices of ``ids`` in a seeded pseudo-random order that depends only on (seed, id)."""
    return sorted(range(len(ids)), key=lambda i: _hash_rank(ids[i], seed))


def _quotas(sizes: Mapping[Any, int], fraction: float) -> dict:
    """Largest-remainder allocation of ``round(total * fraction)`` over strata (ties by key)."""
    total = sum(sizes.values())
    target = int(math.floor(total * fraction + 0.5))
    if fraction > 0 and total > 1:
        target = max(target, 1)  # a requested split is never empty when it can be filled
    target = min(target, total)
    exact = {k: n * fraction for k, n in sizes.items()}
    quota = {k: min(int(math.floor(v)), sizes[k]) for k, v in exact.items()}
    rest = sorted(sizes, key=lambda k: (-(exact[k] - math.floor(exact[k])), str(k)))
    i = 0
    while sum(quota.values()) < target and i < 10 * len(rest):
        k = rest[i % len(rest)]
        if quota[k] < sizes[k]:
            quota[k] += 1
        i += 1
    return quota


def stratified_split(ids: Sequence[str], strata: Sequence, fraction: float, seed: int = 0):
    """Split item indices into (rest, taken) with ``taken`` ≈ ``fraction`` of each stratum.

    The total taken is ``round(len(ids) * fraction)`` (at least 1 when ``fraction > 0`` and
    there are ≥ 2 items), spread over strata by the largest-remainder rule; inside a stratum
    the items with the smallest ``sha256(f"{seed}:{id}")`` are taken.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    groups: dict = defaultdict(list)
    for i, s in enumerate(strata):
        groups[s].append(i)
    quota = _quotas({s: len(v) for s, v in groups.items()}, fraction)
    taken: set[int] = set()
    for s, members in groups.items():
        order = sorted(members, key=lambda i: _hash_rank(ids[i], seed))
        taken.update(order[:quota[s]])
    rest = [i for i in range(len(ids)) if i not in taken]
    return rest, sorted(taken)


def group_split(groups: Sequence, fraction: float, seed: int = 0):
    """Split item indices into (rest, taken) so that no group (patient) is in both parts;
    ``round(n_groups * fraction)`` groups are taken (at least one when ``fraction > 0``)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    unique = sorted({str(g) for g in groups})
    n_take = _quotas({"all": len(unique)}, fraction)["all"]
    chosen = {unique[i] for i in _hash_order(unique, seed)[:n_take]}
    taken = [i for i, g in enumerate(groups) if str(g) in chosen]
    rest = [i for i, g in enumerate(groups) if str(g) not in chosen]
    return rest, taken


def stratified_kfold(ids: Sequence[str], strata: Sequence, n_folds: int = 5, seed: int = 0):
    """Fold number (0..n_folds-1) of every item; each stratum is dealt round-robin in hash
    order, continuing across strata, so fold sizes and class ratios differ by at most one."""
    if n_folds < 2:
        raise ValueError("n_folds must be >= 2")
    folds = [0] * len(ids)
    position = 0
    for s in sorted({str(s) for s in strata}):
        members = [i for i, t in enumerate(strata) if str(t) == s]
        for i in sorted(members, key=lambda i: _hash_rank(ids[i], seed)):
            folds[i] = position % n_folds
            position += 1
    return folds


def _train_val_test(ids, strata, test_fraction, val_fraction, seed, groups=None):
    """Assignment {split: [indices]}: test from all, validation from what is left."""
    split_fn = (lambda idx, frac, s: group_split([groups[i] for i in idx], frac, s)) if groups \
        else (lambda idx, frac, s: stratified_split([ids[i] for i in idx], [strata[i] for i in idx], frac, s))
    everything = list(range(len(ids)))
    rest, test = split_fn(everything, test_fraction, seed)
    rest = [everything[i] for i in rest]
    test = [everything[i] for i in test]
    keep, val = split_fn(rest, val_fraction, seed + 1)
    out = {"train": [rest[i] for i in keep]}
    if val_fraction > 0:
        out["validation"] = [rest[i] for i in val]
    if test_fraction > 0:
        out["test"] = test
    return out


# ============================================================================ manifests


def write_split_manifest(dataset_dict: DatasetDict, path, **info) -> Path:
    """Write the public ids of every split (column ``image_id``) as JSON, with the split
    parameters the loader recorded (seed, fractions, CSV used, ...) and any extra ``info``.

    The file is what a checkpoint should ship: ``load_*(root, manifest=path)`` rebuilds exactly
    these splits. Returns the path written.
    """
    splits = {}
    for name, ds in dataset_dict.items():
        if "image_id" not in ds.column_names:
            raise ValueError(f"split {name!r} has no 'image_id' column; cannot write a manifest")
        splits[name] = [str(x) for x in ds["image_id"]]
    payload = {"format": MANIFEST_FORMAT,
               "info": {**getattr(dataset_dict, "medmae_split_info", {}), **info},
               "counts": {k: len(v) for k, v in splits.items()}, "splits": splits}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, sort_keys=False))
    return path


def load_split_manifest(path) -> dict:
    """Read a manifest written by :func:`write_split_manifest` (checks its format tag)."""
    payload = json.loads(Path(path).read_text())
    if payload.get("format") != MANIFEST_FORMAT or "splits" not in payload:
        raise DatasetFormatError(f"{path} is not a medmae split manifest ({MANIFEST_FORMAT})")
    return payload


def _assignment_from_manifest(ids: Sequence[str], manifest, dataset: str):
    payload = manifest if isinstance(manifest, Mapping) else load_split_manifest(manifest)
    position = {str(x): i for i, x in enumerate(ids)}
    out, missing, used = {}, [], set()
    for split, split_ids in payload["splits"].items():
        out[split] = []
        for x in split_ids:
            if x in position:
                out[split].append(position[x])
                used.add(x)
            else:
                missing.append(x)
    if missing:
        raise DatasetFormatError(
            f"{dataset}: {len(missing)} id(s) of the split manifest are not in the dataset "
            f"folder (first: {missing[:5]}); cannot rebuild the splits exactly")
    unused = len(ids) - len(used)
    if unused:
        warnings.warn(f"{dataset}: {unused} image(s) of the folder are not in the split manifest "
                      "and were left out", stacklevel=3)
    return out


def _build(rows: list[dict], features: Features, assignment: dict, info: dict,
           description: str) -> DatasetDict:
    dd = DatasetDict()
    for split, idx in assignment.items():
        columns = {k: [rows[i][k] for i in idx] for k in features}
        dd[split] = Dataset.from_dict(
            columns, features=features,
            info=datasets.DatasetInfo(description=description, features=features),
            split=split)
    dd.medmae_split_info = info  # read by write_split_manifest
    return dd


def _official_test_split(rows, pool: str, manifest, dataset: str, val_fraction: float, seed: int):
    """Assignment for sets with an official test split (row key ``_split`` = ``pool`` or
    ``"test"``): ``validation`` = ``val_fraction`` of the PATIENTS of ``pool`` (patient-disjoint),
    ``train`` = the rest of ``pool``; or the splits of a manifest."""
    if manifest is not None:
        return _assignment_from_manifest([r["image_id"] for r in rows], manifest, dataset)
    pool_idx = [i for i, r in enumerate(rows) if r["_split"] == pool]
    keep, val = group_split([rows[i]["patient_id"] for i in pool_idx], val_fraction, seed)
    out = {"train": [pool_idx[i] for i in keep]}
    if val_fraction > 0:
        out["validation"] = [pool_idx[i] for i in val]
    out["test"] = [i for i, r in enumerate(rows) if r["_split"] == "test"]
    return out


def _assign(ids, strata, manifest, dataset, test_fraction, val_fraction, seed, groups=None):
    if manifest is not None:
        return _assignment_from_manifest(ids, manifest, dataset)
    for n, f in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 <= f < 1:
            raise ValueError(f"{n} must be in [0, 1), got {f}")
    return _train_val_test(ids, strata, test_fraction, val_fraction, seed, groups)
