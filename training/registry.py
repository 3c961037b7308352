# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Datasets by name: the one dispatcher the scripts, ``medmae prepare`` and the tests call.

The four published datasets (:mod:`medmae.training.data`), their union for ETMAE's pre-training
(:mod:`medmae.training.combined`), your own images (:mod:`medmae.training.own_data`) and the generated sets
(:mod:`medmae.training.synthetic`). It sits above all of them, so none of them imports another through it.
"""

from __future__ import annotations

from pathlib import Path

from datasets import DatasetDict

from . import own_data, synthetic
from .combined import load_combined
from .data import COMBINED_DATASETS, DATASET_NAMES, load_busi, load_chestxray14, load_chexpert, load_siim_acr

PUBLISHED = {"busi": load_busi, "siim_acr": load_siim_acr, "chestxray14": load_chestxray14, "chexpert": load_chexpert}
OWN_DATA = {"imagefolder": own_data.load_imagefolder, "csv": own_data.load_csv, "segfolder": own_data.load_segfolder}
SYNTHETIC = {"synthetic_ultrasound": synthetic.make_synthetic_ultrasound, "synthetic_cxr": synthetic.make_synthetic_cxr}


def load_dataset_by_name(name: str, root=None, **kw) -> DatasetDict:
    """Load a dataset by its short name (used by the training scripts).

    ``busi``, ``siim_acr``, ``chestxray14``, ``chexpert`` need ``root`` (the folder as
    published); ``chestxray14+chexpert`` (ETMAE's pre-training set, images only, a ``source``
    column) needs ``root={"chestxray14": DIR1, "chexpert": DIR2}``; ``imagefolder``, ``csv``,
    ``segfolder`` are folders of your own images and ``hf:REPO`` a Hub or local ``datasets``
    dataset; ``synthetic_ultrasound`` and ``synthetic_cxr`` are generated (``root`` must be None).
    ``kw`` goes to the loader. Raises ValueError for an unknown name and FileNotFoundError for a
    missing folder.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key in COMBINED_DATASETS:
        return load_combined(key, root, {source: PUBLISHED[source] for source in COMBINED_DATASETS[key]}, **kw)
    if key in PUBLISHED:
        if root is None:
            raise ValueError(f"dataset {name!r} needs root= (the dataset folder as published)")
        if not Path(root).expanduser().is_dir():
            raise FileNotFoundError(f"dataset {name!r}: folder not found: {root}")
        return PUBLISHED[key](root, **kw)
    if key.startswith("hf:"):
        return own_data.load_hf(str(name).strip()[3:], **kw)
    if key in OWN_DATA:
        if root is None:
            raise ValueError(f"dataset {key!r} needs root= (your folder of images)")
        return OWN_DATA[key](root, **kw)
    if key in SYNTHETIC:
        if root is not None:
            raise ValueError(f"dataset {name!r} is generated; it takes no root folder")
        return SYNTHETIC[key](**kw)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASET_NAMES)}")
