"""CheXpert (chest X-rays with uncertain labels): uncertainty policies, value parsing, the folder scanner, row
assembly (:func:`_chexpert_rows`) and :func:`load_chexpert`; quirks Q18-Q22."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets
from datasets import DatasetDict, Features, List, Value

from ...configuration.labels import CHEXPERT_COMPETITION_LABELS, CHEXPERT_OBSERVATIONS, MIXED_POLICY_ONES
from .common import DatasetFormatError, _BadFiles, _csv_rows, _existing_dir, _image_cell, _inside_root, _whole_number
from .splits import _build, _official_test_split

# ============================================================================ CheXpert

_CHEXPERT_PREFIX = re.compile(r"^CheXpert-v1\.0(?:-small)?/")
UNCERTAINTY_POLICIES = ("ones", "zeros", "ignore", "mixed")


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


def _chexpert_rows(folder: Path, labels: tuple[str, ...], policy: dict[str, str], with_mask: bool,
                   frontal_only: bool, bad: _BadFiles) -> list[dict]:
    """One row per image of ``train.csv`` (``_split`` ``train``) and ``valid.csv`` (``_split`` ``test``), targets
    mapped by ``policy``, ``label_mask`` added when ``with_mask``; a missing or unreadable image goes to ``bad``."""
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
    return rows


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
    rows = _chexpert_rows(folder, labels, policy, with_mask, frontal_only, bad)
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
