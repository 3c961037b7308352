"""Optimiser groups (weight-decay exclusions, timm layer decay) and per-iteration schedules."""

import io
import json
import math

import pytest
import torch

from medmae import ETMAEConfig, ETMAEForImageClassification, ETMAEForPreTraining
from medmae.training.optim import (
    build_optimizer,
    build_scheduler,
    layer_decay_param_groups,
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


def test_weight_decay_rules_follow_the_reference_recipes():
    """timm (MAE fine-tuning), mae (MAE pre-training: timm add_weight_decay without a skip list), all (Swin-MAE's
    AdamW over every parameter)."""
    model = ETMAEForPreTraining(ETMAEConfig.from_preset("tiny_test", teacher_hidden_size=None))

    def decayed(rule):
        return {n for g in param_groups(model, 1e-3, 0.05, rule=rule) if g["weight_decay"] for n in g["param_names"]}

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    timm, mae, every = decayed("timm"), decayed("mae"), decayed("all")
    assert "etmae.cls_token" not in timm and "etmae.cls_token" in mae and "etmae.cls_token" in every
    assert "decoder.mask_token" in timm and "decoder.mask_token" in mae
    biases_and_norms = {n for n, p in model.named_parameters() if p.requires_grad and (p.ndim == 1 or n.endswith(".bias"))}
    assert biases_and_norms and not biases_and_norms & mae and biases_and_norms <= every
    assert mae == trainable - biases_and_norms and every == trainable
    with pytest.raises(ValueError, match="unknown weight decay rule 'none'"):
        param_groups(model, 1e-3, 0.05, rule="none")


def test_each_family_and_stage_defaults_to_its_reference_weight_decay_rule():
    from medmae.training.families import FAMILIES

    assert {name: f.weight_decay_rule for name, f in FAMILIES.items()} == {
        "etmae": {"pretrain": "mae", "finetune": "timm"}, "sdda_mae": {"pretrain": "all", "finetune": "timm"}}


def reference_multiplier(step, total, warmup, schedule, min_ratio=0.0, power=0.9):
    """medmae's own schedule before transformers.get_scheduler (MAE util/lr_sched.py, DAE-Former poly)."""
    if step < warmup:
        return step / warmup
    t = min((step - warmup) / max(total - warmup, 1), 1.0)
    return {"cosine": min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)),
            "poly": (1 - t) ** power, "constant": 1.0}[schedule]


def _lrs(optimizer, scheduler, steps):
    """Every group's lr used by optimizer steps 0 .. steps - 1, then the lr after the last step."""
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return out + [[g["lr"] for g in optimizer.param_groups]]


# (warmup, total, min_lr, power): no warm-up, MAE-like, warm-up == total, warm-up longer than the run, 1 step
CASES = [(0, 12, 0.0, 0.9), (4, 20, 1e-5, 0.9), (10, 57, 2e-4, 2.0), (6, 6, 1e-5, 0.9), (9, 5, 1e-5, 0.9),
         (0, 1, 0.0, 0.9)]


@pytest.mark.parametrize("schedule", ["cosine", "poly", "constant"])
@pytest.mark.parametrize("warmup,total,min_lr,power", CASES)
def test_transformers_schedules_equal_the_papers_formulas_in_every_layer_decay_group(
        classifier, schedule, warmup, total, min_lr, power):
    lr, decay = 1e-3, 0.65
    optimizer = build_optimizer(classifier, "adamw", lr, 0.05, layer_decay=decay)
    scales = [g["lr_scale"] for g in optimizer.param_groups]
    assert len(set(scales)) == 6  # 4 blocks + embeddings + head: layer decay is really exercised
    scheduler = build_scheduler(optimizer, total, warmup, schedule, min_lr=min_lr, power=power)
    assert [g["initial_lr"] for g in optimizer.param_groups] == [lr * s for s in scales]
    for step, lrs in enumerate(_lrs(optimizer, scheduler, total)):
        expected = reference_multiplier(step, total, warmup, schedule, min_lr / lr, power)
        assert lrs == pytest.approx([lr * s * expected for s in scales], rel=1e-12, abs=0), (step, schedule)


def test_schedule_closed_form_values(classifier):
    def lr_at(step, total, warmup, schedule, **kwargs):
        optimizer = build_optimizer(classifier, "sgd", 1.0, 0.0)
        scheduler = build_scheduler(optimizer, total, warmup, schedule, **kwargs)
        return _lrs(optimizer, scheduler, step)[-1][0]

    assert lr_at(0, 100, 10, "cosine") == 0.0
    assert lr_at(5, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_at(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_at(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_at(100, 100, 10, "cosine", min_lr=0.1) == pytest.approx(0.1)
    assert lr_at(55, 100, 10, "poly", power=0.9) == pytest.approx(0.5**0.9)
    assert lr_at(100, 100, 10, "poly", min_lr=0.1) == 0.0  # min_lr is the cosine's floor only (DAE-Former)
    assert lr_at(40, 100, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="cosine, poly or constant"):
        lr_at(1, 100, 0, "linear")


@pytest.mark.parametrize("schedule", ["cosine", "poly", "constant"])
def test_scheduler_state_round_trips_through_scheduler_json(classifier, schedule):
    """checkpointing.py stores ``scheduler.state_dict()`` as JSON and the optimizer with torch.save: a resumed
    schedule continues exactly where the uninterrupted one is."""
    def build():
        optimizer = build_optimizer(classifier, "adamw", 1e-3, 0.05, layer_decay=0.5)
        return optimizer, build_scheduler(optimizer, 30, 5, schedule, min_lr=1e-5)

    optimizer, scheduler = build()
    reference = _lrs(optimizer, scheduler, 30)
    optimizer, scheduler = build()
    _lrs(optimizer, scheduler, 13)
    saved_scheduler = json.dumps(scheduler.state_dict())
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    optimizer, scheduler = build()
    buffer.seek(0)
    optimizer.load_state_dict(torch.load(buffer, weights_only=True))
    scheduler.load_state_dict(json.loads(saved_scheduler))
    assert scheduler.last_epoch == 13
    assert _lrs(optimizer, scheduler, 17) == reference[13:]
    # a scheduler.json of medmae < this change (plain-function lambdas, saved as null) still loads
    old = {**json.loads(saved_scheduler), "lr_lambdas": [None] * len(optimizer.param_groups)}
    scheduler.load_state_dict(old)
    assert scheduler.last_epoch == 13


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
    from medmae.training.presets import effective_batch_report

    line, warning = effective_batch_report("finetune", "chestxray14", 32, 1, 1, 3.1e-5)
    assert line.startswith("effective batch 32 (32 per device x 1 accumulation x 1 process(es)), absolute lr 3.1e-05")
    assert "effective batch of 128" in warning and "--gradient_accumulation_steps 4" in warning
    _, warning = effective_batch_report("pretrain", "chexpert", 32, 4, 1, 7.5e-5)
    assert "--gradient_accumulation_steps 16" in warning  # 512 / 32
    assert effective_batch_report("pretrain", "chexpert", 32, 4, 4, 3e-4)[1] is None  # the authors' 4 GPUs
    assert effective_batch_report("finetune", "demo", 8, 1, 1, 1e-3)[1] is None  # not a paper recipe


def test_timm_layer_decay_reads_the_models_own_groups_and_matches_medmae():
    """``no_weight_decay()`` and ``group_matcher()`` on the model, as timm models have them: timm's own layer-decay
    grouping of an ETMAE classifier gives every parameter the lr scale and weight decay medmae gives it."""
    from timm.optim._param_groups import param_groups_layer_decay

    model = ETMAEForImageClassification(ETMAEConfig.from_preset("tiny_test", num_labels=3))
    assert model.no_weight_decay() == {"etmae.cls_token", "etmae.pos_embed"}
    timm_groups = param_groups_layer_decay(model, weight_decay=0.05, no_weight_decay_list=model.no_weight_decay(),
                                           layer_decay=0.75)
    ours = param_groups(model, 1.0, 0.05, 0.75)

    def per_parameter(groups):
        return {id(p): (round(g["lr_scale"], 12), g["weight_decay"]) for g in groups for p in g["params"]}

    assert per_parameter(timm_groups) == per_parameter(ours)
    assert len({g["lr_scale"] for g in ours}) == 4 + 2  # stem, 4 blocks, top
