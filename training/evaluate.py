# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""The papers' metrics on a split, as JSON and as Markdown tables in the papers' layout.

* SDDA-MAE (Tables 1-4): segmentation Dice(%), Jaccard(%), HD95, ASD; classification ACC(%), PRE(%), REC(%).
* ETMAE (Table 2): mAUC over the labels and the per-label AUC.

    medmae evaluate --model runs/busi_ft --dataset busi --data_root /data/BUSI --split test
    accelerate launch -m medmae.training.evaluate --model runs/nih_ft/final --dataset chestxray14 --data_root ...

Under several processes, predictions are collected with ``accelerator.gather_for_metrics`` so the samples
that pad the last batch never enter a metric. The metric functions come from ``training/metrics.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .args import EvaluateArguments, parse_args

KINDS = {"multilabel_classification": "multilabel", "segmentation_classification": "segcls"}


# ----------------------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model, dataloader, accelerator, kind: str) -> dict[str, np.ndarray]:
    """Run ``model`` over a prepared dataloader and gather predictions and targets on every process.

    multilabel: ``probabilities`` [N, K] (sigmoid), ``labels`` [N, K] (+ ``label_mask``).
    segcls: ``seg_pred`` [N, H, W] (argmax), ``seg_true``, ``cls_prob`` [N, C] (softmax), ``cls_true`` [N].
    """
    model.eval()
    chunks: dict[str, list] = {}

    def add(name, tensor):
        chunks.setdefault(name, []).append(accelerator.gather_for_metrics(tensor.contiguous()).cpu())

    for batch in dataloader:
        with accelerator.autocast():
            out = model(pixel_values=batch["pixel_values"])
        if kind == "multilabel":
            add("probabilities", torch.sigmoid(out.logits.float()))
            add("labels", batch["labels"].float())
            if "label_mask" in batch:
                add("label_mask", batch["label_mask"].float())
        else:
            add("seg_pred", out.logits.float().argmax(1))
            add("seg_true", batch["labels"])
            add("cls_prob", torch.softmax(out.class_logits.float(), -1))
            add("cls_true", batch["class_labels"])
    return {name: torch.cat(parts).numpy() for name, parts in chunks.items()}


# ----------------------------------------------------------------------------------------------------
# Metrics (training/metrics.py when it provides them; the definitions below otherwise)
# ----------------------------------------------------------------------------------------------------
def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def _surface_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances (pixels) from the surface of ``a`` to the surface of ``b``."""
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~_surface(b))[_surface(a)]


def _segmentation_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Foreground (class > 0) metrics averaged over images. Dice/Jaccard: an image with empty truth and empty
    prediction scores 1 (SIIM-ACR convention). HD95/ASD (pixels, symmetric): over images where both are
    non-empty (``surface_images`` counts them)."""
    dice, jaccard, hd95, asd = [], [], [], []
    for p, t in zip(pred > 0, true > 0):
        inter, total, union = (p & t).sum(), p.sum() + t.sum(), (p | t).sum()
        dice.append(1.0 if total == 0 else 2.0 * inter / total)
        jaccard.append(1.0 if union == 0 else inter / union)
        if p.any() and t.any():
            d = np.concatenate([_surface_distances(p, t), _surface_distances(t, p)])
            hd95.append(float(np.percentile(d, 95)))
            asd.append(float(d.mean()))
    return {"dice": float(np.mean(dice)), "jaccard": float(np.mean(jaccard)),
            "hd95": float(np.mean(hd95)) if hd95 else float("nan"), "asd": float(np.mean(asd)) if asd else float("nan"),
            "surface_images": len(hd95)}


def _classification_metrics(prob: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """ACC, PRE, REC: positive class 1 for two classes, macro averages otherwise."""
    from sklearn.metrics import accuracy_score, precision_score, recall_score

    pred = prob.argmax(1)
    average = "binary" if prob.shape[1] == 2 else "macro"
    return {"accuracy": float(accuracy_score(true, pred)),
            "precision": float(precision_score(true, pred, average=average, zero_division=0)),
            "recall": float(recall_score(true, pred, average=average, zero_division=0))}


def _multilabel_auc(prob: np.ndarray, labels: np.ndarray, names: Sequence[str],
                    mask: Optional[np.ndarray] = None) -> dict[str, float]:
    """Per-label ROC AUC (labels with one class only are skipped, as medical_mae does) and their mean."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for k, name in enumerate(names):
        keep = np.ones(len(labels), bool) if mask is None else mask[:, k] > 0
        if len(np.unique(labels[keep, k])) == 2:
            out[f"auc/{name}"] = float(roc_auc_score(labels[keep, k], prob[keep, k]))
    return {"mauc": float(np.mean(list(out.values()))) if out else float("nan"), **out}


def _metrics_module():
    try:
        from . import metrics
    except ImportError:
        return None
    return metrics


def compute_metrics(kind: str, preds: dict[str, np.ndarray], label_names: Sequence[str] = ()) -> dict[str, float]:
    """Metric dict of a prediction dict from :func:`predict`."""
    if kind == "multilabel":
        names = list(label_names) or [f"label_{k}" for k in range(preds["labels"].shape[1])]
        return _multilabel_auc(preds["probabilities"], preds["labels"], names, preds.get("label_mask"))
    return {**_segmentation_metrics(preds["seg_pred"], preds["seg_true"]),
            **_classification_metrics(preds["cls_prob"], preds["cls_true"])}


# ----------------------------------------------------------------------------------------------------
# Tables in the papers' layout
# ----------------------------------------------------------------------------------------------------
def _pct(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.2f}"


def _num(value) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"


def segmentation_table(rows: dict[str, dict], dataset: str) -> str:
    """SDDA-MAE Tables 1 / 3: ``| Method | Dice(%) | Jaccard(%) | HD95 | ASD |``."""
    lines = [f"Segmentation performances on {dataset}.", "",
             "| Method | Dice(%) ↑ | Jaccard(%) ↑ | HD95 ↓ | ASD ↓ |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {_pct(m.get('dice'))} | {_pct(m.get('jaccard'))} | {_num(m.get('hd95'))} | "
              f"{_num(m.get('asd'))} |" for name, m in rows.items()]
    return "\n".join(lines) + "\n"


def classification_table(rows: dict[str, dict], dataset: str) -> str:
    """SDDA-MAE Tables 2 / 4: ``| Method | ACC(%) | PRE(%) | REC(%) |``."""
    lines = [f"Classification performances on {dataset}.", "",
             "| Method | ACC(%) ↑ | PRE(%) ↑ | REC(%) ↑ |", "|---|---|---|---|"]
    lines += [f"| {name} | {_pct(m.get('accuracy'))} | {_pct(m.get('precision'))} | {_pct(m.get('recall'))} |"
              for name, m in rows.items()]
    return "\n".join(lines) + "\n"


def mauc_table(rows: dict[str, dict], dataset: str, params: Optional[dict] = None) -> str:
    """ETMAE Table 2 (``| Method | #Params | mAUC |``) followed by the per-label AUC of every row."""
    params = params or {}
    lines = [f"mAUC on {dataset}.", "", "| Method | #Params | mAUC(%) ↑ |", "|---|---|---|"]
    lines += [f"| {name} | {_params(params.get(name))} | {_pct(m.get('mauc'))} |" for name, m in rows.items()]
    labels = sorted({k[4:] for m in rows.values() for k in m if k.startswith("auc/")})
    if labels:
        lines += ["", "| Method | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(_pct(m.get(f"auc/{label}")) for label in labels) + " |"
                  for name, m in rows.items()]
    return "\n".join(lines) + "\n"


def _params(count) -> str:
    return "-" if not count else (f"{count / 1e6:.1f}M" if count >= 1e6 else f"{count / 1e3:.0f}k")


def markdown_for(kind: str, metrics: dict, method: str, dataset: str, num_parameters: Optional[int] = None) -> str:
    if kind == "multilabel":
        return mauc_table({method: metrics}, dataset, {method: num_parameters})
    return segmentation_table({method: metrics}, dataset) + "\n" + classification_table({method: metrics}, dataset)


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def load_finetuned(folder):
    """A fine-tuned ``save_pretrained`` folder -> (model, processor, kind)."""
    from ..modeling import ETMAEForImageClassification, MedMAEImageProcessor, SDDAMAEForSegmentationAndClassification
    from .loop import model_folder

    folder = model_folder(folder)
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type == "etmae":
        model, kind = ETMAEForImageClassification.from_pretrained(folder), "multilabel"
    elif model_type == "sdda_mae":
        model, kind = SDDAMAEForSegmentationAndClassification.from_pretrained(folder), "segcls"
    else:
        raise ValueError(f"{folder}: model_type {model_type!r} is not a medmae fine-tuned model")
    return model, MedMAEImageProcessor.from_pretrained(folder), kind


def label_names_of(splits, dataset: str, num_labels: int) -> list[str]:
    """Multi-label names from the loader's recorded info or the known label tables."""
    from . import data

    info = getattr(splits, "medmae_split_info", {}) or {}
    names = info.get("labels")
    if not names:
        key = dataset.strip().lower().replace("-", "_")
        names = {"chestxray14": data.NIH_LABELS, "chexpert": data.CHEXPERT_COMPETITION_LABELS}.get(key)
    names = list(names or [])
    return names if len(names) == num_labels else [f"label_{k}" for k in range(num_labels)]


def main(argv: Optional[Sequence[str]] = None) -> dict:
    from accelerate import Accelerator

    from .loop import attach_transforms, configure_threads, load_splits, make_dataloader, resolve_mixed_precision

    (args,) = parse_args("evaluate", list(sys.argv[1:] if argv is None else argv), (EvaluateArguments,))
    if not args.model:
        raise ValueError("--model is required (a fine-tuned final/ folder or its run folder)")
    model, processor, kind = load_finetuned(args.model)
    num_parameters = sum(p.numel() for p in model.parameters())
    configure_threads(args.num_threads, num_parameters)
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=resolve_mixed_precision(args.mixed_precision, args.cpu,
                                                                                    num_parameters))
    data_args = _EvalData(args, model.config.image_size)
    splits = load_splits(data_args, **_synthetic_size(args, model.config.image_size))
    if args.split not in splits:
        raise ValueError(f"split {args.split!r} not in the dataset (has {sorted(splits)})")
    dataset = attach_transforms({args.split: splits[args.split]}, kind, processor, data_args)[args.split]
    dataloader = accelerator.prepare(make_dataloader(dataset, args.batch_size, False, 0, args.num_workers))
    model = accelerator.prepare(model)
    preds = predict(model, dataloader, accelerator, kind)
    names = label_names_of(splits, args.dataset, preds["labels"].shape[1]) if kind == "multilabel" else []
    metrics = compute_metrics(kind, preds, names)
    out = Path(args.output_dir) if args.output_dir else Path(args.model)
    method = Path(args.model).resolve().name
    if method == "final":
        method = Path(args.model).resolve().parent.name
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        payload = {"model": method, "dataset": args.dataset, "split": args.split, "num_items": len(dataset),
                   "num_parameters": num_parameters, "metrics": metrics}
        (out / f"metrics_{args.split}.json").write_text(json.dumps(payload, indent=2))
        table = markdown_for(kind, metrics, method, f"{args.dataset} ({args.split})", num_parameters)
        (out / f"metrics_{args.split}.md").write_text(table)
        print(table)
        print(f"wrote {out / f'metrics_{args.split}.json'} and .md")
    return metrics


class _EvalData:
    """The DataArguments fields ``load_splits`` / ``attach_transforms`` read, from EvaluateArguments."""

    def __init__(self, args: EvaluateArguments, image_size: int):
        self.dataset, self.data_root, self.dataset_kwargs = args.dataset, args.data_root, args.dataset_kwargs
        self.split_seed, self.manifest = args.split_seed, args.manifest
        self.max_train_samples, self.max_eval_samples = None, args.max_eval_samples
        self.crop_scale_min, self.hflip, self.image_size = None, False, image_size


def _synthetic_size(args, image_size: int) -> dict:
    from .loop import synthetic_defaults

    return synthetic_defaults(args, image_size)


if __name__ == "__main__":
    main()
