"""SIIM-ACR Pneumothorax Segmentation (DICOM images, RLE masks): the RLE codecs, DICOM reading, the scanners
(label CSV, DICOM files), row assembly (:func:`_siim_rows`) and :func:`load_siim_acr`; quirks Q6-Q12."""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

import datasets
from datasets import ClassLabel, DatasetDict, Features, List, Value

from ...configuration.labels import SIIM_CLASSES
from .common import (
    CorruptImageError,
    DatasetFormatError,
    _add_unique,
    _BadFiles,
    _bytes_cell,
    _csv_rows,
    _existing_dir,
    _image_cell,
    _png_bytes,
    _verify_image,
)
from .splits import _assign, _build

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


def _siim_label_file(root: Path, csv: str | os.PathLike | None) -> Path:
    """The label CSV: ``csv`` (a path or a file name in ``root``), else whichever of ``train-rle.csv`` and
    ``stage_2_train.csv`` is in ``root`` (both: an error, the caller must choose)."""
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
    return csv_path


def _siim_dicoms(root: Path) -> dict[str, Path]:
    """{ImageId: file} of every ``.dcm`` anywhere under ``root`` (Q11); one ImageId twice is refused."""
    dicoms: dict[str, Path] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.lower().endswith(".dcm"):
                _add_unique(dicoms, name[:-4], Path(dirpath) / name,
                            f"SIIM-ACR: DICOM of ImageId {name[:-4]}")
    return dicoms


def _siim_rows(root: Path, labels: dict[str, list[tuple[str, str]]], dicoms: dict[str, Path], rle_encoding: str,
               check_images: str, bad: _BadFiles, cache: Path | None) -> list[dict]:
    """One row per ImageId of the label CSV: its DICOM (written to ``cache`` when given), the OR of all its RLE
    rows and its DICOM metadata; a missing or unreadable file, or a bad RLE row, goes to ``bad``."""
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
    return rows


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
    csv_path = _siim_label_file(root, csv)
    labels = _read_siim_csv(csv_path)
    dicoms = _siim_dicoms(root)
    bad = _BadFiles("SIIM-ACR", on_bad_image, check_images)
    cache = Path(image_cache_dir) if image_cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    rows = _siim_rows(root, labels, dicoms, rle_encoding, check_images, bad, cache)
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
