# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Your own images as a medmae dataset: ``--dataset imagefolder --data_root DIR``.

Three layouts are recognised, in this order:

* ``DIR/train/<class>/*``, with ``DIR/validation/<class>/*`` and/or ``DIR/test/<class>/*``: your own split,
  kept as given (a missing ``validation`` is carved from ``train``, stratified by class);
* ``DIR/<class>/*``: single-label classification, one class per sub-folder (names sorted), split stratified
  by class with the seeded, hash-ordered rule of the named datasets and recorded in the split manifest;
* any other folder of images, flat or nested: unlabelled, for pre-training (no ``label`` column).

Images: ``.png .jpg .jpeg .bmp .tif .tiff`` and ``.dcm`` (DICOM, decoded as the SIIM-ACR loader does:
MONOCHROME1 inverted, more than 8 bits stored scaled to 0-255). PNG/TIFF images with more than 8 bits
(``I;16``, ``I``) are scaled to 8 bits by ``bits_stored`` (default 16: ``value / 65535``; give 12 for 12-bit
data stored in 16-bit files) -- never clipped. ``image_id`` is the path relative to ``DIR``. Files that are not
images (``Thumbs.db``, ``.DS_Store``, CSVs) are ignored; an unreadable image raises an error naming it
(``on_bad_image="skip"`` skips it with a warning instead); a class folder without images is an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import datasets
import numpy as np
from datasets import ClassLabel, DatasetDict, Features, Value
from PIL import Image as PILImage

from .data import (
    CorruptImageError,
    DatasetFormatError,
    _add_unique,
    _assign,
    _BadFiles,
    _build,
    _bytes_cell,
    _dicom_image,
    _image_cell,
    _png_bytes,
    natural_key,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
SPLIT_FOLDERS = ("train", "validation", "test")


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), in natural order of their relative paths."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def _class_folders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def _cell(path: Path, bad: _BadFiles, bits_stored: int):
    """The ``image`` cell of one file: the file itself for 8-bit images, 8-bit PNG bytes for DICOM and >8-bit
    images; False when the file was skipped (``on_bad_image="skip"``)."""
    try:
        if path.suffix.lower() == ".dcm":
            data, _, _ = _dicom_image(path, bad.check)
            return _bytes_cell(data)
        with PILImage.open(path) as image:
            if bad.check == "full":
                image.load()
            if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
                return _image_cell(path)
            values = np.asarray(image).astype(np.float64)
        if values.max() > 2 ** bits_stored - 1:
            raise DatasetFormatError(f"{path}: values up to {values.max():.0f} exceed bits_stored={bits_stored}")
        return _bytes_cell(_png_bytes(np.clip(values / (2 ** bits_stored - 1) * 255 + 0.5, 0, 255).astype(np.uint8)))
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
        error = exc if isinstance(exc, CorruptImageError) else CorruptImageError(f"cannot read image file {path}: {exc}")
        bad.handle(error)
        return False


def _rows(root: Path, folders: list[tuple[Optional[str], Optional[str], Path]], bad: _BadFiles,
          bits_stored: int) -> list[dict]:
    """One row per image of each ``(split or None, class or None, folder)``."""
    rows, seen = [], {}
    for split, label, folder in folders:
        files = _image_files(folder)
        if not files and label is not None:
            raise DatasetFormatError(f"imagefolder: class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for path in files:
            image_id = path.relative_to(root).as_posix()
            _add_unique(seen, image_id.lower(), path, f"imagefolder: image {image_id!r} (names differing only in case)")
            cell = _cell(path, bad, bits_stored)
            if cell is not False:
                rows.append({"image": cell, "label": label, "image_id": image_id, "_split": split})
    bad.report()
    if not rows:
        raise DatasetFormatError(f"imagefolder: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return rows


def _layout(root: Path) -> tuple[str, list[tuple[Optional[str], Optional[str], Path]]]:
    """("given" | "classes" | "unlabelled", [(split, class, folder)])."""
    splits = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    if "train" in splits and len(splits) > 1:
        return "given", [(split, c.name, c) for split in splits for c in _class_folders(root / split)]
    classes = _class_folders(root)
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) >= 2 and not loose and all(_image_files(c) for c in classes):
        return "classes", [(None, c.name, c) for c in classes]
    return "unlabelled", [(None, None, root)]


def load_imagefolder(root, seed: int = 0, test_fraction: float = 0.1, val_fraction: float = 0.1, *,
                     manifest=None, bits_stored: int = 16, check_images: str = "header",
                     on_bad_image: str = "raise") -> DatasetDict:
    """A folder of your images as a DatasetDict (columns ``image``, ``label`` when labelled, ``image_id``);
    see the module docstring for the layouts. Splits are stratified by class (seeded, hash-ordered, as the named
    datasets) unless the folder gives them; ``manifest`` rebuilds the splits of a previous run exactly."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder: folder not found: {root}")
    if not 1 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be 1..16, got {bits_stored}")
    kind, folders = _layout(root)
    rows = _rows(root, folders, _BadFiles("imagefolder", on_bad_image, check_images), bits_stored)
    labelled = kind != "unlabelled"
    names = sorted({r["label"] for r in rows}, key=natural_key) if labelled else []
    ids = [r["image_id"] for r in rows]
    if kind == "given" and manifest is None:
        assignment = _given_assignment(rows, val_fraction, seed)
    else:
        assignment = _assign(ids, [r["label"] for r in rows], manifest, "imagefolder", test_fraction,
                             val_fraction, seed)
    features = {"image": datasets.Image(), "image_id": Value("string")}
    if labelled:
        features["label"] = ClassLabel(names=names)
        for r in rows:
            r["label"] = names.index(r["label"])
    info = {"dataset": "imagefolder", "layout": kind, "seed": seed, "classes": names or None,
            "test_fraction": None if kind == "given" else test_fraction, "val_fraction": val_fraction,
            "stratified_by": "label" if labelled else None, "bits_stored": bits_stored}
    return _build(rows, Features(features), assignment, info,
                  f"imagefolder ({kind}): {len(rows)} images" + (f", classes {names}" if names else ""))


def _given_assignment(rows: list[dict], val_fraction: float, seed: int) -> dict:
    """The folder's own splits; ``validation`` carved from ``train`` (stratified) when the folder has none."""
    out = {split: [i for i, r in enumerate(rows) if r["_split"] == split] for split in SPLIT_FOLDERS}
    if not out["validation"] and val_fraction > 0:
        train = out["train"]
        carved = _assign([rows[i]["image_id"] for i in train], [rows[i]["label"] for i in train], None,
                         "imagefolder", 0.0, val_fraction, seed)
        out["train"] = [train[i] for i in carved["train"]]
        out["validation"] = [train[i] for i in carved.get("validation", [])]
    if not out["validation"]:
        warnings.warn("imagefolder: no validation split (the best checkpoint will be the last)", stacklevel=3)
    return {split: idx for split, idx in out.items() if idx}
