"""NIH ChestX-ray14 (14 findings, official test list): label parsing, the scanners (label CSV, split lists,
``images*`` folders), row assembly (:func:`_nih_rows`) and :func:`load_chestxray14`; quirks Q13-Q17."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import datasets
from datasets import DatasetDict, Features, List, Value

from ...configuration.labels import NIH_LABELS
from .common import (
    DatasetFormatError,
    _add_unique,
    _BadFiles,
    _csv_rows,
    _existing_dir,
    _image_cell,
    _read_text,
    _whole_number,
)
from .splits import _build, _official_test_split

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


def _nih_label_file(root: Path, csv: str | os.PathLike | None) -> Path:
    """The label CSV: ``csv`` (a path, or a file name in ``root``), else the first of :data:`_NIH_CSVS` present."""
    if csv is None:
        csv_path = next((root / n for n in _NIH_CSVS if (root / n).is_file()), None)
        if csv_path is None:
            raise FileNotFoundError(f"ChestX-ray14: neither {' nor '.join(_NIH_CSVS)} in {root}")
    else:
        csv_path = Path(csv) if Path(csv).is_absolute() else root / csv
        if not csv_path.is_file():
            raise FileNotFoundError(f"ChestX-ray14: label file not found: {csv_path}")
    return csv_path


def _nih_split_lists(root: Path) -> dict[str, str]:
    """{image name: ``"trainval"`` or ``"test"``} from ``train_val_list.txt`` and ``test_list.txt`` (Q16)."""
    trainval = _read_list(root / "train_val_list.txt")
    test = set(_read_list(root / "test_list.txt"))
    return {n: "trainval" for n in trainval} | {n: "test" for n in test}


def _nih_rows(root: Path, csv_path: Path, split_of: dict[str, str], images: dict[str, Path],
              bad: _BadFiles) -> tuple[list[dict], int, int]:
    """(rows, impossible or unparsable ages, CSV rows in neither split list): one row per CSV record whose image is
    in a split list, in CSV order; a missing or unreadable image, or a list entry without a CSV row, goes to
    ``bad``."""
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
    return rows, bad_ages, outside


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
    csv_path = _nih_label_file(root, csv)
    split_of = _nih_split_lists(root)
    images = _image_map(root)
    bad = _BadFiles("ChestX-ray14", on_bad_image, check_images)
    rows, bad_ages, outside = _nih_rows(root, csv_path, split_of, images, bad)
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
