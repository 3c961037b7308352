"""Timing, memory, FLOP and machine helpers of the medmae benchmarks (not part of the test suite).

Timing: ``time.perf_counter`` around one call (a whole training step here: seconds on a CPU, so timer
resolution and Python overhead are negligible), with ``torch.cuda.synchronize`` before and after on a GPU.
Variants that are compared are run *interleaved* (A B C, A B C, ...) after their warm-up, so that a change
of machine load during the run hits every variant alike; each result keeps all samples, the median and the
inter-quartile range, and ratios are reported both as ratio of medians and as median of per-round ratios.

Peak memory of one step:
- CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the memory
  allocated before the step (tensor bytes, exact).
- CPU: the process's resident-set high-water mark. Before the step, freed heap memory is handed back to the
  OS (glibc ``malloc_trim(0)``) and the kernel's high-water mark is reset (``echo 5 > /proc/self/clear_refs``,
  Linux >= 4.0); after it, ``VmHWM - VmRSS(before)`` from ``/proc/self/status`` is the extra resident memory
  the step needed (activations, gradients, workspaces, allocator slack; parameters and optimizer state, which
  exist before the step, are not counted). Where ``clear_refs`` is unavailable the value is ``None``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import statistics
import subprocess
import time
from typing import Callable, Optional

import torch


# --------------------------------------------------------------------------------------------------
# Device and threads
# --------------------------------------------------------------------------------------------------
def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_threads(text: str) -> list[int]:
    """``"1,all"`` -> [1, os.cpu_count()] (duplicates removed, order kept)."""
    cores = os.cpu_count() or 1
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        value = cores if part in ("all", "max") else int(part)
        if value < 1:
            raise ValueError(f"thread counts must be >= 1, got {value}")
        if value not in out:
            out.append(value)
    return out


def autocast_context(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` for ``dtype`` (None: a no-op context)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------
def summarize(samples: list[float]) -> dict:
    """median, IQR (q1, q3), min, max, mean of a list of seconds."""
    s = sorted(samples)
    if len(s) >= 2:
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive")
    else:
        q1 = q3 = s[0]
    return {"median_s": statistics.median(s), "q1_s": q1, "q3_s": q3, "iqr_s": q3 - q1, "min_s": s[0], "max_s": s[-1],
            "mean_s": statistics.fmean(s), "n": len(s), "samples_s": [round(x, 6) for x in samples]}


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def compare(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, reps: int,
            log: Optional[Callable[[str], None]] = None) -> dict[str, dict]:
    """Warm every variant up, then time them interleaved ``reps`` times. Returns name -> summary dict."""
    for name, fn in fns.items():
        for _ in range(warmup):
            t = time_once(fn, device)
        if log and warmup:
            log(f"    warm-up {name}: last {t:.3f} s")
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            samples[name].append(time_once(fn, device))
    out = {name: summarize(values) for name, values in samples.items()}
    if log:
        for name, s in out.items():
            log(f"    {name}: median {s['median_s']:.4f} s  IQR {s['iqr_s']:.4f}  (n={s['n']})")
    return out


def paired_ratio(results: dict[str, dict], num: str, den: str) -> dict:
    """time(num) / time(den): ratio of medians and median / min / max of the per-round ratios."""
    a, b = results[num]["samples_s"], results[den]["samples_s"]
    per_round = [x / y for x, y in zip(a, b)]
    return {"ratio_of_medians": results[num]["median_s"] / results[den]["median_s"],
            "median_round_ratio": statistics.median(per_round), "min_round_ratio": min(per_round),
            "max_round_ratio": max(per_round)}


# --------------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------------
def _status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> dict:
    """Extra peak memory (MiB) of one call of ``fn`` (see the module docstring for the method)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"step_peak_mib": (peak - before) / 2**20, "method": "torch.cuda.max_memory_allocated - allocated before"}
    _malloc_trim()
    rss_before = _status_kib("VmRSS")
    if rss_before is None or not _reset_hwm():
        return {"step_peak_mib": None, "method": "unavailable (/proc/self/clear_refs not writable)"}
    fn()
    hwm = _status_kib("VmHWM")
    return {"step_peak_mib": (hwm - rss_before) / 1024, "rss_before_mib": rss_before / 1024, "process_hwm_mib": hwm / 1024,
            "method": "VmHWM - VmRSS(before) after malloc_trim + clear_refs=5"}


# --------------------------------------------------------------------------------------------------
# FLOPs and matmul peak
# --------------------------------------------------------------------------------------------------
def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call (matmul, conv, SDPA; forward and, when ``fn`` calls backward, backward) counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add; elementwise ops not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype, n: Optional[int] = None, reps: int = 5) -> dict:
    """Achieved FLOP/s of a square ``n x n`` GEMM (median of ``reps`` after 2 warm-ups): this machine's
    practical matmul peak at the current thread count."""
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b, out=c)
    times = [time_once(lambda: torch.mm(a, b, out=c), device) for _ in range(reps)]
    s = summarize(times)
    flops = 2 * n**3
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "gflops_median": flops / s["median_s"] / 1e9,
            "gflops_best": flops / s["min_s"] / 1e9, "time": s}


# --------------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma", "avx_vnni")))
    except OSError:
        pass
    return []


def git_commit() -> Optional[str]:
    try:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: torch.device) -> dict:
    import transformers

    info = {
        "hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__, "cpu": cpu_model(),
        "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf") else None,
        "device": str(device), "mkldnn_bf16": bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()),
        "git_commit": git_commit(), "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def loadavg() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
