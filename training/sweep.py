# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""What every ``medmae reproduce`` sweep shares: runs that continue where they stopped, one sweep per folder,
tables written whole or not at all, and mean ± sd with paired-difference verdicts over seeds.

Verdicts use the per-seed differences of two rows trained with the same seed on the same data, in a two-sided
paired t-test at the 5% level: "supported" when the mean difference exceeds ``t_{0.975, n-1}`` standard errors
(12.7 for 2 seeds, 4.3 for 3, 2.8 for 5), "contradicted" when it is below minus that, else "not supported at this
budget" (the difference is within the seed-to-seed noise). Fewer than 2 paired seeds cannot be tested.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from scipy.stats import t

from . import finetune, pretrain
from .checkpointing import checkpoint_dirs


@dataclass
class SweepArguments:
    """The arguments every ``medmae reproduce`` method takes (each method's ``Arguments`` adds its own)."""

    output_dir: str = field(default="reproduce", metadata={"help": "folder of runs/ and the tables"})
    seeds: Optional[list[int]] = field(default=None, metadata={"help": "training seeds (default: the budget's)"})
    preset: str = field(default="default", metadata={"help": "budget: quick | default | paper"})
    quick: bool = field(default=False, metadata={"help": "same as --preset quick"})
    num_threads: Optional[int] = field(default=None, metadata={"help": "torch CPU threads per run"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers per run"})
    progress_bar: bool = field(default=False)


def resolve_budget(args: SweepArguments, budgets: dict) -> dict:
    """The chosen budget (``--quick`` = ``--preset quick``) with its name and the seeds, validated."""
    name = "quick" if args.quick else args.preset
    if name not in budgets:
        raise ValueError(f"unknown --preset {name!r}; choose one of {', '.join(budgets)}")
    seeds = list(args.seeds) if args.seeds is not None else list(budgets[name]["seeds"])
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct integers, at least one, got {seeds}")
    return {**budgets[name], "name": name, "seeds": seeds}


def check_dataset(method: str, name: str, choices, data_root: Optional[str]) -> str:
    """The normalised dataset name, one of ``choices``; a real dataset needs an existing ``--data_root`` (the
    synthetic ones are generated)."""
    dataset = name.strip().lower().replace("-", "_")
    if dataset not in choices:
        raise ValueError(f"medmae reproduce {method}: unknown --dataset {name!r}; choose one of {', '.join(choices)}")
    if dataset.startswith("synthetic"):
        return dataset
    if not data_root:
        raise ValueError(f"--dataset {dataset} needs --data_root (the dataset folder as published)")
    if not Path(data_root).is_dir():
        raise FileNotFoundError(f"--data_root {data_root}: no such folder")
    return dataset


@dataclass
class Run:
    """One run of a sweep: a ``pretrain`` / ``finetune`` command line, or an in-process step (``script="call"``
    with ``call`` returning the run_info-like dict, cached as ``run_info.json`` in the run's folder)."""

    name: str
    script: str
    argv: list
    seed: int
    row: Optional[str] = None  # the table row it fills
    extra: dict = field(default_factory=dict)
    call: Optional[Callable[[], dict]] = None

    @property
    def folder(self) -> Path:
        return Path(self.argv[self.argv.index("--output_dir") + 1])


def run_one(run: Run) -> dict:
    """A finished run is read back; an interrupted one resumes from its newest complete checkpoint."""
    info_path = run.folder / "run_info.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    if run.script == "call":
        info = run.call()
        write_atomic(info_path, json.dumps(info, indent=2))
        return info
    argv = list(run.argv) + (["--resume_from_checkpoint", "latest"] if checkpoint_dirs(run.folder) else ["--overwrite"])
    return {"pretrain": pretrain.main, "finetune": finetune.main}[run.script](argv)


def check_plan(out: Path, plan: dict, keys: Sequence[str]) -> None:
    """A folder holds one sweep: refuse to mix runs made with other ``keys`` settings into it."""
    path = out / "plan.json"
    if path.is_file():
        recorded = json.loads(path.read_text())
        changed = {k: (recorded.get(k), plan.get(k)) for k in keys if recorded.get(k) != plan.get(k)}
        if changed:
            raise ValueError(f"{out} holds a sweep with other settings {changed} (recorded, asked); use another "
                             "--output_dir")
    write_atomic(path, json.dumps(plan, indent=2))


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_all(runs: list[Run]) -> dict:
    """Every run in order (finished ones read back), with one progress line each."""
    infos = {}
    for index, run in enumerate(runs, 1):
        t0 = time.perf_counter()
        infos[run.name] = run_one(run)
        print(f"[{index}/{len(runs)}] {run.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return infos


def execute(out: Path, runs: list[Run], collect: Callable[[dict], dict], markdown: Callable[[dict], str],
            figure: Optional[Callable[[dict, Path], object]] = None) -> dict:
    """Run (or read back) every run, then write ``ablation.json``, the figure and ``ablation.md`` -- each whole,
    and only once every run has finished."""
    started = time.perf_counter()
    infos = run_all(runs)
    result = collect(infos)
    result["wall_time_s"] = round(time.perf_counter() - started, 1)
    write_atomic(out / "ablation.json", json.dumps(result, indent=2))
    if figure is not None:
        figure(result, out)
    text = markdown(result)
    write_atomic(out / "ablation.md", text)
    print("\n" + text)
    return result


def mean_sd(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float], int]:
    """(mean, sample sd (0 for one value), n) of the values that are not None."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return None, None, 0
    return statistics.fmean(kept), (statistics.stdev(kept) if len(kept) > 1 else 0.0), len(kept)


def verdict(claim: str, better: list, worse: list, metric: str, lower_is_better: bool = False) -> dict:
    """Paired per-seed differences ``better - worse`` (sign flipped for lower-is-better metrics)."""
    sign = -1.0 if lower_is_better else 1.0
    diffs = [sign * (b - w) for b, w in zip(better, worse) if b is not None and w is not None]
    mean, sd, n = mean_sd(diffs)
    if n < 2:
        status, threshold = "not testable (fewer than 2 paired seeds)", None
    else:
        threshold = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        status = ("supported" if mean > threshold else "contradicted" if mean < -threshold
                  else "not supported at this budget (within seed noise)")
    return {"claim": claim, "metric": metric, "status": status, "mean_difference": mean, "sd_difference": sd,
            "n_seeds": n, "per_seed_differences": diffs, "significance_threshold": threshold}


def cell(values: list, percent: bool) -> str:
    """``mean ± sd`` of a table cell (x100 for percentages); ``-`` when there is no value."""
    mean, sd, _ = mean_sd(values)
    if mean is None:
        return "-"
    scale = 100.0 if percent else 1.0
    return f"{scale * mean:.2f} ± {scale * sd:.2f}"


def verdict_lines(verdicts: list[dict], percent_metrics: Sequence[str]) -> list[str]:
    """The verdict table of ablation.md."""
    lines = ["## Verdicts (paired differences over seeds; two-sided paired t-test at 5%)", "",
             "| Claim | Metric | Difference (mean ± sd) | Verdict |", "|---|---|---|---|"]
    for v in verdicts:
        scale = 100.0 if v["metric"] in percent_metrics else 1.0
        diff = "-" if v["mean_difference"] is None else \
            f"{scale * v['mean_difference']:+.2f} ± {scale * v['sd_difference']:.2f}"
        lines.append(f"| {v['claim']} | {v['metric']} | {diff} | {v['status']} |")
    return lines
