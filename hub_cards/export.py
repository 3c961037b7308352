# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""``medmae export``: turn a training run (or a saved model, or a model object) into a Hub-ready folder.

Training-run contract (agreed with the training scripts; ``export_folder`` reads exactly this)
------------------------------------------------------------------------------------------------
A run folder holds::

    RUN/
      final/                  a ``save_pretrained`` folder: config.json, model.safetensors (+ remote code),
                              preprocessor_config.json
      run_info.json           what the run was (below)
      split_manifest.json     optional: ``medmae.training.data.write_split_manifest`` output. It is never
                              shipped (its ids are training-data file names); its SHA-256 goes into the card
                              and its ids are checked not to leak into the exported folder.
      ...                     anything else (optimizer states, logs, checkpoints) is ignored

``run_info.json`` keys (only ``family`` and ``task`` are needed; every other key may be missing)::

    family                "etmae" | "sdda_mae"                         (default: config.model_type)
    task                  "pretraining" | "distillation" | "multilabel_classification" |
                          "segmentation_classification"                (default: from the model class)
    dataset               "chestxray14" | "chexpert" | "busi" | "siim_acr" | "synthetic_cxr" | ...
    split                 {"kind": "official" | "seeded", "seed": 0, "fractions": {...}, "manifest_sha256": "..."}
    uncertainty_policy    CheXpert policy ("ones" | "zeros" | "ignore" | "mixed" or {label: policy}) or null
    hyperparameters       the run's arguments: lr, epochs, batch_size, optimizer, weight_decay, layer_decay,
                          mask_ratio, precision, ... (rendered as the card's recipe table as they are)
    metrics               {name: value} on ``eval_split``
    eval_split            "validation" | "test"
    metrics_over_seeds    {name: [value per seed]}  -> "mean ± sd" in the card and the model-index
    teacher               Hub repo id or description of the distillation teacher;  teacher_sha256
    base_model            Hub repo id of the model this one was fine-tuned from
    source_checkpoint_sha256   SHA-256 of the checkpoint converted or distilled from
    git_commit, medmae_version, seed, wall_time_s, num_parameters, license

Exported folder (an allow-list, see ``ALLOWED_FILES``; nothing else is ever written or pushed)::

    config.json                   with ``auto_map`` for remote-code loading
    model.safetensors             weights + provenance metadata (medmae version, family, task, dataset,
                                  teacher, source hashes, commit of the run)
    *.py                          the self-contained remote code (configuration, modeling, layers, processor)
    preprocessor_config.json      the preprocessing contract
    reference_sample.safetensors  a synthetic sample image, its ``pixel_values``, extra inputs (mask noise) and the
                                  model's outputs, checked by ``medmae verify``
    README.md                     the model card, written last

Paths, dataset roots and training-data file names are removed from ``run_info`` before use, and the
finished folder is scanned for them (``find_leaks``); an export that would leak one fails.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from ..modeling.convert import file_sha256

RUN_INFO_FILE = "run_info.json"
RUN_MODEL_DIR = "final"
RUN_MANIFEST_FILE = "split_manifest.json"
REFERENCE_FILE = "reference_sample.safetensors"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
MANIFEST_FILE = "medmae_manifest.json"
MANIFEST_FORMAT = "medmae-export-manifest/1"
#: The only files an exported (and pushed) folder may hold: exact names, then patterns for the remote code.
ALLOWED_FILES = ("config.json", WEIGHTS_FILE, "preprocessor_config.json", REFERENCE_FILE, CARD_FILE, MANIFEST_FILE)
ALLOWED_PATTERNS = ("*.py",)

# run_info keys that name places on the training machine, dropped wherever they appear.
_PATH_KEY = re.compile(r"(^|_)(dir|root|path|file|folder|output|cache|home|manifest|csv)s?$", re.IGNORECASE)
# Data file names (images, tables, arrays) are training-data identifiers.
_DATA_FILE = re.compile(r"\.(png|jpe?g|bmp|tiff?|dcm|dicom|nii(\.gz)?|nrrd|mha|csv|tsv|npy|npz|h5|hdf5|parquet|arrow)$",
                        re.IGNORECASE)
# Absolute paths in text (not URLs): /home/x, /tmp/x, C:\x, ~/x.
_ABSOLUTE_PATH = re.compile(
    r"(?<![\w.:/-])(?:/(?:home|tmp|Users|mnt|data|scratch|work|root|var|media|srv|opt|private|gpfs|nfs|storage)/[\w.-]"
    r"|~/[\w.-]|[A-Za-z]:\\[\w.-])"
)


class ExportError(ValueError):
    """The source cannot be exported as asked (nothing is left in ``out_dir``)."""


# --------------------------------------------------------------------------------------------------
# run_info: reading and sanitising
# --------------------------------------------------------------------------------------------------
def _looks_like_local_path(value: str) -> bool:
    text = value.strip()
    return bool(
        text.startswith(("/", "~", "./", "../", "file:"))
        or re.match(r"^[A-Za-z]:[\\/]", text)
        or "\\" in text
        or (text.count("/") > 1 and "://" not in text)  # a repo id has one slash; a/b/c is a path
        or _DATA_FILE.search(text)
        or _ABSOLUTE_PATH.search(text)
    )


def sanitize_run_info(run_info: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """Drop every entry that names a local path, a dataset root or a data file.

    Returns (clean copy, dotted names of the dropped entries). Keys such as ``data_dir``, ``output_root``,
    ``train_csv`` are dropped whatever their value; string values that look like paths or data file names
    are dropped under any key. Hub repo ids (``org/name``) and hashes are kept.
    """
    dropped: list[str] = []

    def clean(value, where: str):
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                name = f"{where}.{key}" if where else str(key)
                if _PATH_KEY.search(str(key)) and not str(key).endswith(("sha256", "_kind")):
                    dropped.append(name)
                    continue
                cleaned = clean(item, name)
                if cleaned is not _DROP:
                    out[key] = cleaned
            return out
        if isinstance(value, (list, tuple)):
            items = [clean(item, f"{where}[{i}]") for i, item in enumerate(value)]
            return [item for item in items if item is not _DROP]
        if isinstance(value, str) and _looks_like_local_path(value):
            dropped.append(where)
            return _DROP
        if isinstance(value, Path):
            dropped.append(where)
            return _DROP
        return value

    _DROP = object()
    return clean(dict(run_info), ""), dropped


# What a run records about local folders and files: the user's own names (a folder may be named after a patient).
# Never shipped: provenance is a Hub repo id given to export explicitly (--base-model, --teacher), a SHA-256, or
# nothing. Their values also join the leak scan.
LOCAL_REFERENCES = ("base_model", "teacher")
LOCAL_ARGUMENTS = ("init_from", "teacher", "config", "resume", "output_dir", "manifest", "model", "data_root")


def strip_local_names(run_info: Mapping[str, Any]) -> tuple[dict, list[str], list[str]]:
    """(run_info without the run's local folder / file names, dotted names of the dropped entries, the dropped
    values and their path components, for the leak scan)."""
    info = dict(run_info)
    dropped, names = [], []
    for key in LOCAL_REFERENCES:
        if info.get(key) is not None:
            value = info.pop(key)
            dropped.append(key)
            names.append(json.dumps(value) if isinstance(value, Mapping) else str(value))
    hyperparameters = dict(info.get("hyperparameters") or {})
    for key in LOCAL_ARGUMENTS:
        if hyperparameters.get(key) not in (None, "", "<data_root>"):
            names.append(str(hyperparameters[key]))
            dropped.append(f"hyperparameters.{key}")
        hyperparameters.pop(key, None)
    if "hyperparameters" in info:
        info["hyperparameters"] = hyperparameters
    basenames = [re.split(r"[\\/]", name.rstrip("/\\"))[-1] for name in names]
    return info, dropped, [name for name in dict.fromkeys([*names, *basenames]) if _distinctive(name)]


# Folder names medmae itself uses or suggests: too common to scan for (they would match the card's own text).
_GENERIC_NAMES = {"final", "best", "checkpoints", "runs", "model", "models", "output", "outputs", "export",
                  "exports", "pretrain", "finetune", "teacher", "student", "etmae", "sdda_mae", "sdda-mae", "medmae"}


def _distinctive(name: str) -> bool:
    """A local name worth scanning the export for: at least 6 characters and not a generic folder name."""
    return len(name) >= 6 and name.lower() not in _GENERIC_NAMES


def _manifest_ids(path: Path) -> list[str]:
    """Ids listed in a split manifest (they are training-data file names: they must never be shipped)."""
    payload = json.loads(path.read_text())
    return [str(x) for ids in payload.get("splits", {}).values() for x in ids]


# --------------------------------------------------------------------------------------------------
# Loading the source
# --------------------------------------------------------------------------------------------------
def load_model_folder(folder: Path):
    """(model in eval mode, processor) from a ``save_pretrained`` folder, with the class it was saved as."""
    import medmae
    from transformers import AutoImageProcessor, AutoModel

    from ..modeling.image_processing_medmae import processor_for_config

    config = json.loads((folder / "config.json").read_text())
    architecture = (config.get("architectures") or [None])[0]
    model_cls = getattr(medmae, architecture, None) if architecture else None
    model = (model_cls or AutoModel).from_pretrained(folder).eval()
    if (folder / "preprocessor_config.json").is_file():
        processor = AutoImageProcessor.from_pretrained(folder)
    else:
        processor = processor_for_config(model.config)
    return model, processor


def resolve_source(source) -> tuple[Any, Any, dict, list[str]]:
    """(model, processor or None, run_info from disk, strings that must not leak) for a run folder, a
    ``save_pretrained`` folder or a model object."""
    if not isinstance(source, (str, os.PathLike)):
        if not hasattr(source, "config") or not hasattr(source, "save_pretrained"):
            raise ExportError(f"cannot export a {type(source).__name__}: pass a medmae model, a run folder or a saved folder")
        return source.eval(), None, {}, []
    path = Path(source).expanduser().resolve()
    forbidden = [str(path), str(path.parent)]
    if not path.is_dir():
        raise ExportError(f"{source} is not a folder (expected a training run folder or a save_pretrained folder)")
    run_info: dict = {}
    if (path / RUN_INFO_FILE).is_file():
        run_info = json.loads((path / RUN_INFO_FILE).read_text())
    if (path / RUN_MANIFEST_FILE).is_file():
        from ..modeling.convert import file_sha256

        forbidden += _manifest_ids(path / RUN_MANIFEST_FILE)
        run_info.setdefault("split", {})
        run_info["split"] = {**run_info["split"], "manifest_sha256": run_info["split"].get("manifest_sha256")
                             or file_sha256(path / RUN_MANIFEST_FILE)}
    model_dir = path / RUN_MODEL_DIR if (path / RUN_MODEL_DIR / "config.json").is_file() else path
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{source} holds neither {RUN_MODEL_DIR}/config.json (a training run) nor config.json "
                          "(a save_pretrained folder)")
    model, processor = load_model_folder(model_dir)
    return model, processor, run_info, forbidden


# --------------------------------------------------------------------------------------------------
# Reference sample and outputs
# --------------------------------------------------------------------------------------------------
def synthetic_sample(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic 8-bit grayscale test image [H, W]: smooth blobs plus noise (not patient data)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.zeros((height, width))
    for _ in range(4):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.1, 0.4) * min(height, width)
        image += rng.uniform(0.3, 1.0) * np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * radius**2))
    image = image / image.max() * 0.8 + 0.2 * rng.random((height, width))
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def _mask_noise_shape(output) -> Optional[tuple[int, ...]]:
    """Shape of the masking noise of a pre-training output: that of ``unit_mask`` when the model masks
    groups of patches (SDDA-MAE), else that of ``mask`` (ETMAE); None for models that do not mask."""
    for name in ("unit_mask", "mask"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
    return None


def output_tensors(output) -> dict[str, torch.Tensor]:
    """The tensor fields of a model output (``ModelOutput`` or tuple), float32 on CPU, keyed ``output.NAME``."""
    items = output.items() if hasattr(output, "items") else enumerate(output)
    return {f"output.{name}": value.detach().float().cpu().clone(memory_format=torch.contiguous_format)
            for name, value in items if isinstance(value, torch.Tensor)}


def run_model(model, pixel_values: torch.Tensor, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Forward ``model`` on ``pixel_values`` and the extra ``inputs`` (``input.NAME`` keys) in eval mode."""
    kwargs = {key.split(".", 1)[1]: value for key, value in inputs.items() if key.startswith("input.")}
    with torch.no_grad():
        return output_tensors(model.eval()(pixel_values=pixel_values, return_dict=True, **kwargs))


def reference_sample(model, processor, seed: int = 0) -> dict[str, torch.Tensor]:
    """``sample_image`` (uint8 [H, W]), its ``pixel_values``, extra ``input.*`` tensors (masking noise for
    pre-training models, so outputs are deterministic) and the model's ``output.*`` tensors."""
    size = processor.size
    image = synthetic_sample(int(size["height"]), int(size["width"]), seed)
    pixel_values = processor(image, return_tensors="pt")["pixel_values"].float()
    inputs: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        probe = model.eval()(pixel_values=pixel_values, return_dict=True)
    shape = _mask_noise_shape(probe)
    if shape is not None:
        inputs["input.noise"] = torch.rand(shape, generator=generator)
    return {"sample_image": torch.from_numpy(image), "pixel_values": pixel_values, **inputs,
            **run_model(model, pixel_values, inputs)}


# --------------------------------------------------------------------------------------------------
# Provenance and checks
# --------------------------------------------------------------------------------------------------
def provenance_metadata(run_info: Mapping[str, Any], model) -> dict[str, str]:
    """String metadata for ``model.safetensors`` (safetensors metadata must be str -> str)."""
    from .. import __version__
    from .cards import run_reference

    split = run_info.get("split") or {}
    fields = {
        "format": "pt",
        "medmae_version": __version__,
        "model_type": model.config.model_type,
        "architecture": type(model).__name__,
        "family": run_info.get("family"),
        "task": run_info.get("task"),
        "dataset": run_info.get("dataset"),
        "split_manifest_sha256": split.get("manifest_sha256") if isinstance(split, Mapping) else None,
        "teacher": run_reference(run_info, "teacher"),
        "teacher_sha256": run_info.get("teacher_sha256"),
        "base_model": run_reference(run_info, "base_model"),
        "source_checkpoint_sha256": run_info.get("source_checkpoint_sha256"),
        "git_commit": run_info.get("git_commit"),
        "run_medmae_version": run_info.get("medmae_version"),
        "seed": run_info.get("seed"),
    }
    return {key: str(value) for key, value in fields.items() if value is not None}


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str]) -> None:
    """``safetensors.torch.save_file`` with a reproducible header: safetensors serialises its header from a hash
    map, so the same tensors and metadata give different bytes (and SHA-256) from run to run. The header JSON is
    rewritten with sorted keys at the same length (data offsets are relative to the end of the header)."""
    data = save(dict(tensors), metadata=dict(metadata))
    length = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8: 8 + length]), separators=(",", ":"), sort_keys=True).encode()
    if len(header) > length:
        raise AssertionError("canonical safetensors header is longer than the original")
    Path(path).write_bytes(data[:8] + header.ljust(length, b" ") + data[8 + length:])


def write_provenance(weights_path: Path, metadata: Mapping[str, str]) -> None:
    """Rewrite a safetensors file with ``metadata`` (``save_pretrained`` writes only ``{"format": "pt"}``)."""
    save_safetensors(load_file(str(weights_path)), weights_path, metadata)


def read_provenance(weights_path: Path) -> dict[str, str]:
    with safe_open(str(weights_path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def file_digests(folder: Path, exclude: Iterable[str] = ()) -> dict[str, str]:
    """``{file name: SHA-256}`` of the files of ``folder`` (sorted), except ``exclude``."""
    return {p.name: file_sha256(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name not in exclude}


def write_manifest(folder: Path, known: Optional[Mapping[str, str]] = None) -> Path:
    """``medmae_manifest.json``: the SHA-256 of every other shipped file (the card included), written last.
    ``known``: digests already computed for files not written since (each file is hashed once)."""
    known = dict(known or {})
    files = {p.name: known.get(p.name) or file_sha256(p) for p in sorted(Path(folder).iterdir())
             if p.is_file() and p.name != MANIFEST_FILE}
    payload = {"format": MANIFEST_FORMAT, "files": files}
    path = Path(folder) / MANIFEST_FILE
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def is_allowed_file(name: str) -> bool:
    return name in ALLOWED_FILES or any(fnmatch.fnmatch(name, p) for p in ALLOWED_PATTERNS)


def check_allowed_files(folder: Path) -> list[str]:
    """Sorted names of the files of ``folder``; ExportError naming any file or folder outside the allow-list."""
    names, refused = [], []
    for entry in sorted(Path(folder).iterdir()):
        if entry.is_file() and is_allowed_file(entry.name):
            names.append(entry.name)
        else:
            refused.append(entry.name + ("/" if entry.is_dir() else ""))
    if refused:
        raise ExportError(f"{folder} holds files outside the Hub allow-list ({', '.join(ALLOWED_FILES)}, remote code "
                          f"*.py): {', '.join(refused)}. Optimizer states, logs and data are never uploaded.")
    return names


def _searchable_text(path: Path) -> str:
    """The text of a file that could carry a path: the whole file, or the JSON header of a safetensors file."""
    if path.suffix == ".safetensors":
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            return handle.read(header_len).decode("utf-8", errors="replace")
    return path.read_bytes().decode("utf-8", errors="replace")


def find_leaks(folder, forbidden: Iterable[str] = (), names: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(file, offending text) for every absolute path or forbidden string (local paths, dataset roots,
    training-data ids) found in the files of ``folder``, and every local folder / file name of ``names`` found as
    a whole name (not inside a longer one: ``etmae_teacher`` is not found in ``demo_etmae_teacher``)."""
    needles = {s for s in forbidden if s and len(s) >= 4 and s not in ("/", os.sep)}
    patterns = {name: re.compile(rf"(?<![\w.-]){re.escape(name)}(?![\w-])") for name in names if name}
    leaks = []
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file():
            continue
        text = _searchable_text(path)
        leaks += [(path.name, needle) for needle in sorted(needles) if needle in text]
        leaks += [(path.name, name) for name, pattern in sorted(patterns.items()) if pattern.search(text)]
        match = _ABSOLUTE_PATH.search(text)
        if match:
            leaks.append((path.name, text[match.start(): match.start() + 60].split()[0]))
    return leaks


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------
def export_folder(
    source,
    out_dir,
    run_info: Optional[Mapping[str, Any]] = None,
    processor=None,
    repo_id: Optional[str] = None,
    overwrite: bool = False,
    forbidden_strings: Iterable[str] = (),
    seed: int = 0,
) -> Path:
    """Write the Hub-ready folder of ``source`` into ``out_dir`` and return it.

    source: a training run folder (see the module docstring), a ``save_pretrained`` folder or a model object.
    run_info: merged over the run's ``run_info.json`` (explicit keys win). processor: overrides the saved one.
    repo_id: the Hub id the card links to (``org/name``). forbidden_strings: extra strings (dataset roots,
    patient ids) that must not appear in any exported file. The folder is built next to ``out_dir`` and moved
    into place only when complete and checked; ``overwrite`` replaces an existing folder.
    """
    from .cards import build_model_card

    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} exists and is not empty (pass overwrite=True / --overwrite)")
    model, saved_processor, disk_info, forbidden = resolve_source(source)
    own_name = [Path(source).expanduser().resolve().name] if isinstance(source, (str, os.PathLike)) else []
    processor = processor if processor is not None else saved_processor
    if processor is None:
        from ..modeling.image_processing_medmae import processor_for_config

        processor = processor_for_config(model.config)
    disk_info, local, local_names = strip_local_names(disk_info)
    explicit = json.dumps(dict(run_info or {}), default=str)  # Hub ids given to export on purpose may appear
    local_names = [name for name in [*local_names, *filter(_distinctive, own_name)] if name not in explicit]
    info, dropped = sanitize_run_info({**disk_info, **dict(run_info or {})})
    dropped = list(dict.fromkeys([*local, *dropped]))
    forbidden = [*forbidden, *forbidden_strings, str(Path.home()), tempfile.gettempdir()]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(stage)  # weights, config.json + auto_map, remote code (medmae's export hook)
        processor.save_pretrained(stage)
        write_provenance(stage / WEIGHTS_FILE, provenance_metadata(info, model))
        reference = reference_sample(model, processor, seed)
        save_safetensors(reference, stage / REFERENCE_FILE, metadata={"format": "pt", "seed": str(seed)})
        digests = file_digests(stage)
        card = build_model_card(model, processor, info, repo_id=repo_id, reference=reference, folder=stage,
                                redacted=dropped, files_sha256=digests)
        card.save(stage / CARD_FILE)  # the card describes the finished folder; only the manifest comes after it
        write_manifest(stage, known=digests)
        check_allowed_files(stage)
        leaks = find_leaks(stage, forbidden, names=local_names)
        if leaks:
            details = "; ".join(f"{name}: {text!r}" for name, text in leaks[:10])
            raise ExportError(f"the export would publish local paths or training-data names ({details})")
        make_shareable(stage)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        stage.rename(out_dir)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return out_dir


def make_shareable(folder: Path) -> None:
    """Modes a collaborator can read, as the umask allows (``mkdtemp`` creates 0700 folders)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in Path(folder).iterdir():
        os.chmod(path, 0o666 & ~umask)


def folder_listing(folder) -> list[tuple[str, int]]:
    """(name, size in bytes) of the files of an exported folder."""
    return [(p.name, p.stat().st_size) for p in sorted(Path(folder).iterdir()) if p.is_file()]


def _human(size: int) -> str:
    exponent = min(int(math.log(size, 1024)), 3) if size > 0 else 0
    return f"{size / 1024**exponent:.1f} {['B', 'KiB', 'MiB', 'GiB'][exponent]}" if exponent else f"{size} B"


def main_export(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="medmae export",
        description="Write a Hub-ready folder (weights with provenance, config + auto_map, remote code, processor, "
                    "reference sample and outputs, model card) from a training run or a saved model.")
    parser.add_argument("source", help="training run folder (final/ + run_info.json) or save_pretrained folder")
    parser.add_argument("out_dir", help="folder to create")
    parser.add_argument("--repo-id", help="Hub id the card links to, e.g. medmae/etmae-vit-tiny")
    parser.add_argument("--run-info", help="JSON file merged over the run's run_info.json")
    parser.add_argument("--base-model", help="Hub id of the model this one was fine-tuned from (card link)")
    parser.add_argument("--teacher", help="Hub id of the distillation teacher (card link)")
    parser.add_argument("--overwrite", action="store_true", help="replace out_dir if it exists")
    parser.add_argument("--forbid", action="append", default=[],
                        help="a string that must not appear in the export (e.g. a dataset root); repeatable")
    args = parser.parse_args(argv)
    extra = json.loads(Path(args.run_info).read_text()) if args.run_info else {}
    extra.update({key: value for key, value in (("base_model", args.base_model), ("teacher", args.teacher)) if value})
    try:
        folder = export_folder(args.source, args.out_dir, run_info=extra, repo_id=args.repo_id,
                               overwrite=args.overwrite, forbidden_strings=args.forbid)
    except (ExportError, FileNotFoundError) as error:
        print(f"medmae export: error: {error}", file=sys.stderr)
        return 2
    for name, size in folder_listing(folder):
        print(f"{_human(size):>10}  {name}")
    print(f"exported to {folder}")
    print(f"{MANIFEST_FILE} sha256 {file_sha256(folder / MANIFEST_FILE)} (publish it: `medmae verify --manifest-sha256` "
          "pins every file with it)")
    return 0


if __name__ == "__main__":
    sys.exit(main_export())
