"""Loaders of the four medical datasets in their published on-disk formats, as ``datasets.DatasetDict``.

Every loader takes the dataset folder as the publisher ships it and returns a
:class:`datasets.DatasetDict` with explicit :class:`datasets.Features`. Images stay encoded (a file
path, or PNG/JPEG bytes) in an :class:`datasets.Image` column and are decoded lazily on access;
attach augmentation with ``dataset.with_transform(...)`` (see :mod:`medmae.training.transforms`).
Nothing is ever expanded into float arrays on disk.

Common columns
--------------
* segmentation sets (BUSI, SIIM-ACR, synthetic ultrasound): ``image`` (Image, mode ``L``),
  ``mask`` (Image, values 0/1), ``label`` (ClassLabel), ``image_id`` (public id of the image);
* multi-label sets (NIH ChestX-ray14, CheXpert, synthetic CXR): ``image``, ``labels``
  (``List(float32)``, one entry per label name, in the order of ``dataset.info`` /
  the ``labels`` argument), ``label_mask`` for CheXpert's ``ignore`` policy, metadata columns.

Modules
-------
* :mod:`.common`: dataset errors, file/CSV/image helpers, the one bad-file policy (``check_images``, ``on_bad_image``);
* :mod:`.splits`: seeded hash-ordered splits (stratified, by patient, k-fold), split assignment, split manifests;
* :mod:`.busi`: BUSI breast ultrasound with merged lesion masks (Q1-Q5);
* :mod:`.siim_acr`: SIIM-ACR pneumothorax, DICOM images and RLE masks (Q6-Q12);
* :mod:`.chestxray14`: NIH ChestX-ray14, 14 findings and the official split (Q13-Q17);
* :mod:`.chexpert`: CheXpert, uncertain labels and their policies (Q18-Q22).

The numbered quirks (Q1-Q22) are explained in ``docs/datasets.md``.
"""

from __future__ import annotations

from ...configuration.labels import (
    BUSI_CLASSES,
    CHEXPERT_COMPETITION_LABELS,
    CHEXPERT_OBSERVATIONS,
    NIH_LABELS,
    SIIM_CLASSES,
)
from .common import CorruptImageError, DatasetFormatError
from .splits import group_split, load_split_manifest, stratified_kfold, stratified_split, write_split_manifest
from .busi import BUSI_FEATURES, busi_kfold, load_busi
from .siim_acr import SIIM_FEATURES, load_siim_acr, rle_decode, rle_encode
from .chestxray14 import NIH_FEATURES, load_chestxray14
from .chexpert import UNCERTAINTY_POLICIES, load_chexpert

__all__ = [
    "BUSI_CLASSES", "SIIM_CLASSES", "NIH_LABELS", "CHEXPERT_OBSERVATIONS",
    "CHEXPERT_COMPETITION_LABELS", "UNCERTAINTY_POLICIES", "DATASET_NAMES",
    "DatasetFormatError", "CorruptImageError",
    "load_busi", "busi_kfold", "load_siim_acr", "load_chestxray14", "load_chexpert",
    "rle_decode", "rle_encode",
    "write_split_manifest", "load_split_manifest", "stratified_split", "group_split",
    "stratified_kfold", "BUSI_FEATURES", "SIIM_FEATURES", "NIH_FEATURES",
]

DATASET_NAMES = ("busi", "siim_acr", "chestxray14", "chexpert", "chestxray14+chexpert",
                 "synthetic_ultrasound", "synthetic_cxr", "imagefolder", "csv", "segfolder", "hf:NAME_OR_PATH")
# Pre-training sets made of several datasets (name -> sources), loaded by training/combined.py.
COMBINED_DATASETS = {"chestxray14+chexpert": ("chestxray14", "chexpert")}
