"""Segmentation evaluation at scale (GitHub issue #15): memory of the test pass and speed of HD95 + ASD.

(a) **Peak extra memory of the segmentation test pass** on a split of ``--cases`` synthetic 512 px cases, through
    the real Accelerate path (prepared DataLoader, ``gather_for_metrics``, ``compute_metrics``), old vs new:

    * ``old``: the former ``evaluate.predict`` -- the int64 argmax maps and int64 true masks of the whole split
      gathered and concatenated, then scored in one call (its per-case distance code does not change the peak:
      a few full-image float64 maps per case);
    * ``new``: ``evaluate.predict`` as it is now -- each batch scored on its process (uint8 maps, per-case values
      from ``metrics.segmentation_cases``), only the per-case numbers gathered.

    The "model" returns the cases' predicted masks as logits (a network's activations would add the same O(batch)
    to both variants and hide nothing), so the pass measures evaluation alone. Memory: ``VmHWM - VmRSS(before)``
    after ``malloc_trim`` and ``clear_refs`` (``benchmarks.common.peak_memory_mib``). Both variants must give the
    same metric dict.

(b) **HD95 + ASD time** on ``--pairs`` lesion pairs at 512 px (both masks non-empty), interleaved: the former
    implementation (full-image distance transforms, ``hd95()`` and ``asd()`` each computing their own -- frozen
    below), the new ``metrics.case_metrics`` (bounding-box crop, one pair of transforms for both), and MONAI
    (``compute_hausdorff_distance(percentile=95)`` + ``compute_average_surface_distance(symmetric=True)`` on the
    batch [P, 1, H, W]). Ratios are MONAI's time / ours (> 1: faster than MONAI).

    OMP_NUM_THREADS=1 python -m benchmarks.seg_eval_bench [--cases 500] [--size 512] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from types import SimpleNamespace

import numpy as np
import torch
from scipy import ndimage

from benchmarks.common import compare, loadavg, paired_ratio, peak_memory_mib
from medmae.training import evaluate, metrics

BINARY = ["background", "lesion"]


# --------------------------------------------------------------------------------------------------
# Synthetic cases: lesion masks and predictions of them
# --------------------------------------------------------------------------------------------------
def lesion(rng: np.random.Generator, size: int) -> np.ndarray:
    """bool [size, size]: one or two lobed ellipses of radius 8-90 px (at 512 px)."""
    scale = size / 512
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(rng.integers(1, 3)):
        cy, cx = rng.integers(int(60 * scale), size - int(60 * scale), 2)
        ry, rx = rng.integers(max(int(8 * scale), 2), max(int(90 * scale), 3), 2)
        angle = np.arctan2(yy - cy, xx - cx)
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1 + 0.3 * np.sin(angle * rng.integers(2, 7))
    return mask


def predicted(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """The truth shifted by up to 6 px and grown (1-3 px) or shrunk (1-2 px)."""
    mask = ndimage.shift(truth.astype(np.uint8), rng.integers(-6, 7, 2), order=0).astype(bool)
    if rng.random() < 0.5:
        return ndimage.binary_dilation(mask, iterations=int(rng.integers(1, 4)))
    return ndimage.binary_erosion(mask, iterations=int(rng.integers(1, 3)))


def case(index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(pred, true) bool [size, size] of case ``index``: 40% lesions (of which 1 in 8 missed), 60% negatives (of
    which 1 in 10 with a false-positive prediction), like a pneumothorax test split."""
    rng = np.random.default_rng(index)
    if rng.random() < 0.4:
        truth = lesion(rng, size)
        return (np.zeros_like(truth) if rng.random() < 0.125 else predicted(rng, truth)), truth
    empty = np.zeros((size, size), bool)
    return (lesion(rng, size) if rng.random() < 0.1 else empty), empty


class CaseDataset(torch.utils.data.Dataset):
    """Items generated on demand (the split is never held): ``pixel_values`` = the one-hot prediction [2, H, W]
    (the model below passes it through as logits), ``labels`` int64 [H, W], ``class_labels``."""

    def __init__(self, num_cases: int, size: int):
        self.num_cases, self.size = num_cases, size

    def __len__(self) -> int:
        return self.num_cases

    def __getitem__(self, index: int) -> dict:
        pred, true = case(index, self.size)
        one_hot = torch.from_numpy(np.stack([~pred, pred])).float()
        return {"pixel_values": one_hot, "labels": torch.from_numpy(true.astype(np.int64)),
                "class_labels": torch.tensor(int(true.any()))}


class PassThrough(torch.nn.Module):
    """Segmentation logits = the input; class logits = the mean of each input channel."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, pixel_values):
        return SimpleNamespace(logits=pixel_values * self.scale, class_logits=pixel_values.mean((2, 3)) * self.scale)


# --------------------------------------------------------------------------------------------------
# The former implementation (commit 2293278), frozen for the comparison
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def old_predict(model, dataloader, accelerator) -> dict[str, np.ndarray]:
    """The former ``evaluate.predict`` for segcls: whole-split int64 maps and masks on every process."""
    chunks: dict[str, list] = {}

    def add(name, tensor):
        chunks.setdefault(name, []).append(accelerator.gather_for_metrics(tensor.contiguous()).cpu())

    for batch in dataloader:
        out = model(pixel_values=batch["pixel_values"])
        add("seg_pred", out.logits.float().argmax(1))
        add("seg_true", batch["labels"])
        add("cls_prob", torch.softmax(out.class_logits.float(), -1))
        add("cls_true", batch["class_labels"])
    return {name: torch.cat(parts).numpy() for name, parts in chunks.items()}


def old_surface_distances(p: np.ndarray, t: np.ndarray):
    """Full-image boundary distance transforms (the former ``metrics.surface_distances``, pixels)."""
    edge_p = p ^ ndimage.binary_erosion(p, structure=metrics._CROSS)
    edge_t = t ^ ndimage.binary_erosion(t, structure=metrics._CROSS)
    to_t = ndimage.distance_transform_edt(~edge_t, sampling=(1.0, 1.0))
    to_p = ndimage.distance_transform_edt(~edge_p, sampling=(1.0, 1.0))
    return to_t[edge_p], to_p[edge_t]


def old_hd95_asd(p: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """The former ``hd95()`` then ``asd()`` on a pair of non-empty masks: two pairs of transforms."""
    a, b = old_surface_distances(p, t)
    hd = float(np.percentile(np.concatenate([a, b]), 95))
    a, b = old_surface_distances(p, t)
    return hd, float(np.concatenate([a, b]).mean())


# --------------------------------------------------------------------------------------------------
# (a) memory of the test pass
# --------------------------------------------------------------------------------------------------
def _accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(cpu=True)


def test_pass(variant: str, num_cases: int, size: int, batch_size: int) -> dict:
    """One segmentation test pass of ``variant`` (old | new) -> its metric dict (and the seconds it took)."""
    accelerator = _accelerator()
    loader = accelerator.prepare(torch.utils.data.DataLoader(CaseDataset(num_cases, size), batch_size=batch_size))
    model = accelerator.prepare(PassThrough())
    start = time.perf_counter()
    if variant == "old":
        preds = old_predict(model, loader, accelerator)
    else:
        preds = evaluate.predict(model, loader, accelerator, "segcls", BINARY)
    result = evaluate.compute_metrics("segcls", preds, seg_classes=BINARY)
    return {"metrics": result, "seconds": time.perf_counter() - start}


def memory_section(num_cases: int, size: int, batch_size: int, reps: int, log) -> dict:
    device = torch.device("cpu")
    samples: dict[str, list] = {"old": [], "new": []}
    results: dict[str, dict] = {}
    for rep in range(reps):
        for variant in ("new", "old"):
            holder = {}
            memory = peak_memory_mib(lambda: holder.update(test_pass(variant, num_cases, size, batch_size)), device)
            samples[variant].append({"peak_mib": memory["step_peak_mib"], "seconds": holder["seconds"],
                                     "loadavg": loadavg()})
            results[variant] = holder["metrics"]
            log(f"  rep {rep} {variant}: peak extra {memory['step_peak_mib']:.1f} MiB, {holder['seconds']:.1f} s, "
                f"load {loadavg()}")
    return {"samples": samples, "metrics_equal": results["old"] == results["new"], "metrics": results["new"],
            "method": "VmHWM - VmRSS(before) after malloc_trim + clear_refs=5"}


# --------------------------------------------------------------------------------------------------
# (b) HD95 + ASD vs MONAI
# --------------------------------------------------------------------------------------------------
def lesion_pairs(num_pairs: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """bool [P, size, size] (pred, true), both non-empty."""
    rng = np.random.default_rng(12345)
    trues = [lesion(rng, size) for _ in range(num_pairs)]
    return np.stack([predicted(rng, t) for t in trues]), np.stack(trues)


def distance_section(num_pairs: int, size: int, reps: int, log) -> dict:
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    pred, true = lesion_pairs(num_pairs, size)
    yp, yt = torch.from_numpy(pred[:, None]), torch.from_numpy(true[:, None])

    def monai():
        hd = compute_hausdorff_distance(yp, yt, include_background=True, percentile=95)
        return hd, compute_average_surface_distance(yp, yt, include_background=True, symmetric=True)

    fns = {"old": lambda: [old_hd95_asd(p, t) for p, t in zip(pred, true)],
           "new": lambda: [metrics.case_metrics(p, t, convention="monai") for p, t in zip(pred, true)],
           "monai": monai}
    timings = compare(fns, torch.device("cpu"), warmup=1, reps=reps, log=log)
    hd, sd = monai()
    ours = np.array([metrics.case_metrics(p, t, convention="monai")[2:4] for p, t in zip(pred, true)])
    old = np.array(fns["old"]())
    medpy_ours = np.array([metrics.case_metrics(p, t)[2:4] for p, t in zip(pred, true)])
    return {"timings": timings, "monai_over_new": paired_ratio(timings, "monai", "new"),
            "old_over_new": paired_ratio(timings, "old", "new"), "monai_over_old": paired_ratio(timings, "monai", "old"),
            "max_abs_diff_vs_monai": {"hd95": float(np.abs(ours[:, 0] - hd.numpy().ravel()).max()),
                                      "asd": float(np.abs(ours[:, 1] - sd.numpy().ravel()).max())},
            "new_equals_old_bitwise": bool(np.array_equal(medpy_ours, old)),
            "mean_box_fraction": float(np.mean([_box_fraction(p, t) for p, t in zip(pred, true)]))}


def _box_fraction(p: np.ndarray, t: np.ndarray) -> float:
    rows, cols = metrics._bounding_box(p, t)
    return (rows.stop - rows.start) * (cols.stop - cols.start) / p.size


# --------------------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--memory_reps", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--distance_reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sections", default="distances,memory", help="comma list: distances, memory")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    def log(line: str) -> None:
        print(line, flush=True)

    log(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {loadavg()}")
    sections = args.sections.split(",")
    payload = {"args": vars(args), "malloc_mmap_threshold_env": os.environ.get("MALLOC_MMAP_THRESHOLD_")}
    if "distances" in sections:
        log(f"(b) HD95 + ASD on {args.pairs} lesion pairs at {args.size} px, {args.distance_reps} interleaved reps")
        payload["distances"] = d = distance_section(args.pairs, args.size, args.distance_reps, log)
        log(f"  MONAI / new: {d['monai_over_new']['ratio_of_medians']:.2f}x; old / new: "
            f"{d['old_over_new']['ratio_of_medians']:.2f}x; MONAI / old: {d['monai_over_old']['ratio_of_medians']:.2f}x;"
            f" max |diff| vs MONAI {d['max_abs_diff_vs_monai']}; new == old bitwise: {d['new_equals_old_bitwise']}")
    if "memory" in sections:
        log(f"(a) segmentation test pass, {args.cases} cases at {args.size} px, batch {args.batch_size}, "
            f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_')}")
        payload["memory"] = m = memory_section(args.cases, args.size, args.batch_size, args.memory_reps, log)
        log(f"  metric dicts equal: {m['metrics_equal']}; dice {m['metrics']['dice']:.6f} "
            f"hd95 {m['metrics']['hd95']:.4f} asd {m['metrics']['asd']:.4f}")
    payload["loadavg_end"] = loadavg()
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(payload, handle, indent=2)
    return payload


if __name__ == "__main__":
    main()
