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

Splits are seeded and stable across runs, platforms and library versions: items are ordered by
``sha256(f"{seed}:{image_id}")`` (not by a numpy random stream, whose algorithm may change), and
quotas are computed with the largest-remainder rule. :func:`write_split_manifest` saves the ids
of every split with the seed and fractions; pass the file back as ``manifest=`` to any loader to
rebuild the same splits exactly (e.g. from a checkpoint).

Bad files: a missing or unreadable image (or DICOM) raises an error that names the file and, for
CSV-driven sets, the CSV line referencing it. With ``on_bad_image="skip"`` such items are left
out and reported in ONE warning with their count and names; nothing is dropped silently.
``check_images`` chooses how much is verified at load time: ``"header"`` (default; opens every
file and reads its header: catches missing, empty and non-image files cheaply), ``"full"``
(decodes every pixel: also catches truncated files; slow on the full sets) or ``"none"``
(existence only).

Ambiguous or unsafe input is refused with a :class:`DatasetFormatError`, whatever ``on_bad_image``
says, because skipping it would silently change the data: two files that give the same image id
(``x.png`` beside ``x.PNG``; one DICOM or NIH image name in two folders; the message names both
files), a CSV path that leads outside the dataset folder (absolute or with ``..``), a CSV cell that
is not the number its column holds, and a CSV or list file that is not UTF-8 text (a leading BOM
is accepted). Messages name the file, the line (1-based file lines as an editor shows them, the
header is line 1) and the column.

The numbered quirks (Q1-Q22) are explained in ``docs/datasets.md``.
"""

from __future__ import annotations

import contextlib
import csv as _csv
import hashlib
import io
import json
import math
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image as PILImage

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

from ..configuration.labels import (
    BUSI_CLASSES,
    CHEXPERT_COMPETITION_LABELS,
    CHEXPERT_OBSERVATIONS,
    MIXED_POLICY_ONES,
    NIH_LABELS,
    SIIM_CLASSES,
)

__all__ = [
    "BUSI_CLASSES", "SIIM_CLASSES", "NIH_LABELS", "CHEXPERT_OBSERVATIONS",
    "CHEXPERT_COMPETITION_LABELS", "UNCERTAINTY_POLICIES", "DATASET_NAMES",
    "DatasetFormatError", "CorruptImageError",
    "load_busi", "busi_kfold", "load_siim_acr", "load_chestxray14", "load_chexpert",
    "rle_decode", "rle_encode",
    "write_split_manifest", "load_split_manifest", "stratified_split", "group_split",
    "stratified_kfold",
]

UNCERTAINTY_POLICIES = ("ones", "zeros", "ignore", "mixed")
DATASET_NAMES = ("busi", "siim_acr", "chestxray14", "chexpert", "chestxray14+chexpert",
                 "synthetic_ultrasound", "synthetic_cxr", "imagefolder", "csv", "segfolder", "hf:NAME_OR_PATH")
MANIFEST_FORMAT = "medmae-split-manifest/1"
# Pre-training sets made of several datasets (name -> sources), loaded by training/combined.py.
COMBINED_DATASETS = {"chestxray14+chexpert": ("chestxray14", "chexpert")}


class DatasetFormatError(ValueError):
    """A file of a dataset does not follow the published format; the message names the file/row."""


class CorruptImageError(DatasetFormatError):
    """An image or DICOM file exists but cannot be read; the message names the file."""


# ============================================================================ small helpers


def _existing_dir(root, name: str) -> Path:
    if root is None:
        raise ValueError(f"{name}: a root folder is required")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: dataset folder not found: {root}")
    return root


def _add_unique(found: dict, key, path: Path, what: str) -> None:
    """``found[key] = path``, refusing a second file for the same key: a silent choice between two
    files that claim one image id would depend on the directory listing order."""
    if key in found:
        raise DatasetFormatError(f"{what} found twice: {found[key]} and {path}; remove or rename "
                                 "one of them")
    found[key] = path


def _inside_root(root: Path, value: str, where: str) -> Path:
    """``root / value`` for a relative path read from a file of the dataset (``where`` names the file,
    line and column). An absolute path or a ``..`` component (POSIX or Windows spelling) would
    read outside ``root`` and is refused; the check is on the path as written, so symbolic links
    that the owner of the dataset folder placed inside it are still followed."""
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if posix.is_absolute() or windows.anchor or ".." in posix.parts or ".." in windows.parts:
        raise DatasetFormatError(f"{where}: {value!r} leads outside the dataset folder {root} "
                                 "(absolute paths and '..' are not allowed)")
    return root / posix


def _read_text(path: Path) -> str:
    """The text of a UTF-8 file (a leading BOM is dropped). Other bytes (e.g. latin-1 from a
    spreadsheet export) raise a DatasetFormatError naming the file, the line and the byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        start = raw.rfind(b"\n", 0, exc.start) + 1
        end = raw.find(b"\n", exc.start)
        shown = raw[start:end if end >= 0 else len(raw)].decode("utf-8", "backslashreplace").rstrip("\r")
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DatasetFormatError(
            f"{path}, line {line}: byte 0x{raw[exc.start]:02x} (byte {exc.start - start + 1} of the "
            f"line) is not UTF-8 text: {shown[:100]!r}; save the file as UTF-8") from None


def _csv_rows(path: Path, need: Sequence[str | tuple[str, ...]]) -> Iterator[tuple[str, dict[str, str]]]:
    """``(where, row)`` for every non-blank record after the header of the UTF-8 CSV ``path``.

    ``where`` is ``"<file name>, line N"`` with N the record's first line in the file (header =
    line 1, blank lines counted); ``row`` maps each stripped column name to the stripped cell.
    ``need`` lists the columns that must be in the header exactly once (a tuple: the first of
    these alternatives present) and in every record. Raises DatasetFormatError otherwise, and for
    malformed CSV (parsed strictly: an unclosed quote would otherwise swallow the rest of the file
    into one cell) or non-UTF-8 text.
    """
    reader = _csv.reader(io.StringIO(_read_text(path), newline=""), strict=True)
    header, index, line = None, [], 1
    try:
        for rec in reader:
            if rec and "".join(rec).strip():
                if header is None:
                    header = [h.strip() for h in rec]
                    index = [_header_column(path, header, n) for n in need]
                elif len(rec) <= max(index, default=-1):
                    raise DatasetFormatError(
                        f"{path.name}, line {line}: {len(rec)} field(s), expected at least "
                        f"{max(index) + 1} (for column {header[max(index)]!r})")
                else:
                    yield f"{path.name}, line {line}", dict(zip(header, (v.strip() for v in rec)))
            line = reader.line_num + 1
    except _csv.Error as exc:
        raise DatasetFormatError(f"{path}, line {line}: malformed CSV record ({exc}; an unclosed "
                                 "quote?)") from None
    if header is None:
        raise DatasetFormatError(f"{path}: empty file, expected a header line")


def _header_column(path: Path, header: list[str], need: str | tuple[str, ...]) -> int:
    """Index of the needed column (or the first present of alternatives) in ``header``."""
    names = (need,) if isinstance(need, str) else need
    name = next((n for n in names if n in header), None)
    if name is None:
        raise DatasetFormatError(f"{path}: missing column {' or '.join(map(repr, names))}; "
                                 f"header is {header}")
    if header.count(name) > 1:
        raise DatasetFormatError(f"{path}: column {name!r} appears {header.count(name)} times in "
                                 f"the header {header}")
    return header.index(name)


def _whole_number(row: dict[str, str], column: str, where: str, blank_ok: bool = False) -> int | None:
    """A CSV cell holding a whole number 0 <= n < 2**31 (``7``, ``007`` or ``7.0``); a blank cell
    gives None when ``blank_ok``. Anything else raises an error naming file, line and column."""
    text = row[column]
    if text == "" and blank_ok:
        return None
    m = re.fullmatch(r"([0-9]+)(?:\.0*)?", text)
    if not m or int(m[1]) >= 2 ** 31:
        raise DatasetFormatError(f"{where}, column {column!r}: value {text!r} is not a whole number "
                                 f"(0 to {2 ** 31 - 1}){' or blank' if blank_ok else ''}")
    return int(m[1])


def natural_key(text: str):
    """Sort key putting ``benign (2)`` before ``benign (10)`` (Q5)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _image_cell(path: Path) -> dict:
    return {"path": str(Path(path).resolve()), "bytes": None}


def _bytes_cell(data: bytes) -> dict:
    return {"path": None, "bytes": data}


def _verify_image(path: Path, check: str):
    """Open ``path`` as an image according to ``check``; returns (width, height) or None."""
    if check == "none":
        return None
    try:
        with PILImage.open(path) as im:
            if check == "full":
                im.load()
            return im.size
    except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        raise CorruptImageError(f"cannot read image file {path}: {exc}") from exc


class _BadFiles:
    """Applies the ``on_bad_image`` policy and collects what was skipped for one warning."""

    def __init__(self, dataset: str, on_bad_image: str, check_images: str):
        if on_bad_image not in ("raise", "skip"):
            raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}")
        if check_images not in ("header", "full", "none"):
            raise ValueError(f"check_images must be 'header', 'full' or 'none', got {check_images!r}")
        self.dataset, self.policy, self.check = dataset, on_bad_image, check_images
        self.skipped: list[str] = []

    def handle(self, exc: Exception) -> None:
        """Re-raise ``exc`` (policy "raise") or record it (policy "skip")."""
        if self.policy == "raise":
            raise exc
        self.skipped.append(str(exc))

    def image(self, path: Path | None, where: str = ""):
        """Check one image file; returns its size, or False when it was skipped."""
        try:
            if path is None or not Path(path).is_file():
                raise FileNotFoundError(f"{where}image file not found: {path}")
            try:
                return _verify_image(Path(path), self.check) or True
            except CorruptImageError as exc:
                raise CorruptImageError(f"{where}{exc}") from exc
        except (FileNotFoundError, CorruptImageError) as exc:
            self.handle(exc)
            return False

    def report(self) -> None:
        if self.skipped:
            shown = "; ".join(self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
            warnings.warn(f"{self.dataset}: skipped {len(self.skipped)} missing or unreadable "
                          f"file(s) (on_bad_image='skip'): {shown}", stacklevel=3)


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


# ============================================================================ SIIM-ACR


def rle_decode(rle: str, shape: tuple[int, int], encoding: str) -> np.ndarray:
    """Decode one SIIM RLE string into a uint8 {0,1} mask of ``shape`` = (height, width).

    ``encoding`` must be given explicitly (Q10: a string can be valid in both encodings):

    * ``"relative"`` (the competition files ``train-rle.csv``/``stage_2_train.csv``, organisers'
      ``mask_functions.py``): tokens ``g0 l0 g1 l1 ...``; ``g0`` is the 0-based index of the first
      pixel, each later ``gk`` counts the background pixels since the end of the previous run;
    * ``"standard"`` (Kaggle): ``s0 l0 s1 l1 ...`` with 1-based absolute starts.

    Pixels are numbered column-major (down the first column, then the next): flat index ``p``
    is ``(row = p % height, col = p // height)`` (Q9). ``"-1"`` or an empty string is an empty
    mask. Raises :class:`DatasetFormatError` for odd token counts, negative values or runs
    outside the image.
    """
    if encoding not in ("relative", "standard"):
        raise ValueError(f"rle encoding must be 'relative' or 'standard', got {encoding!r}")
    height, width = shape
    flat = np.zeros(height * width, np.uint8)
    text = str(rle).strip()
    if text in ("", "-1"):
        return flat.reshape(width, height).T.copy()
    try:
        tokens = np.array([int(t) for t in text.split()], dtype=np.int64)
    except ValueError as exc:
        raise DatasetFormatError(f"RLE has a non-integer token: {text[:60]!r}") from exc
    if tokens.size % 2:
        raise DatasetFormatError(f"RLE has an odd number of tokens ({tokens.size})")
    first, lengths = tokens[0::2], tokens[1::2]
    if (lengths < 0).any() or (first < 0).any():
        raise DatasetFormatError("RLE has a negative start/gap or length")
    if encoding == "relative":
        starts = np.cumsum(first) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    else:
        if (first < 1).any():
            raise DatasetFormatError("standard RLE starts are 1-based; found a start < 1")
        starts = first - 1
    if (starts + lengths > flat.size).any():
        raise DatasetFormatError(f"RLE run ends at {int((starts + lengths).max())}, beyond the "
                                 f"{height}x{width} image ({flat.size} pixels); wrong encoding "
                                 "or wrong image size?")
    for s, n in zip(starts.tolist(), lengths.tolist()):
        flat[s:s + n] = 1
    return flat.reshape(width, height).T.copy()


def rle_encode(mask: np.ndarray, encoding: str = "relative") -> str:
    """Encode a 2-D mask (non-zero = foreground) as SIIM RLE (column-major); ``"-1"`` if empty.
    Unlike the organisers' ``mask2rle``, a run that reaches the last pixel is written."""
    if encoding not in ("relative", "standard"):
        raise ValueError(f"rle encoding must be 'relative' or 'standard', got {encoding!r}")
    flat = (np.asarray(mask).T.reshape(-1) != 0).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]])))
    starts, ends = edges[0::2], edges[1::2]
    if starts.size == 0:
        return "-1"
    lengths = ends - starts
    if encoding == "standard":
        firsts = starts + 1
    else:
        firsts = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{a} {b}" for a, b in zip(firsts.tolist(), lengths.tolist()))


def _read_siim_csv(path: Path) -> dict[str, list[tuple[str, str]]]:
    """{ImageId: [(where = "file, line N", rle), ...]} from a SIIM label CSV (Q6-Q8): column names
    and values are stripped (stage 1 has ``ImageId, EncodedPixels`` and `` -1``), everything is
    read as text, all rows of an image are kept (they may be far apart)."""
    rows: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for where, row in _csv_rows(path, ["ImageId", "EncodedPixels"]):
        rows[row["ImageId"]].append((where, row["EncodedPixels"]))
    return rows


@contextlib.contextmanager
def _lenient_dicom():
    """Read SIIM headers without pydicom's validation log spam: their ``PatientAge`` is a bare
    number and their ``PixelSpacing`` strings exceed the 16 characters of VR DS (Q12)."""
    from pydicom import config

    old = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    try:
        yield
    finally:
        config.settings.reading_validation_mode = old


def _dicom_image(path: Path, check: str):
    """(cell bytes, suffix, header) of a SIIM DICOM (Q12). A JPEG-Baseline 8-bit MONOCHROME2
    frame is passed through unchanged (no re-encoding loss); anything else is decoded with
    pydicom and stored as 8-bit PNG (MONOCHROME1 inverted, >8-bit rescaled to 0-255)."""
    import pydicom
    from pydicom.uid import JPEGBaseline8Bit

    try:
        with _lenient_dicom():
            ds = pydicom.dcmread(path)
        ts = ds.file_meta.TransferSyntaxUID
        if (ts == JPEGBaseline8Bit and int(ds.get("SamplesPerPixel", 1)) == 1
                and ds.get("PhotometricInterpretation") == "MONOCHROME2"
                and int(ds.get("NumberOfFrames", 1) or 1) == 1):
            from pydicom.encaps import generate_frames

            data = next(generate_frames(ds.PixelData, number_of_frames=1))
            _verify_image(io.BytesIO(data), "full" if check == "full" else "header")
            return data, ".jpg", ds
        arr = ds.pixel_array
    except CorruptImageError as exc:
        raise CorruptImageError(f"cannot read DICOM file {path}: {exc}") from exc
    except Exception as exc:  # pydicom raises many types for broken files
        raise CorruptImageError(f"cannot read DICOM file {path}: {type(exc).__name__}: {exc}") from exc
    if arr.ndim != 2:
        raise DatasetFormatError(f"DICOM {path}: expected one grayscale frame, got shape {arr.shape}")
    bits = int(ds.get("BitsStored", 8))
    if bits > 8 or arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float64) / (2 ** bits - 1) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        arr = 255 - arr
    return _png_bytes(arr), ".png", ds


def _dicom_age(value) -> int | None:
    m = re.fullmatch(r"\s*(\d+)\s*([YMWD]?)\s*", str(value or ""))
    if not m:
        return None
    return int(m[1]) // {"": 1, "Y": 1, "M": 12, "W": 52, "D": 365}[m[2]]


SIIM_FEATURES = Features({
    "image": datasets.Image(mode="L"), "mask": datasets.Image(),
    "label": ClassLabel(names=list(SIIM_CLASSES)), "image_id": Value("string"),
    "patient_id": Value("string"), "age": Value("int32"), "sex": Value("string"),
    "view": Value("string"), "pixel_spacing": List(Value("float32")),
})


def load_siim_acr(root, rle_encoding: str = "relative", csv: str | os.PathLike | None = None, *,
                  seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1,
                  manifest=None, image_cache_dir=None, check_images: str = "header",
                  on_bad_image: str = "raise") -> DatasetDict:
    """Load SIIM-ACR Pneumothorax Segmentation (Kaggle 2019) from its DICOM release.

    * DICOMs are found anywhere under ``root`` by file name: ``ImageId`` = SOPInstanceUID = file
      stem, e.g. ``dicom-images-train/<study>/<series>/<ImageId>.dcm`` (Q11); two files with one
      stem (in two folders, or ``.dcm`` and ``.DCM``) are refused with an error naming both.
      Uncompressed and JPEG-Baseline (encapsulated, decoded with Pillow) files are accepted (Q12).
    * Labels: ``csv`` (a path or a file name in ``root``); by default ``train-rle.csv``
      (stage 1: header ``ImageId, EncodedPixels``, values `` -1``) or ``stage_2_train.csv``;
      if both exist you must choose. Names and values are stripped and read as text (Q6, Q7).
      ``-1`` = no pneumothorax. All rows of an image are OR-ed, wherever they are in the file
      (they are not adjacent and may overlap; Q8).
    * ``rle_encoding`` is explicit, never guessed (Q10): ``"relative"`` for the competition files,
      ``"standard"`` for Kaggle-standard RLE. See :func:`rle_decode` (column-major, Q9).
    * DICOMs without a CSV row (some in the train folder; all test images with a stage-1 CSV)
      are excluded and counted in one warning (Q11). A CSV row whose DICOM is missing or
      unreadable raises an error naming the CSV line and the file (or is skipped with
      ``on_bad_image="skip"``).
    * Columns: ``image`` (8-bit, as stored), ``mask`` (0/1), ``label`` (absent/present = mask
      non-empty), ``image_id``, DICOM metadata ``patient_id``, ``age`` (``PatientAge`` is a bare
      number in these files), ``sex``, ``view``, ``pixel_spacing`` (mm, row/column; the DS
      strings are longer than the standard allows, Q12).
    * Images are stored encoded in memory (JPEG passed through, else PNG). With
      ``image_cache_dir`` they are written there once (``<ImageId>.jpg/.png``) and referenced by
      path instead, which keeps RAM low for the full 12k-image set.
    * Splits: ``test_fraction``, then ``val_fraction`` of the rest, stratified by label, seeded.
    """
    root = _existing_dir(root, "SIIM-ACR")
    if rle_encoding not in ("relative", "standard"):
        raise ValueError(f"rle_encoding must be 'relative' or 'standard', got {rle_encoding!r}")
    if csv is None:
        present = [n for n in ("train-rle.csv", "stage_2_train.csv") if (root / n).is_file()]
        if not present:
            raise FileNotFoundError(f"SIIM-ACR: no train-rle.csv or stage_2_train.csv in {root}")
        if len(present) > 1:
            raise ValueError(f"SIIM-ACR: both {present[0]} and {present[1]} are in {root}; pass "
                             "csv= to choose the label file")
        csv_path = root / present[0]
    else:
        csv_path = Path(csv) if Path(csv).is_absolute() or Path(csv).exists() else root / csv
        if not csv_path.is_file():
            raise FileNotFoundError(f"SIIM-ACR: label file not found: {csv_path}")
    labels = _read_siim_csv(csv_path)
    dicoms: dict[str, Path] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.lower().endswith(".dcm"):
                _add_unique(dicoms, name[:-4], Path(dirpath) / name,
                            f"SIIM-ACR: DICOM of ImageId {name[:-4]}")
    bad = _BadFiles("SIIM-ACR", on_bad_image, check_images)
    cache = Path(image_cache_dir) if image_cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for image_id, entries in labels.items():
        where = f"{entries[0][0]} (ImageId {image_id}): "
        try:
            if image_id not in dicoms:
                raise FileNotFoundError(f"{where}no DICOM file {image_id}.dcm under {root}")
            data, suffix, ds = _dicom_image(dicoms[image_id], check_images)
            shape = (int(ds.Rows), int(ds.Columns))
            mask = np.zeros(shape, np.uint8)
            for line_where, rle in entries:
                try:
                    mask |= rle_decode(rle, shape, rle_encoding)
                except DatasetFormatError as exc:
                    raise DatasetFormatError(f"{line_where} (ImageId {image_id}): {exc}") from None
        except (FileNotFoundError, DatasetFormatError) as exc:
            if isinstance(exc, CorruptImageError):
                exc = CorruptImageError(f"{where}{exc}")
            bad.handle(exc)
            continue
        if cache is not None:
            target = cache / f"{image_id}{suffix}"
            if not target.is_file() or target.stat().st_size != len(data):
                target.write_bytes(data)
            image = _image_cell(target)
        else:
            image = _bytes_cell(data)
        with _lenient_dicom():
            spacing = ds.get("PixelSpacing")
            rows.append({
                "image": image, "mask": _bytes_cell(_png_bytes(mask)), "label": int(mask.any()),
                "image_id": image_id, "patient_id": str(ds.get("PatientID", "")) or None,
                "age": _dicom_age(ds.get("PatientAge")),
                "sex": str(ds.get("PatientSex", "")) or None,
                "view": str(ds.get("ViewPosition", "")) or None,
                "pixel_spacing": [float(x) for x in spacing] if spacing else None,
            })
    bad.report()
    unlabelled = sorted(set(dicoms) - set(labels))
    if unlabelled:
        in_test = sum("test" in str(dicoms[i].parent.relative_to(root)).lower() for i in unlabelled)
        warnings.warn(f"SIIM-ACR: {len(unlabelled)} DICOM file(s) have no row in {csv_path.name} "
                      f"and were excluded ({in_test} of them in a test folder; first: "
                      f"{[str(dicoms[i]) for i in unlabelled[:3]]})", stacklevel=2)
    ids = [r["image_id"] for r in rows]
    assignment = _assign(ids, [r["label"] for r in rows], manifest, "SIIM-ACR",
                         test_fraction, val_fraction, seed)
    info = {"dataset": "siim_acr", "seed": seed, "test_fraction": test_fraction,
            "val_fraction": val_fraction, "csv": csv_path.name, "rle_encoding": rle_encoding,
            "stratified_by": "label"}
    return _build(rows, SIIM_FEATURES, assignment, info,
                  "SIIM-ACR pneumothorax segmentation (DICOM + RLE masks)")


# ============================================================================ NIH ChestX-ray14

_NIH_CSVS = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")


def _nih_age(text: str) -> int | None:
    """``58`` (v2020), ``058Y``/``011M``/``001D`` (2017) -> whole years; None if unparsable or
    impossible (> 120, e.g. the 2017 file's ``148Y``...``414Y``) (Q13)."""
    m = re.fullmatch(r"\s*(\d+)\s*([YMD]?)\s*", text or "")
    if not m:
        return None
    years = int(m[1]) // {"": 1, "Y": 1, "M": 12, "D": 365}[m[2]]
    return years if years <= 120 else None


def _nih_labels(text: str, where: str) -> list[float]:
    names = [t.strip() for t in text.split("|") if t.strip()]
    vector = [0.0] * len(NIH_LABELS)
    for n in names:
        if n == "No Finding":
            continue  # Q14: No Finding = all-zero vector
        if n not in NIH_LABELS:
            raise DatasetFormatError(f"{where}: unknown finding {n!r} (expected one of "
                                     f"{', '.join(NIH_LABELS)} or 'No Finding')")
        vector[NIH_LABELS.index(n)] = 1.0
    return vector


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"official split file not found: {path}")
    return [ln.strip() for ln in _read_text(path).splitlines() if ln.strip()]


def _image_map(root: Path, prefix: str = "images") -> dict[str, Path]:
    """{lower-case file name: path} for every file below the ``images*`` folders of ``root``
    (Q15); a name found twice (also with another case, ``x.png``/``x.PNG``) is refused."""
    found: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name.lower().startswith(prefix):
            for dirpath, dirs, files in os.walk(entry):
                dirs.sort()
                for name in sorted(files):
                    _add_unique(found, name.lower(), Path(dirpath) / name, f"ChestX-ray14: image {name}")
    return found


NIH_FEATURES = Features({
    "image": datasets.Image(mode="L"), "labels": List(Value("float32")),
    "image_id": Value("string"), "patient_id": Value("int32"), "age": Value("int32"),
    "sex": Value("string"), "view": Value("string"), "follow_up": Value("int32"),
})


def load_chestxray14(root, csv: str | os.PathLike | None = None, *, val_fraction: float = 0.1,
                     seed: int = 0, manifest=None, check_images: str = "header",
                     on_bad_image: str = "raise") -> DatasetDict:
    """Load NIH ChestX-ray14 (Wang et al. 2017) with its official split.

    * ``csv``: ``Data_Entry_2017_v2020.csv`` (default when present; its labels are the ones the
      papers' split files use) or ``Data_Entry_2017.csv`` (Q13). Both versions' quirks are read:
      CRLF, the 2017 header's trailing comma (an empty extra column), zero-padded ids, ages
      ``058Y``/``011M``/``001D`` converted to whole years and impossible ages (> 120) set to
      None, rows in any order, ``Patient Gender`` or ``Patient Sex`` (Q17).
    * ``labels``: 14 floats in :data:`NIH_LABELS` order from the ``|``-separated
      ``Finding Labels`` (any order); ``No Finding`` is the all-zero vector; an unknown finding
      raises an error naming the CSV line (Q14).
    * Images are found by file name under every ``images*`` folder: ``images_0XX/images/``
      (Kaggle) or one flat ``images/`` (NIH Box) (Q15); RGBA PNGs are decoded as L. The case of a
      name is ignored, and a name found twice (``x.png`` in two folders, or ``x.png`` and
      ``x.PNG``) is refused with an error naming both files.
    * ``Patient ID`` and ``Follow-up #`` must be whole numbers (zero-padded is fine); any other
      cell, blank included, raises an error naming the CSV file, line and column.
    * Splits: ``test`` = ``test_list.txt``; ``train``/``validation`` = ``train_val_list.txt``
      with ``val_fraction`` of its PATIENTS held out (patient-disjoint, seeded; there is no
      official validation split, Q16). CSV rows in neither list are excluded and counted in a
      warning; a list entry without a CSV row is an error.
    * Metadata: ``image_id`` (file name), ``patient_id``, ``age`` (years), ``sex`` (M/F),
      ``view`` (PA/AP), ``follow_up``.
    """
    root = _existing_dir(root, "ChestX-ray14")
    if csv is None:
        csv_path = next((root / n for n in _NIH_CSVS if (root / n).is_file()), None)
        if csv_path is None:
            raise FileNotFoundError(f"ChestX-ray14: neither {' nor '.join(_NIH_CSVS)} in {root}")
    else:
        csv_path = Path(csv) if Path(csv).is_absolute() else root / csv
        if not csv_path.is_file():
            raise FileNotFoundError(f"ChestX-ray14: label file not found: {csv_path}")
    trainval = _read_list(root / "train_val_list.txt")
    test = set(_read_list(root / "test_list.txt"))
    split_of = {n: "trainval" for n in trainval} | {n: "test" for n in test}
    images = _image_map(root)
    bad = _BadFiles("ChestX-ray14", on_bad_image, check_images)
    rows, bad_ages, outside, skipped = [], 0, 0, set()
    need = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
            ("Patient Gender", "Patient Sex"), "View Position"]
    for where, rec in _csv_rows(csv_path, need):
        name = rec["Image Index"]
        if name not in split_of:
            outside += 1
            continue
        image = images.get(name.lower())
        if image is None:
            bad.handle(FileNotFoundError(f"{where}: image {name} not found in any images*/ "
                                         f"folder of {root}"))
            skipped.add(name)
            continue
        if not bad.image(image, f"{where} ({name}): "):
            skipped.add(name)
            continue
        age = _nih_age(rec["Patient Age"])
        bad_ages += age is None
        rows.append({
            "image": _image_cell(image),
            "labels": _nih_labels(rec["Finding Labels"], where),
            "image_id": name, "patient_id": _whole_number(rec, "Patient ID", where), "age": age,
            "sex": rec.get("Patient Gender", rec.get("Patient Sex")) or None,
            "view": rec["View Position"] or None,
            "follow_up": _whole_number(rec, "Follow-up #", where), "_split": split_of[name],
        })
    listed = {r["image_id"] for r in rows}
    missing_rows = [n for n in split_of if n not in listed and n not in skipped]
    if missing_rows:
        exc = DatasetFormatError(f"ChestX-ray14: {len(missing_rows)} image(s) of the split lists have "
                                 f"no row in {csv_path.name} (first: {missing_rows[:5]})")
        bad.handle(exc)
    bad.report()
    if outside:
        warnings.warn(f"ChestX-ray14: {outside} row(s) of {csv_path.name} are in neither "
                      "train_val_list.txt nor test_list.txt and were excluded", stacklevel=2)
    if bad_ages:
        warnings.warn(f"ChestX-ray14: {bad_ages} impossible or unparsable age(s) in "
                      f"{csv_path.name} set to None", stacklevel=2)
    rows.sort(key=lambda r: r["image_id"])
    assignment = _official_test_split(rows, "trainval", manifest, "ChestX-ray14", val_fraction, seed)
    info = {"dataset": "chestxray14", "seed": seed, "val_fraction": val_fraction,
            "csv": csv_path.name, "validation": "patient-disjoint from train_val_list.txt",
            "labels": list(NIH_LABELS)}
    return _build(rows, NIH_FEATURES, assignment, info,
                  "NIH ChestX-ray14; labels order: " + ", ".join(NIH_LABELS))


# ============================================================================ CheXpert

_CHEXPERT_PREFIX = re.compile(r"^CheXpert-v1\.0(?:-small)?/")


def _policies(uncertainty, labels: Sequence[str]) -> dict[str, str]:
    if isinstance(uncertainty, Mapping):
        unknown = set(uncertainty) - set(labels)
        if unknown:
            raise ValueError(f"uncertainty policy given for labels not loaded: {sorted(unknown)}")
        out = {lab: uncertainty.get(lab, "mixed") for lab in labels}
    else:
        out = {lab: uncertainty for lab in labels}
    for lab, pol in out.items():
        if pol not in UNCERTAINTY_POLICIES:
            raise ValueError(f"unknown uncertainty policy {pol!r} for {lab!r}; "
                             f"choose from {UNCERTAINTY_POLICIES}")
        if pol == "mixed":
            out[lab] = "ones" if lab in MIXED_POLICY_ONES else "zeros"
    return out


def _chexpert_value(text: str, where: str) -> float | None:
    text = text.strip()
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value not in (1.0, 0.0, -1.0):
        raise DatasetFormatError(f"{where}: value {text!r} is not 1.0, 0.0, -1.0 or blank")
    return value


def _chexpert_folder(root: Path) -> Path:
    for candidate in (root, root / "CheXpert-v1.0-small", root / "CheXpert-v1.0"):
        if (candidate / "train.csv").is_file() or (candidate / "valid.csv").is_file():
            return candidate
    raise FileNotFoundError(f"CheXpert: no train.csv/valid.csv in {root} or in its "
                            "CheXpert-v1.0-small/ sub-folder")


def load_chexpert(root, uncertainty: str | Mapping[str, str] = "mixed", frontal_only: bool = True,
                  labels: Sequence[str] = CHEXPERT_COMPETITION_LABELS, *, val_fraction: float = 0.1,
                  seed: int = 0, manifest=None, check_images: str = "header",
                  on_bad_image: str = "raise") -> DatasetDict:
    """Load CheXpert (Irvin et al. 2019), e.g. ``CheXpert-v1.0-small`` (the folder or its parent).

    * ``Path`` cells start with ``CheXpert-v1.0-small/`` (or ``CheXpert-v1.0/``); the prefix is
      stripped and the rest resolved inside the dataset folder (Q18). A path that leads outside
      it (absolute, or with ``..``) is refused with an error naming the CSV file, line and value.
    * Values are 1.0, 0.0, -1.0 (uncertain) or blank (not mentioned) (Q19). Blank -> 0 under
      every policy. ``uncertainty`` maps -1 (Q20): ``"ones"`` (U-Ones), ``"zeros"`` (U-Zeros),
      ``"ignore"`` (U-Ignore: target 0 and ``label_mask`` 0, so a loss can mask it out) or
      ``"mixed"`` (default: U-Ones for Atelectasis and Edema, U-Zeros otherwise, as
      jfhealthcare/Chexpert and medical_mae); a ``{label: policy}`` mapping sets it per label.
      A ``label_mask`` column (1 = use, 0 = ignore) is added when any label uses ``"ignore"``.
    * ``labels``: any of :data:`CHEXPERT_OBSERVATIONS`; default the 5 competition labels in
      medical_mae's order :data:`CHEXPERT_COMPETITION_LABELS` so its heads convert.
    * ``frontal_only`` keeps ``Frontal/Lateral == "Frontal"`` (medical_mae ``use_frontal``);
      laterals have a blank ``AP/PA`` (stored None), frontals may say ``LL``/``RL``; Sex
      ``Unknown`` and Age 0 are kept as they are (Q21). ``Age`` must be a whole number (``68`` or
      ``68.0``); a blank Age is stored as None (documented fallback), anything else (``abc``,
      ``87.5``, ``-3``) raises an error naming the CSV file, line and column.
    * Splits: ``test`` = ``valid.csv`` (radiologist labels, binary; patients from 64541, Q22;
      used as the test set by medical_mae); ``train`` = ``train.csv`` minus a patient-disjoint
      ``validation`` of ``val_fraction`` of its patients (0 leaves it out).
    """
    folder = _chexpert_folder(_existing_dir(root, "CheXpert"))
    labels = tuple(labels)
    unknown = [lab for lab in labels if lab not in CHEXPERT_OBSERVATIONS]
    if unknown:
        raise ValueError(f"unknown CheXpert label(s) {unknown}; choose from {CHEXPERT_OBSERVATIONS}")
    policy = _policies(uncertainty, labels)
    with_mask = "ignore" in policy.values()
    bad = _BadFiles("CheXpert", on_bad_image, check_images)
    rows = []
    for split, fname in (("train", "train.csv"), ("test", "valid.csv")):
        path = folder / fname
        if not path.is_file():
            raise FileNotFoundError(f"CheXpert: {path} not found")
        need = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *labels]
        for where, rec in _csv_rows(path, need):
            view = rec["Frontal/Lateral"]
            if frontal_only and view != "Frontal":
                continue
            rel = _CHEXPERT_PREFIX.sub("", rec["Path"])
            image = _inside_root(folder, rel, f"{where}, column 'Path' ({rec['Path']!r})")
            if not bad.image(image, f"{where} ({rec['Path']}): "):
                continue
            target, mask = [], []
            for lab in labels:
                raw = _chexpert_value(rec[lab], f"{where}, column {lab!r}")
                if raw == -1.0:
                    p = policy[lab]
                    target.append(1.0 if p == "ones" else 0.0)
                    mask.append(0.0 if p == "ignore" else 1.0)
                else:
                    target.append(raw or 0.0)
                    mask.append(1.0)
            parts = rel.split("/")
            row = {"image": _image_cell(image), "labels": target, "image_id": rel,
                   "patient_id": parts[1] if len(parts) > 2 else None,
                   "sex": rec["Sex"] or None, "age": _whole_number(rec, "Age", where, blank_ok=True),
                   "view": view or None, "ap_pa": rec["AP/PA"] or None, "_split": split}
            if with_mask:
                row["label_mask"] = mask
            rows.append(row)
    bad.report()
    assignment = _official_test_split(rows, "train", manifest, "CheXpert", val_fraction, seed)
    features = Features({
        "image": datasets.Image(mode="L"), "labels": List(Value("float32")),
        **({"label_mask": List(Value("float32"))} if with_mask else {}),
        "image_id": Value("string"), "patient_id": Value("string"), "sex": Value("string"),
        "age": Value("int32"), "view": Value("string"), "ap_pa": Value("string"),
    })
    info = {"dataset": "chexpert", "seed": seed, "val_fraction": val_fraction,
            "labels": list(labels), "uncertainty": policy, "frontal_only": frontal_only,
            "validation": "patient-disjoint from train.csv", "test": "valid.csv"}
    return _build(rows, features, assignment, info,
                  "CheXpert; labels order: " + ", ".join(labels))
