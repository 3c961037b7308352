# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Predictions of a fine-tuned medmae model on image files: a CSV of probabilities, and mask PNGs.

    medmae predict --model runs/nih_ft --input scans/ --output results.csv
    medmae predict --model runs/busi_ft/final --input a.png b.dcm list.csv --output out/busi.csv --overlay

``--model``: a run folder (its ``final/`` is used), a ``final/`` folder or any ``save_pretrained`` folder with
``config.json`` and ``preprocessor_config.json``. Its class (``architectures`` in config.json) chooses the outputs:

* ``ETMAEForImageClassification`` / ``SDDAMAEForImageClassification``: ``prob/<label>`` per ``id2label`` label,
  sigmoid per label when ``problem_type`` is ``multi_label_classification`` (``prediction``: the labels at or above
  their threshold, joined by ``|``), softmax otherwise (``prediction``: the most probable label);
* ``SDDAMAEForSegmentationAndClassification``: softmax over the diagnoses of ``cls_id2label`` and a mask;
* ``SDDAMAEForSemanticSegmentation``: a mask (``prediction``: the non-background classes in it).

A pre-training checkpoint is refused: its heads are untrained.

``--input``: image files, folders (searched recursively for .png .jpg .jpeg .bmp .tif .tiff .dcm, in natural order)
and ``.csv`` lists with a ``path`` column (relative paths are taken from the CSV's folder). Images are read exactly:
PNG / JPEG / TIFF / BMP through PIL into numpy with their bit depth (a 16-bit PNG stays uint16); a DICOM exactly as
the SIIM-ACR loader stores it for training (``training/data/siim_acr.py``: MONOCHROME1 inverted, more than 8 bits rescaled
to 8). The checkpoint's own image processor (``preprocessor_config.json``) then resizes, rescales by bit depth and
normalises; the sidecar JSON records that contract.

Outputs: ``--output`` CSV, one row per predicted image: ``path``, ``prob/<label>``..., ``prediction`` and, for
segmentation models, ``mask_path`` (relative to the CSV) and ``mask_foreground_fraction``. Masks are PNGs of uint8
class indices at the image's original size (nearest-neighbour resize of the model's mask) in ``--masks_dir``
(default ``<output stem>_masks/`` beside the CSV), named after the input's stem (``_2``, ``_3``... when stems repeat);
``--overlay`` adds ``<stem>_overlay.png`` (mask in translucent red over the grayscale image). A sidecar
``<output stem>.json`` records the model folder name, class, preprocessing contract, thresholds, counts, the skipped
files with their reasons, and the medmae version.

Unreadable files are reported on stderr (file and reason) and skipped. Exit codes: 0 all predicted, 1 some files
skipped, 2 usage error (missing model folder, pre-training checkpoint, no inputs found), with a one-line message.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm
from transformers.utils import logging as transformers_logging

from .. import __version__, modeling
from .data.common import _csv_rows, natural_key
from .data.siim_acr import _dicom_image
from .provenance import model_folder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
# Predictable classes: (config attribute naming the probability columns or None, writes a mask).
PREDICTABLE = {
    "ETMAEForImageClassification": ("id2label", False),
    "SDDAMAEForImageClassification": ("id2label", False),
    "SDDAMAEForSegmentationAndClassification": ("cls_id2label", True),
    "SDDAMAEForSemanticSegmentation": (None, True),
}
OVERLAY_COLOR = np.array([255.0, 0.0, 0.0])
OVERLAY_ALPHA = 0.4


class UsageError(ValueError):
    """A problem with the command line (exit code 2)."""


@dataclass
class Task:
    """What a model predicts: probability columns, how they are made, and whether it writes a mask."""

    labels: list[str]
    multi_label: bool
    mask_classes: Optional[list[str]]
    thresholds: list[float] = field(default_factory=list)


@dataclass
class Prediction:
    """One image's outputs: class probabilities [K] (or None) and its mask at the original size (or None)."""

    path: Path
    image: np.ndarray
    probabilities: Optional[np.ndarray]
    mask: Optional[np.ndarray]


# ----------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------
def discover_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (recursive, natural order) and ``.csv`` lists -> image paths in order, each once."""
    found: list[Path] = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            found += sorted(files, key=lambda p: natural_key(p.relative_to(path).as_posix()))
        elif path.is_file() and path.suffix.lower() == ".csv":
            found += _csv_inputs(path)
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"input not found: {path}")
    seen: set[str] = set()
    unique = []
    for path in found:  # a file named twice (a folder and a list) is predicted once, at its first place
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _csv_inputs(path: Path) -> list[Path]:
    """The ``path`` column of a CSV list (relative paths from the CSV's folder)."""
    paths = []
    for where, row in _csv_rows(path, ["path"]):
        if not row["path"]:
            raise UsageError(f"{where}: empty path")
        paths.append(path.parent / Path(row["path"]).expanduser())
    return paths


def read_image(path: Path) -> np.ndarray:
    """The pixels of one file as numpy, bit depth kept: [H, W] or [H, W, 3] uint8 / uint16 / int32 / float32."""
    if path.suffix.lower() == ".dcm":
        return _dicom_array(path)
    try:
        with Image.open(path) as image:
            image.load()
            return _pil_array(image)
    except UnidentifiedImageError:
        if _is_dicom(path):
            return _dicom_array(path)
        raise ValueError("not an image file PIL can read") from None


def _pil_array(image) -> np.ndarray:
    """A PIL image -> numpy without loss: 16-bit stays uint16, palette / alpha / CMYK become RGB or L."""
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":
        array = np.asarray(image, dtype=np.int32)
        # PNG stores at most 16 bits per grey sample, so an "I" PNG is a 16-bit one
        in_range = image.format == "PNG" and array.min(initial=0) >= 0 and array.max(initial=0) <= 65535
        return array.astype(np.uint16) if in_range else array
    if mode in ("L", "RGB", "F"):
        return np.asarray(image)
    return np.asarray(image.convert("L" if mode in ("1", "LA", "La") else "RGB"))


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def _dicom_array(path: Path) -> np.ndarray:
    """A DICOM's pixels as the SIIM-ACR loader stores them for training (``data.siim_acr._dicom_image``)."""
    data, _, _ = _dicom_image(path, "full")
    with Image.open(io.BytesIO(data)) as image:
        return _pil_array(image)


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------
def load_model(path, threshold: Optional[float] = None, device: str = "cpu"):
    """A fine-tuned folder (or its run folder) -> (model in eval mode, image processor, Task, folder)."""
    try:
        folder = model_folder(path)
    except FileNotFoundError as error:
        raise UsageError(f"model folder not found: {error}") from None
    config = json.loads((folder / "config.json").read_text())
    architectures = config.get("architectures") or []
    name = architectures[0] if architectures else None
    if name and name.endswith("ForPreTraining"):
        raise UsageError(f"{folder} is a pre-training checkpoint ({name}): its classification / segmentation heads "
                         "are untrained; fine-tune it first (medmae finetune --init_from ...)")
    if name not in PREDICTABLE:
        raise UsageError(f"{folder}: architectures {architectures} is not a medmae fine-tuned model; "
                         f"medmae predict supports {', '.join(PREDICTABLE)}")
    if not (folder / "preprocessor_config.json").is_file():
        raise UsageError(f"{folder} has no preprocessor_config.json: the model's preprocessing is unknown")
    model = getattr(modeling, name).from_pretrained(folder).to(device).eval()
    processor = modeling.MedMAEImageProcessor.from_pretrained(folder)
    return model, processor, task_of(model, threshold), folder


def task_of(model, threshold: Optional[float] = None) -> Task:
    """The Task of a loaded model; multi-label thresholds: ``threshold``, else ``config.thresholds``, else 0.5."""
    config = model.config
    labels_attribute, has_mask = PREDICTABLE[type(model).__name__]
    if config.problem_type == "regression" and labels_attribute == "id2label":
        raise UsageError(f"{type(model).__name__} with problem_type 'regression' has no probabilities to predict")
    id2label = getattr(config, labels_attribute) if labels_attribute else {}
    labels = [str(id2label[k]) for k in sorted(id2label)]
    multi_label = labels_attribute == "id2label" and config.problem_type == "multi_label_classification"
    mask_classes = [str(config.id2label[k]) for k in sorted(config.id2label)] if has_mask else None
    return Task(labels, multi_label, mask_classes,
                _thresholds(labels, threshold, getattr(config, "thresholds", None)) if multi_label else [])


def _thresholds(labels: list[str], threshold: Optional[float], recorded) -> list[float]:
    """One threshold per label from ``--threshold``, a recorded number / list / {label: value}, or 0.5."""
    if threshold is not None or recorded is None:
        return [0.5 if threshold is None else threshold] * len(labels)
    if isinstance(recorded, dict):
        return [float(recorded.get(label, 0.5)) for label in labels]
    if isinstance(recorded, (list, tuple)):
        if len(recorded) != len(labels):
            raise UsageError(f"config thresholds has {len(recorded)} values for {len(labels)} labels")
        return [float(t) for t in recorded]
    return [float(recorded)] * len(labels)


@torch.no_grad()
def predict_batch(model, pixel_values: torch.Tensor, task: Task) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Preprocessed images [B, C, H, W] -> (probabilities [B, K] or None, class-index masks [B, h, w] or None)."""
    out = model(pixel_values=pixel_values.to(model.device))
    masks = out.logits.float().argmax(1).cpu().numpy() if task.mask_classes is not None else None
    class_logits = getattr(out, "class_logits", None) if task.mask_classes is not None else out.logits
    probabilities = None
    if task.labels and class_logits is not None:
        logits = class_logits.float()
        probabilities = (torch.sigmoid(logits) if task.multi_label else torch.softmax(logits, -1)).cpu().numpy()
    return probabilities, masks


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Class indices [h, w] -> uint8 [H, W] by nearest neighbour (the image processor's map resize)."""
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
    if tuple(mask.shape) != tuple(shape):
        tensor = torch.nn.functional.interpolate(tensor, size=tuple(shape), mode="nearest-exact")
    return tensor[0, 0].numpy().astype(np.uint8)


def preprocessing_contract(processor) -> dict:
    """What the checkpoint's ``preprocessor_config.json`` asks of every image (as applied)."""
    return {"source": "preprocessor_config.json", "image_processor_type": type(processor).__name__,
            "size": dict(processor.size), "do_resize": processor.do_resize, "do_rescale": processor.do_rescale,
            "rescale_factor": processor.rescale_factor, "do_normalize": processor.do_normalize,
            "image_mean": list(processor.image_mean), "image_std": list(processor.image_std),
            "num_channels": processor.num_channels}


# ----------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------
class OutputWriter:
    """Writes masks (and overlays) as predictions arrive, then the CSV and its sidecar JSON."""

    def __init__(self, output: Path, task: Task, masks_dir: Optional[Path], overlay: bool):
        self.output, self.task, self.overlay = output, task, overlay
        self.masks_dir = masks_dir or output.parent / f"{output.stem}_masks"
        self.rows: list[dict] = []
        self._taken: set[str] = set()

    def add(self, prediction: Prediction) -> None:
        row = {"path": str(prediction.path)}
        if prediction.probabilities is not None:
            row.update({f"prob/{label}": f"{p:.8g}" for label, p in zip(self.task.labels, prediction.probabilities)})
        row["prediction"] = self._decision(prediction)
        if prediction.mask is not None:
            row.update(self._write_mask(prediction))
        self.rows.append(row)

    def _decision(self, prediction: Prediction) -> str:
        probabilities = prediction.probabilities
        if probabilities is not None and self.task.multi_label:
            return "|".join(label for label, p, t in zip(self.task.labels, probabilities, self.task.thresholds)
                            if p >= t)
        if probabilities is not None:
            return self.task.labels[int(np.argmax(probabilities))]
        present = np.unique(prediction.mask) if prediction.mask is not None else []
        return "|".join(self.task.mask_classes[i] for i in present if 0 < i < len(self.task.mask_classes))

    def _write_mask(self, prediction: Prediction) -> dict:
        self.masks_dir.mkdir(parents=True, exist_ok=True)
        stem = self._unique_stem(prediction.path.stem)
        mask_path = self.masks_dir / f"{stem}.png"
        Image.fromarray(prediction.mask, "L").save(mask_path)
        if self.overlay:
            Image.fromarray(overlay_image(prediction.image, prediction.mask), "RGB").save(
                self.masks_dir / f"{stem}_overlay.png")
        return {"mask_path": Path(os.path.relpath(mask_path, self.output.parent)).as_posix(),
                "mask_foreground_fraction": f"{float((prediction.mask != 0).mean()):.6g}"}

    def _unique_stem(self, stem: str) -> str:
        candidate, n = stem, 1
        while {candidate, f"{candidate}_overlay"} & self._taken:
            n += 1
            candidate = f"{stem}_{n}"
        self._taken |= {candidate, f"{candidate}_overlay"}
        return candidate

    def columns(self) -> list[str]:
        columns = ["path", *(f"prob/{label}" for label in self.task.labels), "prediction"]
        return columns + (["mask_path", "mask_foreground_fraction"] if self.task.mask_classes is not None else [])


def overlay_image(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image as contrast-stretched grayscale RGB uint8 with non-zero mask pixels tinted translucent red."""
    gray = image.astype(np.float64)
    if gray.ndim == 3:
        gray = gray @ np.array([0.299, 0.587, 0.114])
    low, high = float(gray.min()), float(gray.max())
    gray = (gray - low) / (high - low) * 255.0 if high > low else np.zeros_like(gray)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    rgb[mask != 0] = (1 - OVERLAY_ALPHA) * rgb[mask != 0] + OVERLAY_ALPHA * OVERLAY_COLOR
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def write_outputs(writer: OutputWriter, record: dict) -> Path:
    """The CSV of ``writer``'s rows and the sidecar JSON ``record``; returns the sidecar's path."""
    writer.output.parent.mkdir(parents=True, exist_ok=True)
    with open(writer.output, "w", newline="", encoding="utf-8") as handle:
        table = csv.DictWriter(handle, fieldnames=writer.columns())
        table.writeheader()
        table.writerows(writer.rows)
    sidecar = writer.output.with_suffix(".json")
    sidecar.write_text(json.dumps(record, indent=2) + "\n")
    return sidecar


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medmae predict",
        description="Predict with a fine-tuned medmae model on image files, folders or CSV lists: a CSV of class "
                    "probabilities and decisions, and mask PNGs for segmentation models.")
    parser.add_argument("--model", required=True, help="run folder, its final/ folder, or a save_pretrained folder "
                                                       "with config.json and preprocessor_config.json")
    parser.add_argument("--input", required=True, nargs="+", metavar="PATH",
                        help="image files (.png .jpg .jpeg .bmp .tif .tiff .dcm), folders (searched recursively) "
                             "or .csv files with a 'path' column (relative to the CSV's folder)")
    parser.add_argument("--output", required=True, help="CSV to write (one row per predicted image); a sidecar "
                                                        "<output stem>.json records the run")
    parser.add_argument("--batch_size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--masks_dir", default=None, help="folder of the mask PNGs of segmentation models "
                                                          "(default: <output stem>_masks/ beside the CSV)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write <stem>_overlay.png: the mask in translucent red over the grayscale image")
    parser.add_argument("--threshold", type=float, default=None,
                        help="multi-label decision threshold for every label (default: the config's thresholds "
                             "if it records them, else 0.5)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu), e.g. cuda or cuda:1")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@contextlib.contextmanager
def _loading_progress(enabled: bool):
    """transformers' weight-loading progress bar on or off while the model loads (restored afterwards)."""
    before = transformers_logging.is_progress_bar_enabled()
    (transformers_logging.enable_progress_bar if enabled else transformers_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (transformers_logging.enable_progress_bar if before else transformers_logging.disable_progress_bar)()


def _model_name(folder: Path) -> str:
    """The model folder's name without local paths (``run/final`` for a run's final folder)."""
    folder = folder.resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.name == "final" else folder.name


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1")
    output = Path(args.output)
    try:
        if output.suffix.lower() == ".json":
            raise UsageError(f"--output {output} would clash with its sidecar JSON; give a .csv file")
        paths = discover_inputs(args.input)
        if not paths:
            raise UsageError(f"no input images found in {' '.join(args.input)} (looked for {' '.join(IMAGE_SUFFIXES)})")
        with _loading_progress(not args.no_progress):
            model, processor, task, folder = load_model(args.model, args.threshold, args.device)
    except (ValueError, OSError) as error:  # UsageError, a malformed CSV list, an unloadable model folder
        print(f"medmae predict: error: {error}", file=sys.stderr)
        return 2
    if task.mask_classes is None and (args.masks_dir or args.overlay):
        print("medmae predict: note: the model has no segmentation head; --masks_dir / --overlay ignored",
              file=sys.stderr)
    writer = OutputWriter(output, task, Path(args.masks_dir) if args.masks_dir else None, args.overlay)
    skipped: list[dict] = []
    with tqdm(total=len(paths), unit="image", disable=args.no_progress, file=sys.stderr) as bar:
        for batch in _batches(paths, args.batch_size):
            images, pixels = [], []
            for path in batch:
                try:
                    image = read_image(path)
                    pixels.append(processor(images=image, return_tensors="pt")["pixel_values"])
                    images.append((path, image))
                except Exception as error:  # noqa: BLE001 -- a bad file is reported and skipped, whatever broke
                    reason = f"{type(error).__name__}: {error}"
                    skipped.append({"path": str(path), "reason": reason})
                    tqdm.write(f"medmae predict: skipped {path}: {reason}", file=sys.stderr)
            if pixels:
                probabilities, masks = predict_batch(model, torch.cat(pixels), task)
                for i, (path, image) in enumerate(images):
                    writer.add(Prediction(path, image, None if probabilities is None else probabilities[i],
                                          None if masks is None else resize_mask(masks[i], image.shape[:2])))
            bar.update(len(batch))
    record = {"model": _model_name(folder), "model_class": type(model).__name__,
              "labels": task.labels, "multi_label": task.multi_label, "thresholds": task.thresholds or None,
              "mask_classes": task.mask_classes, "preprocessing": preprocessing_contract(processor),
              "num_inputs": len(paths), "num_predicted": len(writer.rows), "num_skipped": len(skipped),
              "skipped": skipped, "output": output.name,
              "masks_dir": writer.masks_dir.name if task.mask_classes is not None else None,
              "medmae_version": __version__}
    sidecar = write_outputs(writer, record)
    print(f"predicted {len(writer.rows)}, skipped {len(skipped)}")
    print(f"wrote {output} and {sidecar}" + (f"; masks in {writer.masks_dir}" if task.mask_classes is not None
                                               and writer.rows else ""))
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
