"""Builders of tiny on-disk fixtures in each dataset's exact published format.

Every ``build_*`` function writes files under a folder (pytest's ``tmp_path``) exactly as the
publisher ships them (names, CSV headers and cell spellings, folder layout, pixel formats; see
``/work/shared/design/dataset-formats.md``) and returns the ground truth computed HERE, with
code that is independent of ``medmae.training.data`` (own RLE encoders, own label parsing), so
the tests compare the loaders with facts rather than with themselves.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

# ----------------------------------------------------------------------------- helpers


def _gray(shape, seed):
    """A deterministic grayscale uint8 test picture (gradient + noise) of ``shape`` (H, W)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    base = np.add.outer(np.arange(h) * 3, np.arange(w) * 2) % 200
    return (base + rng.integers(0, 50, size=shape)).astype(np.uint8)


def _rect(shape, r0, r1, c0, c1):
    m = np.zeros(shape, np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


# ----------------------------------------------------------------------------- BUSI

BUSI_CLASSES = ("normal", "benign", "malignant")


def build_busi(root: Path) -> dict:
    """``Dataset_BUSI_with_GT/{benign,malignant,normal}/`` with 7 images (quirks 1-5).

    * ``benign (1)``: one L mask; ``benign (2)``: three mask files ``_mask``, ``_mask_1``,
      ``_mask_2``, the first two overlapping; ``benign (10)``: mask stored RGB (sorts before
      ``benign (2)`` lexicographically); ``malignant (1)``: portrait 48x40 with an RGBA mask whose
      alpha channel is 255 everywhere (a loader that reads alpha gets an all-ones mask);
      ``malignant (2)``: two mask files; ``normal (1)``, ``normal (2)``: all-zero masks.
    * Images are RGB PNGs with three equal channels (grayscale content).

    Returns ``{stem: {"label", "image" (H, W) uint8, "mask" (H, W) {0,1}, "mask_files"}}``.
    """
    top = Path(root) / "Dataset_BUSI_with_GT"
    shape = (40, 48)
    spec = {
        "benign (1)": (shape, [_rect(shape, 5, 15, 5, 20)], "L"),
        "benign (2)": (shape, [_rect(shape, 5, 15, 5, 20), _rect(shape, 10, 20, 15, 30),
                               _rect(shape, 30, 35, 40, 45)], "L"),
        "benign (10)": (shape, [_rect(shape, 20, 30, 10, 40)], "RGB"),
        "malignant (1)": ((48, 40), [_rect((48, 40), 10, 40, 12, 25)], "RGBA"),
        "malignant (2)": (shape, [_rect(shape, 0, 8, 0, 8), _rect(shape, 30, 40, 38, 48)], "L"),
        "normal (1)": (shape, [np.zeros(shape, np.uint8)], "L"),
        "normal (2)": (shape, [np.zeros(shape, np.uint8)], "L"),
    }
    truth = {}
    for i, (stem, (shp, masks, mode)) in enumerate(spec.items()):
        label = stem.split(" ")[0]
        folder = top / label
        folder.mkdir(parents=True, exist_ok=True)
        gray = _gray(shp, i)
        Image.fromarray(np.stack([gray] * 3, -1), "RGB").save(folder / f"{stem}.png")
        names = []
        for k, m in enumerate(masks):
            name = f"{stem}_mask.png" if k == 0 else f"{stem}_mask_{k}.png"
            m255 = (m * 255).astype(np.uint8)
            if mode == "L":
                img = Image.fromarray(m255, "L")
            elif mode == "RGB":
                img = Image.fromarray(np.stack([m255] * 3, -1), "RGB")
            else:
                alpha = np.full_like(m255, 255)
                img = Image.fromarray(np.stack([m255] * 3 + [alpha], -1), "RGBA")
            img.save(folder / name)
            names.append(name)
        merged = np.zeros(shp, np.uint8)
        for m in masks:
            merged |= m
        truth[stem] = {"label": label, "image": gray, "mask": merged, "mask_files": names}
    (top / "benign" / "Thumbs.db").write_bytes(b"not an image")  # stray OS file, ignored
    return truth


# ----------------------------------------------------------------------------- SIIM-ACR


def rle_relative(mask: np.ndarray) -> str:
    """Organisers' relative RLE of a {0,1} mask, column-major; "-1" when empty. Closes a run
    that reaches the last pixel (unlike the official ``mask2rle``)."""
    flat = mask.T.reshape(-1)
    tokens, prev_end, i, n = [], 0, 0, flat.size
    while i < n:
        if flat[i]:
            j = i
            while j < n and flat[j]:
                j += 1
            tokens += [i - prev_end, j - i]
            prev_end, i = j, j
        else:
            i += 1
    return " ".join(map(str, tokens)) if tokens else "-1"


def rle_standard(mask: np.ndarray) -> str:
    """Kaggle standard RLE: 1-based absolute starts, column-major; "-1" when empty."""
    flat = mask.T.reshape(-1)
    tokens, i, n = [], 0, flat.size
    while i < n:
        if flat[i]:
            j = i
            while j < n and flat[j]:
                j += 1
            tokens += [i + 1, j - i]
            i = j
        else:
            i += 1
    return " ".join(map(str, tokens)) if tokens else "-1"


def _write_dicom(path: Path, pixels: np.ndarray, study: str, series: str, sop: str, jpeg: bool):
    """Write an 8-bit MONOCHROME2 Secondary-Capture DICOM like the SIIM files; returns what
    ``pixel_array`` must give (the JPEG-decoded pixels for the JPEG-Baseline case)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = sop, study, series
    ds.Modality, ds.ConversionType, ds.BodyPartExamined, ds.ViewPosition = "CR", "WSD", "CHEST", "PA"
    ds.PatientID, ds.PatientSex = sop[-8:], "M"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bare-number age and 19-char DS, as in the real files
        ds.PatientAge = "38"
        ds.PixelSpacing = ["0.14300000000000002", "0.14300000000000002"]
        if jpeg:
            buf = io.BytesIO()
            Image.fromarray(pixels, "L").save(buf, format="JPEG", quality=90)
            ds.PixelData = encapsulate([buf.getvalue()])
            ds["PixelData"].VR = "OB"
            expected = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
        else:
            ds.PixelData = pixels.tobytes()
            expected = pixels
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
    return expected


def build_siim(root: Path, size: int = 64) -> dict:
    """SIIM-ACR stage-1 layout (quirks 6-12) with 64x64 DICOMs.

    Keys: ``A``, ``G`` negative (``-1``); ``B`` one L-shaped region, JPEG-Baseline DICOM; ``C``
    three rows (two overlapping rectangles + pixel (0, 0)) that are NOT adjacent in the CSV;
    ``D`` the auto-detection trap ``100 3 197 2 3793 1`` (valid as standard RLE too) with a run
    on the last pixel; ``E`` a DICOM with no CSV row; ``T`` a test DICOM.

    Files: ``train-rle.csv`` (header ``ImageId, EncodedPixels``, values with a leading space),
    ``stage_2_train.csv`` (relative, no spaces), ``stage_2_train_standard_rle.csv`` (same rows,
    standard encoding; synthetic, for the explicit-encoding option).
    """
    root = Path(root)
    shp = (size, size)
    mask_b = _rect(shp, 10, 40, 20, 26) | _rect(shp, 34, 40, 20, 45)
    regions_c = [_rect(shp, 5, 20, 5, 15), _rect(shp, 15, 30, 10, 25), _rect(shp, 0, 1, 0, 1)]
    mask_d = np.zeros(size * size, np.uint8)
    for s, l in ((100, 3), (300, 2), (4095, 1)):
        mask_d[s:s + l] = 1
    mask_d = mask_d.reshape(size, size).T.copy()  # column-major flat index -> (row, col)
    zeros = np.zeros(shp, np.uint8)
    spec = {  # key: (regions, jpeg)
        "A": ([], False), "B": ([mask_b], True), "C": (regions_c, False), "D": ([mask_d], False),
        "E": (None, False), "G": ([], False), "T": (None, False),
    }
    truth = {}
    for i, (key, (regions, jpeg)) in enumerate(spec.items()):
        base = f"1.2.276.0.7230010.3.1.%d.8323329.{1000 + i}.1517875{i:03d}.{i}"
        study, series, sop = base % 2, base % 3, base % 4
        top = "dicom-images-test" if key == "T" else "dicom-images-train"
        path = root / top / study / series / f"{sop}.dcm"
        pixels = _write_dicom(path, _gray(shp, 100 + i), study, series, sop, jpeg)
        mask = zeros.copy()
        for r in regions or []:
            mask |= r
        truth[key] = {
            "image_id": sop, "dicom_path": path, "pixels": pixels, "mask": mask,
            "rows_relative": [rle_relative(r) for r in regions] if regions else ["-1"],
            "rows_standard": [rle_standard(r) for r in regions] if regions else ["-1"],
            "in_csv": regions is not None, "label": int(mask.any()),
        }
    assert truth["D"]["rows_relative"] == ["100 3 197 2 3793 1"]
    assert truth["C"]["rows_relative"][2] == "0 1" and truth["C"]["rows_standard"][2] == "1 1"
    # CSV rows; C's three rows are interleaved with other images' rows (non-contiguous)
    order = [("A", 0), ("C", 0), ("B", 0), ("C", 1), ("D", 0), ("C", 2), ("G", 0)]

    def write(name, header, key, prefix):
        lines = [header] + [f"{truth[k]['image_id']},{prefix}{truth[k][key][j]}" for k, j in order]
        (root / name).write_text("\n".join(lines) + "\n")

    write("train-rle.csv", "ImageId, EncodedPixels", "rows_relative", " ")
    write("stage_2_train.csv", "ImageId,EncodedPixels", "rows_relative", "")
    write("stage_2_train_standard_rle.csv", "ImageId,EncodedPixels", "rows_standard", "")
    return truth


# ----------------------------------------------------------------------------- NIH ChestX-ray14

NIH_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
              "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
              "Pleural_Thickening", "Hernia")

# name: (folder, v2020 labels, 2017 labels, age v2020, age 2017 string, patient, sex, view, split)
_NIH_ROWS = [
    ("00000001_000.png", "images_001", "Cardiomegaly", "Cardiomegaly", 57, "058Y", 1, "M", "PA", "trainval"),
    ("00000001_001.png", "images_001", "Cardiomegaly|Emphysema", "Cardiomegaly|Emphysema", 57, "058Y", 1, "M", "PA", "trainval"),
    ("00000002_000.png", "images_002", "No Finding", "No Finding", 0, "011M", 2, "F", "AP", "trainval"),
    ("00000003_000.png", "images_002", "Atelectasis|Consolidation|Edema|Fibrosis|Pneumothorax",
     "Atelectasis|Consolidation|Edema|Fibrosis|Pneumothorax", 1, "013M", 3, "F", "AP", "trainval"),
    ("00000003_001.png", "images_002", "Hernia|Infiltration|Pleural_Thickening",
     "Hernia|Infiltration|Pleural_Thickening", 1, "013M", 3, "F", "PA", "trainval"),
    ("00000004_000.png", "images_012", "No Finding", "No Finding", 48, "148Y", 4, "M", "PA", "test"),
    ("00000005_000.png", "images_012", "Effusion|Nodule|Mass", "Effusion|Nodule", 30, "030Y", 5, "F", "PA", "test"),
    ("00000005_001.png", "images_012", "Pneumonia", "No Finding", 0, "001D", 5, "F", "AP", "test"),
]


def _nih_vector(s):
    return [0.0 if s == "No Finding" else float(n in s.split("|")) for n in NIH_LABELS]


def build_nih(root: Path, flat: bool = False, sex_column: str = "Patient Gender") -> dict:
    """NIH ChestX-ray14 (quirks 13-17): both CSV versions, list files, images over
    ``images_001/images``, ``images_002/images``, ``images_012/images`` (or one flat ``images/``);
    ``00000004_000.png`` is RGBA. ``Data_Entry_2017.csv``: CRLF, header with trailing comma,
    zero-padded ids/follow-ups, ages ``058Y``/``011M``/``001D``/``148Y``.
    ``Data_Entry_2017_v2020.csv``: LF, integer ages, rows not sorted, two test images relabelled
    (``Effusion|Nodule`` -> unsorted ``Effusion|Nodule|Mass``; ``No Finding`` -> ``Pneumonia``).
    """
    root = Path(root)
    truth = {}
    for i, (name, folder, lab20, lab17, age20, age17, pid, sex, view, split) in enumerate(_NIH_ROWS):
        d = root / "images" if flat else root / folder / "images"
        d.mkdir(parents=True, exist_ok=True)
        gray = _gray((32, 32), 200 + i)
        if name == "00000004_000.png":
            Image.fromarray(np.stack([gray] * 3 + [np.full_like(gray, 255)], -1), "RGBA").save(d / name)
        else:
            Image.fromarray(gray, "L").save(d / name)
        unit = age17[-1]
        years = int(age17[:-1]) // {"Y": 1, "M": 12, "D": 365}[unit]
        truth[name] = {
            "labels_v2020": _nih_vector(lab20), "labels_2017": _nih_vector(lab17),
            "split": split, "patient_id": pid, "age_v2020": age20, "age_2017_years": years,
            "sex": sex, "view": view, "image": gray,
        }
    header17 = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
                "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
    lines17 = [header17] + [
        f"{r[0]},{r[3]},{int(r[0][9:12]):03d},{r[6]:08d},{r[5]},{r[7]},{r[8]},2500,2048,0.143,0.143"
        for r in _NIH_ROWS]
    with open(root / "Data_Entry_2017.csv", "w", newline="") as f:
        f.write("\r\n".join(lines17) + "\r\n")
    header20 = header17.rstrip(",").replace("Patient Gender", sex_column)
    rows20 = [f"{r[0]},{r[2]},{int(r[0][9:12])},{r[6]},{r[4]},{r[7]},{r[8]},2500,2048,"
              f"0.14300000000000002,0.14300000000000002" for r in _NIH_ROWS]
    rows20 = rows20[::-1]  # not sorted by Image Index
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join([header20] + rows20) + "\n")
    (root / "train_val_list.txt").write_text(
        "\n".join(n for n, t in truth.items() if t["split"] == "trainval") + "\n")
    (root / "test_list.txt").write_text(
        "\n".join(n for n, t in truth.items() if t["split"] == "test") + "\n")
    return truth


# ----------------------------------------------------------------------------- CheXpert

CHEXPERT_OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices")
MEDICAL_MAE_ORDER = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")

# (relative path, sex, age, frontal/lateral, AP/PA, {observation: raw value}); missing = blank
_CHEXPERT_TRAIN = [
    ("train/patient00001/study1/view1_frontal.jpg", "Female", 68, "Frontal", "AP",
     {"No Finding": 1.0, "Pneumothorax": 0.0, "Support Devices": 1.0}),
    ("train/patient00002/study2/view1_frontal.jpg", "Female", 87, "Frontal", "AP",
     {"Cardiomegaly": -1.0, "Lung Opacity": 1.0, "Edema": -1.0, "Consolidation": -1.0,
      "Atelectasis": -1.0, "Pleural Effusion": -1.0, "Fracture": 1.0}),
    ("train/patient00002/study2/view2_lateral.jpg", "Female", 87, "Lateral", "",
     {"Cardiomegaly": -1.0, "Edema": 1.0}),
    ("train/patient00003/study1/view1_frontal.jpg", "Male", 0, "Frontal", "LL",
     {"Cardiomegaly": 1.0, "Edema": 0.0, "Atelectasis": 1.0, "Pleural Effusion": 0.0,
      "Consolidation": 0.0}),
    ("train/patient00004/study1/view1_frontal.jpg", "Unknown", 45, "Frontal", "PA",
     {"Cardiomegaly": 0.0, "Edema": 1.0, "Atelectasis": -1.0, "Pleural Effusion": 1.0,
      "Consolidation": -1.0}),
    ("train/patient00004/study1/view2_lateral.jpg", "Unknown", 45, "Lateral", "",
     {"Pleural Effusion": 1.0}),
]
_CHEXPERT_VALID = [
    ("valid/patient64541/study1/view1_frontal.jpg", "Male", 73, "Frontal", "AP",
     {o: 0.0 for o in CHEXPERT_OBSERVATIONS} | {"Cardiomegaly": 1.0, "Edema": 1.0, "Support Devices": 1.0}),
    ("valid/patient64541/study1/view2_lateral.jpg", "Male", 73, "Lateral", "",
     {o: 0.0 for o in CHEXPERT_OBSERVATIONS} | {"Cardiomegaly": 1.0}),
]


def chexpert_target(raw, observation, policy):
    """Ground-truth (target, mask) for one raw CSV value under an uncertainty policy."""
    if raw is None:
        return 0.0, 1.0
    if raw != -1.0:
        return float(raw), 1.0
    if policy == "mixed":
        policy = "ones" if observation in ("Atelectasis", "Edema") else "zeros"
    return {"ones": (1.0, 1.0), "zeros": (0.0, 1.0), "ignore": (0.0, 0.0)}[policy]


def build_chexpert(root: Path) -> dict:
    """``CheXpert-v1.0-small/{train.csv,valid.csv,train/...,valid/...}`` (quirks 18-22).

    ``Path`` cells carry the ``CheXpert-v1.0-small/`` prefix; values 1.0/0.0/-1.0/blank; a
    lateral with blank ``AP/PA``, a frontal ``LL``, Sex ``Unknown``, Age 0; ``valid.csv``
    binary. Images are JPEG, mode L. Returns ``{relative path: {"raw", "split", ...}}``.
    """
    top = Path(root) / "CheXpert-v1.0-small"
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBSERVATIONS]
    truth = {}
    for split, rows, fname in (("train", _CHEXPERT_TRAIN, "train.csv"),
                               ("valid", _CHEXPERT_VALID, "valid.csv")):
        top.mkdir(parents=True, exist_ok=True)
        with open(top / fname, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            for i, (rel, sex, age, fl, appa, vals) in enumerate(rows):
                w.writerow([f"CheXpert-v1.0-small/{rel}", sex, age, fl, appa]
                           + ["" if o not in vals else f"{vals[o]:.1f}" for o in CHEXPERT_OBSERVATIONS])
                img_path = top / rel
                img_path.parent.mkdir(parents=True, exist_ok=True)
                gray = _gray((32, 28), 300 + i + 10 * (split == "valid"))
                Image.fromarray(gray, "L").save(img_path, quality=95)
                truth[rel] = {
                    "raw": {o: vals.get(o) for o in CHEXPERT_OBSERVATIONS}, "split": split,
                    "frontal": fl == "Frontal", "sex": sex, "age": age, "ap_pa": appa,
                    "patient": rel.split("/")[1], "image_path": img_path,
                }
    return truth


def corrupt_file(path: os.PathLike) -> None:
    """Overwrite a file with bytes that no image/DICOM reader accepts."""
    Path(path).write_bytes(b"this is not an image")
