"""SDDA-MAE joint fine-tuning train step at 256 and 512 px (batch 1, 1 thread, the paper's widths): one process per
run, so glibc's malloc settings can differ between runs (they are read at process start).

    OMP_NUM_THREADS=1 python benchmarks/sdda_malloc_bench.py
    OMP_NUM_THREADS=1 MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=1073741824 \
        python benchmarks/sdda_malloc_bench.py
"""
import time, json, os, torch
torch.set_num_threads(1)
import medmae
from medmae import SDDAMAEConfig, SDDAMAEForSegmentationAndClassification
def step_time(size, reps=3):
    torch.manual_seed(0)
    m = SDDAMAEForSegmentationAndClassification(SDDAMAEConfig.from_preset("sdda_mae_512", image_size=size, num_cls_labels=3)).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    x = torch.randn(1, 3, size, size); y = torch.randint(0, 2, (1, size, size)); c = torch.tensor([1])
    def step():
        out = m(pixel_values=x, labels=y, class_labels=c); out.loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    step(); ts = []
    for _ in range(reps):
        t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts)//2]
t256, t512 = step_time(256), step_time(512)
print(json.dumps({"env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC") or k == "LD_PRELOAD"}, "t256": t256, "t512": t512, "ratio": t512 / t256, "load": open("/proc/loadavg").read().split()[:3]}))
