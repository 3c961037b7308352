# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""The medmae model zoo: one table of named Hub repositories.

Names follow timm and torchxrayvision: architecture first, training data last
(``etmae-vit-tiny-p16-224-ft-nih14``: ETMAE ViT-Tiny, patch 16, 224 px, fine-tuned on NIH ChestX-ray14).
Teachers end in ``-teacher``; ``-ft-`` marks a fine-tuned model, whose ``base_model`` is the pre-trained one.
Parameter counts are computed from the configurations (on the meta device, no weights), metrics are read
from the cards of exported folders: nothing here is typed twice.

``python -m medmae.hub_cards.zoo [ORG]`` prints the README table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional

import torch
from huggingface_hub import ModelCard

from .. import modeling
from ..configuration import ETMAEConfig, SDDAMAEConfig
from ..configuration.labels import CHEXPERT_COMPETITION_LABELS, NIH_LABELS
from .catalogue import DATASETS, TASKS

DEFAULT_ORG = "medmae"


def _labels(names: Iterable[str]) -> dict:
    names = list(names)
    return dict(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})


@dataclass(frozen=True)
class ZooEntry:
    """One named repository of the zoo.

    name: repository name (the Hub id is ``ORG/name``). architecture: medmae model class. preset: configuration
    preset of the family. task / dataset: as in ``run_info.json``. teacher / base_model: zoo names.
    config_overrides: label maps and other fields on top of the preset. source: where the weights come from.
    """

    name: str
    family: str
    architecture: str
    preset: str
    task: str
    dataset: str
    summary: str
    teacher: Optional[str] = None
    base_model: Optional[str] = None
    source: Optional[str] = None
    config_overrides: Mapping = field(default_factory=dict)


ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("etmae-vit-small-teacher", "etmae", "ETMAEForPreTraining", "vit_small_patch16_dec512d2b", "pretraining",
             "medical_mae_cxr", "ViT-S/16 MAE teacher",
             source="converted from lambert-x/medical_mae ViT-S/16 (CXR 0.3M)"),
    ZooEntry("etmae-vit-base-teacher", "etmae", "ETMAEForPreTraining", "vit_base_patch16_dec512d8b", "pretraining",
             "medical_mae_cxr", "ViT-B/16 MAE teacher",
             source="converted from lambert-x/medical_mae ViT-B/16 (CXR 0.5M)"),
    ZooEntry("etmae-vit-tiny", "etmae", "ETMAEForPreTraining", "vit_tiny_patch16_dec512d2b", "distillation",
             "chestxray14", "ViT-Tiny/16 MAE student distilled from the ViT-S teacher",
             teacher="etmae-vit-small-teacher"),
    ZooEntry("etmae-vit-tiny-p16-224-ft-nih14", "etmae", "ETMAEForImageClassification", "vit_tiny_patch16_dec512d2b",
             "multilabel_classification", "chestxray14", "14-label thorax disease classifier",
             base_model="etmae-vit-tiny",
             config_overrides=dict(problem_type="multi_label_classification", **_labels(NIH_LABELS))),
    ZooEntry("etmae-vit-tiny-p16-224-ft-chexpert", "etmae", "ETMAEForImageClassification",
             "vit_tiny_patch16_dec512d2b", "multilabel_classification", "chexpert",
             "5-label CheXpert competition classifier", base_model="etmae-vit-tiny",
             config_overrides=dict(problem_type="multi_label_classification", **_labels(CHEXPERT_COMPETITION_LABELS))),
    ZooEntry("sdda-mae-512-busi", "sdda_mae", "SDDAMAEForPreTraining", "sdda_mae_512", "pretraining", "busi",
             "SDDA-MAE pre-trained on BUSI only (self-supervised)"),
    ZooEntry("sdda-mae-512-ft-busi", "sdda_mae", "SDDAMAEForSegmentationAndClassification", "sdda_mae_512",
             "segmentation_classification", "busi", "lesion segmentation + normal/benign/malignant",
             base_model="sdda-mae-512-busi",
             config_overrides=dict(id2label={0: "background", 1: "lesion"},
                                   cls_id2label={0: "normal", 1: "benign", 2: "malignant"})),
    ZooEntry("sdda-mae-512-siim-acr", "sdda_mae", "SDDAMAEForPreTraining", "sdda_mae_512", "pretraining", "siim_acr",
             "SDDA-MAE pre-trained on SIIM-ACR only (self-supervised)"),
    ZooEntry("sdda-mae-512-ft-siim-acr", "sdda_mae", "SDDAMAEForSegmentationAndClassification", "sdda_mae_512",
             "segmentation_classification", "siim_acr", "pneumothorax segmentation + absent/present",
             base_model="sdda-mae-512-siim-acr",
             config_overrides=dict(id2label={0: "background", 1: "pneumothorax"},
                                   cls_id2label={0: "absent", 1: "present"})),
)

_BY_NAME = {entry.name: entry for entry in ZOO}


class UnknownZooEntry(KeyError, ValueError):
    """A name that is not in the zoo (a ``KeyError`` as a lookup, a ``ValueError`` as a command-line value)."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_entry(name: str) -> ZooEntry:
    """The zoo entry of a repository name or id (``org/name``)."""
    key = name.split("/")[-1]
    if key not in _BY_NAME:
        raise UnknownZooEntry(f"{name!r} is not in the medmae zoo; known: {', '.join(_BY_NAME)}")
    return _BY_NAME[key]


def repo_id(name: str, org: str = DEFAULT_ORG) -> str:
    return f"{org}/{get_entry(name).name}"


def build_config(entry: ZooEntry):
    """The configuration of a zoo entry (preset + overrides)."""
    config_cls = next(cls for cls in (ETMAEConfig, SDDAMAEConfig) if cls.model_type == entry.family)
    return config_cls.from_preset(entry.preset, **dict(entry.config_overrides))


def parameter_count(entry: ZooEntry) -> int:
    """Parameters of the entry's model, built on the meta device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        model = getattr(modeling, entry.architecture)(build_config(entry))
    return sum(p.numel() for p in model.parameters())


def related_models(name_or_id: str) -> list[dict]:
    """Zoo neighbours of a repository: its teacher and base model, and the models distilled or fine-tuned from
    it, as ``{"relation", "repo_id"}`` rows in the same organisation."""
    org, _, name = name_or_id.rpartition("/")
    org = org or DEFAULT_ORG
    entry = _BY_NAME.get(name)
    if entry is None:
        return []
    rows = []
    if entry.teacher:
        rows.append(dict(relation="teacher (distilled from)", repo_id=f"{org}/{entry.teacher}"))
    if entry.base_model:
        rows.append(dict(relation="fine-tuned from", repo_id=f"{org}/{entry.base_model}"))
    for other in ZOO:
        if other.teacher == name:
            rows.append(dict(relation="student (distilled from this model)", repo_id=f"{org}/{other.name}"))
        if other.base_model == name:
            rows.append(dict(relation="fine-tuned from this model", repo_id=f"{org}/{other.name}"))
    return rows


def results_from_folders(folders: Iterable) -> dict[str, str]:
    """``{repo name: "metric value (split)"}`` read from the model-index of exported folders' cards."""
    results = {}
    for folder in folders:
        card = ModelCard.load(Path(folder) / "README.md")
        evals = card.data.eval_results or []
        if card.data.model_name and evals:
            first = evals[0]
            value = first.metric_value if isinstance(first.metric_value, str) else f"{first.metric_value:.4f}"
            results[card.data.model_name] = f"{first.metric_name or first.metric_type} {value} ({first.dataset_split})"
    return results


def zoo_table_markdown(org: str = DEFAULT_ORG, results: Optional[Mapping[str, str]] = None) -> str:
    """The README table of the zoo: repository, what it is, parameters, metric, related models.

    results: ``{name: text}`` from ``results_from_folders``; entries without a published run say so.
    """
    results = dict(results or {})
    lines = ["| Status | Repository | Model | Task | Data | Parameters | Result | Teacher / base |",
             "|---|---|---|---|---|---|---|---|"]
    for entry in ZOO:
        published = entry.name in results  # only published repositories are links (others would be 404s)
        name = f"`{org}/{entry.name}`"
        link = f"[{name}](https://huggingface.co/{org}/{entry.name})" if published else name
        parent = entry.teacher or entry.base_model
        parent_text = (f"[`{parent}`](https://huggingface.co/{org}/{parent})" if parent in results else f"`{parent}`") \
            if parent else (entry.source or "—")
        lines.append(f"| {'published' if published else '**not published**'} | {link} | {entry.summary} | "
                     f"{TASKS[entry.task]['display']} | {DATASETS[entry.dataset]['display']} | "
                     f"{parameter_count(entry) / 1e6:.1f}M | {results.get(entry.name, '—')} | {parent_text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(zoo_table_markdown(*sys.argv[1:2]))
