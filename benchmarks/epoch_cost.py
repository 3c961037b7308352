"""Train-step throughput of the real-size ETMAE recipes on this CPU (no data loading): the ViT-Tiny fine-tuning step
and the ViT-S teacher MAE step at 224 px, batch 32, 1 warm-up + 3 steps (README, *Training on the real datasets*).

    OMP_NUM_THREADS=2 THREADS=2 python benchmarks/epoch_cost.py
"""
import os, time, json, torch
import medmae
from medmae import ETMAEConfig, ETMAEForPreTraining, ETMAEForImageClassification
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
def rate(model, make_inputs, batch, reps=3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    def step():
        out = model(**make_inputs()); out.loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    step()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    return [batch / t for t in times]
B = 32
x = lambda: torch.randn(B, 3, 224, 224)
res = {"loadavg_start": open("/proc/loadavg").read().split()[:3], "threads": torch.get_num_threads()}
cls = ETMAEForImageClassification(ETMAEConfig.from_preset("vit_tiny_patch16_dec512d2b", num_labels=14, problem_type="multi_label_classification", drop_path_rate=0.2))
res["etmae_tiny_finetune_img_s"] = rate(cls, lambda: {"pixel_values": x(), "labels": torch.randint(0, 2, (B, 14)).float()}, B)
teacher = ETMAEForPreTraining(ETMAEConfig.from_preset("vit_small_patch16_dec512d8b", mask_ratio=0.9, teacher_hidden_size=None))
res["etmae_vits_teacher_pretrain_img_s"] = rate(teacher, lambda: {"pixel_values": x()}, B)
res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
print(json.dumps(res, indent=1))
