# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""The papers' metrics on a split, as JSON and as Markdown tables in the papers' layout.

* SDDA-MAE (Tables 1-4): segmentation Dice(%), Jaccard(%), HD95, ASD; classification ACC(%), PRE(%), REC(%).
* ETMAE (Table 2): mAUC over the labels and the per-label AUC.

    medmae evaluate --model runs/busi_ft --data_root /data/BUSI --split test
    accelerate launch -m medmae.training.evaluate --model runs/nih_ft/final --data_root /data/NIH

By default the run's own data is evaluated: its dataset, arguments and split manifest from ``run_info.json`` (the
rebuilt split must hold exactly the recorded ids). ``--dataset`` evaluates elsewhere, but a split that shares
images with the run's training split is refused (``--allow_training_overlap`` reports it, labelled). A
pre-training checkpoint is refused: its heads are untrained.

Under several processes, predictions are collected with ``accelerator.gather_for_metrics`` so the samples
that pad the last batch never enter a metric. Segmentation is scored batch by batch on each process (per-case
Dice, Jaccard, HD95, ASD from ``metrics.segmentation_cases``) and only those per-case numbers are gathered, so
the memory an evaluation needs is O(batch) masks whatever the split size. The metric functions come from
``training/metrics.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from accelerate import Accelerator

from ..modeling import (
    ETMAEForImageClassification,
    MedMAEImageProcessor,
    SDDAMAEForImageClassification,
    SDDAMAEForSegmentationAndClassification,
)
from . import data
from .args import EvaluateArguments, parse_args
from .dataloading import (attach_transforms, load_splits, make_dataloader, resolve_num_workers,
                          synthetic_defaults)
from .metrics import classification_metrics, multilabel_auc, segmentation_cases, summarize_cases
from .provenance import model_folder
from .runtime import configure_threads, local_processes, resolve_mixed_precision


# ----------------------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model, dataloader, accelerator, kind: str, seg_classes: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Run ``model`` over a prepared dataloader and gather predictions and targets on every process.

    multilabel: ``probabilities`` [N, K] (sigmoid), ``labels`` [N, K] (+ ``label_mask``).
    singlelabel: ``cls_prob`` [N, C] (softmax), ``cls_true`` [N].
    segcls: ``seg_cases`` [N, S, 6] float64, the per-case segmentation values (``metrics.CASE_FIELDS``; S = 1 for
    a binary head, ``len(seg_classes) - 1`` foreground classes otherwise) computed on each process for its own
    batch, ``cls_prob`` [N, C] (softmax), ``cls_true`` [N]. No mask outlives its batch.
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
        elif kind == "singlelabel":
            add("cls_prob", torch.softmax(out.logits.float(), -1))
            add("cls_true", batch["labels"])
        else:
            cases = segmentation_cases(label_map(out.logits), batch["labels"], num_seg_classes(seg_classes))
            add("seg_cases", _gatherable(cases, accelerator))
            add("cls_prob", torch.softmax(out.class_logits.float(), -1))
            add("cls_true", batch["class_labels"])
    return {name: torch.cat(parts).numpy() for name, parts in chunks.items()}


def label_map(logits: torch.Tensor) -> torch.Tensor:
    """Segmentation logits [B, K, H, W] -> the predicted class map [B, H, W], uint8 (int32 for more than 256
    classes): the argmax of the fp32 logits, 1/8 of the int64 argmax's memory."""
    return logits.float().argmax(1).to(torch.uint8 if logits.shape[1] <= 256 else torch.int32)


def num_seg_classes(seg_classes: Sequence[str]) -> int:
    """The ``num_classes`` of ``metrics.segmentation_cases``: 2 (binary, label > 0 = foreground) for a head with
    at most two classes, else one mask per foreground class."""
    return max(len(seg_classes), 2)


def _gatherable(cases: np.ndarray, accelerator) -> torch.Tensor:
    """Per-case float64 values as a tensor ``gather_for_metrics`` can gather: on the accelerator's device under
    several processes (NCCL gathers CUDA tensors), on the CPU otherwise (float64 has no MPS support)."""
    tensor = torch.from_numpy(cases)
    return tensor.to(accelerator.device) if accelerator.num_processes > 1 else tensor


# ----------------------------------------------------------------------------------------------------
# Metrics (definitions and edge-case conventions: training/metrics.py)
# ----------------------------------------------------------------------------------------------------
def compute_metrics(kind: str, preds: dict[str, np.ndarray], label_names: Sequence[str] = (),
                    seg_classes: Sequence[str] = ()) -> dict:
    """Flat metric dict of a prediction dict from :func:`predict`.

    multilabel: ``mauc`` and ``auc/<label>`` (labels with one class in the truth are left out of the mean).
    segcls: ``dice``, ``jaccard``, ``hd95``, ``asd`` (pixels; a missed lesion counts the image diagonal),
    ``dice_positive`` (lesion images only), ``accuracy``, ``precision``, ``recall`` (the positive class for
    two classes, as for SIIM-ACR pneumothorax; macro averages otherwise, as for BUSI's three classes), and
    ``distance_convention`` (``medpy``: HD95 as the paper lineage computes it, see ``training/metrics.py``).
    The segmentation input is ``seg_cases`` (per-case values, from :func:`predict`) or whole-split label maps
    ``seg_pred`` / ``seg_true`` [N, H, W] (e.g. from ``transformers.Trainer``), scored the same way.
    """
    if kind == "multilabel":
        names = list(label_names) or [f"label_{k}" for k in range(preds["labels"].shape[1])]
        auc = multilabel_auc(preds["labels"], preds["probabilities"], names, preds.get("label_mask"))
        return {"mauc": auc["mean_auc"], **{f"auc/{k}": v for k, v in auc["per_label"].items()}}
    if kind == "singlelabel":
        return singlelabel_metrics(preds, label_names)
    seg = segmentation_summary(seg_cases_of(preds, seg_classes), seg_classes)
    num_classes = preds["cls_prob"].shape[1]
    cls = classification_metrics(preds["cls_true"], preds["cls_prob"], num_classes=num_classes)
    if num_classes == 2:
        positive = cls["per_class"]["1"]
        precision, recall = positive["precision"], positive["recall"]
    else:
        precision, recall = cls["precision_macro"], cls["recall_macro"]
    return {"dice": seg["dice"], "jaccard": seg["jaccard"], "hd95": seg["hd95"], "asd": seg["asd"],
            "dice_positive": seg["dice_positive"], **seg.get("per_class", {}), "accuracy": cls["accuracy"],
            "precision": precision, "recall": recall, "distance_convention": seg["distance_convention"]}


def seg_cases_of(preds: dict[str, np.ndarray], seg_classes: Sequence[str] = ()) -> np.ndarray:
    """The per-case segmentation values [N, S, 6] of a prediction dict: its ``seg_cases``, or those of its label
    maps ``seg_pred`` / ``seg_true`` [N, H, W]."""
    if "seg_cases" in preds:
        cases = np.asarray(preds["seg_cases"])
    elif "seg_pred" in preds and "seg_true" in preds:
        cases = segmentation_cases(preds["seg_pred"], preds["seg_true"], num_seg_classes(seg_classes))
    else:
        raise ValueError("segmentation predictions need 'seg_cases' (from predict) or the label maps 'seg_pred' and "
                         f"'seg_true'; got {sorted(preds)}")
    expected = num_seg_classes(seg_classes) - 1
    if cases.ndim != 3 or cases.shape[1] != expected:
        raise ValueError(f"seg_cases has shape {cases.shape}; {len(seg_classes)} segmentation classes need "
                         f"[N, {expected}, 6]")
    return cases


def segmentation_summary(cases: np.ndarray, seg_classes: Sequence[str] = ()) -> dict:
    """Per-case values [N, S, 6] -> the segmentation metrics: ``metrics.summarize_cases`` of the binary head (S = 1),
    or :func:`multiclass_segmentation_metrics`."""
    if cases.shape[1] == 1:
        return summarize_cases(cases[:, 0])
    return multiclass_segmentation_metrics(cases, seg_classes)


def multiclass_segmentation_metrics(cases: np.ndarray, classes: Sequence[str]) -> dict:
    """Several foreground classes: the binary metrics of each class (``pred == k`` vs ``true == k``, per-case values
    ``cases[:, k - 1]``), reported as ``dice/<class>`` ... and averaged over the foreground classes (classes whose
    value is None are left out)."""
    per = {name: summarize_cases(cases[:, k - 1]) for k, name in enumerate(classes) if k > 0}

    def mean(key):
        values = [m[key] for m in per.values() if m[key] is not None]
        return float(np.mean(values)) if values else None

    out = {key: mean(key) for key in ("dice", "jaccard", "hd95", "asd", "dice_positive")}
    out["distance_convention"] = next(iter(per.values()))["distance_convention"]
    out["per_class"] = {f"{key}/{name}": m[key] for name, m in per.items() for key in ("dice", "hd95")}
    return out


def singlelabel_metrics(preds: dict[str, np.ndarray], label_names: Sequence[str] = ()) -> dict:
    """Single-label classification: ``accuracy``, macro ``precision`` / ``recall`` / ``f1`` and the macro
    one-vs-rest ``auc`` (classes absent from the truth are left out of the mean; None when fewer than two
    classes are present), plus ``recall/<class>``."""
    from sklearn.metrics import roc_auc_score

    probs, truth = preds["cls_prob"], preds["cls_true"].astype(int)
    names = list(label_names) or [str(k) for k in range(probs.shape[1])]
    cls = classification_metrics(truth, probs, num_classes=probs.shape[1], class_names=names)
    present = [k for k in range(probs.shape[1]) if 0 < (truth == k).sum() < len(truth)]
    auc = float(np.mean([roc_auc_score(truth == k, probs[:, k]) for k in present])) if len(present) >= 2 else None
    return {"accuracy": cls["accuracy"], "precision": cls["precision_macro"], "recall": cls["recall_macro"],
            "f1": cls["f1_macro"], "auc": auc, **{f"recall/{n}": cls["per_class"][n]["recall"] for n in names}}


# ----------------------------------------------------------------------------------------------------
# Tables in the papers' layout
# ----------------------------------------------------------------------------------------------------
def _pct(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.2f}"


def _num(value) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"


def segmentation_table(rows: dict[str, dict], dataset: str) -> str:
    """SDDA-MAE Tables 1 / 3: ``| Method | Dice(%) | Jaccard(%) | HD95 | ASD |`` (the HD95 convention named)."""
    conventions = sorted({m.get("distance_convention") or "medpy" for m in rows.values() if m.get("hd95") is not None})
    convention = f" ({'/'.join(conventions)})" if conventions else ""
    lines = [f"Segmentation performances on {dataset}.", "",
             f"| Method | Dice(%) ↑ | Jaccard(%) ↑ | HD95{convention} ↓ | ASD ↓ |", "|---|---|---|---|---|"]
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
    if kind == "singlelabel":
        return classification_table({method: metrics}, dataset)
    return segmentation_table({method: metrics}, dataset) + "\n" + classification_table({method: metrics}, dataset)


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def load_finetuned(folder):
    """A fine-tuned ``save_pretrained`` folder -> (model, processor, kind); a pre-training checkpoint is refused
    (its classification / segmentation heads would be random)."""
    folder = model_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    single = config.get("problem_type") == "single_label_classification"
    classes = {"ETMAEForImageClassification": (ETMAEForImageClassification, "singlelabel" if single else "multilabel"),
               "SDDAMAEForImageClassification": (SDDAMAEForImageClassification, "singlelabel"),
               "SDDAMAEForSegmentationAndClassification": (SDDAMAEForSegmentationAndClassification, "segcls")}
    architectures = config.get("architectures") or []
    found = [classes[name] for name in architectures if name in classes]
    if not found:
        raise ValueError(f"{folder}: architectures {architectures} (model_type {config.get('model_type')!r}) is not a "
                         "medmae fine-tuned model; a pre-training checkpoint has no trained classification or "
                         "segmentation head, so its metrics would be those of random heads. Fine-tune it first "
                         "(medmae finetune --init_from ...)")
    cls, kind = found[0]
    return cls.from_pretrained(folder), MedMAEImageProcessor.from_pretrained(folder), kind


def run_record(model_path) -> tuple[Optional[dict], Optional[Path]]:
    """The ``run_info.json`` of the run that produced ``model_path`` (a run folder or its final/), and its folder."""
    for folder in (Path(model_path), Path(model_path).parent):
        if (folder / "run_info.json").is_file():
            return json.loads((folder / "run_info.json").read_text()), folder
    return None, None


def evaluation_data(args: EvaluateArguments, run: Optional[dict], run_dir: Optional[Path], image_size: int):
    """What to evaluate on: the run's own dataset, arguments and split manifest unless ``--dataset`` says otherwise."""
    if args.dataset is not None:
        seed = 0 if args.split_seed is None else args.split_seed
        return _EvalData(args.dataset, args.data_root, args.dataset_kwargs, seed, args.manifest, args, image_size,
                         (run or {}).get("hyperparameters", {}).get("augmentation"))
    if run is None:
        raise ValueError(f"{args.model}: no run_info.json beside the model, so the data it was trained on is unknown: "
                         "give --dataset (and --data_root)")
    recorded = run.get("hyperparameters", {})
    dataset = recorded.get("dataset") or run.get("dataset")
    if not dataset.startswith("synthetic") and not args.data_root and not args.dataset_path:
        raise ValueError(f"{args.model} was fine-tuned on {dataset}; give its folder with --data_root, or its prepared "
                         "folder with --dataset_path (runs record no local paths)")
    # synthetic sets are rebuilt from their seed and size (main checks the ids against the run's manifest)
    manifest = args.manifest or (str(run_dir / "split_manifest.json")
                                 if (run_dir / "split_manifest.json").is_file() and not dataset.startswith("synthetic")
                                 else None)
    seed = recorded.get("split_seed", 0) if args.split_seed is None else args.split_seed
    return _EvalData(dataset, args.data_root, args.dataset_kwargs or recorded.get("dataset_kwargs"), seed, manifest,
                     args, image_size, recorded.get("augmentation")).with_columns(recorded)


def run_manifest(run_dir: Optional[Path]) -> Optional[dict]:
    """The run's split manifest (``split_manifest.json``), read once; None when the run recorded none."""
    path = run_dir / "split_manifest.json" if run_dir is not None else None
    return data.load_split_manifest(path) if path is not None and path.is_file() else None


def check_same_split(manifest: Optional[dict], name: str, split, source: Path) -> bool:
    """The rebuilt split must hold exactly the ids the run recorded for it in ``manifest`` (read from ``source``);
    False: nothing recorded to check."""
    recorded = manifest["splits"].get(name) if manifest is not None and "image_id" in split.column_names else None
    if recorded is None:
        return False
    if sorted(map(str, split["image_id"])) != sorted(recorded):
        raise ValueError(f"the rebuilt {name} split ({len(split)} images) is not the one {source} records "
                         f"({len(recorded)} images): the data changed since the run (or --max_eval_samples truncates it)")
    return True


def training_overlap(manifest: Optional[dict], split) -> Optional[tuple[int, list[str]]]:
    """How many items of ``split`` are in the run's training split (by ``image_id``, from its split manifest), with
    up to 3 of them; None when unknown (no manifest or no ids)."""
    if manifest is None or "image_id" not in split.column_names:
        return None
    train = set(manifest["splits"].get("train", []))
    shared = [str(i) for i in split["image_id"] if str(i) in train]
    return len(shared), shared[:3]


def label_names_of(splits, dataset: str, num_labels: int) -> list[str]:
    """Multi-label names from the loader's recorded info or the known label tables."""
    info = getattr(splits, "medmae_split_info", {}) or {}
    names = info.get("labels")
    if not names:
        key = dataset.strip().lower().replace("-", "_")
        names = {"chestxray14": data.NIH_LABELS, "chexpert": data.CHEXPERT_COMPETITION_LABELS}.get(key)
    names = list(names or [])
    return names if len(names) == num_labels else [f"label_{k}" for k in range(num_labels)]


def main(argv: Optional[Sequence[str]] = None) -> dict:
    (args,) = parse_args("evaluate", list(sys.argv[1:] if argv is None else argv), (EvaluateArguments,))
    if not args.model:
        raise ValueError("--model is required (a fine-tuned final/ folder or its run folder)")
    model, processor, kind = load_finetuned(args.model)
    run, run_dir = run_record(args.model)
    num_parameters = sum(p.numel() for p in model.parameters())
    configure_threads(args.num_threads, num_parameters)
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=resolve_mixed_precision(args.mixed_precision, args.cpu,
                                                                                    num_parameters))
    data_args = evaluation_data(args, run, run_dir, model.config.image_size)
    splits = load_splits(data_args, model.config.image_size, **synthetic_defaults(data_args, model.config.image_size))
    if args.split not in splits:
        raise ValueError(f"split {args.split!r} not in the dataset (has {sorted(splits)})")
    manifest = run_manifest(run_dir)
    checked = check_same_split(manifest, args.split, splits[args.split], run_dir / "split_manifest.json") \
        if args.dataset is None else False
    overlap = training_overlap(manifest, splits[args.split])
    if overlap and overlap[0] and not args.allow_training_overlap:
        raise ValueError(
            f"--split {args.split} of {data_args.dataset} shares {overlap[0]} of {len(splits[args.split])} images with "
            f"the run's training split (e.g. {', '.join(overlap[1])}): its metrics would be inflated. Evaluate on the "
            "run's own data (omit --dataset), or pass --allow_training_overlap to report them labelled as such")
    seg_classes = list(model.config.id2label.values()) if kind == "segcls" else []
    dataset = attach_transforms({args.split: splits[args.split]}, kind, processor, data_args,
                                num_seg_classes=max(len(seg_classes), 2))[args.split]
    workers = resolve_num_workers(args.dataloader_num_workers, data_args.dataset, local_processes(accelerator))
    dataloader = accelerator.prepare(make_dataloader(dataset, args.per_device_eval_batch_size, False, 0, workers,
                                                     pin_memory=accelerator.device.type == "cuda"))
    model = accelerator.prepare(model)
    preds = predict(model, dataloader, accelerator, kind, seg_classes)
    names = label_names_of(splits, data_args.dataset, preds["labels"].shape[1]) if kind == "multilabel" else []
    metrics = compute_metrics(kind, preds, names, seg_classes)
    out = Path(args.output_dir) if args.output_dir else Path(args.model)
    method = run_dir.name if run_dir is not None else Path(args.model).resolve().name
    shared = overlap[0] if overlap else 0
    if shared:
        method += f" (WARNING: {shared} of {len(dataset)} images were in its training split)"
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        payload = {"model": method, "dataset": data_args.dataset, "split": args.split, "num_items": len(dataset),
                   "data_source": "the run's own" if args.dataset is None else "--dataset",
                   "manifest": Path(data_args.manifest).name if data_args.manifest else
                   ("split_manifest.json" if checked else None),
                   "training_overlap": overlap[0] if overlap else None,
                   "num_parameters": num_parameters, "metrics": metrics}
        (out / f"metrics_{args.split}.json").write_text(json.dumps(payload, indent=2))
        table = markdown_for(kind, metrics, method, f"{data_args.dataset} ({args.split})", num_parameters)
        (out / f"metrics_{args.split}.md").write_text(table)
        print(table)
        print(f"wrote {out / f'metrics_{args.split}.json'} and .md")
    return metrics


class _EvalData:
    """The DataArguments fields ``load_splits`` / ``attach_transforms`` read."""

    def __init__(self, dataset: str, data_root, dataset_kwargs, split_seed: int, manifest, args: EvaluateArguments,
                 image_size: int, recorded_augmentation: Optional[str] = None):
        self.dataset, self.data_root, self.dataset_kwargs = dataset, data_root, dataset_kwargs
        self.dataset_path = args.dataset_path
        self.split_seed, self.manifest = split_seed, manifest
        self.max_train_samples, self.max_eval_samples = None, args.max_eval_samples
        self.crop_scale_min, self.hflip, self.image_size = None, False, image_size
        # the run's recipe decides the evaluation geometry
        self.augmentation = args.augmentation or recorded_augmentation or "crop_flip"
        self.csv = self.image_column = self.label_columns = self.group_column = self.mask_column = None

    def with_columns(self, recorded: dict) -> "_EvalData":
        """The column mappings of ``--dataset csv`` / ``hf:NAME`` as the run recorded them."""
        for name in ("csv", "image_column", "label_columns", "group_column", "mask_column"):
            setattr(self, name, recorded.get(name))
        return self


if __name__ == "__main__":
    main()
