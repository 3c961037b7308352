# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Model cards of medmae checkpoints: ``ModelCardData`` (front matter + ``model-index``) and a Jinja body.

``build_model_card(model, processor, run_info)`` reads everything from the model (class, config, parameter
counts), its image processor (the preprocessing contract) and the run record (dataset, split, recipe,
metrics, provenance; see ``medmae.hub_cards.export`` for its keys). Nothing in a card is typed by hand
except the per-family prose in ``templates/<family>.md`` and the dataset and paper facts below.
"""

from __future__ import annotations

import hashlib
import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..training.data import CHEXPERT_OBSERVATIONS, MIXED_POLICY_ONES, NIH_LABELS

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

CITATIONS = {
    "etmae": """@misc{dassum_etmae,
  title        = {Knowledge Distillation for Efficient Tiny Masked Autoencoders for Medical Imaging},
  author       = {Dassum, Dani and Librandi, Maximo and Paez, Manuel},
  howpublished = {Department of Computer Science, Columbia University},
  note         = {ETMAE}
}""",
    "sdda_mae": """@misc{wang_sdda_mae,
  title  = {{SDDA-MAE}: Self-distillation enhanced Dual Attention Masked Autoencoder for Small-scale Medical Image Datasets},
  author = {Wang, Yunze and Chen, Silin and Wang, Tianyang and Liu, Jingxin},
  note   = {Short paper}
}""",
    "mae": """@inproceedings{he2022mae,
  title     = {Masked Autoencoders Are Scalable Vision Learners},
  author    = {He, Kaiming and Chen, Xinlei and Xie, Saining and Li, Yanghao and Doll{\\'a}r, Piotr and Girshick, Ross},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {16000--16009},
  year      = {2022}
}""",
    "medical_mae": """@inproceedings{xiao2023delving,
  title     = {Delving into Masked Autoencoders for Multi-Label Thorax Disease Classification},
  author    = {Xiao, Junfei and Bai, Yutong and Yuille, Alan and Zhou, Zongwei},
  booktitle = {Proceedings of the IEEE/CVF Winter Conference on Applications of Computer Vision (WACV)},
  pages     = {3588--3600},
  year      = {2023}
}""",
}

FAMILIES = {
    "etmae": dict(display="ETMAE", template="etmae.md", paper_short="Dassum, Librandi, Paez",
                  tags=["etmae", "vision-transformer", "knowledge-distillation"],
                  citations=["etmae", "mae", "medical_mae"]),
    "sdda_mae": dict(display="SDDA-MAE", template="sdda_mae.md", paper_short="Wang, Chen, Wang, Liu",
                     tags=["sdda-mae", "dual-attention", "self-distillation"], citations=["sdda_mae", "mae"]),
}

TASKS = {
    "pretraining": dict(display="masked-autoencoder pre-training", pipeline_tag="image-feature-extraction",
                        tags=["self-supervised"]),
    "distillation": dict(display="masked-autoencoder pre-training with knowledge distillation",
                         pipeline_tag="image-feature-extraction", tags=["self-supervised"]),
    "multilabel_classification": dict(display="multi-label classification", pipeline_tag="image-classification",
                                      tags=["multi-label-classification"]),
    "classification": dict(display="classification", pipeline_tag="image-classification", tags=[]),
    "segmentation": dict(display="semantic segmentation", pipeline_tag="image-segmentation", tags=["segmentation"]),
    "segmentation_classification": dict(display="joint segmentation and classification",
                                        pipeline_tag="image-segmentation", tags=["segmentation"]),
    "feature_extraction": dict(display="feature extraction", pipeline_tag="image-feature-extraction", tags=[]),
}

AUTO_PIPELINES = {
    "AutoModelForImageClassification": "image-classification",
    "AutoModelForSemanticSegmentation": "image-segmentation",
    "AutoModelForPreTraining": "image-feature-extraction",
    "AutoModel": "image-feature-extraction",
}

_NIH_BIASES = [
    "NIH ChestX-ray14 labels were text-mined from radiology reports with NLP, not read from the images; "
    "independent re-reads have found substantial label noise for several findings, so AUROCs partly measure "
    "agreement with the labeller.",
    "All images come from one US hospital (NIH Clinical Center), several per patient on average (follow-up "
    "studies): splits must be by patient, as the official lists are.",
]
DATASETS = {
    "chestxray14": dict(
        display="NIH ChestX-ray14", modality="chest-x-ray", license="other",
        url="https://nihcc.app.box.com/v/ChestXray-NIHCC",
        description="NIH ChestX-ray14 (Wang et al., 2017): 112,120 frontal chest radiographs of 30,805 patients "
                    "with 14 finding labels mined from the radiology reports.",
        biases=_NIH_BIASES),
    "chexpert": dict(
        display="CheXpert", modality="chest-x-ray", license="other",
        url="https://stanfordmlgroup.github.io/competitions/chexpert/",
        description="CheXpert (Irvin et al., 2019): chest radiographs from Stanford Hospital with 14 observations "
                    "extracted from reports by a rule-based labeller that also marks uncertain mentions.",
        biases=["CheXpert training labels come from an automatic report labeller; uncertain mentions must be "
                "mapped to 0 or 1 (or ignored) by a policy, which changes what the model learns (see the policy "
                "below).",
                "All images come from one US hospital system (Stanford); the official validation set is small "
                "(a few hundred studies) so its AUROCs have wide confidence intervals."]),
    "busi": dict(
        display="BUSI (Breast Ultrasound Images)", modality="ultrasound", license="other",
        url="https://scholar.cu.edu.eg/?q=afahmy/pages/dataset",
        description="BUSI (Al-Dhabyani et al., 2020): 780 breast ultrasound images (normal, benign, malignant) "
                    "with lesion masks.",
        biases=["BUSI is small (780 images) and was collected at a single hospital in Cairo, Egypt, from women aged "
                "25 to 75: expect weaker results on other scanners, sites and populations.",
                "Some BUSI images have been reported to be near-duplicates or to carry on-screen annotations, which "
                "can inflate test scores and act as shortcuts."]),
    "siim_acr": dict(
        display="SIIM-ACR Pneumothorax Segmentation", modality="chest-x-ray", license="other",
        url="https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation",
        description="SIIM-ACR Pneumothorax Segmentation (2019 challenge): chest radiographs with pneumothorax "
                    "masks.",
        biases=["Many positive SIIM-ACR images show chest drains that were placed to treat the pneumothorax; "
                "models can use the drain as a shortcut and miss untreated pneumothoraces, the clinically "
                "important case."]),
    "medical_mae_cxr": dict(
        display="chest X-ray pre-training corpus of medical_mae (Xiao et al., 2023)", modality="chest-x-ray",
        license="other", url="https://github.com/lambert-x/medical_mae",
        description="The public chest X-ray collections that Xiao et al. (2023) combined to pre-train their MAE "
                    "teachers; see their paper for the composition. medmae converted the released weights.",
        biases=["The teacher inherits the make-up of its public chest X-ray sources (largely from US hospitals); "
                "the caveats of those datasets apply."]),
    "synthetic_cxr": dict(
        display="synthetic chest-X-ray-like images (medmae demo data)", modality="synthetic", license="apache-2.0",
        url=None,
        description="Synthetic images generated by medmae for demos and tests; they contain no patient data.",
        biases=["Trained on synthetic images only: the model and its metrics have no medical meaning."]),
    "synthetic_ultrasound": dict(
        display="synthetic ultrasound-like images (medmae demo data)", modality="synthetic", license="apache-2.0",
        url=None,
        description="Synthetic images generated by medmae for demos and tests; they contain no patient data.",
        biases=["Trained on synthetic images only: the model and its metrics have no medical meaning."]),
}

# medmae label -> (NIH ChestX-ray14 name, CheXpert name). "≈": related, not identical findings.
_CROSSWALK_PAIRS = [
    ("Atelectasis", "Atelectasis"), ("Cardiomegaly", "Cardiomegaly"), ("Effusion", "Pleural Effusion"),
    ("Infiltration", "≈ Lung Opacity"), ("Mass", "≈ Lung Lesion"), ("Nodule", "≈ Lung Lesion"),
    ("Pneumonia", "Pneumonia"), ("Pneumothorax", "Pneumothorax"), ("Consolidation", "Consolidation"),
    ("Edema", "Edema"), ("Emphysema", "—"), ("Fibrosis", "—"), ("Pleural_Thickening", "≈ Pleural Other"),
    ("Hernia", "—"), ("No Finding", "No Finding"),
]
LABEL_CROSSWALK: dict[str, tuple[str, str]] = {}
for _nih, _chexpert in _CROSSWALK_PAIRS:
    LABEL_CROSSWALK[_nih] = (_nih, _chexpert)
    LABEL_CROSSWALK.setdefault(_chexpert.lstrip("≈ "), ("≈ " + _nih if _chexpert.startswith("≈") else _nih, _chexpert.lstrip("≈ ")))
for _name in CHEXPERT_OBSERVATIONS:
    LABEL_CROSSWALK.setdefault(_name, ("—", _name))
assert set(NIH_LABELS) <= set(LABEL_CROSSWALK)

UNCERTAINTY_TEXT = {
    "ones": "uncertain mentions (-1) were trained as positive (U-Ones).",
    "zeros": "uncertain mentions (-1) were trained as negative (U-Zeros).",
    "ignore": "uncertain mentions (-1) were left out of the loss (U-Ignore).",
    "mixed": f"U-Ones for {' and '.join(MIXED_POLICY_ONES)}, U-Zeros for the other labels "
             "(the policy of the CheXpert paper's best single models, also used by medical_mae).",
}

METRIC_NAMES = {
    "auroc": "macro AUROC", "macro_auroc": "macro AUROC", "roc_auc": "macro AUROC", "mauc": "macro AUROC",
    "accuracy": "accuracy", "f1": "F1", "macro_f1": "macro F1", "dice": "Dice", "iou": "IoU", "miou": "mean IoU",
    "hd95": "HD95", "jaccard": "Jaccard (IoU)", "asd": "ASD (average surface distance)", "reconstruction_loss": "reconstruction loss (MSE)", "loss": "loss",
}

# Config fields shown in the card's architecture list, when the config has them.
_CONFIG_FIELDS = ("image_size", "patch_size", "num_channels", "hidden_size", "hidden_sizes", "num_hidden_layers",
                  "encoder_depths", "decoder_depths", "num_attention_heads", "decoder_hidden_size",
                  "decoder_num_hidden_layers", "mask_ratio", "teacher_hidden_size", "student_align_layer",
                  "teacher_align_layer", "global_pool", "skip_mode", "cls_source", "problem_type")


# --------------------------------------------------------------------------------------------------
# Facts read from the model
# --------------------------------------------------------------------------------------------------
def auto_class_for(model_cls) -> Optional[str]:
    """The most specific transformers Auto class registered for ``model_cls`` (None when it has none)."""
    from ..modeling import AUTO_REGISTRY

    names = [auto for auto, _, cls in AUTO_REGISTRY if cls is model_cls]
    specific = [n for n in names if n != "AutoModel"]
    return (specific or names or [None])[0]


def infer_task(model) -> str:
    """The run task a model class stands for when ``run_info`` does not say."""
    name = type(model).__name__
    if name.endswith("ForSegmentationAndClassification"):
        return "segmentation_classification"
    if name.endswith("ForImageClassification"):
        multi = getattr(model.config, "problem_type", None) == "multi_label_classification"
        return "multilabel_classification" if multi else "classification"
    if name.endswith("ForSemanticSegmentation"):
        return "segmentation"
    if name.endswith("ForPreTraining"):
        return "pretraining"
    return "feature_extraction"


def pipeline_tag_for(model, task: Optional[str] = None) -> str:
    auto = auto_class_for(type(model))
    if auto in AUTO_PIPELINES and auto != "AutoModel":
        return AUTO_PIPELINES[auto]
    return TASKS[task or infer_task(model)]["pipeline_tag"]


def _count_str(count: int) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count / 1e3:.1f}k" if count >= 1e3 else str(count)


def parameter_counts(model) -> dict:
    """Total parameters and the count of each top-level part (encoder, decoder, heads)."""
    parts = []
    for name, child in model.named_children():
        count = sum(p.numel() for p in child.parameters())
        if count:
            parts.append(dict(name=name, count=count, count_str=f"{count:,}"))
    total = sum(p.numel() for p in model.parameters())
    return dict(total=total, total_str=f"{total:,} ({_count_str(total)})", parts=parts if len(parts) > 1 else [])


def preprocessing_contract(processor) -> dict:
    """The processor's contract as card rows."""
    size = processor.size
    channels = getattr(processor, "num_channels", 3)
    factor = getattr(processor, "rescale_factor", None)
    return dict(
        height=size["height"], width=size["width"], channels=channels, do_resize=getattr(processor, "do_resize", True),
        channel_note="grayscale is repeated to 3 channels, RGB is kept" if channels == 3
        else "RGB is converted to luminance",
        value_range=getattr(processor, "expected_value_range", "8-bit images"),
        rescale=("none" if not getattr(processor, "do_rescale", True)
                 else f"multiplied by {factor}" if factor is not None
                 else "divided by the full scale of the input type (255 for 8-bit, 65535 for 16-bit); floats are taken as [0, 1]"),
        do_normalize=getattr(processor, "do_normalize", True),
        mean=[round(float(v), 4) for v in processor.image_mean], std=[round(float(v), 4) for v in processor.image_std],
    )


def _label_rows(id2label: Optional[Mapping], crosswalk: bool) -> list[dict]:
    rows = []
    for index, name in sorted((int(k), v) for k, v in (id2label or {}).items()):
        nih, chexpert = LABEL_CROSSWALK.get(name, ("—", "—"))
        rows.append(dict(id=index, name=name, nih=nih, chexpert=chexpert))
    return rows


# --------------------------------------------------------------------------------------------------
# Facts read from the run
# --------------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def mean_sd(values: Iterable[float]) -> str:
    """``"mean ± sd"`` (sample sd) of per-seed values, 4 decimals."""
    values = [float(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def metric_rows(run_info: Mapping[str, Any]) -> list[dict]:
    """One row per metric of the run: its value, and mean ± sd when several seeds were run."""
    metrics = dict(run_info.get("metrics") or {})
    seeds = dict(run_info.get("metrics_over_seeds") or {})
    rows = []
    for name in list(metrics) + [n for n in seeds if n not in metrics]:
        values = seeds.get(name) or []
        value = metrics.get(name)
        rows.append(dict(key=name, display=METRIC_NAMES.get(name.lower(), name.replace("_", " ")),
                         value=(str(value) if isinstance(value, int) else f"{value:.4f}" if isinstance(value, float)
                                else "—"),
                         raw=value, mean_sd=mean_sd(values) if len(values) > 1 else None,
                         n_seeds=len(values) if len(values) > 1 else None))
    return rows


def eval_results(rows: list[dict], task_type: str, dataset_key: str, dataset_name: str, split: str) -> list[EvalResult]:
    """``model-index`` entries: the mean ± sd string when several seeds were run, else the run's number.
    Per-label metrics (``auc/Effusion``) stay in the card's table only."""
    results = []
    for row in rows:
        if "/" in row["key"]:
            continue
        value = row["mean_sd"] if row["mean_sd"] else row["raw"]
        if value is None:
            continue
        name = row["display"] + (f" (mean ± sd over {row['n_seeds']} seeds)" if row["mean_sd"] else "")
        results.append(EvalResult(task_type=task_type, dataset_type=dataset_key, dataset_name=dataset_name,
                                  dataset_split=split, metric_type=row["key"], metric_value=value, metric_name=name))
    return results


def _split_rows(split: Any) -> list[dict]:
    if not split:
        return []
    if not isinstance(split, Mapping):
        return [dict(name="definition", value=_fmt(split))]
    names = {"kind": "kind", "seed": "seed", "fractions": "fractions", "manifest_sha256": "manifest SHA-256"}
    rows = []
    for key, value in split.items():
        text = f"`{value}`" if key.endswith("sha256") else _fmt(value)
        if key == "kind":
            text = {"official": "official lists of the dataset", "seeded": "seeded random split"}.get(value, text)
        rows.append(dict(name=names.get(key, key.replace("_", " ")), value=text))
    return rows


def _uncertainty(policy: Any) -> Optional[dict]:
    if not policy:
        return None
    if isinstance(policy, Mapping):
        return dict(policy="per label", text="; ".join(f"{k}: {v}" for k, v in policy.items()) + ".")
    return dict(policy=str(policy), text=UNCERTAINTY_TEXT.get(str(policy), "see the training run."))


def _teacher_text(run_info: Mapping[str, Any]) -> Optional[str]:
    teacher = run_info.get("teacher")
    if isinstance(teacher, Mapping):
        teacher = teacher.get("repo_id") or teacher.get("description")
    if not teacher:
        return None
    return f"[{teacher}](https://huggingface.co/{teacher})" if _is_repo_id(teacher) else str(teacher)


def _is_repo_id(text: Any) -> bool:
    return isinstance(text, str) and text.count("/") == 1 and " " not in text and not text.startswith((".", "/"))


def _provenance_rows(run_info: Mapping[str, Any], medmae_version: str) -> list[dict]:
    rows = []
    teacher = _teacher_text(run_info)
    if teacher:
        rows.append(dict(name="teacher", value=teacher))
    for key, label in (("teacher_sha256", "teacher checkpoint SHA-256"),
                       ("source_checkpoint_sha256", "source checkpoint SHA-256 (converted or distilled from)"),
                       ("base_model", "fine-tuned from"), ("git_commit", "medmae commit of the run"),
                       ("medmae_version", "medmae version of the run")):
        if run_info.get(key):
            value = run_info[key]
            rows.append(dict(name=label, value=f"`{value}`" if "sha256" in key or key == "git_commit" else value))
    rows.append(dict(name="exported with", value=f"medmae {medmae_version}"))
    return rows


def _related(repo_id: Optional[str], run_info: Mapping[str, Any]) -> list[dict]:
    from .zoo import related_models

    rows = []
    for key, relation in (("base_model", "fine-tuned from"), ("teacher", "distilled from")):
        value = run_info.get(key)
        if isinstance(value, Mapping):
            value = value.get("repo_id")
        if _is_repo_id(value):
            rows.append(dict(relation=relation, repo_id=value))
    if repo_id:
        seen = {row["repo_id"] for row in rows}
        rows += [row for row in related_models(repo_id) if row["repo_id"] not in seen]
    return rows


def _file_rows(folder: Optional[Path]) -> tuple[list[dict], Optional[str]]:
    from .export import CARD_FILE, WEIGHTS_FILE, _human

    if folder is None:
        return [], None
    rows = [dict(name=p.name, size=_human(p.stat().st_size)) for p in sorted(Path(folder).iterdir())
            if p.is_file() and p.name != CARD_FILE]
    weights = Path(folder) / WEIGHTS_FILE
    digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None
    return rows, digest


def _reference_rows(reference: Optional[Mapping[str, Any]]) -> dict:
    from .export import REFERENCE_FILE

    reference = reference or {}
    outputs = [dict(name=k.split(".", 1)[1], shape=list(v.shape)) for k, v in reference.items() if k.startswith("output.")]
    names = [row["name"] for row in outputs]
    main = "logits" if "logits" in names else (names[0] if names else "logits")
    inputs = [k.split(".", 1)[1] for k in reference if k.startswith("input.")]
    return dict(file=REFERENCE_FILE, outputs=outputs, inputs=inputs, main_output=main)


# --------------------------------------------------------------------------------------------------
# The card
# --------------------------------------------------------------------------------------------------
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def render_card(template: str, card_data: ModelCardData, **context) -> ModelCard:
    """Render ``templates/<template>`` with ``card_data`` as YAML front matter (as ``ModelCard.from_template``
    does, but with a template loader so family templates can extend ``base.md``)."""
    content = _environment().get_template(template).render(card_data=card_data.to_yaml(), **context)
    return ModelCard(content)


def build_model_card(
    model,
    processor,
    run_info: Optional[Mapping[str, Any]] = None,
    repo_id: Optional[str] = None,
    reference: Optional[Mapping[str, Any]] = None,
    folder: Optional[Path] = None,
    redacted: Iterable[str] = (),
) -> ModelCard:
    """The model card of ``model`` as trained by the run ``run_info`` (keys: see ``medmae.hub_cards.export``).

    repo_id: the Hub id used in snippets and links. reference: ``export.reference_sample`` output (documented
    in the card). folder: the export folder whose files are listed (sizes, weights hash). redacted: run_info
    entries removed by sanitising, named in the card.
    """
    from .. import __version__

    run_info = dict(run_info or {})
    config = model.config
    family_key = run_info.get("family") or config.model_type
    if family_key not in FAMILIES:
        raise ValueError(f"no model-card template for family {family_key!r}; known: {', '.join(FAMILIES)}")
    family = FAMILIES[family_key]
    task = run_info.get("task") or infer_task(model)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    pipeline_tag = pipeline_tag_for(model, task)
    dataset_key = run_info.get("dataset")
    dataset = DATASETS.get(dataset_key) if dataset_key else None
    if dataset_key and dataset is None:
        dataset = dict(display=dataset_key, modality=None, license="other", url=None,
                       description=f"Dataset: {dataset_key}.", biases=[])
    model_name = repo_id.split("/")[-1] if repo_id else f"{family_key.replace('_', '-')}-{task.replace('_', '-')}"
    repo_id = repo_id or f"ORG/{model_name}"
    eval_split = run_info.get("eval_split") or "evaluation"

    rows = metric_rows(run_info)
    results = eval_results(rows, pipeline_tag, dataset_key or "unknown", dataset["display"] if dataset else "unknown",
                           eval_split) or None
    tags = ["medical-imaging", "masked-autoencoder", "medmae", *family["tags"], *TASKS[task]["tags"]]
    if dataset and dataset.get("modality"):
        tags.append(dataset["modality"])
    license_ = run_info.get("license") or (dataset["license"] if dataset else "apache-2.0")
    license_fields = {}
    if license_ == "other":
        license_fields = dict(license_name=f"{dataset_key or 'dataset'}-terms-of-use",
                              license_link=(dataset or {}).get("url") or "LICENSE")
    base_model = run_info.get("base_model")
    teacher = run_info.get("teacher")
    teacher_id = teacher.get("repo_id") if isinstance(teacher, Mapping) else teacher
    card_data = ModelCardData(
        model_name=model_name, library_name="transformers", pipeline_tag=pipeline_tag, license=license_,
        tags=list(dict.fromkeys(tags)), datasets=[dataset_key] if dataset_key else None,
        base_model=base_model if _is_repo_id(base_model) else (teacher_id if _is_repo_id(teacher_id) else None),
        metrics=[r.metric_type for r in results or []] or None, eval_results=results, **license_fields,
    )

    multilabel = getattr(config, "problem_type", None) == "multi_label_classification"
    seg_labels = _label_rows(config.id2label, False) if task in ("segmentation", "segmentation_classification") else []
    diagnosis = hasattr(config, "cls_id2label")  # families whose id2label holds segmentation classes
    label_source = None
    if task in ("multilabel_classification", "classification", "segmentation_classification"):
        label_source = config.cls_id2label if diagnosis else config.id2label
    crosswalk = bool(dataset and dataset.get("modality") == "chest-x-ray" and label_source
                     and any(name in LABEL_CROSSWALK for name in label_source.values()))
    pipeline_snippet = None
    if pipeline_tag == "image-classification":
        pipeline_snippet = "print(pipe(image, top_k=None))  # every label with its score"
    elif pipeline_tag == "image-segmentation":
        pipeline_snippet = "masks = pipe(image)  # one PIL mask per segmentation class"
    files, weights_sha256 = _file_rows(folder)
    auto_class = auto_class_for(type(model))
    from ..modeling.remote_code import auto_map_for

    remote_module = next(iter(v for k, v in auto_map_for(config.model_type)[0].items() if k != "AutoConfig")).split(".")[0]
    split = run_info.get("split")
    any_seeds = any(row["n_seeds"] for row in rows)
    headline = None
    if rows and rows[0]["raw"] is not None:
        headline = f"{rows[0]['display']} {rows[0]['mean_sd'] or rows[0]['value']} ({eval_split} split)"
    run_facts = [dict(name=label, value=_fmt(run_info[key])) for key, label in
                 (("seed", "seed of this checkpoint"), ("wall_time_s", "training wall time (s)"),
                  ("num_parameters", "parameters reported by the run")) if run_info.get(key) is not None]

    return render_card(
        family["template"], card_data,
        model_name=model_name, repo_id=repo_id, family=family, task=task, task_display=TASKS[task]["display"],
        pipeline_tag=pipeline_tag, architecture=type(model).__name__, model_type=config.model_type,
        auto_class=auto_class, remote_module=remote_module, params=parameter_counts(model),
        config_summary=[dict(name=f, value=_fmt(getattr(config, f))) for f in _CONFIG_FIELDS
                        if getattr(config, f, None) is not None],
        dataset=dataset, eval_split=eval_split, metrics=rows, any_seeds=any_seeds, headline=headline,
        hyperparameters=[dict(name=k, value=_fmt(v)) for k, v in (run_info.get("hyperparameters") or {}).items()
                         if v is not None],
        run_facts=run_facts, split_rows=_split_rows(split),
        uncertainty=_uncertainty(run_info.get("uncertainty_policy")),
        labels=_label_rows(label_source, crosswalk) if label_source else [],
        labels_title="Diagnosis classes (`config.cls_id2label`)" if diagnosis
        else "Output labels (`config.id2label`; one `logits` column each)",
        seg_labels=seg_labels, crosswalk=crosswalk, multilabel=multilabel, pipeline_snippet=pipeline_snippet,
        preprocessing=preprocessing_contract(processor), reference=_reference_rows(reference),
        provenance=_provenance_rows(run_info, __version__), related=_related(repo_id, run_info),
        files=files, weights_sha256=weights_sha256 or "not computed", medmae_version=__version__,
        git_commit=run_info.get("git_commit"), teacher=_teacher_text(run_info), base_model=base_model,
        source_note=run_info.get("source_note"), redacted=list(redacted),
        citations=[CITATIONS[key] for key in family["citations"]],
    )
