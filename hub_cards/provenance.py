# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Provenance metadata of exported weights: what ``model.safetensors`` records about the run it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from safetensors import safe_open
from safetensors.torch import load_file

from .. import __version__
from .layout import save_safetensors
from .run_records import run_reference


def provenance_metadata(run_info: Mapping[str, Any], model) -> dict[str, str]:
    """String metadata for ``model.safetensors`` (safetensors metadata must be str -> str)."""
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


def write_provenance(weights_path: Path, metadata: Mapping[str, str]) -> None:
    """Rewrite a safetensors file with ``metadata`` (``save_pretrained`` writes only ``{"format": "pt"}``)."""
    save_safetensors(load_file(str(weights_path)), weights_path, metadata)


def read_provenance(weights_path: Path) -> dict[str, str]:
    with safe_open(str(weights_path), framework="pt") as handle:
        return dict(handle.metadata() or {})

