"""medmae benchmarks (GitHub issue #7): one command, one process, every measurement side by side.

    python -m benchmarks.run                       # both thread counts (1 and all cores), every section
    python -m benchmarks.run --quick               # smoke run: batch 4, 1 repetition, short loss curve
    python -m benchmarks.run --threads 1 --sections etmae,compile

Sections (``--sections``, comma-separated; default all):
  peak       matmul peak of this machine (fp32 and bf16 GEMM), measured in the same run (always run)
  etmae      ETMAE student step vs transformers ViTMAEForPreTraining (same config, converted weights, same
             noise; numerics checked first): forward and forward+backward+AdamW images/s, peak memory
  compile    the ETMAE student step under torch.compile vs eager vs transformers
  bf16       bf16 autocast (fp32 loss) vs fp32 step
  distill    distillation step with a ViT-S and a ViT-B teacher: medmae (teacher truncated at its align
             layer, visible patches, no_grad) vs DMAE-style (full teacher encoder + decoder) vs plain student
  inference  fine-tuned classifier inference: ViT-Tiny vs ViT-S vs ViT-B
  loop       whole training loop with data loading (PNG dataset + MedMAEImageProcessor, workers 0/1)
  sdda       SDDA-MAE size scaling (benchmarks/sdda_scaling.py)
  flops      achieved FLOP/s of every timed step against the measured matmul peak (a summary of the above)
  curve      loss curve fp32 vs bf16 autocast of the student, same init/batches/masks (once, at the last
             thread count of --threads)

Writes ``<out>/results.json`` and ``<out>/results.md`` (and ``loss_curve.png``). On a CUDA machine the same
command times every model step under bf16 autocast and reports MFU against the GPU's measured bf16 GEMM peak;
the CPU thread sweep then only matters for data loading.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

import torch

from . import etmae_bench as eb
from .common import loadavg, machine_info, matmul_peak, parse_threads, resolve_device

ALL_SECTIONS = ["peak", "etmae", "compile", "bf16", "distill", "inference", "loop", "sdda", "flops", "curve"]
_START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", flush=True)


# --------------------------------------------------------------------------------------------------
# SDDA hook (benchmarks/sdda_scaling.py is written by another engineer)
# --------------------------------------------------------------------------------------------------
def section_sdda(ctx: eb.Ctx) -> dict:
    """SDDA-MAE scaling at 128/256/512 px through ``benchmarks.sdda_scaling``: a ``run(threads=, quick=)``
    function returning a dict when it has one, else its ``model_times`` / ``attention_times`` (and
    ``finetune_times`` when present)."""
    try:
        from . import sdda_scaling as sd
    except Exception as error:
        return {"skipped": f"benchmarks.sdda_scaling not importable: {type(error).__name__}: {error}"}
    sizes = [128, 256] if ctx.quick else [128, 256, 512]
    reps = 1 if ctx.quick else 3
    if hasattr(sd, "run"):
        return {"source": "benchmarks.sdda_scaling.run", **sd.run(sizes=sizes, reps=reps)}
    rows = []
    for size in sizes:
        row = {"size": size, "stage1_tokens": (size // 4) ** 2}
        row["pretrain_forward_s"], row["pretrain_train_s"] = sd.model_times(size, reps)
        if hasattr(sd, "finetune_times"):
            row["finetune_forward_s"], row["finetune_train_s"] = sd.finetune_times(size, reps)
        row["efficient_attention_s"], row["global_attention_s"] = sd.attention_times(size, reps)
        log(f"    {size}px: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.endswith("_s")))
        rows.append(row)
    ratios = []
    for a, b in zip(rows, rows[1:]):
        ratios.append({"sizes": f"{b['size']}/{a['size']}",
                       **{k: b[k] / a[k] for k in a if k.endswith("_s") and a[k]}})
    note = None if hasattr(sd, "finetune_times") else "sdda_scaling has no finetune_times(): fine-tuning step not measured"
    return {"source": "benchmarks.sdda_scaling.model_times / attention_times (batch 1, median)", "rows": rows,
            "ratios": ratios, "note": note}


# --------------------------------------------------------------------------------------------------
# FLOP/s summary
# --------------------------------------------------------------------------------------------------
def flops_summary(sections: dict, peak: dict, device: torch.device) -> list[dict]:
    """Every timed training/inference step with a FLOP count: achieved GFLOP/s and % of the matmul peak of
    the precision it ran in (fp32 peak for fp32 steps, bf16 peak for bf16 autocast steps)."""
    rows = []
    fp32_peak = peak.get("float32", {}).get("gflops_best")
    bf16_peak = peak.get("bfloat16", {}).get("gflops_best")

    def add(section, name, row, bf16):
        if "achieved_gflops" not in row:
            return
        ref = bf16_peak if bf16 else fp32_peak
        rows.append({"step": f"{section}: {name}", "precision": "bf16" if bf16 else "fp32",
                     "gflop_per_step": row["gflop_per_step"], "median_s": row["median_s"],
                     "achieved_gflops": row["achieved_gflops"], "peak_gflops": ref,
                     "fraction_of_peak": row["achieved_gflops"] / ref if ref else None})

    gpu_bf16 = device.type == "cuda"
    for kind in ("forward", "train"):
        for name, row in sections.get("etmae", {}).get(kind, {}).items():
            add(f"student {kind}", name, row, gpu_bf16)
    for name, row in sections.get("compile", {}).get("train", {}).items():
        add("student train", name, row, gpu_bf16)
    for name, row in sections.get("bf16", {}).get("train", {}).items():
        add("student train", name, row, gpu_bf16 or "bf16" in name)
    for teacher in ("ViT-S", "ViT-B"):
        for name, row in sections.get("distill", {}).get(teacher, {}).get("train", {}).items():
            add(f"distill {teacher}", name, row, gpu_bf16)
    for name, row in sections.get("inference", {}).get("inference", {}).items():
        add("inference", name, row, gpu_bf16)
    return rows


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------
def _f(value, fmt="{:.2f}"):
    return "n/a" if value is None else fmt.format(value)


def _rate_cell(row: dict) -> str:
    lo, hi = row.get("images_per_s_q1_q3", (None, None))
    return f"{row['images_per_s']:.2f} [{lo:.2f}-{hi:.2f}]" if lo is not None else f"{row['images_per_s']:.2f}"


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# medmae benchmark results", "",
             f"- command: `{report['command']}`",
             f"- date: {report['date']}; wall time {report['wall_s']:.0f} s",
             f"- machine: {m['cpu']} ({m['cpu_count']} cores, {m['memory_gib']} GiB), device `{m['device']}`"
             + (f" ({m.get('gpu')})" if m.get("gpu") else ""),
             f"- torch {m['torch']}, transformers {m['transformers']}, python {m['python']}, commit {m['git_commit']}",
             f"- CPU flags: {' '.join(m['cpu_flags'])}",
             f"- load average (1, 5, 15 min) at start {report['load_start']}, at end {report['load_end']}",
             f"- images/s cells: median [inter-quartile range of the per-repetition rates]; "
             f"warm-up {report['settings']['warmup']}, {report['settings']['reps']} timed repetitions per variant, "
             "variants interleaved", ""]
    lines += _targets_md(report)
    for t_key, res in report["results"].items():
        lines += [f"## {t_key} thread(s)", ""]
        sec = res["sections"]
        lines.append(f"Load average during this block: {res.get('load')}")
        lines.append("")
        if "peak" in sec:
            lines += ["### Matmul peak (square GEMM, same process; measured at the start and the end of the block, "
                      "best of both = the peak used below)", "", "| dtype | n | GFLOP/s (median, better block) | best |",
                      "|---|---|---|---|"]
            for dt, p in sec["peak"].items():
                lines.append(f"| {dt} | {p['n']} | {p['gflops_median']:.1f} | {p['gflops_best']:.1f} |")
            lines.append("")
        if "etmae" in sec and "train" in sec["etmae"]:
            e = sec["etmae"]
            nm = e["numerics"]
            lines += [f"### 1. ETMAE student vs transformers ViTMAEForPreTraining (batch {e['batch']}, {e['precision']})",
                      "", f"Numerics first (converted weights, same input and noise): loss diff {nm['loss_abs_diff']:.2e}, "
                      f"logits max diff {nm['logits_max_abs_diff']:.2e}, patch-embed grad max diff "
                      f"{nm['grad_patch_embed_max_abs_diff']:.2e}, same mask {nm['mask_equal']} -> equal: **{nm['equal']}**", "",
                      "| step | implementation | images/s | median s | GFLOP/step | GFLOP/s | peak mem MiB |",
                      "|---|---|---|---|---|---|---|"]
            for kind in ("forward", "train"):
                for name, row in e[kind].items():
                    mem = e.get("peak_memory", {}).get(f"{kind}/{name}", {}).get("step_peak_mib")
                    lines.append(f"| {kind} | {name} | {_rate_cell(row)} | {row['median_s']:.3f} | "
                                 f"{_f(row.get('gflop_per_step'), '{:.1f}')} | {_f(row.get('achieved_gflops'), '{:.1f}')} | "
                                 f"{_f(mem, '{:.0f}')} |")
            sf, st = e["speedup_forward"], e["speedup_train"]
            lines += ["", f"medmae / transformers speed-up: forward {sf['of_medians']:.3f}x "
                      f"(per-round {sf['round_min']:.2f}-{sf['round_max']:.2f}), train step {st['of_medians']:.3f}x "
                      f"(per-round {st['round_min']:.2f}-{st['round_max']:.2f})", ""]
        if "compile" in sec:
            c = sec["compile"]
            lines += [f"### torch.compile (ETMAE student train step, batch {c['batch']})", ""]
            if "error" in c:
                lines += [f"torch.compile failed: `{c['error'][:300]}`", ""]
            else:
                lines += [f"compile + first step {c['compile_and_first_step_s']:.0f} s; loss eager vs compiled rel diff "
                          f"{c['numerics']['rel_diff']:.1e}", "", "| variant | images/s | median s | GFLOP/s |", "|---|---|---|---|"]
                for name, row in c["train"].items():
                    lines.append(f"| {name} | {_rate_cell(row)} | {row['median_s']:.3f} | {_f(row.get('achieved_gflops'), '{:.1f}')} |")
                a, b, d = c["speedup_compiled_vs_transformers"], c["speedup_compiled_vs_eager"], c["speedup_eager_vs_transformers"]
                lines += ["", f"compiled vs transformers eager **{a['of_medians']:.3f}x** (per-round {a['round_min']:.2f}-"
                          f"{a['round_max']:.2f}); compiled vs medmae eager {b['of_medians']:.3f}x; medmae eager vs "
                          f"transformers eager {d['of_medians']:.3f}x", ""]
        if "bf16" in sec:
            b = sec["bf16"]
            lines += [f"### bf16 autocast (fp32 loss), batch {b['batch']}", "", "| variant | images/s | median s | GFLOP/s |",
                      "|---|---|---|---|"]
            for name, row in b["train"].items():
                lines.append(f"| {name} | {_rate_cell(row)} | {row['median_s']:.3f} | {_f(row.get('achieved_gflops'), '{:.1f}')} |")
            s = b["speedup_bf16_vs_fp32"]
            lines += ["", f"bf16 vs fp32 step: **{s['of_medians']:.2f}x** (per-round {s['round_min']:.2f}-{s['round_max']:.2f}); "
                      f"training scripts' default precision here (`--mixed_precision auto`): "
                      f"`{b['training_scripts_default_precision']}`", ""]
        if "distill" in sec:
            d = sec["distill"]
            lines += [f"### 2. Distillation step (batch {d['batch']}, {d['precision']})", "",
                      "| teacher | variant | images/s | median s | GFLOP/step | peak mem MiB |", "|---|---|---|---|---|---|"]
            for teacher in ("ViT-S", "ViT-B"):
                if teacher not in d:
                    continue
                for name, row in d[teacher]["train"].items():
                    mem = d[teacher].get("peak_memory", {}).get(name, {}).get("step_peak_mib")
                    lines.append(f"| {teacher} | {name} | {_rate_cell(row)} | {row['median_s']:.3f} | "
                                 f"{_f(row.get('gflop_per_step'), '{:.1f}')} | {_f(mem, '{:.0f}')} |")
            lines.append("")
            for teacher in ("ViT-S", "ViT-B"):
                if teacher not in d:
                    continue
                t = d[teacher]
                lines.append(f"- {teacher}: medmae step = **{t['cost_vs_plain']['ratio_of_medians']:.2f}x** the plain student "
                             f"step (per-round {t['cost_vs_plain']['min_round_ratio']:.2f}-{t['cost_vs_plain']['max_round_ratio']:.2f}); "
                             f"**{t['speedup_vs_dmae']['of_medians']:.2f}x** faster than DMAE-style "
                             f"(which costs {t['dmae_cost_vs_plain']['ratio_of_medians']:.2f}x plain); truncated vs full "
                             f"teacher loss diff {t['equivalence']['abs_diff']:.1e}")
            lines.append("")
        if "inference" in sec:
            i = sec["inference"]
            lines += [f"### 3. Classifier inference (batch {i['batch']}, {i['precision']}, {i['mode']})", "",
                      "| model | params (M) | images/s | GFLOP/image | ViT-Tiny speed-up | param ratio |", "|---|---|---|---|---|---|"]
            for name, row in i["inference"].items():
                lines.append(f"| {name} | {row['parameters'] / 1e6:.1f} | {_rate_cell(row)} | "
                             f"{_f(row.get('gflop_per_step') and row['gflop_per_step'] / i['batch'], '{:.2f}')} | "
                             f"{i['tiny_speedup'][name]:.2f}x | {i['parameter_ratio'][name]:.1f}x |")
            lines.append("")
        if "loop" in sec:
            lp = sec["loop"]
            lines += [f"### Whole training loop (batch {lp['batch']}, precision {lp['precision']})", "",
                      f"Data: {lp['source_images']}; {lp['pipeline']}", "", "| variant | images/s | of model-only |", "|---|---|---|"]
            for name, row in lp["results"].items():
                lines.append(f"| {name} | {row['images_per_s']:.2f} | {row['fraction_of_model_only']:.1%} |")
            lines.append("")
        if "sdda" in sec:
            s = sec["sdda"]
            lines += ["### 4. SDDA-MAE scaling", ""]
            if "skipped" in s:
                lines += [f"skipped: {s['skipped']}", ""]
            elif "rows" in s:
                keys = [k for k in s["rows"][0] if k.endswith("_s")]
                lines += ["| px | stage-1 tokens | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
                for row in s["rows"]:
                    lines.append(f"| {row['size']} | {row['stage1_tokens']} | " + " | ".join(f"{row[k]:.4f}" for k in keys) + " |")
                lines += ["", "| ratio | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
                for r in s["ratios"]:
                    lines.append(f"| {r['sizes']} | " + " | ".join(_f(r.get(k)) for k in keys) + " |")
                if s.get("note"):
                    lines += ["", s["note"]]
                lines.append("")
            else:
                lines += ["```", json.dumps(s, indent=1)[:3000], "```", ""]
        if "flops" in sec and sec["flops"]:
            lines += ["### 5. Achieved FLOP/s vs the measured matmul peak", "",
                      "| step | precision | GFLOP/step | median s | GFLOP/s | peak GFLOP/s | % of peak |", "|---|---|---|---|---|---|---|"]
            for r in sec["flops"]:
                lines.append(f"| {r['step']} | {r['precision']} | {r['gflop_per_step']:.1f} | {r['median_s']:.3f} | "
                             f"{r['achieved_gflops']:.1f} | {_f(r['peak_gflops'], '{:.1f}')} | {_f(r['fraction_of_peak'] and 100 * r['fraction_of_peak'], '{:.0f}%')} |")
            lines.append("")
        for name, err in res.get("errors", {}).items():
            lines += [f"**section {name} failed:** `{err.splitlines()[-1][:300]}`", ""]
    if report.get("loss_curve"):
        c = report["loss_curve"]
        k = [key for key in c if key.startswith("mean_last")]
        lines += [f"## bf16 vs fp32 loss curve ({c['steps']} steps, batch {c['batch']}, lr {c['lr']}, "
                  f"{report['loss_curve_threads']} threads)", "",
                  f"Same init, batches ({c['images']}) and masks. Max |diff| per step {c['max_abs_diff']:.4f}, mean "
                  f"{c['mean_abs_diff']:.4f}; 10-step moving averages differ by at most {c['max_abs_diff_smoothed10']:.4f}; "
                  f"{k[0]}: fp32 {c[k[0]]:.4f} vs bf16 {c[k[1]]:.4f} (fp32 step-to-step std in that window "
                  f"{_f(c.get('fp32_step_to_step_std_tail'), '{:.4f}')}) -> within noise: **{c.get('within_noise')}**; "
                  f"wall time fp32 {c['seconds']['fp32']:.0f} s vs bf16 {c['seconds']['bf16']:.0f} s ({c['speedup_bf16']:.2f}x)", "",
                  "| step | " + " | ".join(str(s) for s in _curve_ticks(c['steps'])) + " |",
                  "|---" * (len(_curve_ticks(c['steps'])) + 1) + "|",
                  "| fp32 | " + " | ".join(f"{c['fp32'][s]:.4f}" for s in _curve_ticks(c['steps'])) + " |",
                  "| bf16 | " + " | ".join(f"{c['bf16'][s]:.4f}" for s in _curve_ticks(c['steps'])) + " |", ""]
        if report.get("loss_curve_png"):
            lines += [f"![loss curve]({Path(report['loss_curve_png']).name})", ""]
    return "\n".join(lines)


def targets(report: dict) -> list[dict]:
    """The issue's targets, evaluated on every thread-count block (``met`` None where not measured)."""
    rows = []

    def add(target, threads, value, threshold, higher_is_better=True, note=""):
        met = None if value is None else (value >= threshold if higher_is_better else value <= threshold)
        rows.append({"target": target, "threads": threads, "measured": value, "threshold": threshold,
                     "direction": ">=" if higher_is_better else "<=", "met": met, "note": note})

    def get(d, *keys):
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    for t_key, block in report["results"].items():
        sec = block["sections"]
        add("student step, compiled medmae vs transformers eager (fp32)", t_key,
            get(sec, "compile", "speedup_compiled_vs_transformers", "of_medians"), 1.15)
        add("student step, eager parity medmae vs transformers (fp32)", t_key,
            get(sec, "etmae", "speedup_train", "of_medians"), 0.97)
        peak = get(sec, "peak", "float32", "gflops_best")
        best = max([r.get("achieved_gflops") or 0 for r in (get(sec, "compile", "train") or {}).values()]
                   + [get(sec, "etmae", "train", "medmae", "achieved_gflops") or 0])
        add("student step (best medmae fp32 variant) fraction of fp32 matmul peak", t_key,
            best / peak if peak and best else None, 0.75)
        add("bf16 autocast step vs fp32 step", t_key, get(sec, "bf16", "speedup_bf16_vs_fp32", "of_medians"), 1.8)
        add("distillation (ViT-S teacher) step / plain student step", t_key,
            get(sec, "distill", "ViT-S", "cost_vs_plain", "ratio_of_medians"), 1.6, higher_is_better=False)
        add("distillation (ViT-S teacher) speed-up over DMAE-style", t_key,
            get(sec, "distill", "ViT-S", "speedup_vs_dmae", "of_medians"), 1.5)
        ratios = get(sec, "sdda", "ratios") or []
        r512 = next((r for r in ratios if r.get("sizes") == "512/256"), None)
        if r512 is not None:
            key = "pretrain_train_s" if "pretrain_train_s" in r512 else next((k for k in r512 if k.endswith("_s")), None)
            add(f"SDDA-MAE 512/256 cost ratio ({key})", t_key, r512.get(key), 4.4, higher_is_better=False)
        else:
            add("SDDA-MAE 512/256 cost ratio", t_key, None, 4.4, higher_is_better=False)
        loop = get(sec, "loop", "results") or {}
        fracs = [row["fraction_of_model_only"] for name, row in loop.items() if name.startswith("loop")]
        add("training loop with data loading / model-only throughput (best num_workers)", t_key,
            max(fracs) if fracs else None, 0.90)
    curve = report.get("loss_curve")
    if curve:
        rows.append({"target": "bf16 loss curve matches fp32 within noise", "threads": report.get("loss_curve_threads"),
                     "measured": curve.get("tail_diff"), "threshold": curve.get("fp32_step_to_step_std_tail"),
                     "direction": "|diff| <=", "met": curve.get("within_noise"), "note": ""})
    return rows


def _targets_md(report: dict) -> list[str]:
    lines = ["## Targets (computed from this run)", "", "| target | threads | measured | threshold | met |",
             "|---|---|---|---|---|"]
    for r in targets(report):
        met = {True: "yes", False: "**no**", None: "not measured"}[r["met"]]
        lines.append(f"| {r['target']} | {r['threads']} | {_f(r['measured'], '{:.3f}')} | {r['direction']} "
                     f"{_f(r['threshold'], '{:.3f}')} | {met} |")
    return lines + [""]


def _curve_ticks(steps: int) -> list[int]:
    n = min(steps, 11)
    return sorted({round(i * (steps - 1) / max(n - 1, 1)) for i in range(n)})


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--threads", default="1,all", help="comma-separated torch thread counts; 'all' = every core "
                   "(default: 1,all)")
    p.add_argument("--sections", default=",".join(ALL_SECTIONS), help="comma-separated subset of: " + ",".join(ALL_SECTIONS))
    p.add_argument("--quick", action="store_true", help="smoke run: batch 4, 1 repetition, loss curve of 6 steps")
    p.add_argument("--out", default="benchmarks/results", help="folder for results.json / results.md")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 32; quick 4)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per variant (default 3; quick 1)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per variant (default 1)")
    p.add_argument("--distill-reps", type=int, default=None, help="repetitions for the distillation section (default 2)")
    p.add_argument("--inference-batch", type=int, default=None, help="classifier inference batch (default 16; quick 4)")
    p.add_argument("--curve-steps", type=int, default=None, help="loss-curve steps (default 200; quick 6)")
    p.add_argument("--render", default=None, metavar="RESULTS_JSON", help="only re-render the Markdown of a results.json")
    p.add_argument("--curve-batch", type=int, default=4, help="loss-curve batch (default 4)")
    return p


def main(argv: Optional[list[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.render:  # re-render results.md (with the targets) from a results.json
        report = json.loads(Path(args.render).read_text())
        report["targets"] = targets(report)
        Path(args.render).with_suffix(".md").write_text(to_markdown(report))
        return report
    device = resolve_device(args.device)
    threads = parse_threads(args.threads)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(ALL_SECTIONS))
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; choose from {ALL_SECTIONS}")
    if "peak" not in sections:
        sections.insert(0, "peak")
    quick = args.quick
    batch = args.batch or (4 if quick else 32)
    reps = args.reps or (1 if quick else 3)
    warmup = args.warmup if args.warmup is not None else 1
    distill_reps = args.distill_reps or (1 if quick else 2)
    inference_batch = args.inference_batch or (4 if quick else 16)
    curve_steps = args.curve_steps or (6 if quick else 200)
    amp = torch.bfloat16 if device.type == "cuda" else None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"command": command.strip(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(device),
              "settings": {"threads": threads, "sections": sections, "quick": quick, "batch": batch, "reps": reps,
                           "warmup": warmup, "distill_reps": distill_reps, "inference_batch": inference_batch, "curve_steps": curve_steps,
                           "curve_batch": args.curve_batch, "precision": "bf16 autocast" if amp else "fp32"},
              "load_start": loadavg(), "results": {}}
    log(f"device {device}, threads {threads}, sections {sections}, batch {batch}, reps {reps}, load {loadavg()}")
    cache: dict = {}
    for index, n_threads in enumerate(threads):
        torch.set_num_threads(n_threads)
        log(f"=== {n_threads} thread(s) (torch.get_num_threads() = {torch.get_num_threads()}) ===")
        ctx = eb.Ctx(device=device, threads=n_threads, batch=batch, warmup=warmup, reps=reps, quick=quick,
                     amp_dtype=amp, log=log, first_thread_count=index == 0, measure_memory=index == 0, cache=cache)
        block: dict = {"threads": n_threads, "sections": {}, "errors": {}, "load": {}}
        peak: dict = {}
        for name in sections:
            if name in ("flops", "curve"):
                continue
            log(f"-- section {name} (load {loadavg()})")
            block["load"][name] = loadavg()
            start = time.perf_counter()
            try:
                if name == "peak":
                    measure_peak(peak, device)
                    result = peak
                elif name == "etmae":
                    result = eb.section_etmae(ctx)
                elif name == "compile":
                    result = eb.section_compile(ctx)
                elif name == "bf16":
                    result = eb.section_bf16(ctx)
                elif name == "distill":
                    dctx = eb.Ctx(**{**ctx.__dict__, "reps": distill_reps})
                    result = eb.section_distill(dctx)
                elif name == "inference":
                    result = eb.section_inference(ctx, batch=inference_batch)
                elif name == "loop":
                    result = eb.section_loop(ctx)
                elif name == "sdda":
                    result = section_sdda(ctx)
                block["sections"][name] = result
            except Exception:
                block["errors"][name] = traceback.format_exc()
                log(f"    section {name} FAILED:\n{block['errors'][name]}")
            log(f"   section {name} took {time.perf_counter() - start:.1f} s")
            report["results"][f"{n_threads}"] = block
            _write(report, out_dir)
        if "peak" in block["sections"]:
            log("-- matmul peak again at the end of the block (the best of both measurements is the peak)")
            measure_peak(peak, device)
        if "flops" in sections:
            block["sections"]["flops"] = flops_summary(block["sections"], peak, device)
        if not block["errors"]:
            del block["errors"]
        report["results"][f"{n_threads}"] = block
        _write(report, out_dir)
    if "curve" in sections and curve_steps > 0:
        torch.set_num_threads(threads[-1])
        log(f"-- bf16 vs fp32 loss curve: {curve_steps} steps, batch {args.curve_batch}, {threads[-1]} threads")
        ctx = eb.Ctx(device=device, threads=threads[-1], batch=args.curve_batch, warmup=0, reps=0, quick=quick,
                     amp_dtype=None, log=log, cache=cache)
        try:
            report["loss_curve"] = eb.loss_curve(ctx, curve_steps, args.curve_batch)
            report["loss_curve_threads"] = threads[-1]
            report["loss_curve_png"] = eb.plot_curve(report["loss_curve"], out_dir / "loss_curve.png")
        except Exception:
            report["loss_curve_error"] = traceback.format_exc()
            log(f"    loss curve FAILED:\n{report['loss_curve_error']}")
    report["load_end"] = loadavg()
    report["targets"] = targets(report)
    _write(report, out_dir)
    log(f"wrote {out_dir / 'results.json'} and {out_dir / 'results.md'}")
    return report


def measure_peak(peak: dict, device: torch.device) -> None:
    """Fill / update ``peak[dtype]`` with a GEMM measurement; ``peak_gflops`` = the best of all measurements in
    this block (a peak is what the machine can do; the medians are kept to show the load's effect)."""
    for dt in (torch.float32, torch.bfloat16):
        key = str(dt).replace("torch.", "")
        m = matmul_peak(device, dt, reps=10)
        entry = peak.setdefault(key, {"n": m["n"], "dtype": key, "measurements": []})
        entry["measurements"].append(m)
        entry["gflops_median"] = max(x["gflops_median"] for x in entry["measurements"])
        entry["gflops_best"] = max(x["gflops_best"] for x in entry["measurements"])
        log(f"    {key}: median {m['gflops_median']:.1f} GFLOP/s, best {m['gflops_best']:.1f} "
            f"(load {loadavg()})")


def _write(report: dict, out_dir: Path) -> None:
    report["wall_s"] = time.perf_counter() - _START
    report.setdefault("load_end", loadavg())
    (out_dir / "results.json").write_text(json.dumps(report, indent=1, default=str))
    try:
        (out_dir / "results.md").write_text(to_markdown(report))
    except Exception:  # a half-filled report must not stop the run
        (out_dir / "results.md").write_text("report rendering failed:\n\n```\n" + traceback.format_exc() + "\n```\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
