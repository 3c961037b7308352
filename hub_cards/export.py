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

Exported folder (an allow-list, see ``layout.ALLOWED_FILES``; nothing else is ever written or pushed)::

    config.json                   with ``auto_map`` for remote-code loading
    model.safetensors             weights + provenance metadata (medmae version, family, task, dataset,
                                  teacher, source hashes, commit of the run)
    *.py                          the self-contained remote code (configuration, modeling, layers, processor)
    preprocessor_config.json      the preprocessing contract
    reference_sample.safetensors  a synthetic sample image, its ``pixel_values``, extra inputs (mask noise) and the
                                  model's outputs, checked by ``medmae verify``
    README.md                     the model card, written last

Paths, dataset roots and training-data file names are removed from ``run_info`` before use, and the
finished folder is scanned for them (``run_records.find_leaks``); an export that would leak one fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from transformers import AutoImageProcessor, AutoModel

from .. import modeling
from ..modeling.convert import file_sha256
from ..modeling.image_processing_medmae import processor_for_config
from .cards import build_model_card
from .layout import (
    CARD_FILE,
    MANIFEST_FILE,
    REFERENCE_FILE,
    RUN_INFO_FILE,
    RUN_MANIFEST_FILE,
    RUN_MODEL_DIR,
    WEIGHTS_FILE,
    ExportError,
    check_allowed_files,
    file_digests,
    folder_listing,
    human_size,
    save_safetensors,
    write_manifest,
)
from .provenance import provenance_metadata, write_provenance
from .reference import reference_sample
from .run_records import find_leaks, is_distinctive, manifest_ids, sanitize_run_info, strip_local_names


# --------------------------------------------------------------------------------------------------
# Loading the source
# --------------------------------------------------------------------------------------------------
def load_model_folder(folder: Path):
    """(model in eval mode, processor) from a ``save_pretrained`` folder, with the class it was saved as."""
    config = json.loads((folder / "config.json").read_text())
    architecture = (config.get("architectures") or [None])[0]
    model_cls = getattr(modeling, architecture) if architecture in modeling.__all__ else None
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
        forbidden += manifest_ids(path / RUN_MANIFEST_FILE)
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
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} exists and is not empty (pass overwrite=True / --overwrite)")
    model, saved_processor, disk_info, forbidden = resolve_source(source)
    own_name = [Path(source).expanduser().resolve().name] if isinstance(source, (str, os.PathLike)) else []
    processor = processor if processor is not None else saved_processor
    if processor is None:
        processor = processor_for_config(model.config)
    disk_info, local, local_names = strip_local_names(disk_info)
    explicit = json.dumps(dict(run_info or {}), default=str)  # Hub ids given to export on purpose may appear
    local_names = [name for name in [*local_names, *filter(is_distinctive, own_name)] if name not in explicit]
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
        print(f"{human_size(size):>10}  {name}")
    print(f"exported to {folder}")
    print(f"{MANIFEST_FILE} sha256 {file_sha256(folder / MANIFEST_FILE)} (publish it: `medmae verify --manifest-sha256` "
          "pins every file with it)")
    return 0


if __name__ == "__main__":
    sys.exit(main_export())
