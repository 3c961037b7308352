"""ETMAE benchmark sections: student step vs transformers ViTMAE, torch.compile, bf16 autocast (with a loss
curve), distillation vs a DMAE-style step, classifier inference, and the whole training loop with data
loading. Each ``section_*`` function takes a :class:`Ctx` and returns a JSON-able dict.
"""

from __future__ import annotations

import copy
import io
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .common import autocast_context, compare, count_flops, paired_ratio, peak_memory_mib, synchronize, time_once

IMAGE_SIZE = 224
NUM_PATCHES = (IMAGE_SIZE // 16) ** 2
MASK_RATIO = 0.75


@dataclass
class Ctx:
    """What every section needs: device, thread count, sizes, repetition counts and a log function."""

    device: torch.device
    threads: int
    batch: int
    warmup: int
    reps: int
    quick: bool
    amp_dtype: Optional[torch.dtype]  # None on CPU (fp32 races); bfloat16 on a GPU
    log: Callable[[str], None]
    first_thread_count: bool = True
    measure_memory: bool = True
    cache: dict = field(default_factory=dict)  # models and FLOP counts reused across thread counts


# --------------------------------------------------------------------------------------------------
# Models and inputs
# --------------------------------------------------------------------------------------------------
def student_vitmae_config():
    """transformers ViTMAEConfig identical to the ETMAE student (ViT-Tiny/16, 3 heads, decoder 512 x 2)."""
    from transformers import ViTMAEConfig

    return ViTMAEConfig(image_size=IMAGE_SIZE, patch_size=16, num_channels=3, hidden_size=192, num_hidden_layers=12,
                        num_attention_heads=3, intermediate_size=768, decoder_hidden_size=512,
                        decoder_num_hidden_layers=2, decoder_num_attention_heads=16, decoder_intermediate_size=2048,
                        layer_norm_eps=1e-6, mask_ratio=MASK_RATIO, qkv_bias=True)


def inputs(batch: int, device: torch.device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen).to(device)
    noise = torch.rand(batch, NUM_PATCHES, generator=gen).to(device)
    return x, noise


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The same optimizer for every contender: AdamW (MAE betas), torch's default (foreach) implementation."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1.0e-4, betas=(0.9, 0.95),
                             weight_decay=0.05)


def train_step_fn(model, opt, x, noise, amp_dtype=None, device=None, loss_fn=None):
    """forward + backward + AdamW step (+ zero_grad(set_to_none)) closure."""
    device = device or x.device

    def step():
        with autocast_context(device, amp_dtype):
            loss = loss_fn() if loss_fn is not None else model(pixel_values=x, noise=noise).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def forward_fn(model, x, noise, amp_dtype=None):
    def fwd():
        with torch.no_grad(), autocast_context(x.device, amp_dtype):
            return model(pixel_values=x, noise=noise).loss

    return fwd


def student_pair(ctx: Ctx):
    """(transformers ViTMAEForPreTraining, converted ETMAEForPreTraining) with identical weights, train mode."""
    if "pair" not in ctx.cache:
        from transformers import ViTMAEForPreTraining

        from medmae.modeling.convert import from_vit_mae

        torch.manual_seed(0)
        hf = ViTMAEForPreTraining(student_vitmae_config())
        et = from_vit_mae(hf)
        ctx.cache["pair"] = (hf.to(ctx.device).train(), et.to(ctx.device).train())
    return ctx.cache["pair"]


def flops_per_image(ctx: Ctx, key: str, build_fn: Callable[[int], Callable[[], object]]) -> int:
    """FLOPs per image of a step, counted once (batch 2, FlopCounterMode) and cached; FLOPs are linear in batch."""
    cache = ctx.cache.setdefault("flops", {})
    if key not in cache:
        fn = build_fn(2)
        cache[key] = count_flops(fn) // 2
    return cache[key]


def _throughput(summary: dict, batch: int) -> float:
    return batch / summary["median_s"]


def _rate_table(results: dict, batch: int, flops: Optional[dict] = None) -> dict:
    out = {}
    for name, s in results.items():
        row = {"images_per_s": _throughput(s, batch), "median_s": s["median_s"], "iqr_s": s["iqr_s"],
               "images_per_s_q1_q3": [batch / s["q3_s"], batch / s["q1_s"]], "samples_s": s["samples_s"]}
        if flops and name in flops:
            row["gflop_per_step"] = flops[name] * batch / 1e9
            row["achieved_gflops"] = flops[name] * batch / s["median_s"] / 1e9
        out[name] = row
    return out


# --------------------------------------------------------------------------------------------------
# 1. Student step vs transformers ViTMAE
# --------------------------------------------------------------------------------------------------
def numerics_check(ctx: Ctx) -> dict:
    """Same weights (converted), same input, same noise: loss, logits and gradients must agree."""
    hf, et = student_pair(ctx)
    x, noise = inputs(4, ctx.device, seed=123)
    result = {}
    outs = {}
    for name, model in (("transformers", hf), ("medmae", et)):
        model.zero_grad(set_to_none=True)
        out = model(pixel_values=x, noise=noise)
        out.loss.backward()
        outs[name] = out
    grads = {
        "patch_embed": (hf.vit.embeddings.patch_embeddings.projection.weight.grad, et.etmae.patch_embed.proj.weight.grad),
        "decoder_pred": (hf.decoder.decoder_pred.weight.grad, et.decoder.pred.weight.grad),
    }
    result["loss_transformers"] = outs["transformers"].loss.item()
    result["loss_medmae"] = outs["medmae"].loss.item()
    result["loss_abs_diff"] = abs(result["loss_transformers"] - result["loss_medmae"])
    result["logits_max_abs_diff"] = (outs["transformers"].logits - outs["medmae"].logits).abs().max().item()
    result["mask_equal"] = bool(torch.equal(outs["transformers"].mask, outs["medmae"].mask))
    for key, (a, b) in grads.items():
        result[f"grad_{key}_max_abs_diff"] = (a - b).abs().max().item()
        result[f"grad_{key}_max_abs"] = a.abs().max().item()
    hf.zero_grad(set_to_none=True)
    et.zero_grad(set_to_none=True)
    result["equal"] = (result["mask_equal"] and result["loss_abs_diff"] <= 1e-5 * max(1.0, abs(result["loss_medmae"]))
                       and result["logits_max_abs_diff"] <= 1e-4)
    ctx.log(f"    numerics: loss diff {result['loss_abs_diff']:.2e}, logits max diff {result['logits_max_abs_diff']:.2e}, "
            f"equal={result['equal']}")
    return result


def section_etmae(ctx: Ctx) -> dict:
    hf, et = student_pair(ctx)
    out: dict = {"batch": ctx.batch, "precision": str(ctx.amp_dtype or "float32")}
    if "numerics" not in ctx.cache:
        ctx.cache["numerics"] = numerics_check(ctx)
    out["numerics"] = ctx.cache["numerics"]
    if not out["numerics"]["equal"]:
        ctx.log("    WARNING: numerics differ; the race below is not apples to apples")
    x, noise = inputs(ctx.batch, ctx.device)
    opt_hf, opt_et = make_optimizer(hf), make_optimizer(et)
    fns_fwd = {"transformers": forward_fn(hf, x, noise, ctx.amp_dtype), "medmae": forward_fn(et, x, noise, ctx.amp_dtype)}
    fns_train = {"transformers": train_step_fn(hf, opt_hf, x, noise, ctx.amp_dtype),
                 "medmae": train_step_fn(et, opt_et, x, noise, ctx.amp_dtype)}

    def flop_builder(model, train):
        def build(b):
            xb, nb = inputs(b, ctx.device)
            if train:
                return lambda: model(pixel_values=xb, noise=nb).loss.backward()
            return forward_fn(model, xb, nb, ctx.amp_dtype)
        return build

    flops_fwd = {n: flops_per_image(ctx, f"student_fwd_{n}", flop_builder(m, False)) for n, m in
                 (("transformers", hf), ("medmae", et))}
    flops_train = {n: flops_per_image(ctx, f"student_train_{n}", flop_builder(m, True)) for n, m in
                   (("transformers", hf), ("medmae", et))}
    hf.zero_grad(set_to_none=True)
    et.zero_grad(set_to_none=True)
    ctx.log("  forward (no_grad, train mode, mask 0.75)")
    fwd = compare(fns_fwd, ctx.device, ctx.warmup, ctx.reps, ctx.log)
    ctx.log("  train step (forward + backward + AdamW)")
    train = compare(fns_train, ctx.device, ctx.warmup, ctx.reps, ctx.log)
    out["forward"] = _rate_table(fwd, ctx.batch, flops_fwd)
    out["train"] = _rate_table(train, ctx.batch, flops_train)
    out["speedup_forward"] = _speedup(fwd, "medmae", "transformers")
    out["speedup_train"] = _speedup(train, "medmae", "transformers")
    if ctx.measure_memory:
        out["peak_memory"] = {f"{kind}/{name}": peak_memory_mib(fn, ctx.device)
                              for kind, fns in (("forward", fns_fwd), ("train", fns_train)) for name, fn in fns.items()}
    return out


def _speedup(results: dict, fast: str, slow: str) -> dict:
    """Speed-up of ``fast`` over ``slow`` (time(slow) / time(fast)): of medians and per-round."""
    r = paired_ratio(results, slow, fast)
    return {"of_medians": r["ratio_of_medians"], "median_round": r["median_round_ratio"],
            "round_min": r["min_round_ratio"], "round_max": r["max_round_ratio"]}


# --------------------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------------------
def section_compile(ctx: Ctx) -> dict:
    """ETMAE student: eager vs ``torch.compile`` (default mode, whole model incl. the loss; AdamW eager) vs
    transformers eager. Compiled once per thread count (inductor bakes the OpenMP thread count into its C++
    kernels); compile time reported."""
    hf, et = student_pair(ctx)
    x, noise = inputs(ctx.batch, ctx.device)
    out: dict = {"batch": ctx.batch, "precision": str(ctx.amp_dtype or "float32"), "mode": "default"}
    torch._dynamo.reset()
    et_c = copy.deepcopy(et)
    compiled = torch.compile(et_c)
    opt_hf, opt_et, opt_c = make_optimizer(hf), make_optimizer(et), make_optimizer(et_c)
    step_c = train_step_fn(compiled, opt_c, x, noise, ctx.amp_dtype)
    with torch.no_grad(), autocast_context(ctx.device, ctx.amp_dtype):
        loss_eager = et_c(pixel_values=x, noise=noise).loss.item()  # same weights, before the first update
    start = time.perf_counter()
    try:
        loss_compiled = step_c().item()
        synchronize(ctx.device)
    except Exception as error:  # a compiler problem must not sink the other sections
        out["error"] = f"{type(error).__name__}: {error}"[:2000]
        ctx.log(f"    torch.compile failed: {out['error'][:300]}")
        return out
    out["compile_and_first_step_s"] = time.perf_counter() - start
    out["numerics"] = {"loss_eager": loss_eager, "loss_compiled": loss_compiled,
                       "rel_diff": abs(loss_eager - loss_compiled) / abs(loss_eager)}
    ctx.log(f"    compile + first step: {out['compile_and_first_step_s']:.1f} s; loss rel diff "
            f"{out['numerics']['rel_diff']:.1e}")
    fns = {"transformers eager": train_step_fn(hf, opt_hf, x, noise, ctx.amp_dtype),
           "medmae eager": train_step_fn(et, opt_et, x, noise, ctx.amp_dtype),
           "medmae compiled": step_c}
    res = compare(fns, ctx.device, ctx.warmup, ctx.reps, ctx.log)
    fl = ctx.cache.get("flops", {})
    flops = {"transformers eager": fl.get("student_train_transformers"), "medmae eager": fl.get("student_train_medmae"),
             "medmae compiled": fl.get("student_train_medmae")}
    out["train"] = _rate_table(res, ctx.batch, {k: v for k, v in flops.items() if v})
    out["speedup_compiled_vs_transformers"] = _speedup(res, "medmae compiled", "transformers eager")
    out["speedup_compiled_vs_eager"] = _speedup(res, "medmae compiled", "medmae eager")
    out["speedup_eager_vs_transformers"] = _speedup(res, "medmae eager", "transformers eager")
    torch._dynamo.reset()
    return out


# --------------------------------------------------------------------------------------------------
# bf16 autocast (step time + loss curve)
# --------------------------------------------------------------------------------------------------
def default_precision(num_parameters: int, device: torch.device) -> Optional[str]:
    """What medmae's training scripts choose with ``--mixed_precision auto`` (None when not importable)."""
    try:
        from medmae.training.runtime import resolve_mixed_precision
    except Exception:  # the training package is optional for the benchmarks
        return None
    return resolve_mixed_precision("auto", cpu=device.type != "cuda", num_parameters=num_parameters)


def section_bf16(ctx: Ctx, with_transformers: bool = False) -> dict:
    hf, et = student_pair(ctx)
    x, noise = inputs(ctx.batch, ctx.device)
    et32, et16 = copy.deepcopy(et), copy.deepcopy(et)
    hf16 = copy.deepcopy(hf)
    fns = {"medmae fp32": train_step_fn(et32, make_optimizer(et32), x, noise, None),
           "medmae bf16 autocast": train_step_fn(et16, make_optimizer(et16), x, noise, torch.bfloat16)}
    if with_transformers:
        fns["transformers bf16 autocast"] = train_step_fn(hf16, make_optimizer(hf16), x, noise, torch.bfloat16)
    res = compare(fns, ctx.device, ctx.warmup, ctx.reps, ctx.log)
    fl = ctx.cache.get("flops", {})
    flops = {"medmae fp32": fl.get("student_train_medmae"), "medmae bf16 autocast": fl.get("student_train_medmae"),
             "transformers bf16 autocast": fl.get("student_train_transformers")}
    n_params = sum(p.numel() for p in et.parameters())
    return {"batch": ctx.batch, "train": _rate_table(res, ctx.batch, {k: v for k, v in flops.items() if v}),
            "speedup_bf16_vs_fp32": _speedup(res, "medmae bf16 autocast", "medmae fp32"),
            "training_scripts_default_precision": default_precision(n_params, ctx.device),
            "loss_dtype": "float32 (forward_loss and distillation_loss cast to fp32 inside the model)"}


def _curve_images(num: int, size: int, seed: int = 0) -> torch.Tensor:
    """A fixed pool of structured images (synthetic CXR-like when medmae.training.synthetic is importable,
    else smooth random fields), normalised to zero mean / unit std, [num, 3, size, size]."""
    try:
        from medmae.training.synthetic import synthetic_cxr_arrays

        images = torch.from_numpy(synthetic_cxr_arrays(num_images=num, image_size=size, seed=seed)["image"]).float()
        source = "medmae.training.synthetic.synthetic_cxr_arrays"
    except Exception:
        gen = torch.Generator().manual_seed(seed)
        low = torch.rand(num, 1, size // 16, size // 16, generator=gen)
        images = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[:, 0]
        source = "smooth random fields"
    images = (images - images.mean()) / images.std()
    return images[:, None].expand(-1, 3, -1, -1).contiguous(), source


def loss_curve(ctx: Ctx, steps: int, batch: int, lr: float = 5.0e-4) -> dict:
    """Train the same ETMAE student from the same init on the same batches and masks in fp32 and in bf16
    autocast; return both loss curves and their agreement."""
    _, et = student_pair(ctx)
    pool, source = _curve_images(max(4 * batch, 32), IMAGE_SIZE)
    pool = pool.to(ctx.device)
    torch.manual_seed(1)
    init = copy.deepcopy(et).cpu()
    curves, times = {}, {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model = copy.deepcopy(init).to(ctx.device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
        gen = torch.Generator().manual_seed(2)
        losses = []
        start = time.perf_counter()
        for step in range(steps):
            idx = torch.randint(0, pool.shape[0], (batch,), generator=gen)
            noise = torch.rand(batch, NUM_PATCHES, generator=gen).to(ctx.device)
            with autocast_context(ctx.device, dtype):
                loss = model(pixel_values=pool[idx.to(ctx.device)], noise=noise).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                break
        times[name] = time.perf_counter() - start
        curves[name] = losses
        ctx.log(f"    loss curve {name}: {steps} steps in {times[name]:.1f} s, first {losses[0]:.4f} last {losses[-1]:.4f}")
    a, b = curves["fp32"], curves["bf16"]
    k = max(5, steps // 10)
    diffs = [abs(x - y) for x, y in zip(a, b)]
    step_noise = statistics_stdev([a[i + 1] - a[i] for i in range(len(a) - k - 1, len(a) - 1)]) if len(a) > k + 2 else None

    def smooth(v, w=10):
        return [sum(v[max(0, i - w + 1): i + 1]) / len(v[max(0, i - w + 1): i + 1]) for i in range(len(v))]

    sa, sb = smooth(a), smooth(b)
    tail_a, tail_b = sum(a[-k:]) / k, sum(b[-k:]) / k
    out = {
        "steps": steps, "batch": batch, "lr": lr, "images": source, "fp32": a, "bf16": b,
        "seconds": times, "speedup_bf16": times["fp32"] / times["bf16"],
        "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs),
        "max_abs_diff_smoothed10": max(abs(x - y) for x, y in zip(sa, sb)),
        f"mean_last{k}_fp32": tail_a, f"mean_last{k}_bf16": tail_b, "tail_diff": tail_b - tail_a,
        "fp32_step_to_step_std_tail": step_noise,
    }
    if step_noise:
        # "within noise": the tail means differ by less than the fp32 loss's own batch-to-batch scatter.
        out["within_noise"] = abs(tail_b - tail_a) <= step_noise
    return out


def statistics_stdev(values):
    import statistics

    return statistics.stdev(values) if len(values) > 1 else None


def plot_curve(curve: dict, path) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(curve["fp32"], label="fp32", lw=1)
    ax.plot(curve["bf16"], label="bf16 autocast (fp32 loss)", lw=1, alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("MAE loss")
    ax.set_title(f"ETMAE student, batch {curve['batch']}, same init / batches / masks")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# --------------------------------------------------------------------------------------------------
# 2. Distillation
# --------------------------------------------------------------------------------------------------
TEACHERS = {"ViT-S": "vit_small_patch16_dec512d8b", "ViT-B": "vit_base_patch16_dec512d8b"}


def _distill_models(ctx: Ctx, teacher_name: str):
    key = f"distill_{teacher_name}"
    if key not in ctx.cache:
        from medmae.configuration import ETMAEConfig
        from medmae.modeling import ETMAEForPreTraining

        torch.manual_seed(0)
        teacher_full = ETMAEForPreTraining(ETMAEConfig.from_preset(TEACHERS[teacher_name], teacher_hidden_size=None))
        teacher_full = teacher_full.to(ctx.device).eval().requires_grad_(False)
        width = teacher_full.config.hidden_size
        student = ETMAEForPreTraining(ETMAEConfig.from_preset("vit_tiny_patch16_dec512d2b", teacher_hidden_size=width))
        student = student.to(ctx.device).train()
        plain = copy.deepcopy(student)  # no teacher: the plain MAE step (projection head unused)
        ours = copy.deepcopy(student)
        ours.set_teacher(teacher_full.etmae, image_mean=[0.5056] * 3, image_std=[0.252] * 3)
        dmae = copy.deepcopy(student)  # teacher called by hand (full encoder + decoder), as DMAE's engine does
        dmae.config.teacher_image_mean, dmae.config.teacher_image_std = [0.5056] * 3, [0.252] * 3
        ctx.cache[key] = (teacher_full, plain, ours, dmae)
    return ctx.cache[key]


def dmae_loss_fn(student, teacher_full, x, noise, amp_dtype, device):
    """DMAE-style distillation: the frozen teacher runs its FULL encoder and decoder each step (no_grad), the
    block-k_T features are taken from its hidden states; then the student's MAE loss + L1 alignment."""
    k_s, k_t = student.config.student_align_layer, student.config.teacher_align_layer

    def loss():
        with torch.no_grad():
            t_out = teacher_full(pixel_values=student.teacher_inputs(x), noise=noise, mask_ratio=MASK_RATIO,
                                 output_hidden_states=True)
            target = t_out.hidden_states[k_t + 1]
        out = student(pixel_values=x, noise=noise, mask_ratio=MASK_RATIO, output_hidden_states=True)
        return out.loss + student.config.distill_weight * student.distillation_loss(out.hidden_states[k_s + 1], target)

    return loss


def section_distill(ctx: Ctx, teachers=("ViT-S", "ViT-B")) -> dict:
    out: dict = {"batch": ctx.batch, "precision": str(ctx.amp_dtype or "float32")}
    x, noise = inputs(ctx.batch, ctx.device)
    for name in teachers:
        teacher_full, plain, ours, dmae = _distill_models(ctx, name)
        ctx.log(f"  teacher {name} ({sum(p.numel() for p in teacher_full.parameters()) / 1e6:.1f}M params)")

        def builders(model_plain, model_ours, model_dmae, xb, nb):
            return {
                "plain student": lambda: model_plain(pixel_values=xb, noise=nb).loss,
                "medmae (truncated teacher)": lambda: model_ours(pixel_values=xb, noise=nb).loss,
                "DMAE-style (full teacher)": dmae_loss_fn(model_dmae, teacher_full, xb, nb, ctx.amp_dtype, ctx.device),
            }

        # Equivalence: the truncated teacher gives the same loss as the full one (same weights, same noise).
        if f"distill_equal_{name}" not in ctx.cache:
            xs, ns = inputs(2, ctx.device, seed=5)
            b = builders(plain, ours, dmae, xs, ns)
            with torch.no_grad():
                l_ours, l_dmae = b["medmae (truncated teacher)"]().item(), b["DMAE-style (full teacher)"]().item()
            ctx.cache[f"distill_equal_{name}"] = {"loss_truncated": l_ours, "loss_full_teacher": l_dmae,
                                                  "abs_diff": abs(l_ours - l_dmae)}
        flops = {}
        for variant in ("plain student", "medmae (truncated teacher)", "DMAE-style (full teacher)"):
            def build(bsz, variant=variant):
                xb, nb = inputs(bsz, ctx.device)
                fn = builders(plain, ours, dmae, xb, nb)[variant]
                return lambda: fn().backward()
            flops[variant] = flops_per_image(ctx, f"distill_{name}_{variant}", build)
        for m in (plain, ours, dmae):
            m.zero_grad(set_to_none=True)
        b = builders(plain, ours, dmae, x, noise)
        opts = ctx.cache.setdefault(f"distill_opts_{name}", {k: make_optimizer(m) for k, m in
                                                             zip(b, (plain, ours, dmae))})
        fns = {k: train_step_fn(None, opts[k], x, noise, ctx.amp_dtype, ctx.device, loss_fn=b[k]) for k in b}
        res = compare(fns, ctx.device, ctx.warmup, ctx.reps, ctx.log)
        entry = {"train": _rate_table(res, ctx.batch, flops), "equivalence": ctx.cache[f"distill_equal_{name}"],
                 "cost_vs_plain": paired_ratio(res, "medmae (truncated teacher)", "plain student"),
                 "dmae_cost_vs_plain": paired_ratio(res, "DMAE-style (full teacher)", "plain student"),
                 "speedup_vs_dmae": _speedup(res, "medmae (truncated teacher)", "DMAE-style (full teacher)")}
        if ctx.measure_memory:
            entry["peak_memory"] = {k: peak_memory_mib(fn, ctx.device) for k, fn in fns.items()}
        out[name] = entry
    return out


# --------------------------------------------------------------------------------------------------
# 3. Classifier inference
# --------------------------------------------------------------------------------------------------
CLASSIFIERS = {"ViT-Tiny": "vit_tiny_patch16_dec512d2b", "ViT-S": "vit_small_patch16_dec512d8b",
               "ViT-B": "vit_base_patch16_dec512d8b"}


def section_inference(ctx: Ctx, batch: Optional[int] = None) -> dict:
    from medmae.configuration import ETMAEConfig
    from medmae.modeling import ETMAEForImageClassification

    batch = batch or ctx.batch
    if "classifiers" not in ctx.cache:
        models = {}
        for name, preset in CLASSIFIERS.items():
            torch.manual_seed(0)
            cfg = ETMAEConfig.from_preset(preset, num_labels=14, problem_type="multi_label_classification",
                                          teacher_hidden_size=None)
            models[name] = ETMAEForImageClassification(cfg).to(ctx.device).eval()
        ctx.cache["classifiers"] = models
    models = ctx.cache["classifiers"]
    x, _ = inputs(batch, ctx.device)

    def infer(model, xb):
        def run():
            with torch.inference_mode(), autocast_context(ctx.device, ctx.amp_dtype):
                return model(pixel_values=xb).logits
        return run

    flops = {name: flops_per_image(ctx, f"infer_{name}", lambda b, m=m: infer(m, inputs(b, ctx.device)[0]))
             for name, m in models.items()}
    res = compare({name: infer(m, x) for name, m in models.items()}, ctx.device, ctx.warmup, ctx.reps, ctx.log)
    table = _rate_table(res, batch, flops)
    for name, m in models.items():
        table[name]["parameters"] = sum(p.numel() for p in m.parameters())
    tiny = table["ViT-Tiny"]["images_per_s"]
    return {"batch": batch, "precision": str(ctx.amp_dtype or "float32"), "mode": "eval, torch.inference_mode",
            "inference": table,
            "tiny_speedup": {name: tiny / row["images_per_s"] for name, row in table.items()},
            "parameter_ratio": {name: row["parameters"] / table["ViT-Tiny"]["parameters"] for name, row in table.items()}}


# --------------------------------------------------------------------------------------------------
# Whole training loop (data loading included)
# --------------------------------------------------------------------------------------------------
def _png_dataset(num: int, size: int):
    """A datasets.Dataset of ``num`` grayscale PNG images (synthetic CXR-like when available)."""
    import numpy as np
    from datasets import Dataset, Features, Image
    from PIL import Image as PILImage

    try:
        from medmae.training.synthetic import synthetic_cxr_arrays

        arrays = synthetic_cxr_arrays(num_images=num, image_size=size, seed=0)["image"]
        source = "medmae.training.synthetic.synthetic_cxr_arrays"
    except Exception:
        rng = np.random.default_rng(0)
        arrays = rng.integers(0, 256, size=(num, size, size), dtype=np.uint8)
        source = "uniform random uint8"
    cells = []
    for array in arrays:
        buf = io.BytesIO()
        PILImage.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
    return Dataset.from_dict({"image": cells}, features=Features({"image": Image()})), source


class _Decode:
    """``with_transform`` callable: PIL images (decoded by datasets) -> MedMAEImageProcessor pixel_values."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, batch):
        return {"pixel_values": self.processor(batch["image"], return_tensors="pt")["pixel_values"]}


def section_loop(ctx: Ctx, steps: Optional[int] = None, source_size: int = 256) -> dict:
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    from medmae.modeling import MedMAEImageProcessor

    steps = steps or (2 if ctx.quick else 3)
    batch = ctx.batch
    _, et = student_pair(ctx)
    n_params = sum(p.numel() for p in et.parameters())
    chosen = default_precision(n_params, ctx.device)
    amp = torch.bfloat16 if chosen == "bf16" else (torch.float16 if chosen == "fp16" else None)
    if "loop_data" not in ctx.cache:
        ds, source = _png_dataset(batch * (steps + 1), source_size)
        ctx.cache["loop_data"] = (ds, source)
    ds, source = ctx.cache["loop_data"]
    processor = MedMAEImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, num_channels=3)
    data = ds.with_transform(_Decode(processor))
    model = copy.deepcopy(et).train()
    opt = make_optimizer(model)

    def step(pixel_values):
        with autocast_context(ctx.device, amp):
            loss = model(pixel_values=pixel_values).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def loader(workers):
        sampler = BatchSampler(RandomSampler(data, generator=torch.Generator().manual_seed(0)), batch, drop_last=True)
        return DataLoader(data, batch_size=None, sampler=sampler, num_workers=workers,
                          persistent_workers=False, prefetch_factor=2 if workers else None,
                          pin_memory=ctx.device.type == "cuda")

    results = {}
    fixed = next(iter(loader(0)))["pixel_values"].to(ctx.device)
    step(fixed)  # warm-up
    times = [time_once(lambda: step(fixed), ctx.device) for _ in range(steps)]
    total = sum(times)
    results["model only"] = {"images_per_s": batch * steps / total, "seconds": total, "steps": steps}
    for workers in (0, 1):
        iterator = iter(loader(workers))
        step(next(iterator)["pixel_values"].to(ctx.device))  # worker start-up + warm-up
        synchronize(ctx.device)
        start = time.perf_counter()
        n = 0
        for batch_data in iterator:
            step(batch_data["pixel_values"].to(ctx.device, non_blocking=True))
            n += 1
        synchronize(ctx.device)
        total = time.perf_counter() - start
        results[f"loop, num_workers={workers}"] = {"images_per_s": batch * n / total, "seconds": total, "steps": n}
        del iterator
    # data loading alone (num_workers=0: decode + processor in this process)
    start = time.perf_counter()
    n = 0
    for _ in loader(0):
        n += 1
    total = time.perf_counter() - start
    results["data only, num_workers=0"] = {"images_per_s": batch * n / total, "seconds": total, "steps": n}
    base = results["model only"]["images_per_s"]
    for row in results.values():
        row["fraction_of_model_only"] = row["images_per_s"] / base
    for name, row in results.items():
        ctx.log(f"    {name}: {row['images_per_s']:.2f} img/s ({row['fraction_of_model_only']:.1%} of model-only)")
    return {"batch": batch, "precision": chosen or "fp32", "source_images": f"{source}, {source_size}px grayscale PNG",
            "pipeline": "datasets.Dataset(Image) -> with_transform(MedMAEImageProcessor: resize 224, 3 ch, normalise) "
                        "-> DataLoader(BatchSampler, batch_size=None)", "results": results}
