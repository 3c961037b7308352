"""``medmae prepare`` vs raw loading, on synthetic folders in NIH ChestX-ray14's published format (issue #15).

    OMP_NUM_THREADS=1 python -m benchmarks.bench_prepare [--images 300] [--index_rows 112120] [--append]

Two measurements, each against its target:

1. **Images/s per worker** (one process, one torch thread, as one DataLoader worker): ``dataset[i]`` through the
   same training transform (``MultiLabelTransform``, train mode, at 224 px with the CXR processor; recipes
   ``crop_flip`` and ``medical_mae``) from the raw loader (``load_chestxray14``: 1024 x 1024 8-bit PNGs decoded on
   access) and from a 256-px prepared folder (``load_prepared``). Both passes read from the page cache (the files
   were just written). Rounds alternate raw and prepared; the median per-round rate is reported. Target: >= 10x.
   For context, ``dataset[i]`` with the image decoded and no transform is measured the same way: the part of the
   per-item cost that preparing removes (the transform itself is the same on both sides).
2. **Index build vs prepared load** in fresh processes (imports excluded, timed inside): ``load_chestxray14`` of a
   folder of ``--index_rows`` CSV rows (default 112,120, NIH's size) against ``load_prepared`` of the same rows
   prepared. Those rows are hard links to small PNGs: the loader reads only headers (``check_images="header"``)
   and ``load_prepared`` memory-maps the images without reading them, so neither time depends on the pixel size.
   Target: prepared load < 1 s. The peak RSS of each process is reported too.

The synthetic images: a smooth random field plus Gaussian noise (sigma 3), which PNG compresses to about the size
of real NIH files (mean ~375 kB). Everything is written to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medmae.configuration.labels import NIH_LABELS
from medmae.modeling.image_processing_medmae import MedMAEImageProcessor
from medmae.training.data import load_chestxray14
from medmae.training.prepare import prepare_dataset
from medmae.training.prepared import load_prepared
from medmae.training.transforms import MultiLabelTransform

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
RESULTS = Path(__file__).with_name("RESULTS.md")


def xray_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random field (bilinear-upsampled 16 x 16 noise) with Gaussian noise, uint8."""
    coarse = Image.fromarray((rng.random((16, 16)) * 200 + 25).astype(np.uint8))
    smooth = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(smooth + rng.normal(0, 3, (size, size)), 0, 255).astype(np.uint8)


def write_nih_folder(root: Path, names: list[str], rng: np.random.Generator) -> None:
    """The CSV (v2020 spelling), train_val_list.txt (the first 80 %) and test_list.txt of ``names``."""
    rows = []
    for i, name in enumerate(names):
        findings = [lab for lab in NIH_LABELS if rng.random() < 0.08] or ["No Finding"]
        rows.append(f"{name},{'|'.join(findings)},0,{i // 3 + 1},{int(rng.integers(1, 90))},"
                    f"{'MF'[i % 2]},PA,1024,1024,0.143,0.143")
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    cut = int(len(names) * 0.8)
    (root / "train_val_list.txt").write_text("\n".join(names[:cut]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[cut:]) + "\n")


def make_image_folder(root: Path, count: int, size: int, seed: int = 0) -> float:
    """``count`` PNGs of ``size`` px in ``images_001/images/``; returns the mean file size in bytes."""
    rng = np.random.default_rng(seed)
    folder = root / "images_001" / "images"
    folder.mkdir(parents=True)
    names = [f"{i // 3 + 1:08d}_{i % 3:03d}.png" for i in range(count)]
    for name in names:
        Image.fromarray(xray_like(rng, size), "L").save(folder / name)
    write_nih_folder(root, names, rng)
    return statistics.mean((folder / n).stat().st_size for n in names)


def make_index_folder(root: Path, rows: int, seed: int = 1) -> None:
    """``rows`` CSV rows whose images are hard links to 64 px PNGs (one per folder), in 12 ``images_0XX`` folders."""
    rng = np.random.default_rng(seed)
    names = [f"{i // 3 + 1:08d}_{i % 3:03d}.png" for i in range(rows)]
    sources = []  # one source file per folder: ext4 allows 65,000 links to one file
    for k in range(12):
        (root / f"images_{k + 1:03d}" / "images").mkdir(parents=True)
        sources.append(root / f"images_{k + 1:03d}" / f"source_{k + 1:03d}.png")  # unique names: not in the CSV
        Image.fromarray(xray_like(rng, 64), "L").save(sources[-1])
    for i, name in enumerate(names):
        os.link(sources[i % 12], root / f"images_{i % 12 + 1:03d}" / "images" / name)
    write_nih_folder(root, names, rng)


def per_item_rate(dataset, indices) -> float:
    """Items per second of ``dataset[i]`` over ``indices`` (decode + transform, one item at a time)."""
    started = time.perf_counter()
    for i in indices:
        item = dataset[int(i)]
        assert item["pixel_values"].shape[-1] == 224
    return len(indices) / (time.perf_counter() - started)


def decode_rate(dataset, indices) -> float:
    """Items per second of ``dataset[i]`` with its image decoded, without any transform."""
    started = time.perf_counter()
    for i in indices:
        dataset[int(i)]["image"].load()
    return len(indices) / (time.perf_counter() - started)


def throughput(raw, prepared, rounds: int) -> dict:
    processor = MedMAEImageProcessor.from_preset("cxr", size={"height": 224, "width": 224})
    decode = {"raw": [], "prepared": []}
    for _ in range(rounds):
        decode["raw"].append(decode_rate(raw, range(len(raw))))
        decode["prepared"].append(decode_rate(prepared, range(len(prepared))))
    out = {"decode_only": {"raw_img_s": statistics.median(decode["raw"]),
                           "prepared_img_s": statistics.median(decode["prepared"]),
                           "speedup": statistics.median([p / r for p, r in zip(decode["prepared"], decode["raw"])]),
                           "samples": decode}}
    for recipe, scale in (("crop_flip", (0.5, 1.0)), ("medical_mae", (0.08, 1.0))):
        transform = MultiLabelTransform(processor, train=True, crop_scale=scale, recipe=recipe)
        sets = {"raw": raw.with_transform(transform), "prepared": prepared.with_transform(transform)}
        torch.manual_seed(0)
        per_item_rate(sets["raw"], range(5))  # warm-up (imports, allocator)
        per_item_rate(sets["prepared"], range(5))
        rates = {"raw": [], "prepared": []}
        for _ in range(rounds):
            for name, ds in sets.items():
                rates[name].append(per_item_rate(ds, range(len(ds))))
        ratios = [p / r for p, r in zip(rates["prepared"], rates["raw"])]
        out[recipe] = {"raw_img_s": statistics.median(rates["raw"]), "prepared_img_s": statistics.median(rates["prepared"]),
                       "speedup": statistics.median(ratios), "samples": rates}
    return out


def timed_in_subprocess(code: str) -> dict:
    """Run ``code`` (which prints one JSON line with its own timings and peak RSS) in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


RSS = 'round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)'  # the process's own peak, MiB
RAW_INDEX = """
import json, resource, time
from medmae.training.data import load_chestxray14
t = time.perf_counter(); dd = load_chestxray14({root!r}); s = time.perf_counter() - t
print(json.dumps({{"seconds": s, "rows": sum(len(d) for d in dd.values()), "peak_rss_mib": """ + RSS + """}}))
"""
PREPARED_LOAD = """
import json, resource, time
from medmae.training.prepared import load_prepared
t = time.perf_counter(); dd = load_prepared({path!r}, dataset="chestxray14", image_size=256); s = time.perf_counter() - t
print(json.dumps({{"seconds": s, "rows": sum(len(d) for d in dd.values()), "peak_rss_mib": """ + RSS + """}}))
"""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="1024 x 1024 PNGs of the throughput section")
    parser.add_argument("--index_rows", type=int, default=112_120, help="rows of the index section (0: skip)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--append", action="store_true", help="append the results to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_start, started = loadavg(), time.perf_counter()
    report: dict = {"command": "OMP_NUM_THREADS=1 python -m benchmarks.bench_prepare " + " ".join(argv or sys.argv[1:]),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        report["mean_png_bytes"] = make_image_folder(tmp / "nih", args.images, 1024)
        report["generate_s"] = time.perf_counter() - t
        t = time.perf_counter()
        prepare_dataset("chestxray14", tmp / "nih", 256, tmp / "nih-256", num_proc=1)
        report["prepare_s"] = time.perf_counter() - t
        report["prepare_img_s_1proc"] = args.images / report["prepare_s"]
        raw = load_chestxray14(tmp / "nih")["train"]
        prepared = load_prepared(tmp / "nih-256", dataset="chestxray14", image_size=256)["train"]
        report["throughput_items"] = len(raw)
        report["throughput"] = throughput(raw, prepared, args.rounds)
        if args.index_rows:
            make_index_folder(tmp / "index", args.index_rows)
            t = time.perf_counter()
            prepare_dataset("chestxray14", tmp / "index", 256, tmp / "index-256", num_proc=2)  # set-up only
            report["index_prepare_s"] = time.perf_counter() - t
            report["raw_index"] = timed_in_subprocess(RAW_INDEX.format(root=str(tmp / "index")))
            report["prepared_load"] = timed_in_subprocess(PREPARED_LOAD.format(path=str(tmp / "index-256")))
    report["total_s"] = time.perf_counter() - started
    report["loadavg_start"], report["loadavg_end"] = load_start, loadavg()
    print(json.dumps(report, indent=1, default=str))
    if args.append:
        with open(RESULTS, "a") as handle:
            handle.write(markdown(report))
    return report


def markdown(report: dict) -> str:
    rows = []
    for recipe, r in report["throughput"].items():
        verdict = "**met**" if r["speedup"] >= 10 else "**missed**"
        what = "`dataset[i]`, image decoded, no transform (context)" if recipe == "decode_only" else \
            f"images/s per worker, `{recipe}` transform at 224 px"
        verdict = "—" if recipe == "decode_only" else verdict
        rows.append(f"| {what} | raw {r['raw_img_s']:.1f}, prepared "
                    f"{r['prepared_img_s']:.1f}: **{r['speedup']:.1f}x** (per round: "
                    f"{', '.join(f'{p / q:.1f}x' for p, q in zip(r['samples']['prepared'], r['samples']['raw']))}) "
                    f"| >= 10x | {verdict} |")
    if "prepared_load" in report:
        load, raw = report["prepared_load"], report["raw_index"]
        verdict = "**met**" if load["seconds"] < 1 else "**missed**"
        rows.append(f"| index of {raw['rows']:,} rows: raw build vs prepared load (fresh process) | raw "
                    f"{raw['seconds']:.2f} s (peak RSS {raw['peak_rss_mib']} MiB), prepared **{load['seconds']:.3f} s** "
                    f"(peak RSS {load['peak_rss_mib']} MiB) | < 1 s | {verdict} |")
    index_line = (f" Preparing the {report['prepared_load']['rows']:,}-row index folder (64 px images) took "
                  f"{report['index_prepare_s']:.1f} s." if "prepared_load" in report else "")
    return f"""

## `medmae prepare`: raw vs prepared loading (issue #15)

```bash
{report['command']}
```

Load average (1, 5, 15 min) at the start {report['loadavg_start']}, at the end {report['loadavg_end']} (2-core machine;
other workers' jobs were running). OMP_NUM_THREADS={report['omp_num_threads']}, torch threads {report['torch_threads']}.
Synthetic NIH-format folder: {report['throughput_items']} training images of 1024 x 1024 (8-bit PNG, mean
{report['mean_png_bytes'] / 1e3:.0f} kB), prepared at 256 px (`medmae prepare --num_proc 1`: {report['prepare_s']:.1f} s,
{report['prepare_img_s_1proc']:.1f} images/s).{index_line} Whole benchmark {report['total_s']:.0f} s.

| measurement | measured | target | verdict |
|---|---|---|---|
{chr(10).join(rows)}
"""


if __name__ == "__main__":
    main()
