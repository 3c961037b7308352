# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Optimiser parameter groups and per-iteration learning-rate schedules of the papers' recipes.

* Weight decay by rule (:data:`WEIGHT_DECAY_RULES`; frozen parameters are always left out):
  ``timm`` -- none on biases, 1-D parameters (norms), the names in ``NO_WEIGHT_DECAY`` (``pos_embed``,
  ``cls_token``, ``dist_token``) and the leaf names the model's own ``no_weight_decay()`` returns (MAE's and
  medical_mae's fine-tuning, ``param_groups_lrd``; SDDA-MAE lists the channel-attention ``temperature``);
  ``mae`` -- none on biases and 1-D parameters only (MAE's and medical_mae's ``main_pretrain.py``: timm's
  ``add_weight_decay`` without a skip list, so the CLS and mask tokens decay); ``all`` -- every parameter decays
  (Swin-MAE's ``train.py``: ``AdamW(model.parameters(), weight_decay=0.05)``; DAE-Former's SGD).
* Layer-wise lr decay with timm ``param_groups_lrd`` semantics (MAE / medical_mae fine-tuning):
  ``num_layers = len(blocks) + 1``; ``cls_token``, ``pos_embed``, ``patch_embed.*`` get layer id 0,
  ``blocks.i.*`` get ``i + 1``, everything else (``fc_norm``, the head) gets ``num_layers``; the group's
  lr is ``lr * decay ** (num_layers - layer_id)``. timm stores only ``lr_scale`` and relies on its own
  scheduler to apply it, which ``torch.optim.lr_scheduler`` and ``transformers.Trainer`` ignore -- so
  here each group's ``lr`` is set to the scaled value and every schedule is a multiplier of it.
* Schedules: ``transformers.get_scheduler`` (a ``LambdaLR``, stepped once per OPTIMIZER step), a multiplier of
  every group's own lr: linear warm-up from 0, then MAE's half-cycle cosine down to ``min_lr``
  (``util/lr_sched.py``; ``cosine_with_min_lr``), DAE-Former's poly ``(1 - t / T) ** power`` (``polynomial``
  with ``lr_end=0``), or constant (``constant_with_warmup``). ``tests/training/test_optim.py`` checks every
  group's lr, step by step, against the MAE / DAE-Former formulas.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

import torch
from torch import nn
from transformers import get_scheduler

NO_WEIGHT_DECAY = ("pos_embed", "cls_token", "dist_token")
WEIGHT_DECAY_RULES = ("timm", "mae", "all")


def scaled_lr(blr: float, effective_batch_size: int) -> float:
    """MAE's linear scaling rule: ``lr = blr * effective_batch / 256``."""
    return blr * effective_batch_size / 256


def _decays(name: str, param: torch.Tensor, no_weight_decay: Iterable[str], rule: str = "timm") -> bool:
    """Whether ``rule`` decays this parameter: ``all`` every one; ``mae`` all but biases and 1-D weights;
    ``timm`` also not the ``no_weight_decay`` entries (full names, as a model's ``no_weight_decay()`` gives them, or
    last components such as ``pos_embed``)."""
    if rule == "all":
        return True
    if param.ndim <= 1 or name.endswith(".bias"):
        return False
    skip = set(no_weight_decay) if rule == "timm" else set()
    return not (name in skip or name.split(".")[-1] in skip)


def vit_layer_id(name: str, num_layers: int) -> int:
    """timm ``get_layer_id_for_vit`` on medmae / timm / MAE names (any prefix such as ``etmae.``)."""
    parts = name.split(".")
    if parts[-1] in ("cls_token", "pos_embed", "dist_token", "mask_token") and "decoder" not in parts:
        return 0
    if "patch_embed" in parts:
        return 0
    match = re.search(r"(?:^|\.)blocks\.(\d+)\.", name)
    if match and "decoder" not in parts:
        return int(match.group(1)) + 1
    return num_layers


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: Optional[float] = None,
    num_layers: Optional[int] = None,
    no_weight_decay: Iterable[str] = NO_WEIGHT_DECAY,
    rule: str = "timm",
) -> list[dict]:
    """Optimiser groups: (decay | no decay) x (layer id when ``layer_decay``), each with its own ``lr``
    (= ``lr * lr_scale``), ``weight_decay``, ``lr_scale`` and ``layer_id``. Frozen parameters are skipped.

    ``num_layers`` defaults to ``len(blocks) + 1`` of the ViT encoder found in ``model`` (layer decay only);
    ``rule``: which parameters decay (``timm``, ``mae`` or ``all``, see the module docstring).
    """
    if rule not in WEIGHT_DECAY_RULES:
        raise ValueError(f"unknown weight decay rule {rule!r}; choose one of {', '.join(WEIGHT_DECAY_RULES)}")
    if layer_decay is not None and num_layers is None:
        depths = [len(m) for n, m in model.named_modules() if n.split(".")[-1] == "blocks"
                  and isinstance(m, nn.ModuleList) and "decoder" not in n]
        if not depths:
            raise ValueError("layer decay needs a ViT encoder with a 'blocks' ModuleList (ETMAE); "
                             f"{type(model).__name__} has none")
        num_layers = depths[0] + 1
    no_weight_decay = set(no_weight_decay) | set(getattr(model, "no_weight_decay", lambda: ())())
    groups: dict[tuple, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = _decays(name, param, no_weight_decay, rule)
        layer = vit_layer_id(name, num_layers) if layer_decay is not None else 0
        scale = layer_decay ** (num_layers - layer) if layer_decay is not None else 1.0
        key = (layer, decay)
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "weight_decay": weight_decay if decay else 0.0,
                           "lr_scale": scale, "lr": lr * scale, "layer_id": layer}
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


def layer_decay_param_groups(model: nn.Module, lr: float, weight_decay: float = 0.05, layer_decay: float = 0.55,
                             num_layers: Optional[int] = None) -> list[dict]:
    """Layer-decay groups (ETMAE / medical_mae fine-tuning), ready for ``torch.optim.AdamW(groups)`` or for
    ``Trainer(optimizer_cls_and_kwargs=(AdamW, {"params": groups}))``."""
    return param_groups(model, lr, weight_decay, layer_decay, num_layers)


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, betas=(0.9, 0.95),
                    momentum: float = 0.9, layer_decay: Optional[float] = None,
                    weight_decay_rule: str = "timm") -> torch.optim.Optimizer:
    """AdamW (MAE betas by default) or SGD with momentum over :func:`param_groups`."""
    groups = param_groups(model, lr, weight_decay, layer_decay, rule=weight_decay_rule)
    for group in groups:
        group.pop("param_names")
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw or sgd")


# medmae's --scheduler names -> transformers' scheduler names
SCHEDULERS = {"cosine": "cosine_with_min_lr", "poly": "polynomial", "constant": "constant_with_warmup"}


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                    schedule: str = "cosine", min_lr: float = 0.0, power: float = 0.9):
    """transformers' ``LambdaLR`` for ``schedule``: one multiplier of every group's own lr (layer decay is kept).

    Warm-up ``step / warmup_steps``; after it ``t = (step - warmup_steps) / (total_steps - warmup_steps)`` and
    cosine ``m + (1 - m) * 0.5 * (1 + cos(pi * t))``, poly ``(1 - t) ** power``, constant 1. ``min_lr`` (cosine
    only) is absolute for the group with the largest lr, ``m = min_lr / peak``; other groups get the same ratio
    (MAE scales ``min_lr`` by ``lr_scale`` too). Defined for steps ``0 .. total_steps`` (the training loop
    never steps past ``total_steps``; beyond it transformers' cosine rises again).
    """
    if schedule not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {schedule!r}; choose cosine, poly or constant")
    peak = max(group["lr"] for group in optimizer.param_groups)
    kwargs = {"cosine": {"min_lr_rate": min_lr / peak if peak > 0 else 0.0},
              "poly": {"lr_end": 0.0, "power": power}, "constant": {}}[schedule]
    # warmup + 1: transformers' poly divides by (total - warmup). With total <= warmup, steps 0 .. total are warm-up
    # steps or (total == warmup) the last step, multiplier 1 for either total, so no value changes.
    return get_scheduler(SCHEDULERS[schedule], optimizer, num_warmup_steps=warmup_steps,
                         num_training_steps=max(total_steps, warmup_steps + 1), scheduler_specific_kwargs=kwargs)
