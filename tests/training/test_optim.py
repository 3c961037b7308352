"""Optimiser groups (weight-decay exclusions, timm layer decay) and per-iteration schedules."""

import math

import pytest
import torch

from medmae import ETMAEConfig, ETMAEForImageClassification, ETMAEForPreTraining
from medmae.training.optim import (
    build_optimizer,
    build_scheduler,
    layer_decay_param_groups,
    lr_multiplier,
    param_groups,
    scaled_lr,
    vit_layer_id,
)


@pytest.fixture(scope="module")
def classifier():
    config = ETMAEConfig.from_preset("tiny_test", num_labels=3, problem_type="multi_label_classification")
    return ETMAEForImageClassification(config)


def test_layer_ids_follow_timm_param_groups_lrd():
    n = 5  # 4 blocks + 1
    assert vit_layer_id("etmae.cls_token", n) == 0
    assert vit_layer_id("etmae.pos_embed", n) == 0
    assert vit_layer_id("etmae.patch_embed.proj.weight", n) == 0
    assert vit_layer_id("etmae.blocks.0.attn.qkv.weight", n) == 1
    assert vit_layer_id("etmae.blocks.3.mlp.fc2.bias", n) == 4
    assert vit_layer_id("fc_norm.weight", n) == n
    assert vit_layer_id("classifier.weight", n) == n
    assert vit_layer_id("decoder.blocks.0.attn.qkv.weight", n) == n  # decoder blocks are not encoder layers


def test_layer_decay_groups_carry_scaled_lr_and_no_decay_exclusions(classifier):
    lr, decay = 1e-3, 0.55
    groups = layer_decay_param_groups(classifier, lr, weight_decay=0.05, layer_decay=decay)
    num_layers = 5
    by_name = {name: g for g in groups for name in g["param_names"]}
    assert by_name["etmae.patch_embed.proj.weight"]["lr"] == pytest.approx(lr * decay**num_layers)
    assert by_name["etmae.cls_token"]["lr"] == pytest.approx(lr * decay**num_layers)
    assert by_name["etmae.blocks.3.attn.qkv.weight"]["lr"] == pytest.approx(lr * decay)
    assert by_name["classifier.weight"]["lr"] == pytest.approx(lr)
    # no weight decay: biases, 1-D (norms), cls_token; decay on matrices
    assert by_name["etmae.blocks.0.attn.qkv.bias"]["weight_decay"] == 0.0
    assert by_name["fc_norm.weight"]["weight_decay"] == 0.0
    assert by_name["etmae.cls_token"]["weight_decay"] == 0.0
    assert by_name["etmae.blocks.0.mlp.fc1.weight"]["weight_decay"] == 0.05
    assert "etmae.pos_embed" not in by_name  # frozen sin-cos table
    trainable = {n for n, p in classifier.named_parameters() if p.requires_grad}
    assert set(by_name) == trainable


def test_weight_decay_groups_without_layer_decay():
    model = ETMAEForPreTraining(ETMAEConfig.from_preset("tiny_test", teacher_hidden_size=None))
    groups = param_groups(model, 1e-3, 0.05)
    assert {g["lr"] for g in groups} == {1e-3}
    decayed = {n for g in groups if g["weight_decay"] for n in g["param_names"]}
    assert all(not n.endswith(".bias") and "norm" not in n for n in decayed)
    assert "decoder.mask_token" in decayed  # MAE decays the mask token (only pos_embed/cls_token are exempt)


def test_schedule_warmup_then_half_cycle_cosine_and_poly():
    total, warm = 100, 10
    assert lr_multiplier(0, total, warm) == 0.0
    assert lr_multiplier(5, total, warm) == pytest.approx(0.5)
    assert lr_multiplier(10, total, warm) == pytest.approx(1.0)
    assert lr_multiplier(55, total, warm) == pytest.approx(0.5)
    assert lr_multiplier(100, total, warm, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_multiplier(55, total, 10, "poly", power=0.9) == pytest.approx(0.5**0.9)
    assert lr_multiplier(40, total, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="cosine, poly or constant"):
        lr_multiplier(1, total, 0, "linear")


def test_lambda_scheduler_keeps_layer_decay_ratios(classifier):
    optimizer = build_optimizer(classifier, "adamw", 1e-3, 0.05, (0.9, 0.999), layer_decay=0.5)
    scheduler = build_scheduler(optimizer, total_steps=20, warmup_steps=4, schedule="cosine", min_lr=1e-5)
    initial = [g["lr"] for g in optimizer.param_groups]
    assert initial == [0.0] * len(initial)  # warm-up starts at 0 (MAE)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    peak = [g["initial_lr"] for g in optimizer.param_groups]
    ratios = {round(g["lr"] / p, 12) for g, p in zip(optimizer.param_groups, peak)}
    assert len(ratios) == 1  # one multiplier for every group: layer decay preserved
    expected = 1e-2 + (1 - 1e-2) * 0.5 * (1 + math.cos(math.pi * 3 / 16))
    assert ratios.pop() == pytest.approx(expected)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.999)


def test_sgd_and_scaled_lr(classifier):
    assert scaled_lr(1.5e-4, 512) == pytest.approx(3e-4)  # ETMAE scripts: 32 x 4 accumulation x 4 GPUs
    optimizer = build_optimizer(classifier, "sgd", 0.01, 1e-4, momentum=0.9)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    with pytest.raises(ValueError, match="adamw or sgd"):
        build_optimizer(classifier, "lamb", 0.01, 0.0)


def test_effective_batch_warning_names_the_accumulation_that_matches_the_paper():
    from medmae.training.args import effective_batch_report

    line, warning = effective_batch_report("finetune", "chestxray14", 32, 1, 1, 3.1e-5)
    assert line.startswith("effective batch 32 (32 per device x 1 accumulation x 1 process(es)), absolute lr 3.1e-05")
    assert "effective batch of 128" in warning and "--gradient_accumulation_steps 4" in warning
    _, warning = effective_batch_report("pretrain", "chexpert", 32, 4, 1, 7.5e-5)
    assert "--gradient_accumulation_steps 16" in warning  # 512 / 32
    assert effective_batch_report("pretrain", "chexpert", 32, 4, 4, 3e-4)[1] is None  # the authors' 4 GPUs
    assert effective_batch_report("finetune", "demo", 8, 1, 1, 1e-3)[1] is None  # not a paper recipe
