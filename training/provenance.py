# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Where a run's numbers come from: the code's commit and version, the SHA-256 of the weights it started from,
the folder of a model, and the JSON files a run writes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Optional

from ..modeling.convert import file_sha256



def git_commit() -> Optional[str]:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None



def weights_sha256(path) -> Optional[str]:
    """SHA-256 of a checkpoint file, or of ``model.safetensors`` in a folder (``final/`` of a run folder)."""
    path = Path(path)
    for candidate in (path, path / "model.safetensors", path / "final" / "model.safetensors"):
        if candidate.is_file():
            return file_sha256(candidate)
    return None



def model_folder(path) -> Path:
    """A run folder -> its ``final/``; a ``save_pretrained`` folder -> itself."""
    path = Path(path)
    if (path / "final" / "config.json").is_file():
        return path / "final"
    if (path / "config.json").is_file():
        return path
    raise FileNotFoundError(f"{path} is neither a save_pretrained folder nor a run folder with final/")


def tracker_config(values: dict) -> dict:
    """The hyperparameters a tracker accepts (numbers, strings, booleans)."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
