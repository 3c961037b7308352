# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""``medmae verify``: check that this installation reproduces a checkpoint's reference outputs.

Every exported folder carries ``reference_sample.safetensors``: a synthetic ``sample_image``, the
``pixel_values`` the exporting installation made of it, extra inputs (``input.*``, e.g. the masking noise of
pre-training models) and the model's outputs (``output.*``). ``verify`` loads the folder (or Hub repository),
runs the image processor on the sample and the model on the stored ``pixel_values``, and compares.

Loading: with the installed medmae classes by default, or with the code shipped in the folder
(``remote_code=True``), which is what a collaborator without medmae runs, even when medmae is installed.

Before anything is loaded -- and before any shipped code is imported -- every file is checked against
``medmae_manifest.json`` (the SHA-256 of every shipped file, written by ``medmae export``) and against the copy of
those digests in the card's metadata; a file that differs, is missing or is not listed fails the verification,
named. Someone who edits files AND both manifests defeats this: pin the manifest itself with
``--manifest-sha256`` (the exporter's printed value) to rule that out.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import transformers
from huggingface_hub import snapshot_download
from huggingface_hub.repocard import metadata_load
from safetensors.torch import load_file
from transformers import AutoImageProcessor
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from .. import __version__, modeling
from ..modeling.convert import file_sha256
from .layout import (
    ALLOWED_FILES,
    ALLOWED_PATTERNS,
    CARD_FILE,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    REFERENCE_FILE,
    WEIGHTS_FILE,
    file_digests,
)
from .provenance import read_provenance
from .reference import run_model


@dataclass
class Check:
    name: str
    ok: bool
    max_abs_diff: Optional[float] = None
    detail: str = ""


@dataclass
class VerifyReport:
    source: str
    loaded_with: str
    model_class: str
    checks: list[Check] = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def to_text(self) -> str:
        lines = [f"{self.source}: {self.model_class} loaded with {self.loaded_with}",
                 "  " + ", ".join(f"{k} {v}" for k, v in self.environment.items())]
        if self.provenance.get("medmae_version"):
            lines.append(f"  exported with medmae {self.provenance['medmae_version']}")
        for check in self.checks:
            diff = f" max |diff| {check.max_abs_diff:.3g}" if check.max_abs_diff is not None else ""
            lines.append(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}{diff}{' ' + check.detail if check.detail else ''}")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def resolve_folder(folder_or_repo: str, revision: Optional[str] = None, token: Optional[str] = None) -> Path:
    """A local folder as is; a Hub id downloaded (the allow-listed files only) to the cache."""
    path = Path(folder_or_repo).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(folder_or_repo).startswith((".", "/", "~")):
        raise FileNotFoundError(f"{folder_or_repo} is not a folder")
    return Path(snapshot_download(str(folder_or_repo), revision=revision, token=token,
                                  allow_patterns=[*ALLOWED_FILES, *ALLOWED_PATTERNS]))


def _remote_class(folder: Path, class_name: str, auto_map_key: str = "auto_map", config_file: str = "config.json"):
    """Class ``class_name`` from the code shipped in ``folder`` (found through the module of its ``auto_map``)."""
    auto_map = json.loads((folder / config_file).read_text()).get(auto_map_key) or {}
    modules = [ref.split(".")[0] for ref in auto_map.values()]
    module = next((ref.split(".")[0] for ref in auto_map.values() if ref.endswith("." + class_name)),
                  next((m for m in modules if m.startswith("modeling_")), None))
    if module is None:
        raise ValueError(f"{folder / config_file} has no auto_map: the folder ships no remote code")
    return get_class_from_dynamic_module(f"{module}.{class_name}", str(folder))


def load_for_verify(folder: Path, remote_code: bool):
    """(model in eval mode, processor, description of how they were loaded)."""
    architecture = (json.loads((folder / "config.json").read_text()).get("architectures") or ["AutoModel"])[0]
    if remote_code:
        model_cls = _remote_class(folder, architecture)
        processor_type = json.loads((folder / "preprocessor_config.json").read_text())["image_processor_type"]
        processor_cls = _remote_class(folder, processor_type, config_file="preprocessor_config.json")
        how = "the remote code shipped in the folder"
    else:
        model_cls = getattr(modeling, architecture)
        processor_cls = AutoImageProcessor
        how = f"medmae {__version__}"
    return model_cls.from_pretrained(str(folder)).eval(), processor_cls.from_pretrained(str(folder)), how


def check_files(folder: Path, manifest_sha256: Optional[str] = None) -> list[Check]:
    """One check per shipped file against ``medmae_manifest.json`` (and the manifest against the card's copy and
    the pinned ``manifest_sha256``); reads nothing but bytes."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return [Check(MANIFEST_FILE, False, detail="missing: the folder was not exported by medmae >= 0.2, or it was "
                                                   "stripped; its files cannot be checked")]
    checks = []
    if manifest_sha256 is not None:
        actual = file_sha256(path)
        checks.append(Check(f"{MANIFEST_FILE} sha256", actual == manifest_sha256.lower(),
                            detail="" if actual == manifest_sha256.lower() else f"is {actual}, pinned {manifest_sha256}"))
    try:
        manifest = json.loads(path.read_text())
        recorded = dict(manifest["files"]) if manifest.get("format") == MANIFEST_FORMAT else None
    except (ValueError, KeyError, TypeError):
        recorded = None
    if recorded is None:
        return checks + [Check(MANIFEST_FILE, False, detail=f"not a {MANIFEST_FORMAT} manifest")]
    actual = file_digests(folder, exclude=(MANIFEST_FILE,))
    for name in sorted(set(recorded) | set(actual)):
        if name not in actual:
            checks.append(Check(f"file {name}", False, detail="listed in the manifest but missing"))
        elif name not in recorded:
            checks.append(Check(f"file {name}", False, detail="not in the manifest (added after export)"))
        else:
            same = recorded[name] == actual[name]
            checks.append(Check(f"file {name}", same, detail="" if same else "differs from the manifest's SHA-256"))
    if (folder / CARD_FILE).is_file():
        in_card = (metadata_load(folder / CARD_FILE) or {}).get("medmae_files_sha256")
        expected = {k: v for k, v in recorded.items() if k != CARD_FILE}
        checks.append(Check("card metadata medmae_files_sha256", in_card == expected,
                            detail="" if in_card == expected else "differs from the manifest (one of them was edited)"))
    return checks


def _compare(name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> Check:
    if tuple(actual.shape) != tuple(expected.shape):
        return Check(name, False, None, f"shape {tuple(actual.shape)} != reference {tuple(expected.shape)}")
    actual, expected = actual.float(), expected.float()
    diff = float((actual - expected).abs().max()) if actual.numel() else 0.0
    return Check(name, bool(torch.allclose(actual, expected, atol=atol, rtol=rtol)), diff)


def verify(folder_or_repo, atol: float = 1e-4, rtol: float = 1e-4, revision: Optional[str] = None,
           remote_code: bool = False, token: Optional[str] = None,
           manifest_sha256: Optional[str] = None) -> VerifyReport:
    """Check every file against the manifest; only then load the checkpoint and compare its preprocessing and
    outputs with the shipped reference (which must hold outputs)."""
    folder = resolve_folder(str(folder_or_repo), revision, token)
    environment = {"python": platform.python_version(), "torch": torch.__version__,
                   "transformers": transformers.__version__}
    files = check_files(folder, manifest_sha256)
    if not all(check.ok for check in files):  # nothing shipped is imported or loaded from a tampered folder
        return VerifyReport(str(folder_or_repo), "nothing (the files do not match the manifest)", "-", files,
                            environment)
    if not (folder / REFERENCE_FILE).is_file():
        raise FileNotFoundError(f"{folder_or_repo} has no {REFERENCE_FILE}: it was not exported with `medmae export`")
    reference = load_file(str(folder / REFERENCE_FILE))
    if not any(key.startswith("output.") for key in reference):
        files.append(Check(REFERENCE_FILE, False, detail="holds no reference outputs (output.*): nothing to verify"))
        return VerifyReport(str(folder_or_repo), "nothing", "-", files, environment)
    model, processor, how = load_for_verify(folder, remote_code)
    report = VerifyReport(
        source=str(folder_or_repo), loaded_with=how, model_class=type(model).__name__, checks=files,
        environment=environment,
        provenance=read_provenance(folder / WEIGHTS_FILE) if (folder / WEIGHTS_FILE).is_file() else {},
    )
    pixel_values = processor(reference["sample_image"].numpy(), return_tensors="pt")["pixel_values"]
    report.checks.append(_compare("preprocessing: pixel_values", pixel_values, reference["pixel_values"], atol, rtol))
    inputs = {key: value for key, value in reference.items() if key.startswith("input.")}
    outputs = run_model(model, reference["pixel_values"], inputs)
    for key in sorted(k for k in reference if k.startswith("output.")):
        if key not in outputs:
            report.checks.append(Check(key, False, None, "missing from this installation's outputs"))
        else:
            report.checks.append(_compare(key, outputs[key], reference[key], atol, rtol))
    return report


def main_verify(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="medmae verify",
                                     description="Check that this installation reproduces a checkpoint's reference "
                                                 "outputs (reference_sample.safetensors).")
    parser.add_argument("folder_or_repo", help="exported folder or Hub repository id")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    parser.add_argument("--remote-code", action="store_true",
                        help="load the code shipped with the checkpoint instead of the installed medmae classes")
    parser.add_argument("--manifest-sha256", help="the SHA-256 of medmae_manifest.json the exporter published "
                                                  "(pins every file of the folder)")
    args = parser.parse_args(argv)
    try:
        report = verify(args.folder_or_repo, atol=args.atol, rtol=args.rtol, revision=args.revision,
                        remote_code=args.remote_code, manifest_sha256=args.manifest_sha256)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"medmae verify: error: {error}", file=sys.stderr)
        return 2
    print(report.to_text())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main_verify())
