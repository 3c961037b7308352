# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Model cards of medmae checkpoints: ``ModelCardData`` (front matter + ``model-index``) and a Jinja body.

``build_model_card(model, processor, run_info)`` reads everything from the model (class, config, parameter
counts), its image processor (the preprocessing contract) and the run record (dataset, split, recipe,
metrics, provenance; see ``medmae.hub_cards.export`` for its keys). Nothing in a card is typed by hand
except the per-family prose in ``templates/<family>.md`` and the dataset and paper facts of
``medmae.hub_cards.catalogue``.
"""

from __future__ import annotations

import hashlib
import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .. import __version__
from ..modeling import AUTO_REGISTRY
from .catalogue import (
    AUTO_PIPELINES,
    CITATIONS,
    DATASETS,
    FAMILIES,
    LABEL_CROSSWALK,
    METRIC_NAMES,
    METRIC_TYPES,
    TASKS,
    UNCERTAINTY_TEXT,
)
from .layout import CARD_FILE, REFERENCE_FILE, WEIGHTS_FILE, human_size
from .run_records import run_reference
from .zoo import related_models

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

# Recipe entries that apply only under a condition on the run's other entries (anything else applies always);
# run mechanics (threads, logging, checkpoint cadence, progress bars) are not part of a recipe.
_RUN_MECHANICS = {"num_workers", "dataloader_num_workers", "num_threads", "progress_bar", "report_to", "figures", "save_steps",
                  "save_total_limit", "logging_steps", "eval_test", "overwrite", "resume", "resume_from_checkpoint", "output_dir", "cpu",
                  "debug_nan_at_step", "debug_step_delay", "config", "data_root", "dataset_path", "manifest", "init_from", "teacher",
                  "family", "task", "from_scratch", "lr_effective"}
_APPLIES_WHEN = {
    "momentum": lambda hp, task: hp.get("optimizer") == "sgd",
    "adam_beta1": lambda hp, task: hp.get("optimizer") in ("adamw", "adam"),
    "adam_beta2": lambda hp, task: hp.get("optimizer") in ("adamw", "adam"),
    "poly_power": lambda hp, task: hp.get("lr_scheduler_type", hp.get("scheduler")) == "poly",
    "min_lr": lambda hp, task: hp.get("lr_scheduler_type", hp.get("scheduler")) == "cosine",
    "warmup_epochs": lambda hp, task: hp.get("warmup_ratio") is None and hp.get("warmup_steps") is None,
    "warmup_ratio": lambda hp, task: hp.get("warmup_steps") is None,
    "teacher_num_heads": lambda hp, task: task == "distillation",
    "teacher_normalization": lambda hp, task: task == "distillation",
    "mask_ratio": lambda hp, task: task in ("pretraining", "distillation"),
    "sd_warmup": lambda hp, task: task == "pretraining",
    "transfer": lambda hp, task: task == "segmentation_classification",
    "drop_path_rate": lambda hp, task: task not in ("pretraining", "distillation"),
    "layer_decay": lambda hp, task: task not in ("pretraining", "distillation"),
    "max_steps": lambda hp, task: bool(hp.get("max_steps")),
    "max_grad_norm": lambda hp, task: bool(hp.get("max_grad_norm")),
}


def applied_hyperparameters(hyperparameters: Mapping[str, Any], task: Optional[str]) -> dict:
    """The recipe as it applied to this run: set values only, no run mechanics, no entries whose condition
    (optimizer, schedule, task) did not hold -- e.g. no SGD momentum on an AdamW run."""
    hp = dict(hyperparameters or {})
    return {k: v for k, v in hp.items() if v is not None and k not in _RUN_MECHANICS
            and _APPLIES_WHEN.get(k, lambda *_: True)(hp, task)}


# Config fields shown in the card's architecture list, when the config has them.
_CONFIG_FIELDS = ("image_size", "patch_size", "num_channels", "hidden_size", "hidden_sizes", "num_hidden_layers",
                  "encoder_depths", "decoder_depths", "num_attention_heads", "decoder_hidden_size",
                  "decoder_num_hidden_layers", "mask_ratio", "teacher_hidden_size", "student_align_layer",
                  "teacher_align_layer", "global_pool", "skip_mode", "cls_source", "problem_type")


# --------------------------------------------------------------------------------------------------
# Facts read from the model
# --------------------------------------------------------------------------------------------------
def auto_class_for(model_cls) -> Optional[str]:
    """The most specific transformers Auto class that loads ``model_cls`` from its own folder (None when none):
    a registered one, or the slot the class takes in its saved ``auto_map`` (``remote_auto_class``)."""
    names = [auto for auto, _, cls in AUTO_REGISTRY if cls is model_cls]
    specific = [n for n in names if n != "AutoModel"]
    return (specific or names or [getattr(model_cls, "remote_auto_class", None)])[0]


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
    convention = metrics.get("distance_convention")
    rows = []
    for name in list(metrics) + [n for n in seeds if n not in metrics]:
        values = seeds.get(name) or []
        value = metrics.get(name)
        if isinstance(value, str):  # labels of the numbers (distance_convention), not metrics
            continue
        display = METRIC_NAMES.get(name.lower(), name.replace("_", " "))
        if convention and name.lower() in ("hd95", "asd"):
            display += f", {convention} convention"
        rows.append(dict(key=name, display=display,
                         value=(str(value) if isinstance(value, int) else f"{value:.4f}" if isinstance(value, float)
                                else "—"),
                         raw=value, mean_sd=mean_sd(values) if len(values) > 1 else None,
                         mean=statistics.fmean(values) if len(values) > 1 else None,
                         sd=statistics.stdev(values) if len(values) > 1 else None,
                         n_seeds=len(values) if len(values) > 1 else None))
    return rows


def eval_results(rows: list[dict], task_type: str, dataset_key: str, dataset_name: str, split: str) -> list[EvalResult]:
    """``model-index`` entries with numeric values: the mean over seeds when several were run (the sd is in the
    metric's name), else the run's number; metric types the Hub knows (:data:`METRIC_TYPES`). Per-label metrics
    (``auc/Effusion``) stay in the card's table only."""
    results = []
    for row in rows:
        if "/" in row["key"] or row["raw"] is None and not row["mean_sd"]:
            continue
        if row["mean_sd"]:
            value, sd = row["mean"], row["sd"]
            name = f"{row['display']} (mean over {row['n_seeds']} seeds, sd {sd:.4f})"
        else:
            value, name = float(row["raw"]), row["display"]
        results.append(EvalResult(task_type=task_type, dataset_type=dataset_key, dataset_name=dataset_name,
                                  dataset_split=split, metric_type=METRIC_TYPES.get(row["key"].lower(), row["key"]),
                                  metric_value=round(value, 6), metric_name=name))
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
    teacher = run_reference(run_info, "teacher")
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
    rows = []
    for key, relation in (("base_model", "fine-tuned from"), ("teacher", "distilled from")):
        value = run_reference(run_info, key)
        if _is_repo_id(value):
            rows.append(dict(relation=relation, repo_id=value))
    if repo_id:
        seen = {row["repo_id"] for row in rows}
        rows += [row for row in related_models(repo_id) if row["repo_id"] not in seen]
    return rows


def _file_rows(folder: Optional[Path], files_sha256: Optional[Mapping[str, str]] = None
               ) -> tuple[list[dict], Optional[str]]:
    """(file rows with sizes, the weights' SHA-256: from ``files_sha256`` when the exporter already has it)."""
    if folder is None:
        return [], None
    rows = [dict(name=p.name, size=human_size(p.stat().st_size)) for p in sorted(Path(folder).iterdir())
            if p.is_file() and p.name != CARD_FILE]
    weights = Path(folder) / WEIGHTS_FILE
    digest = (files_sha256 or {}).get(WEIGHTS_FILE) or \
        (hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None)
    return rows, digest


def _reference_rows(reference: Optional[Mapping[str, Any]]) -> dict:
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
    files_sha256: Optional[Mapping[str, str]] = None,
) -> ModelCard:
    """The model card of ``model`` as trained by the run ``run_info`` (keys: see ``medmae.hub_cards.export``).

    repo_id: the Hub id used in snippets and links. reference: ``export.reference_sample`` output (documented
    in the card). folder: the export folder whose files are listed (sizes, weights hash). redacted: run_info
    entries removed by sanitising, named in the card. files_sha256: the SHA-256 of every shipped file but the card
    and the manifest, kept in the card's metadata (``medmae_files_sha256``) for ``medmae verify``.
    """
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
    teacher_id = run_reference(run_info, "teacher")
    distilled = task == "distillation" or bool(teacher_id)
    tags = ["medical-imaging", "masked-autoencoder", "medmae", *family["tags"], *TASKS[task]["tags"],
            *(["knowledge-distillation"] if distilled else [])]
    if dataset and dataset.get("modality"):
        tags.append(dataset["modality"])
    license_ = run_info.get("license") or (dataset["license"] if dataset else "apache-2.0")
    license_fields = {}
    if license_ == "other":
        license_fields = dict(license_name=f"{dataset_key or 'dataset'}-terms-of-use",
                              license_link=(dataset or {}).get("url") or "LICENSE")
    base_model = run_reference(run_info, "base_model")
    hub_datasets = [d for d in (run_info.get("dataset_hub_id"),) if _is_repo_id(d)]
    card_data = ModelCardData(
        model_name=model_name, library_name="transformers", pipeline_tag=pipeline_tag, license=license_,
        tags=list(dict.fromkeys(tags)), datasets=hub_datasets or None,  # only real Hub dataset ids
        # a distilled student is not a fine-tune of its teacher: the teacher is a tag and a link, not base_model
        base_model=base_model if _is_repo_id(base_model) else None,
        metrics=[r.metric_type for r in results or []] or None, eval_results=results, **license_fields,
        **({"medmae_files_sha256": dict(files_sha256)} if files_sha256 else {}),
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
        pipeline_snippet = "print(pipe(image, top_k=pipe.model.config.num_labels))  # every label (top_k=None: 5)"
    elif pipeline_tag == "image-segmentation":
        pipeline_snippet = "masks = pipe(image)  # one PIL mask per segmentation class"
    files, weights_sha256 = _file_rows(folder, files_sha256)
    auto_class = auto_class_for(type(model))
    local_auto_class = auto_class if auto_class != getattr(type(model), "remote_auto_class", None) else None

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
        auto_class=auto_class, local_auto_class=local_auto_class, params=parameter_counts(model),
        config_summary=[dict(name=f, value=_fmt(getattr(config, f))) for f in _CONFIG_FIELDS
                        if getattr(config, f, None) is not None],
        dataset=dataset, eval_split=eval_split, metrics=rows, any_seeds=any_seeds, headline=headline,
        hyperparameters=[dict(name=k, value=_fmt(v)) for k, v in
                         applied_hyperparameters(run_info.get("hyperparameters") or {}, task).items()],
        run_facts=run_facts, split_rows=_split_rows(split),
        uncertainty=_uncertainty(run_info.get("uncertainty_policy")),
        labels=_label_rows(label_source, crosswalk) if label_source else [],
        labels_title="Diagnosis classes (`config.cls_id2label`)" if diagnosis
        else "Output labels (`config.id2label`; one `logits` column each)",
        seg_labels=seg_labels, crosswalk=crosswalk, multilabel=multilabel, pipeline_snippet=pipeline_snippet,
        preprocessing=preprocessing_contract(processor), reference=_reference_rows(reference),
        provenance=_provenance_rows(run_info, __version__), related=_related(repo_id, run_info),
        files=files, weights_sha256=weights_sha256, medmae_version=__version__,
        manifest_sha256=(split or {}).get("manifest_sha256") if isinstance(split, Mapping) else None,
        git_commit=run_info.get("git_commit"), teacher=_teacher_text(run_info), base_model=base_model,
        source_note=run_info.get("source_note"), redacted=list(redacted),
        citations=[CITATIONS[key] for key in family["citations"]],
    )
