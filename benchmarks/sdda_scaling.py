"""How SDDA-MAE's cost grows with image size: forward and forward+backward time of the default-width
pre-training model at 128, 256 and 512 px (batch 1, median of a few repetitions), and one efficient
(linear) attention layer against one global softmax attention layer of the same width on the
stage-1 tokens (H/4 x W/4).

Efficient attention is O(N d^2) in the number of tokens N, so 2x the side (4x the pixels) should cost
about 4x; softmax attention is O(N^2 d), about 16x. Not part of the test suite.

    OMP_NUM_THREADS=1 python -m benchmarks.sdda_scaling [--sizes 128 256 512] [--reps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from medmae import SDDAMAEConfig, SDDAMAEForPreTraining, SDDAMAEForSegmentationAndClassification
from medmae.modeling.layers import Attention
from medmae.modeling.sdda_layers import EfficientAttention


def median_time(fn, reps: int) -> float:
    """Median wall time of ``fn()`` in seconds over ``reps`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _step_times(model: torch.nn.Module, inputs: dict, reps: int) -> tuple[float, float]:
    """(forward, forward+backward) median seconds of ``model(**inputs)`` (train mode, loss backward)."""
    model.train()

    def forward():
        with torch.no_grad():
            model(**inputs)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()

    return median_time(forward, reps), median_time(forward_backward, reps)


def model_times(size: int, reps: int) -> tuple[float, float]:
    """(forward, forward+backward) seconds of the default-width pre-training model at ``size`` px."""
    torch.manual_seed(0)
    model = SDDAMAEForPreTraining(SDDAMAEConfig.from_preset("sdda_mae_512", image_size=size))
    inputs = {"pixel_values": torch.randn(1, 3, size, size), "noise": torch.rand(1, (size // 16) ** 2)}
    return _step_times(model, inputs, reps)


def finetune_times(size: int, reps: int) -> tuple[float, float]:
    """(forward, forward+backward) seconds of the default-width joint segmentation + classification model
    (full-scale skips, both heads, the paper's joint loss) at ``size`` px."""
    torch.manual_seed(0)
    model = SDDAMAEForSegmentationAndClassification(SDDAMAEConfig.from_preset("sdda_mae_512", image_size=size))
    inputs = {"pixel_values": torch.randn(1, 3, size, size),
              "labels": torch.randint(0, 2, (1, size, size)), "class_labels": torch.tensor([1])}
    return _step_times(model, inputs, reps)


def attention_times(size: int, reps: int, width: int = 128, heads: int = 8) -> tuple[float, float]:
    """(efficient, softmax) forward seconds of one attention layer on the (size/4)^2 stage-1 tokens."""
    tokens = torch.randn(1, (size // 4) ** 2, width)
    efficient = EfficientAttention(width).eval()
    softmax = Attention(SimpleNamespace(_attn_implementation="sdpa"), width, heads).eval()
    with torch.no_grad():
        return (median_time(lambda: efficient(tokens), reps), median_time(lambda: softmax(tokens), reps))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch 1, median of {args.reps}")
    print(f"{'px':>5} {'tokens':>7} {'fwd s':>8} {'fwd+bwd s':>10} {'eff-attn ms':>12} {'softmax ms':>11}")
    rows = []
    for size in args.sizes:
        fwd, fwd_bwd = model_times(size, args.reps)
        eff, soft = attention_times(size, args.reps)
        rows.append((size, fwd, fwd_bwd, eff, soft))
        print(f"{size:>5} {(size // 4) ** 2:>7} {fwd:>8.3f} {fwd_bwd:>10.3f} {eff * 1e3:>12.2f} {soft * 1e3:>11.2f}")
    print("ratios (4x pixels per step; linear = 4x, quadratic = 16x):")
    for (s0, *t0), (s1, *t1) in zip(rows, rows[1:]):
        fwd, fwd_bwd, eff, soft = (b / a for a, b in zip(t0, t1))
        print(f"  {s1}/{s0}: model fwd {fwd:.2f}x, fwd+bwd {fwd_bwd:.2f}x, "
              f"efficient attention {eff:.2f}x, softmax attention {soft:.2f}x")


if __name__ == "__main__":
    main()
