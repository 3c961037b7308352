# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Your own images as a medmae dataset: ``--dataset imagefolder|csv|hf:NAME --data_root DIR``.

``imagefolder``: three layouts are recognised, in this order:

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

``csv`` (:func:`load_csv`): a CSV of image paths relative to ``DIR`` (column ``path``) and labels: one column of
class names (single-label), one column of ``|``-separated findings (multi-label; empty = none), or several 0/1
columns (multi-label); an optional group column (e.g. patient) makes the splits group-disjoint.

``hf:NAME_OR_PATH`` (:func:`load_hf`): a ``datasets`` dataset saved with ``save_to_disk`` (a local folder) or a
Hub dataset, its columns mapped by ``image_column``, ``label_columns`` and ``mask_column``.

``segfolder`` (:func:`load_segfolder`): ``DIR/images/`` and ``DIR/masks/`` with matching stems, for SDDA-MAE's
joint segmentation + classification; the class of each image from sub-folders (``images/<class>/x.png`` with
``masks/<class>/x.png``) or from ``DIR/labels.csv`` (columns ``image``: the stem, ``label``: the class). Masks
are binary (0/1 or 0/255) unless ``DIR/classes.json`` (or ``class_names``) names several segmentation classes,
background first; then they hold class ids.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import datasets
import numpy as np
from datasets import ClassLabel, DatasetDict, Features, Value
from PIL import Image as PILImage

from .data.common import (
    CorruptImageError,
    DatasetFormatError,
    _add_unique,
    _BadFiles,
    _bytes_cell,
    _csv_rows,
    _image_cell,
    _inside_root,
    _png_bytes,
    natural_key,
)
from .data.siim_acr import _dicom_image
from .data.splits import _assign, _build

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


def _rows(root: Path, folders: list[tuple[Optional[str], Optional[str], Path, list[Path]]], bad: _BadFiles,
          bits_stored: int) -> list[dict]:
    """One row per image of each ``(split or None, class or None, folder, its image files)``."""
    rows, seen = [], {}
    for split, label, folder, files in folders:
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


def _layout(root: Path) -> tuple[str, list[tuple[Optional[str], Optional[str], Path, list[Path]]]]:
    """("given" | "classes" | "unlabelled", [(split, class, folder, its image files)]); each folder is listed
    once."""
    splits = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    if "train" in splits and len(splits) > 1:
        return "given", [(split, c.name, c, _image_files(c)) for split in splits for c in _class_folders(root / split)]
    classes = [(None, c.name, c, _image_files(c)) for c in _class_folders(root)]
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) >= 2 and not loose and all(files for *_, files in classes):
        return "classes", classes
    return "unlabelled", [(None, None, root, _image_files(root))]


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
        warnings.warn("no validation split (the best checkpoint will be the last)", stacklevel=3)
    return {split: idx for split, idx in out.items() if idx}


# ============================================================================ csv
def _csv_labels(rows: list[tuple[str, dict]], columns: list[str], separator: str) -> tuple[str, list[str], list]:
    """("single" | "multi", label names, per-row label: class name, or a 0/1 vector)."""
    if len(columns) == 1:
        values = [row[columns[0]] for _, row in rows]
        if any(separator in v for v in values):
            names = sorted({n.strip() for v in values for n in v.split(separator) if n.strip()}, key=natural_key)
            return "multi", names, [[float(n in {x.strip() for x in v.split(separator)}) for n in names]
                                    for v in values]
        for where, row in rows:
            if not row[columns[0]]:
                raise DatasetFormatError(f"{where}, column {columns[0]!r}: empty label")
        return "single", sorted(set(values), key=natural_key), values
    vectors = []
    for where, row in rows:
        bad = [c for c in columns if row[c] not in ("0", "1", "0.0", "1.0")]
        if bad:
            raise DatasetFormatError(f"{where}, column {bad[0]!r}: value {row[bad[0]]!r} is not 0 or 1 (several label "
                                     "columns are a multi-label target)")
        vectors.append([float(row[c]) for c in columns])
    return "multi", list(columns), vectors


def load_csv(root, csv, seed: int = 0, test_fraction: float = 0.1, val_fraction: float = 0.1, *,
             image_column: str = "path", label_columns=None, group_column: str | None = None,
             separator: str = "|", manifest=None, bits_stored: int = 16, check_images: str = "header",
             on_bad_image: str = "raise") -> DatasetDict:
    """Images listed in a CSV (relative to ``root``) with their labels; ``label_columns`` default to every column
    but the image and group columns. Single-label: ``label`` (ClassLabel of the sorted names), splits stratified
    by class; multi-label: ``labels`` (0/1 per name, names recorded as the split info's ``labels``). With
    ``group_column`` no group spans two splits. Errors name the CSV's file, line and column."""
    root = Path(root).expanduser()
    path = Path(csv).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise FileNotFoundError(f"csv: file not found: {path}")
    rows = list(_csv_rows(path, [image_column, *([group_column] if group_column else [])]))
    if not rows:
        raise DatasetFormatError(f"{path}: no rows after the header")
    header = list(rows[0][1])
    columns = list(label_columns) if label_columns else [c for c in header if c not in (image_column, group_column)]
    missing = [c for c in columns if c not in header]
    if missing or not columns:
        raise DatasetFormatError(f"{path}: label column(s) {missing or '(none)'} not in the header {header}")
    kind, names, labels = _csv_labels(rows, columns, separator)
    bad, records, seen = _BadFiles("csv", on_bad_image, check_images), [], {}
    for (where, row), label in zip(rows, labels):
        image = _inside_root(root, row[image_column], f"{where}, column {image_column!r}")
        _add_unique(seen, row[image_column], where, f"csv: image {row[image_column]!r}")
        if not image.is_file():
            bad.handle(FileNotFoundError(f"{where}: image file not found: {image}"))
            continue
        cell = _cell(image, bad, bits_stored)
        if cell is not False:
            records.append({"image": cell, "image_id": row[image_column], "group": row.get(group_column),
                            "label": names.index(label) if kind == "single" else None,
                            "labels": label if kind == "multi" else None})
    bad.report()
    if not records:
        raise DatasetFormatError(f"{path}: no readable images")
    ids = [r["image_id"] for r in records]
    strata = [r["label"] if kind == "single" else 0 for r in records]
    groups = [r["group"] for r in records] if group_column else None
    assignment = _assign(ids, strata, manifest, "csv", test_fraction, val_fraction, seed, groups)
    features = {"image": datasets.Image(), "image_id": Value("string")}
    features.update({"label": ClassLabel(names=names)} if kind == "single"
                    else {"labels": datasets.List(Value("float32"))})
    info = {"dataset": "csv", "csv": path.name, "seed": seed, "test_fraction": test_fraction,
            "val_fraction": val_fraction, "kind": "group-disjoint" if group_column else "seeded",
            "labels": names, "stratified_by": "label" if kind == "single" else None, "bits_stored": bits_stored}
    return _build(records, Features(features), assignment, info, f"{path.name}: {len(records)} images, {kind}-label")


# ============================================================================ datasets (local or Hub)
_SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                "dev": "validation", "test": "test"}


def load_hf(name: str, seed: int = 0, test_fraction: float = 0.1, val_fraction: float = 0.1, *,
            image_column: str = "image", label_columns=None, mask_column: str | None = None,
            manifest=None) -> DatasetDict:
    """A ``datasets`` dataset as medmae's columns: ``image_column`` -> ``image``; one label column -> ``label``
    (a ClassLabel, or class names / integers made one); several 0/1 columns -> ``labels``; ``mask_column`` ->
    ``mask``. ``name``: a ``save_to_disk`` folder or a Hub id (downloads unless ``HF_HUB_OFFLINE=1``). Its
    ``train`` / ``validation`` / ``test`` splits are kept (``valid``, ``val``, ``dev`` count as validation);
    missing ones are carved from train, seeded and stratified by class."""
    local = Path(name).expanduser()
    loaded = datasets.load_from_disk(str(local)) if local.is_dir() else datasets.load_dataset(name)
    loaded = loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
    unknown = [s for s in loaded if s not in _SPLIT_NAMES]
    if unknown or "train" not in loaded:
        raise DatasetFormatError(f"hf:{name}: splits {list(loaded)}; medmae needs 'train' (and optionally "
                                 f"'validation' / 'test'), not {unknown or 'no train'}")
    columns = loaded["train"].column_names
    label_columns = list(label_columns or ([c for c in ("label", "labels") if c in columns][:1]))
    for column in [image_column, *label_columns, *([mask_column] if mask_column else [])]:
        if column not in columns:
            raise DatasetFormatError(f"hf:{name}: no column {column!r}; it has {columns} (map yours with "
                                     "--image_column / --label_columns / --mask_column)")
    if not isinstance(loaded["train"].features[image_column], datasets.Image):
        raise DatasetFormatError(f"hf:{name}: column {image_column!r} is {loaded['train'].features[image_column]}, "
                                 "not an Image feature")
    parts = {_SPLIT_NAMES[s]: _hf_columns(ds, s, image_column, label_columns, mask_column) for s, ds in loaded.items()}
    merged = _as_class_label(datasets.concatenate_datasets(list(parts.values())))
    ids = merged["image_id"]
    strata = merged["label"] if "label" in merged.column_names else [0] * len(ids)
    if manifest is not None or set(parts) == {"train"}:
        assignment = _assign(ids, strata, manifest, f"hf:{name}", test_fraction, val_fraction, seed)
    else:  # the dataset's own splits, a missing validation carved from train
        origin = [s for s, ds in parts.items() for _ in range(len(ds))]
        assignment = _given_assignment([{"_split": o, "image_id": i, "label": k} for o, i, k in
                                        zip(origin, ids, strata)], val_fraction, seed)
    info = {"dataset": f"hf:{local.name if local.is_dir() else name}", "seed": seed, "kind": "seeded"
            if set(parts) == {"train"} else "given", "labels": list(label_columns) if "labels" in
            merged.column_names else None}
    out = DatasetDict({s: merged.select(idx) for s, idx in assignment.items()})
    out.medmae_split_info = info
    return out


def _as_class_label(ds):
    """A ``label`` column of names or integers as a ClassLabel (sorted names); a ClassLabel is kept."""
    if "label" not in ds.column_names or isinstance(ds.features["label"], ClassLabel):
        return ds
    names = sorted({str(v) for v in ds["label"]}, key=natural_key)
    return ds.map(lambda row: {"label": names.index(str(row["label"]))}).cast_column("label", ClassLabel(names=names))


def _hf_columns(ds, split: str, image_column: str, label_columns: list, mask_column):
    """One split with medmae's column names and a stable ``image_id``."""
    keep = {image_column: "image", **({mask_column: "mask"} if mask_column else {})}
    if len(label_columns) == 1:
        keep[label_columns[0]] = "label" if label_columns[0] != "labels" else "labels"
    out = ds.select_columns(list(dict.fromkeys([*keep, *label_columns])))
    if len(label_columns) > 1:
        out = out.map(lambda r: {"labels": [float(r[c]) for c in label_columns]}, remove_columns=label_columns)
    out = out.rename_columns({k: v for k, v in keep.items() if k != v and k in out.column_names})
    ids = ds["image_id"] if "image_id" in ds.column_names else [f"{split}/{i}" for i in range(len(ds))]
    return out.add_column("image_id", [str(i) for i in ids])


# ============================================================================ segfolder
def _mask_cell(path: Path, image_size, where: str, num_classes: int = 2) -> dict:
    """A mask file as class-id PNG bytes. Binary (``num_classes`` 2): 0/1 or 0/255, any of L / RGB / RGBA (alpha
    ignored) -> 0/1. Several classes: ids 0..num_classes-1 in an L, P (palette indices) or I;16 image. Values
    outside those are refused, naming the file and the values."""
    try:
        with PILImage.open(path) as im:
            if num_classes > 2 and im.mode in ("P", "L", "I", "I;16"):
                values = np.asarray(im)
            else:
                values = np.asarray(im.convert("L") if im.mode in ("1", "P", "RGB", "RGBA", "LA") else im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"{where}cannot read mask file {path}: {exc}") from exc
    found = sorted(int(v) for v in np.unique(values))
    binary = set(found) <= {0, 1} or set(found) <= {0, 255}
    if num_classes <= 2 and not binary:
        raise DatasetFormatError(f"{where}mask {path} holds the values {found[:8]}: expected a binary mask, 0/1 or "
                                 "0/255; for several classes give their names (classes.json in the folder, or "
                                 "class_names), background first")
    if num_classes > 2 and found and found[-1] >= num_classes:
        raise DatasetFormatError(f"{where}mask {path} holds the values {found[:8]}: class ids must be below the "
                                 f"{num_classes} segmentation classes named")
    if image_size not in (None, True) and tuple(image_size) != (values.shape[1], values.shape[0]):
        raise DatasetFormatError(f"{where}mask {path} is {values.shape[1]}x{values.shape[0]}, its image "
                                 f"{image_size[0]}x{image_size[1]}")
    ids = (values > 0) if num_classes <= 2 else values
    return _bytes_cell(_png_bytes(ids.astype(np.uint8)))


def _segfolder_labels(root: Path) -> Optional[dict]:
    """``{stem: class}`` from ``labels.csv`` (columns ``image``, ``label``), or None without the file."""
    path = root / "labels.csv"
    if not path.is_file():
        return None
    out: dict = {}
    for where, row in _csv_rows(path, ["image", "label"]):
        stem = Path(row["image"]).stem
        if not row["label"]:
            raise DatasetFormatError(f"{where}, column 'label': empty label for {row['image']!r}")
        if stem in out:
            raise DatasetFormatError(f"{where}: a second label for image {stem!r}")
        out[stem] = row["label"]
    return out


def _segmentation_classes(root: Path, class_names) -> list[str]:
    """The segmentation classes, background first: ``class_names``, else ``classes.json`` (a JSON list), else
    ``["background", "lesion"]`` (binary masks)."""
    if class_names is None and (root / "classes.json").is_file():
        try:
            class_names = json.loads((root / "classes.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DatasetFormatError(f"{root / 'classes.json'}: not JSON ({exc})") from None
    names = list(class_names) if class_names is not None else ["background", "lesion"]
    if len(names) < 2 or len(set(map(str, names))) != len(names) or not all(isinstance(n, str) for n in names):
        raise DatasetFormatError(f"segmentation classes must be at least two distinct names, background first; "
                                 f"got {names}")
    if len(names) > 255:
        raise DatasetFormatError(f"{len(names)} segmentation classes: at most 255 fit a mask PNG")
    return names


def load_segfolder(root, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1, *, manifest=None,
                   class_names=None, check_images: str = "header", on_bad_image: str = "raise") -> DatasetDict:
    """Images with lesion masks and a class per image (columns ``image``, ``mask``, ``label``, ``image_id``),
    split stratified by class like BUSI. Masks are binary unless segmentation classes are named (``class_names``
    or ``classes.json``: a list, background first), then they hold class ids. Every image needs its mask (an
    image without one, a mask without its image, or a mask of another size is an error naming the files)."""
    root = Path(root).expanduser()
    seg_classes = _segmentation_classes(root, class_names)
    images_dir, masks_dir = root / "images", root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"segfolder: {folder} not found (expected {root}/images/ and {root}/masks/)")
    csv_labels = _segfolder_labels(root)
    bad = _BadFiles("segfolder", on_bad_image, check_images)
    images, masks = {}, {}
    for files, found in ((_image_files(images_dir), images), (_image_files(masks_dir), masks)):
        base = images_dir if found is images else masks_dir
        for path in files:
            key = path.relative_to(base).with_suffix("").as_posix()
            _add_unique(found, key.lower(), path, f"segfolder: {'image' if found is images else 'mask'} {key!r}")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise DatasetFormatError(f"segfolder: masks without an image: {', '.join(str(masks[k]) for k in orphans[:5])}")
    rows = []
    for key in sorted(images, key=natural_key):
        image = images[key]
        if key not in masks:
            raise DatasetFormatError(f"segfolder: image {image} has no mask in {masks_dir} (same relative name)")
        label = Path(key).parent.name if "/" in key else (csv_labels or {}).get(Path(key).stem)
        if csv_labels is not None and label is None:
            raise DatasetFormatError(f"segfolder: {root / 'labels.csv'} has no label for image {key!r}")
        size = bad.image(image)
        if size is False:
            continue
        rows.append({"image": _cell(image, bad, 16), "mask": _mask_cell(masks[key], size, "", len(seg_classes)),
                     "label": label, "image_id": image.relative_to(images_dir).as_posix()})
    bad.report()
    if not rows:
        raise DatasetFormatError(f"segfolder: no images under {images_dir}")
    if any(r["label"] is None for r in rows):
        raise DatasetFormatError(f"segfolder: no class for the images (sub-folders images/<class>/ or "
                                 f"{root / 'labels.csv'}); SDDA-MAE fine-tuning trains segmentation and diagnosis")
    names = sorted({r["label"] for r in rows}, key=natural_key)
    for r in rows:
        r["label"] = names.index(r["label"])
    assignment = _assign([r["image_id"] for r in rows], [r["label"] for r in rows], manifest, "segfolder",
                         test_fraction, val_fraction, seed)
    features = Features({"image": datasets.Image(), "mask": datasets.Image(), "label": ClassLabel(names=names),
                         "image_id": Value("string")})
    info = {"dataset": "segfolder", "seed": seed, "test_fraction": test_fraction, "val_fraction": val_fraction,
            "classes": names, "stratified_by": "label",
            "segmentation_classes": seg_classes if len(seg_classes) > 2 else None}
    return _build(rows, features, assignment, info, f"segfolder: {len(rows)} images with masks, classes {names}")
