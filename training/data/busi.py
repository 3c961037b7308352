"""BUSI (breast ultrasound: normal/benign/malignant with lesion masks): the folder scanner :func:`_busi_rows`,
:func:`load_busi` (splits) and :func:`busi_kfold` (cross-validation); quirks Q1-Q5."""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

from ...configuration.labels import BUSI_CLASSES
from .common import (
    CorruptImageError,
    DatasetFormatError,
    _add_unique,
    _BadFiles,
    _bytes_cell,
    _existing_dir,
    _image_cell,
    _png_bytes,
    natural_key,
)
from .splits import _assign, _build, stratified_kfold, stratified_split

# ============================================================================ BUSI

_MASK_RE = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?\.png$", re.IGNORECASE)


def _binary_mask(path: Path) -> np.ndarray:
    """One BUSI mask file -> bool array (Q3): L, RGB or RGBA with 0/255; the first colour
    channel is thresholded at 127, an alpha channel is ignored."""
    try:
        with PILImage.open(path) as im:
            if im.mode in ("1", "P"):
                im = im.convert("L")
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"cannot read mask file {path}: {exc}") from exc
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr > (127 if arr.dtype == np.uint8 else arr.max() / 2)


def _busi_folder(root: Path) -> Path:
    for candidate in (root, root / "Dataset_BUSI_with_GT"):
        if any((candidate / c).is_dir() for c in BUSI_CLASSES):
            return candidate
    raise FileNotFoundError(f"BUSI: no class folder ({', '.join(BUSI_CLASSES)}) in {root} "
                            "or in its Dataset_BUSI_with_GT/ sub-folder")


def _busi_rows(root, check_images: str, on_bad_image: str) -> list[dict]:
    """Scan the class folders: one row per image with the OR of all its masks (Q1-Q5)."""
    top = _busi_folder(_existing_dir(root, "BUSI"))
    bad = _BadFiles("BUSI", on_bad_image, check_images)
    rows, orphans = [], []
    for label in BUSI_CLASSES:
        folder = top / label
        if not folder.is_dir():
            continue
        images, masks = {}, defaultdict(dict)  # stem -> file; stem -> {mask number: file}
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() != ".png" or not f.is_file():
                continue  # Thumbs.db, .DS_Store, ...
            m = _MASK_RE.match(f.name)
            if m:
                k = int(m["k"] or 0)
                _add_unique(masks[m["stem"]], k, f, f"BUSI: mask {k} of image {m['stem']!r}")
            else:
                _add_unique(images, f.stem, f, f"BUSI: image {f.stem!r}")
        orphans += [str(folder / f"{s}_mask.png") for s in masks if s not in images]
        for stem in sorted(images, key=natural_key):
            size = bad.image(images[stem])
            if size is False:
                continue
            try:
                files = [f for _, f in sorted(masks.get(stem, {}).items())]
                if not files:
                    raise FileNotFoundError(f"BUSI: no mask file {folder / (stem + '_mask.png')} "
                                            f"for image {images[stem]}")
                merged = None
                for f in files:
                    m = _binary_mask(f)
                    if merged is None:
                        merged = m
                    elif m.shape != merged.shape:
                        raise DatasetFormatError(f"BUSI: mask {f} has shape {m.shape}, other masks "
                                                 f"of {stem!r} have {merged.shape}")
                    else:
                        merged = merged | m  # Q2: several lesions -> logical OR
                if size is not True and merged.shape != (size[1], size[0]):
                    raise DatasetFormatError(f"BUSI: mask {files[0]} is {merged.shape[::-1]} (WxH) "
                                             f"but image {images[stem]} is {size}")
            except (FileNotFoundError, DatasetFormatError) as exc:
                bad.handle(exc)
                continue
            rows.append({"image": _image_cell(images[stem]),
                         "mask": _bytes_cell(_png_bytes(merged.astype(np.uint8))),
                         "label": BUSI_CLASSES.index(label), "image_id": stem,
                         "mask_files": [f.name for f in files]})
    if orphans:
        warnings.warn(f"BUSI: {len(orphans)} mask file(s) without an image were ignored: "
                      f"{orphans[:5]}", stacklevel=3)
    bad.report()
    if not rows:
        raise DatasetFormatError(f"BUSI: no image found under {top}")
    return rows


BUSI_FEATURES = Features({
    "image": datasets.Image(mode="L"), "mask": datasets.Image(),
    "label": ClassLabel(names=list(BUSI_CLASSES)), "image_id": Value("string"),
    "mask_files": List(Value("string")),
})


def load_busi(root, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1, *,
              manifest=None, check_images: str = "header", on_bad_image: str = "raise") -> DatasetDict:
    """Load BUSI (Al-Dhabyani et al. 2020) from ``Dataset_BUSI_with_GT/`` (or its parent).

    Layout (Q1): ``{benign,malignant,normal}/<class> (N).png`` with ``<class> (N)_mask.png``
    and, for multi-lesion images, ``_mask_1.png``, ``_mask_2.png`` ...; the class is the folder
    name. File names contain a space and parentheses; they are matched literally, never globbed.
    Two files with one stem (``x.png`` and ``x.PNG``, or ``x_mask.png`` and ``x_mask.PNG``) are
    refused with an error naming both.

    * ``mask`` is the per-pixel OR of ALL ``<stem>_mask*.png`` files (Q2), stored as a 0/1 PNG;
      masks may be L, RGB or RGBA (alpha ignored, Q3); ``normal`` masks are all zero (Q5).
    * ``image`` is decoded as ``L``: BUSI ships grayscale content as RGB PNGs with equal
      channels (Q4); sizes vary and can be portrait, masks must match their image.
    * ``mask_files`` lists the merged file names (``_mask``, ``_mask_1``, ... order).
    * Splits (no official split exists, Q5): ``test_fraction`` of all images, then
      ``val_fraction`` of the remaining training images, both stratified by class, ordered by
      ``sha256(seed:image_id)``; 0 leaves the split out (``0, 0`` returns one ``train`` split).
      Items are listed in natural order (``(2)`` before ``(10)``). Use :func:`busi_kfold` for
      cross-validation.
    """
    rows = _busi_rows(root, check_images, on_bad_image)
    ids = [r["image_id"] for r in rows]
    labels = [r["label"] for r in rows]
    assignment = _assign(ids, labels, manifest, "BUSI", test_fraction, val_fraction, seed)
    info = {"dataset": "busi", "seed": seed, "test_fraction": test_fraction,
            "val_fraction": val_fraction, "stratified_by": "label"}
    return _build(rows, BUSI_FEATURES, assignment, info,
                  "BUSI breast ultrasound (normal/benign/malignant) with merged lesion masks")


def busi_kfold(root=None, n_folds: int = 5, seed: int = 0, val_fraction: float = 0.0, *,
               dataset: Dataset | None = None, **load_kw) -> list[DatasetDict]:
    """Stratified k-fold cross-validation of BUSI (the protocol of many BUSI papers).

    Returns ``n_folds`` DatasetDicts; fold ``k`` has ``test`` = the k-th fold and ``train`` =
    the others (minus a stratified ``validation`` split when ``val_fraction > 0``). Folds come
    from :func:`stratified_kfold` (hash order per class, round-robin), so they are stable
    across runs and platforms. Pass ``root`` (loaded with :func:`load_busi`, ``load_kw``
    forwarded) or an already loaded ``dataset`` (one split with ``image_id`` and ``label``).
    """
    if dataset is None:
        dataset = load_busi(root, seed=seed, test_fraction=0.0, val_fraction=0.0, **load_kw)["train"]
    ids, labels = list(dataset["image_id"]), list(dataset["label"])
    folds = stratified_kfold(ids, labels, n_folds, seed)
    out = []
    for k in range(n_folds):
        test = [i for i, f in enumerate(folds) if f == k]
        train = [i for i, f in enumerate(folds) if f != k]
        dd = DatasetDict()
        if val_fraction > 0:
            keep, val = stratified_split([ids[i] for i in train], [labels[i] for i in train],
                                         val_fraction, seed + 1)
            dd["train"] = dataset.select([train[i] for i in keep])
            dd["validation"] = dataset.select([train[i] for i in val])
        else:
            dd["train"] = dataset.select(train)
        dd["test"] = dataset.select(test)
        dd.medmae_split_info = {"dataset": "busi", "seed": seed, "n_folds": n_folds, "fold": k,
                                "val_fraction": val_fraction, "stratified_by": "label"}
        out.append(dd)
    return out
