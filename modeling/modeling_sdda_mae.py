# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""SDDA-MAE: Self-Distillation enhanced Dual-Attention Masked AutoEncoder (Wang, Chen, Wang, Liu).

Pre-training (paper Fig. 1, eq. (1))::

    x = PatchEmbed(img); x = window_masking(x)            # masked units replaced by a shared mask token
    e_1..e_S = forward_encoder(x)                          # DAT blocks + patch merging, e_S = bottleneck
    d = forward_decoder(e_S)                               # patch expanding + DAT blocks, no skips
    L_unsup = forward_loss(img, pixel_head(d), mask)       # MSE on masked patches
            + sd_weight * self_distillation_loss(V_enc = head_e(e_S), V_dec = head_d(d))

Fine-tuning (eq. (2)) keeps the SAME encoder (``sdda_mae.*``) and decoder (``decoder.*``) parameter names,
so ``from_pretrained(pretraining_folder)`` transfers both; full-scale skips (``skip.*``, zero-initialised
fuse), a segmentation head and a diagnosis head are new. ``from_pretraining(..., transfer="encoder")``
re-initialises the decoder for the paper's "Only Encoder" ablation.

Every unstated choice is a config field (A1-A15, see ``SDDAMAEConfig``). The DAT block has no
softmax(QK^T) attention, so there is no sdpa / flash path: ``attn_implementation`` other than "eager"
is refused by transformers (``_supports_sdpa = False``).

Ships to the Hub as remote code: imports only torch and transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
import torch.distributed as dist
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput, ImageClassifierOutput, SemanticSegmenterOutput
from transformers.utils import ModelOutput, can_return_tuple, logging

from ..configuration.configuration_sdda_mae import SDDAMAEConfig
from .layers import (
    MedMAEPreTrainedModel,
    Mlp,
    check_pixel_values,
    intermediate_indices,
    masked_patch_mse,
    patchify,
    trunc_normal_init_,
    unpatchify,
)
from .sdda_layers import (
    ChannelAttention,
    ConvDownsample,
    PatchExpand,
    PatchMerging,
    SDDAMAEDualAttentionBlock,
    SDDAMAEPatchEmbeddings,
    map_to_tokens,
    tokens_to_map,
    window_masking,
)


logger = logging.get_logger(__name__)


# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------
@dataclass
class SDDAMAEModelOutput(ModelOutput):
    """Encoder output.

    Args:
        last_hidden_state: [B, N_S, C_S] bottleneck tokens after the last stage's LayerNorm (raster order).
        pooler_output: [B, C_S] mean of the bottleneck tokens.
        hidden_states: per-stage features ``(e_1, ..., e_S)``, each [B, N_s, C_s] after its stage norm, when
            ``output_hidden_states`` (argument or config).
        mask: [B, L] patch-resolution mask, 1 = masked (None without masking).
        unit_mask: [B, units] mask at mask-unit resolution (None without masking).
    """

    last_hidden_state: Optional[torch.FloatTensor] = None
    pooler_output: Optional[torch.FloatTensor] = None
    hidden_states: Optional[tuple[torch.FloatTensor, ...]] = None
    mask: Optional[torch.FloatTensor] = None
    unit_mask: Optional[torch.FloatTensor] = None


@dataclass
class SDDAMAEForPreTrainingOutput(ModelOutput):
    """Pre-training output: ``loss = reconstruction_loss + sd_weight * self_distillation_loss`` (eq. (1)).

    Args:
        logits: [B, L, patch_size**2 * C] predicted pixels of every patch (normalised if ``norm_pix_loss``).
        mask, unit_mask: as in ``SDDAMAEModelOutput``.
        hidden_states: encoder stage features when ``output_hidden_states``.
        sd_teacher_probs: [B, K] (or [B, N_S, K] with ``sd_pooling="token"``) teacher (decoder) distribution.
        sd_student_log_probs: same shape, student (encoder) log-probabilities; ``self_distillation_diagnostics``
            turns the two into the liveness scalars.
    """

    loss: Optional[torch.FloatTensor] = None
    reconstruction_loss: Optional[torch.FloatTensor] = None
    self_distillation_loss: Optional[torch.FloatTensor] = None
    sd_teacher_probs: Optional[torch.FloatTensor] = None
    sd_student_log_probs: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    mask: Optional[torch.FloatTensor] = None
    unit_mask: Optional[torch.FloatTensor] = None
    hidden_states: Optional[tuple[torch.FloatTensor, ...]] = None


@dataclass
class SDDAMAESegmentationAndClassificationOutput(ModelOutput):
    """Joint fine-tuning output. ``logits`` are the SEGMENTATION logits (pipelines and post-processing read it).

    Args:
        loss: ``seg_loss_weight * segmentation_loss + cls_loss_weight * classification_loss`` (eq. (2)).
        logits: [B, num_labels, H, W] segmentation logits at input resolution.
        class_logits: [B, num_cls_labels] diagnosis logits.
        segmentation_loss: Dice + CE; classification_loss: CE + focal (unweighted terms, for logging).
        hidden_states: encoder stage features when ``output_hidden_states``.
    """

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    class_logits: Optional[torch.FloatTensor] = None
    segmentation_loss: Optional[torch.FloatTensor] = None
    classification_loss: Optional[torch.FloatTensor] = None
    hidden_states: Optional[tuple[torch.FloatTensor, ...]] = None


# --------------------------------------------------------------------------------------------------
# Losses (each a named function; the models call them)
# --------------------------------------------------------------------------------------------------
def sd_distributions(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, config: SDDAMAEConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher probabilities ``softmax(V_dec / T_t)`` and student log-probabilities ``log_softmax(V_enc / T_s)``
    over the K prototype dimension, in fp32 (temperatures from ``config.sd_temperatures``).

    student_logits, teacher_logits: [..., K] -> (teacher_probs [..., K], student_log_probs [..., K]).
    """
    student_temp, teacher_temp = config.sd_temperatures
    teacher = (teacher_logits.float() / teacher_temp).softmax(dim=-1)
    log_student = (student_logits.float() / student_temp).log_softmax(dim=-1)
    return teacher, log_student


def self_distillation_loss(
    teacher_probs: torch.Tensor,
    student_log_probs: torch.Tensor,
    config: SDDAMAEConfig,
    weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Paper eq. (1), second term: L_CE(V_encoder, V_decoder), the encoder (student) matching the decoder (teacher).

    ``-sum_k t_k log s_k`` per vector; ``sd_loss="kl"`` subtracts the teacher entropy; ``sd_scale_t2`` multiplies by
    T_s^2 (BYOT). teacher_probs, student_log_probs: [..., K]; weights: [...] (plain mean when None).
    """
    loss = -(teacher_probs * student_log_probs).sum(dim=-1)
    if config.sd_loss == "kl":
        loss = loss + (teacher_probs * teacher_probs.clamp_min(1e-12).log()).sum(dim=-1)
    if config.sd_scale_t2:
        loss = loss * config.sd_temperatures[0] ** 2
    if weights is None:
        return loss.mean()
    weights = weights.to(loss.dtype)
    return (loss * weights).sum() / weights.sum().clamp_min(1.0)


@torch.no_grad()
def self_distillation_diagnostics(teacher_probs: torch.Tensor, student_log_probs: torch.Tensor) -> dict:
    """Is the self-distillation term alive? Four scalars (0-d tensors, nats) over the rows of [..., K]:

    - ``sd_teacher_information``: ``H(mean_b t_b) - mean_b H(t_b)``, how much the teacher distribution says about
      the individual image (0 when every image gets the same target: no signal);
    - ``sd_teacher_entropy``: ``mean_b H(t_b)``, to compare with ``sd_entropy_max = ln K`` (uniform teacher);
    - ``sd_kl``: ``mean_b KL(t_b || s_b)``, what the student has left to learn.
    """
    num = teacher_probs.shape[-1]
    teacher = teacher_probs.detach().float().reshape(-1, num)
    log_student = student_log_probs.detach().float().reshape(-1, num)
    log_teacher = teacher.clamp_min(1e-12).log()
    entropy = -(teacher * log_teacher).sum(dim=-1)
    mean = teacher.mean(dim=0)
    entropy_of_mean = -(mean * mean.clamp_min(1e-12).log()).sum()
    return {
        "sd_teacher_information": entropy_of_mean - entropy.mean(),
        "sd_teacher_entropy": entropy.mean(),
        "sd_entropy_max": torch.tensor(math.log(num), device=teacher.device),
        "sd_kl": (teacher * (log_teacher - log_student)).sum(dim=-1).mean(),
    }


def dice_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    include_background: bool = True,
    squared: bool = True,
    smooth: float = 1e-5,
    ignore_index: Optional[int] = None,
) -> torch.Tensor:
    """Multi-class soft Dice loss of DAE-Former (A14), one term per class averaged over classes.

    ``1 - (2 sum p g + smooth) / (sum p^2 + sum g^2 + smooth)`` with p = softmax probabilities and g one-hot
    targets, summed over the batch and pixels (``squared=False``: plain sums). Empty masks are valid: a class
    absent from the target contributes ``1 - smooth / (sum p^2 + smooth)`` (0 when it is not predicted
    either), so the loss is always finite. logits: [B, K, H, W]; labels: [B, H, W] int in [0, K) or ignore_index.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    valid = torch.ones_like(labels, dtype=probs.dtype) if ignore_index is None else (labels != ignore_index).to(probs.dtype)
    target = F.one_hot(labels.clamp(0, num_classes - 1) * valid.long(), num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    probs, target = probs * valid[:, None], target * valid[:, None]
    dims = (0, 2, 3)
    intersection = (probs * target).sum(dims)
    if squared:
        denominator = (probs * probs).sum(dims) + (target * target).sum(dims)
    else:
        denominator = probs.sum(dims) + target.sum(dims)
    per_class = 1.0 - (2.0 * intersection + smooth) / (denominator + smooth)
    if not include_background and num_classes > 1:
        per_class = per_class[1:]
    return per_class.mean()


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, alpha: Optional[float] = None) -> torch.Tensor:
    """Multi-class focal loss (Lin et al. 2017): ``mean((1 - p_t)^gamma * CE)``.

    ``alpha`` (binary problems) weights class 1 by alpha and class 0 by 1 - alpha. logits: [B, K]; labels: [B].
    """
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    p_t = torch.exp(-ce)
    loss = (1.0 - p_t) ** gamma * ce
    if alpha is not None:
        loss = loss * torch.where(labels == 1, alpha, 1.0 - alpha)
    return loss.mean()


def check_segmentation_labels(labels: torch.Tensor, logits: torch.Tensor, ignore_index: int) -> None:
    """ValueError when the masks cannot be scored against ``logits`` [B, K, H, W]."""
    if labels.ndim != 3 or labels.shape[0] != logits.shape[0] or labels.shape[-2:] != logits.shape[-2:]:
        raise ValueError(f"segmentation labels must have shape [batch, height, width] = "
                         f"{[logits.shape[0], *logits.shape[-2:]]}, got {list(labels.shape)}")
    if labels.is_floating_point():
        raise ValueError(f"segmentation labels must be integer class ids, got {labels.dtype}")
    values = labels[labels != ignore_index]
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= logits.shape[1]):
        raise ValueError(
            f"segmentation labels contain values in [{int(values.min())}, {int(values.max())}] but the model has "
            f"{logits.shape[1]} segmentation classes (config.id2label); only {ignore_index} may be used to ignore pixels"
        )


def check_class_labels(labels: torch.Tensor, logits: torch.Tensor) -> None:
    """ValueError when diagnosis labels do not fit ``logits`` [B, K]."""
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0] or labels.is_floating_point():
        raise ValueError(f"class labels must be integer ids of shape [batch] = [{logits.shape[0]}], "
                         f"got {list(labels.shape)} {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(f"class labels must be in [0, {logits.shape[1]}) (config.cls_id2label), "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]")


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, config: SDDAMAEConfig) -> torch.Tensor:
    """Segmentation term of eq. (2): ``Dice(S_pred, S) + CE(S_pred, S)`` (ignore_index pixels excluded).

    logits: [B, K, H, W]; labels: [B, H, W]. With every pixel ignored the CE term is defined as 0.
    """
    ignore = config.semantic_loss_ignore_index
    check_segmentation_labels(labels, logits, ignore)
    dice = dice_loss(logits, labels, config.dice_include_background, config.dice_squared, config.dice_smooth, ignore)
    if bool((labels != ignore).any()):
        ce = F.cross_entropy(logits.float(), labels, ignore_index=ignore)
    else:
        ce = logits.float().sum() * 0.0
    return dice + ce


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: SDDAMAEConfig) -> torch.Tensor:
    """Classification term of eq. (2): ``CE(C_pred, C) + Focal(C_pred, C)``. logits: [B, K]; labels: [B]."""
    check_class_labels(labels, logits)
    return F.cross_entropy(logits.float(), labels) + focal_loss(logits, labels, config.focal_gamma, config.focal_alpha)


def supervised_loss(seg_loss: Optional[torch.Tensor], cls_loss: Optional[torch.Tensor], config: SDDAMAEConfig):
    """Paper eq. (2): ``L_sup = seg_w * (Dice + CE) + cls_w * (CE + Focal)`` (0.5 / 0.5); absent terms are skipped."""
    terms = [w * t for w, t in ((config.seg_loss_weight, seg_loss), (config.cls_loss_weight, cls_loss)) if t is not None]
    return sum(terms) if terms else None


# --------------------------------------------------------------------------------------------------
# Stages, decoder, skips, heads
# --------------------------------------------------------------------------------------------------
class ZeroInitLinear(nn.Linear):
    """Linear layer initialised to zero (the full-scale skip fuse: the skip adds nothing at step 0)."""


class IdentityConcatLinear(nn.Linear):
    """Linear(2C -> C) on ``[x, skip]`` initialised to ``[I | 0]`` (returns x at step 0)."""


def _drop_path_rates(config: SDDAMAEConfig) -> list[list[float]]:
    """Stochastic depth per encoder block, increasing linearly to ``drop_path_rate`` (0 for every block by default)."""
    total = sum(config.encoder_depths)
    rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for depth in config.encoder_depths:
        out.append(rates[start:start + depth])
        start += depth
    return out


class SDDAMAEEncoderStage(nn.Module):
    """Encoder stage s: (patch merging when s > 0) -> DAT blocks -> LayerNorm.

    x: [B, h*w, C_{s-1}] -> ([B, h'*w', C_s], (h', w')) with h' = h/2 when s > 0.
    """

    def __init__(self, config: SDDAMAEConfig, index: int, drop_path: list[float]):
        super().__init__()
        dim, eps = config.hidden_sizes[index], config.layer_norm_eps
        self.downsample = None
        if index > 0:
            merge = ConvDownsample if config.downsample == "overlap_conv" else PatchMerging
            self.downsample = merge(config.hidden_sizes[index - 1], dim, eps)
        self.blocks = nn.ModuleList(
            SDDAMAEDualAttentionBlock(config, dim, config.stage_heads[index], rate) for rate in drop_path
        )
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]):
        if self.downsample is not None:
            x, grid = self.downsample(x, *grid)
        for block in self.blocks:
            x = block(x, *grid)
        return self.norm(x), grid


class SDDAMAEDecoderStage(nn.Module):
    """Decoder stage: patch expanding (x2) -> [skip fusion, fine-tuning only] -> DAT blocks."""

    def __init__(self, config: SDDAMAEConfig, in_dim: int, out_dim: int, depth: int, heads: int):
        super().__init__()
        self.expand = PatchExpand(in_dim, out_dim, 2, config.expand_mode, config.layer_norm_eps)
        self.blocks = nn.ModuleList(SDDAMAEDualAttentionBlock(config, out_dim, heads) for _ in range(depth))


class SDDAMAEDecoder(nn.Module):
    """The U-shaped decoder shared by pre-training and fine-tuning (parameter prefix ``decoder.``).

    Stage i takes level S-1-i to level S-2-i (H/16 -> H/8 -> H/4 by default); a final LayerNorm gives d.
    """

    def __init__(self, config: SDDAMAEConfig):
        super().__init__()
        widths, stages = config.hidden_sizes, config.num_stages
        self.stages = nn.ModuleList(
            SDDAMAEDecoderStage(config, widths[stages - 1 - i], widths[stages - 2 - i], config.decoder_depths[i],
                                config.stage_heads[stages - 2 - i])
            for i in range(stages - 1)
        )
        self.norm = nn.LayerNorm(widths[0], eps=config.layer_norm_eps)

    def forward(self, encoder_features: tuple[torch.Tensor, ...], grids: list[tuple[int, int]], skip=None):
        """encoder_features: (e_1..e_S), each [B, N_s, C_s]; grids: the (h, w) of every level;
        skip: None (pre-training) or a skip module called as ``skip(i, x, grids, encoder_features, decoder_features)``.

        Returns (d [B, N_1, C_1] after the final norm, decoder features coarse to fine: (e_S, d_{S-1}, ..., d_1)).
        """
        x = encoder_features[-1]
        decoder_features = [x]
        level = len(grids) - 1
        for i, stage in enumerate(self.stages):
            x, grid = stage.expand(x, *grids[level])
            level -= 1
            if skip is not None:
                x = skip(i, x, grids, encoder_features, decoder_features)
            for block in stage.blocks:
                x = block(x, *grid)
            decoder_features.append(x)
        return self.norm(x), decoder_features


def _resample(x: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """UNet3+ resampling of tokens [B, h*w, C] to ``target``: max-pool down, bilinear up."""
    if grid == target:
        return x
    feature_map = tokens_to_map(x, *grid)
    if grid[0] > target[0]:
        feature_map = F.max_pool2d(feature_map, kernel_size=grid[0] // target[0])
    else:
        feature_map = F.interpolate(feature_map, size=target, mode="bilinear", align_corners=False)
    return map_to_tokens(feature_map)


class SDDAMAEFullScaleFusion(nn.Module):
    """UNet3+ full-scale fusion at one decoder level l (A7).

    Sources: encoder features of levels <= l (max-pooled) and the bottleneck plus coarser decoder outputs
    (bilinear up). Each is projected to ``skip_dim``; the concatenation is normalised and mapped to C_l by a
    zero-initialised ``fuse``, whose output is ADDED to the expanded decoder tokens.
    """

    def __init__(self, source_dims: list[int], out_dim: int, skip_dim: int, eps: float):
        super().__init__()
        self.projections = nn.ModuleList(nn.Linear(dim, skip_dim) for dim in source_dims)
        self.norm = nn.LayerNorm(skip_dim * len(source_dims), eps=eps)
        self.fuse = ZeroInitLinear(skip_dim * len(source_dims), out_dim)

    def forward(self, x: torch.Tensor, sources: list[tuple[torch.Tensor, tuple[int, int]]], target: tuple[int, int]):
        projected = [proj(_resample(feat, grid, target)) for proj, (feat, grid) in zip(self.projections, sources)]
        return x + self.fuse(self.norm(torch.cat(projected, dim=-1)))


class SDDAMAEFullScaleSkip(nn.Module):
    """Full-scale skip connections of every decoder stage (``skip_mode="full_scale"``, prefix ``skip.``)."""

    def __init__(self, config: SDDAMAEConfig):
        super().__init__()
        widths, stages = config.hidden_sizes, config.num_stages
        fusions = []
        for i in range(stages - 1):
            level = stages - 2 - i
            coarser = [widths[-1]] + [widths[stages - 2 - j] for j in range(i)]  # bottleneck, earlier decoder outputs
            fusions.append(SDDAMAEFullScaleFusion(widths[: level + 1] + coarser, widths[level], config.skip_dim,
                                                  config.layer_norm_eps))
        self.fusions = nn.ModuleList(fusions)

    def forward(self, index, x, grids, encoder_features, decoder_features):
        level = len(grids) - 2 - index
        sources = [(encoder_features[j], grids[j]) for j in range(level + 1)]
        sources += [(feat, grids[len(grids) - 1 - j]) for j, feat in enumerate(decoder_features)]
        return self.fusions[index](x, sources, grids[level])


class SDDAMAESameScaleSkip(nn.Module):
    """Swin-Unet skips (``skip_mode="same_scale_concat"``): ``Linear(2C -> C)([x, e_l])``, initialised to return x."""

    def __init__(self, config: SDDAMAEConfig):
        super().__init__()
        widths, stages = config.hidden_sizes, config.num_stages
        self.fusions = nn.ModuleList(
            IdentityConcatLinear(2 * widths[stages - 2 - i], widths[stages - 2 - i]) for i in range(stages - 1)
        )

    def forward(self, index, x, grids, encoder_features, decoder_features):
        level = len(grids) - 2 - index
        return self.fusions[index](torch.cat([x, encoder_features[level]], dim=-1))


class SDDAMAESegmentationHead(nn.Module):
    """DAE-Former ``FinalPatchExpand_X4`` + 1x1 conv: d [B, N_1, C_1] -> logits [B, num_labels, H, W]."""

    def __init__(self, config: SDDAMAEConfig):
        super().__init__()
        dim = config.hidden_sizes[0]
        self.expand = PatchExpand(dim, dim, config.patch_size, "generalized", config.layer_norm_eps)
        self.classifier = nn.Conv2d(dim, config.num_labels, kernel_size=1)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x, grid = self.expand(x, *grid)
        return self.classifier(tokens_to_map(x, *grid))


class SDDAMAEClassificationHead(nn.Module):
    """Diagnosis head (A8): token mean of the source features -> LayerNorm -> Linear(num_classes)."""

    def __init__(self, config: SDDAMAEConfig, num_classes: int):
        super().__init__()
        widths = config.hidden_sizes
        dim = {"bottleneck": widths[-1], "decoder": widths[0], "multi_scale": sum(widths)}[config.cls_source]
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """features: list of [B, N, C] token sets; their means are concatenated."""
        return self.classifier(self.norm(torch.cat([f.mean(dim=1) for f in features], dim=-1)))


def _sd_head(config: SDDAMAEConfig, in_dim: int) -> nn.Module:
    """A1: the "single-layer MLP" projecting pooled features to K = ``sd_proj_dim`` logits (the student's head)."""
    if config.sd_head_type == "mlp":
        return Mlp(in_dim, config.sd_proj_dim, config.sd_proj_dim)
    return nn.Linear(in_dim, config.sd_proj_dim)


class FrozenProjection(nn.Linear):
    """The frozen random teacher head of ``sd_mode="frozen_teacher"``: ``Linear(C -> K, no bias)`` with N(0, 1/C)
    weights (unit-variance logits for standardised input), ``requires_grad=False`` (never a dead trainable weight)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(in_dim, out_dim, bias=False)
        self.weight.requires_grad_(False)


def _sd_teacher_head(config: SDDAMAEConfig, in_dim: int) -> nn.Module:
    """The decoder-side (teacher) head: trained only in ``sd_mode="sdmae"``, frozen otherwise."""
    if config.sd_mode == "frozen_teacher" and config.sd_head_type == "linear":
        return FrozenProjection(in_dim, config.sd_proj_dim)
    head = _sd_head(config, in_dim)
    if config.sd_mode != "sdmae":
        head.requires_grad_(False)
    return head


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over the processes of a running torch.distributed group (identity in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


class BatchStandardize(nn.Module):
    """Standardise features over the GLOBAL batch: BatchNorm without affine whose training statistics are
    all-reduced over the processes (so 2 processes of batch b equal 1 process of batch 2b, on CPU and GPU alike);
    evaluation uses the running statistics. Never differentiated (the teacher side is detached).

    x: [..., C] -> [..., C]; every leading position counts as one sample.
    """

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.float().reshape(-1, x.shape[-1])
        if not self.training:
            mean, var = self.running_mean.float(), self.running_var.float()
        else:
            count = torch.tensor([float(flat.shape[0])], device=flat.device)
            sums = _all_reduce_sum(torch.cat([count, flat.sum(0), (flat * flat).sum(0)]))
            count = sums[0]
            if count < 2:
                raise ValueError("sd_mode='frozen_teacher' standardises the decoder vectors over the batch and needs "
                                 "at least 2 images per (global) batch in training; use a larger batch")
            mean = sums[1: 1 + flat.shape[1]] / count
            var = (sums[1 + flat.shape[1]:] / count - mean * mean).clamp_min(0.0)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_((var * count / (count - 1)).to(self.running_var.dtype), self.momentum)
        return ((flat - mean) / (var + self.eps).sqrt()).reshape(x.shape).to(x.dtype)


class TeacherCentering(nn.Module):
    """DINO centring of the teacher logits (``sd_mode="sdmae"``): subtract an EMA ``center`` of their batch means
    (all-reduced over processes), updated after use in training. logits: [..., K] -> [..., K]."""

    def __init__(self, dim: int, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(dim))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        centred = logits - self.center.to(logits.dtype)
        if self.training:
            self.update(logits)
        return centred

    @torch.no_grad()
    def update(self, logits: torch.Tensor) -> None:
        flat = logits.detach().float().reshape(-1, logits.shape[-1])
        sums = _all_reduce_sum(torch.cat([torch.tensor([float(flat.shape[0])], device=flat.device), flat.sum(0)]))
        self.center.mul_(self.momentum).add_(sums[1:] / sums[0], alpha=1.0 - self.momentum)


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------
class SDDAMAEPreTrainedModel(MedMAEPreTrainedModel):
    config_class = SDDAMAEConfig
    config: SDDAMAEConfig
    base_model_prefix = "sdda_mae"
    _no_split_modules = ["SDDAMAEDualAttentionBlock"]
    _supports_sdpa = False  # efficient + channel attention: no softmax(QK^T) to hand to sdpa / flash kernels
    _supports_flash_attn = False
    _supports_flex_attn = False
    accepts_loss_kwargs = False  # Trainer must not rescale the loss under DDP

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Swin-MAE / SegFormer initialisation: truncated normal(initializer_range) linear layers, LayerNorm (1, 0),
        other convolutions normal(0, sqrt(2 / fan_out)), channel-attention temperature 1, mask token normal(0.02);
        the full-scale skip fuse is zero and the same-scale skip is ``[I | 0]`` (the transferred decoder's
        function is unchanged at step 0)."""
        std = self.config.initializer_range
        if isinstance(module, FrozenProjection):
            init.normal_(module.weight, mean=0.0, std=module.in_features**-0.5)
        elif isinstance(module, ZeroInitLinear):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, IdentityConcatLinear):
            out_dim = module.weight.shape[0]
            identity = torch.cat([torch.eye(out_dim), torch.zeros(out_dim, module.weight.shape[1] - out_dim)], dim=1)
            init.copy_(module.weight, identity.to(module.weight.dtype))
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)):
            trunc_normal_init_(module.weight, std=std)  # linear layers and the 1x1 segmentation classifier
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            init.normal_(module.weight, mean=0.0, std=(2.0 / fan_out) ** 0.5)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, ChannelAttention):
            init.ones_(module.temperature)
        elif isinstance(module, SDDAMAEModel) and module.mask_token is not None:
            init.normal_(module.mask_token, std=std)
        elif isinstance(module, BatchStandardize):
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
        elif isinstance(module, TeacherCentering):
            init.zeros_(module.center)

    def no_weight_decay(self) -> set[str]:
        """Parameter leaf names the optimiser must not decay (timm convention): the channel-attention
        ``temperature`` (XCiT's ``XCA.no_weight_decay``), beside every bias and norm that optim.py skips anyway."""
        return {"temperature"}

    def _output_hidden_states(self, output_hidden_states: Optional[bool]) -> bool:
        return output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states

    def _check_forward_kwargs(self, kwargs: dict) -> None:
        """No silently ignored argument: a misspelt keyword (``lables=``) is a TypeError. ``interpolate_pos_encoding``
        is accepted and has nothing to do (there is no position table: every size that fits the geometry runs)."""
        unknown = sorted(set(kwargs) - {"output_attentions", "interpolate_pos_encoding"})
        if unknown:
            raise TypeError(f"{type(self).__name__}.forward() got unexpected keyword argument(s) {unknown}")
        if kwargs.get("output_attentions"):
            raise ValueError(f"{type(self).__name__} has no softmax attention maps to return: its efficient and "
                             "channel attentions never form a token-by-token matrix (output_attentions=True)")


class SDDAMAEModel(SDDAMAEPreTrainedModel):
    """The SDDA-MAE encoder: patch embedding, optional window masking, DAT stages with patch merging.

    Masking happens only when ``apply_mask=True`` or ``noise`` is given (pre-training); fine-tuning and feature
    extraction see the whole image. The mask token exists only where masking happens (``use_mask_token=True``,
    as Swin's ``use_mask_token``): pre-training builds it, fine-tuning and ``AutoModel`` do not, so every trainable
    parameter receives a gradient (DDP needs no unused-parameter search) and a pre-training checkpoint's
    ``mask_token`` is dropped on load without a report.
    """

    _keys_to_ignore_on_load_unexpected = [r"(^|\.)mask_token$"]

    def __init__(self, config: SDDAMAEConfig, use_mask_token: bool = False):
        super().__init__(config)
        self.patch_embed = SDDAMAEPatchEmbeddings(config)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_sizes[0])) if use_mask_token else None
        rates = _drop_path_rates(config)
        self.stages = nn.ModuleList(SDDAMAEEncoderStage(config, i, rates[i]) for i in range(config.num_stages))
        self.post_init()

    def get_input_embeddings(self) -> SDDAMAEPatchEmbeddings:
        return self.patch_embed

    def feature_grids(self, height: int, width: int) -> list[tuple[int, int]]:
        """(h, w) token grid of every stage for an input of ``height`` x ``width`` pixels."""
        p = self.config.patch_size
        return [(height // (p * 2**s), width // (p * 2**s)) for s in range(self.config.num_stages)]

    def window_masking(self, x: torch.Tensor, grid: tuple[int, int], noise: Optional[torch.Tensor] = None):
        """Swin-MAE window masking with this model's mask token, ratio and unit (see ``sdda_layers.window_masking``)."""
        if self.mask_token is None:
            raise ValueError("this SDDAMAEModel has no mask token (use_mask_token=False: fine-tuning and feature "
                             "extraction see whole images); build SDDAMAEModel(config, use_mask_token=True) to mask")
        return window_masking(x, grid, self.mask_token, self.config.mask_ratio, self.config.mask_unit_patches, noise)

    def forward_pyramid(self, pixel_values: torch.Tensor) -> list[tuple[torch.Tensor, tuple[int, int]]]:
        """Whole image, no masking: [(tokens [B, h*w, C], (h, w))] for the patch embedding, then every stage."""
        check_pixel_values(pixel_values, self.config.num_channels, self.config.size_multiple)
        x, grid = self.patch_embed(pixel_values.to(self.patch_embed.proj.weight.dtype))
        levels = [(x, grid)]
        for stage in self.stages:
            x, grid = stage(x, grid)
            levels.append((x, grid))
        return levels

    def forward_intermediates(
        self,
        pixel_values: torch.Tensor,
        indices: Optional[Union[int, list[int]]] = None,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """timm's ``forward_intermediates`` for a hierarchical encoder: outputs of the stages ``indices`` (0-based,
        negative from the end; an int n = the last n stages; None = all) as [B, C_s, h_s, w_s] (``"NCHW"``) or
        [B, h_s*w_s, C_s] (``"NLC"``); with ``intermediates_only=False`` returns (last stage tokens, intermediates)."""
        wanted = intermediate_indices(indices, self.config.num_stages, output_fmt, "stages")
        levels = self.forward_pyramid(pixel_values)[1:]
        intermediates = [tokens_to_map(levels[i][0], *levels[i][1]) if output_fmt == "NCHW" else levels[i][0]
                         for i in wanted]
        return intermediates if intermediates_only else (levels[-1][0], intermediates)

    def forward_encoder(self, pixel_values: torch.Tensor, noise: Optional[torch.Tensor] = None, apply_mask: bool = False):
        """pixel_values [B, C, H, W] -> (stage features (e_1..e_S) each [B, N_s, C_s], mask [B, L] or None,
        unit_mask [B, units] or None)."""
        check_pixel_values(pixel_values, self.config.num_channels, self.config.size_multiple)
        x, grid = self.patch_embed(pixel_values.to(self.patch_embed.proj.weight.dtype))
        mask = unit_mask = None
        if apply_mask or noise is not None:
            x, mask, unit_mask = self.window_masking(x, grid, noise)
        features = []
        for stage in self.stages:
            x, grid = stage(x, grid)
            features.append(x)
        return tuple(features), mask, unit_mask

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: Optional[torch.Tensor] = None,
        apply_mask: bool = False,
        output_hidden_states: Optional[bool] = None,
        **kwargs,
    ):
        """pixel_values: [B, C, H, W]; noise: [B, units] switches masking on (as does ``apply_mask``)."""
        self._check_forward_kwargs(kwargs)
        features, mask, unit_mask = self.forward_encoder(pixel_values, noise, apply_mask)
        out = SDDAMAEModelOutput(
            last_hidden_state=features[-1], pooler_output=features[-1].mean(dim=1),
            hidden_states=features if self._output_hidden_states(output_hidden_states) else None,
            mask=mask, unit_mask=unit_mask,
        )
        return out


class SDDAMAEForPreTraining(SDDAMAEPreTrainedModel):
    """SDDA-MAE pre-training: masked encoder, decoder without skips, pixel head, and the two SD heads.

    Parameters: ``sdda_mae.*`` (encoder), ``decoder.*``, ``pixel_head``, ``sd_encoder_head`` (student V_enc, trained),
    ``sd_decoder_head`` (teacher V_dec: frozen unless ``sd_mode="sdmae"``); buffers ``sd_teacher_norm.*``
    (``frozen_teacher``: batch standardisation of V_dec) and ``sd_center.*`` (``sdmae``: DINO centre).
    """

    def __init__(self, config: SDDAMAEConfig):
        super().__init__(config)
        self.sdda_mae = SDDAMAEModel(config, use_mask_token=True)
        self.decoder = SDDAMAEDecoder(config)
        self.pixel_head = nn.Linear(config.hidden_sizes[0], config.patch_size**2 * config.num_channels)
        self.sd_encoder_head = _sd_head(config, config.hidden_sizes[-1])
        self.sd_decoder_head = _sd_teacher_head(config, config.hidden_sizes[0])
        self.sd_teacher_norm = BatchStandardize(config.hidden_sizes[0]) if config.sd_mode == "frozen_teacher" else None
        self.sd_center = TeacherCentering(config.sd_proj_dim, config.sd_center_momentum) \
            if config.sd_mode == "sdmae" else None
        if config.sd_mode == "sdmae":
            logger.warning("sd_mode='sdmae' trains both self-distillation heads without stop-gradient (SD-MAE); in a "
                           "trial on the tiny config it collapsed to one shared one-hot target within 50 steps. Watch "
                           "sd_teacher_information in the logs (near 0 = collapsed).")
        self.post_init()

    # ---- MAE steps -------------------------------------------------------------------------------
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, L, p*p*C] (channel fastest, as in MAE)."""
        return patchify(imgs, self.config.patch_size)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, L, p*p*C] -> [B, C, H, W] (inverse of ``patchify``); grid = (H/p, W/p)."""
        return unpatchify(x, self.config.patch_size, self.config.num_channels, grid)

    def forward_decoder(self, features: tuple[torch.Tensor, ...], grids: list[tuple[int, int]]) -> torch.Tensor:
        """Decoder WITHOUT skips (Swin-MAE pre-training): bottleneck -> d [B, N_1, C_1]."""
        decoded, _ = self.decoder(features, grids)
        return decoded

    def forward_loss(self, pixel_values: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Paper eq. (1), first term: L_MSE(Y_pred, Y) on masked patches only (MAE ``forward_loss``), in fp32.

        pred: [B, L, p*p*C]; mask: [B, L] with 1 = masked. No masked patch (mask_ratio 0) gives 0.
        """
        return masked_patch_mse(pred, self.patchify(pixel_values), mask, self.config.norm_pix_loss)

    def sd_token_weights(self, mask: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]):
        """Token weights selected by ``sd_tokens`` (A5) at ``target`` resolution: None (all), visible or masked.

        mask: [B, L] patch mask on ``grid``; a coarse token counts as masked when any of its patches is.
        """
        if self.config.sd_tokens == "all":
            return None
        masked = F.max_pool2d(mask.reshape(-1, 1, *grid), kernel_size=grid[0] // target[0]).flatten(1)
        return masked if self.config.sd_tokens == "masked" else 1.0 - masked

    def sd_pool(self, tokens: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
        """Token mean [B, N, C] -> [B, C] over the tokens with weight 1 (all tokens when ``weights`` is None)."""
        if weights is None:
            return tokens.mean(dim=1)
        weights = weights.to(tokens.dtype)[..., None]
        return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

    def sd_teacher_logits(self, v_dec: torch.Tensor) -> torch.Tensor:
        """Teacher logits from the pooled decoder vectors [..., C_1] -> [..., K] (A6, ``sd_mode``).

        ``frozen_teacher``: batch-standardise, then the frozen random head, without gradient; ``detached``: the
        frozen head on the raw vector, without gradient (BYOT literal); ``sdmae``: the trained head, gradient into
        the decoder, DINO centring.
        """
        if self.config.sd_mode == "sdmae":
            return self.sd_center(self.sd_decoder_head(v_dec))
        with torch.no_grad():
            if self.sd_teacher_norm is not None:
                v_dec = self.sd_teacher_norm(v_dec)
            return self.sd_decoder_head(v_dec)

    def self_distillation(
        self, bottleneck: torch.Tensor, decoded: torch.Tensor, mask: torch.Tensor, grids: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L_CE(V_encoder, V_decoder) of eq. (1) with V from the SD heads (A1, A5, A6).

        bottleneck: e_S [B, N_S, C_S]; decoded: d [B, N_1, C_1]; mask: [B, L]. ``sd_pooling="mean"`` pools each to
        one vector per image over the tokens chosen by ``sd_tokens``; ``"token"`` average-pools d to the bottleneck
        grid and distils token by token. Returns (loss, teacher_probs, student_log_probs), the distributions
        [B, K] (mean pooling) or [B, N_S, K] (token pooling).
        """
        if self.config.sd_pooling == "token":
            factor = grids[0][0] // grids[-1][0]
            pooled = map_to_tokens(F.avg_pool2d(tokens_to_map(decoded, *grids[0]), kernel_size=factor))
            weights = self.sd_token_weights(mask, grids[0], grids[-1])
            teacher, log_student = sd_distributions(self.sd_encoder_head(bottleneck), self.sd_teacher_logits(pooled),
                                                    self.config)
            return self_distillation_loss(teacher, log_student, self.config, weights), teacher, log_student
        v_enc = self.sd_pool(bottleneck, self.sd_token_weights(mask, grids[0], grids[-1]))
        v_dec = self.sd_pool(decoded, self.sd_token_weights(mask, grids[0], grids[0]))
        teacher, log_student = sd_distributions(self.sd_encoder_head(v_enc), self.sd_teacher_logits(v_dec), self.config)
        return self_distillation_loss(teacher, log_student, self.config), teacher, log_student

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        **kwargs,
    ):
        """pixel_values: [B, C, H, W] normalised images; noise: [B, units] (uniform when None).

        Returns ``SDDAMAEForPreTrainingOutput`` with ``loss = L_MSE + sd_weight * L_SD`` (eq. (1)).
        """
        self._check_forward_kwargs(kwargs)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        features, mask, unit_mask = self.sdda_mae.forward_encoder(pixel_values, noise, apply_mask=True)
        grids = self.sdda_mae.feature_grids(*pixel_values.shape[-2:])
        decoded = self.forward_decoder(features, grids)
        pred = self.pixel_head(decoded)
        reconstruction = self.forward_loss(pixel_values, pred, mask)
        distillation, teacher_probs, student_log_probs = self.self_distillation(features[-1], decoded, mask, grids)
        out = SDDAMAEForPreTrainingOutput(
            loss=reconstruction + self.config.sd_weight * distillation,
            reconstruction_loss=reconstruction,
            self_distillation_loss=distillation,
            sd_teacher_probs=teacher_probs,
            sd_student_log_probs=student_log_probs,
            logits=pred,
            mask=mask,
            unit_mask=unit_mask,
            hidden_states=features if output_hidden_states else None,
        )
        return out


class SDDAMAEFineTuningModel(SDDAMAEPreTrainedModel):
    """Shared body of the fine-tuning models: the transferred encoder (``sdda_mae.*``) and decoder (``decoder.*``),
    new skip connections (``skip.*``) and the task heads. Subclasses choose the heads."""

    _keys_to_ignore_on_load_unexpected = [r"^pixel_head\.", r"^sd_encoder_head\.", r"^sd_decoder_head\.",
                                          r"^sd_teacher_norm\.", r"^sd_center\.", r"^sdda_mae\.mask_token$"]
    has_segmentation_head = True
    has_classification_head = True

    def __init__(self, config: SDDAMAEConfig):
        super().__init__(config)
        self.sdda_mae = SDDAMAEModel(config)
        needs_decoder = self.has_segmentation_head or (self.has_classification_head and config.cls_source == "decoder")
        self.decoder = SDDAMAEDecoder(config) if needs_decoder else None
        self.skip = None
        if needs_decoder and config.skip_mode == "full_scale":
            self.skip = SDDAMAEFullScaleSkip(config)
        elif needs_decoder and config.skip_mode == "same_scale_concat":
            self.skip = SDDAMAESameScaleSkip(config)
        self.segmentation_head = SDDAMAESegmentationHead(config) if self.has_segmentation_head else None
        self.classification_head = SDDAMAEClassificationHead(config, self.num_classification_labels(config)) \
            if self.has_classification_head else None
        self.post_init()

    @staticmethod
    def num_classification_labels(config: SDDAMAEConfig) -> int:
        """Outputs of the diagnosis head: the joint model's ``cls_id2label`` (``id2label`` names its segmentation
        classes there)."""
        return config.num_cls_labels

    @classmethod
    def from_pretraining(
        cls, pretrained: Union[str, "SDDAMAEForPreTraining"], transfer: str = "encoder_decoder", **config_overrides
    ):
        """Fine-tuning model initialised from a pre-training checkpoint (folder, Hub id or model instance).

        ``transfer="encoder_decoder"`` (the paper) copies every ``sdda_mae.*`` and ``decoder.*`` tensor;
        ``"encoder"`` copies the encoder only and keeps a freshly initialised decoder ("Only Encoder" ablation).
        ``config_overrides`` (e.g. ``id2label``, ``cls_id2label``, ``skip_mode``) update the pre-training config;
        the architecture of the encoder and decoder must stay the same. The copied keys are in ``transferred_keys``.
        """
        if transfer not in ("encoder_decoder", "encoder"):
            raise ValueError(f"transfer must be 'encoder_decoder' or 'encoder', got {transfer!r}")
        source = pretrained
        if not isinstance(pretrained, PreTrainedModel):
            source = SDDAMAEForPreTraining.from_pretrained(pretrained)
        base = source.config.to_dict()
        for labels, inverse in (("id2label", "label2id"), ("cls_id2label", "cls_label2id")):
            if labels in config_overrides or "num_labels" in config_overrides and labels == "id2label":
                base.pop(labels, None)
                base.pop(inverse, None)
        for key in ("architectures", "auto_map", "transformers_version", "model_type"):
            base.pop(key, None)
        config = SDDAMAEConfig(**{**base, **config_overrides})
        model = cls(config)
        prefixes = ("sdda_mae.", "decoder.") if transfer == "encoder_decoder" else ("sdda_mae.",)
        own = model.state_dict()
        state = {k: v for k, v in source.state_dict().items() if k.startswith(prefixes) and k in own}
        mismatched = [k for k, v in state.items() if v.shape != own[k].shape]
        if mismatched:
            raise ValueError(f"pre-trained tensors do not fit the fine-tuning architecture: {mismatched[:5]}")
        model.load_state_dict(state, strict=False)
        model.transferred_keys = sorted(state)
        return model

    def forward_features(self, pixel_values: torch.Tensor):
        """Encoder (no masking) and, when present, decoder with skips.

        Returns (encoder features (e_1..e_S), d [B, N_1, C_1] or None, grids).
        """
        features, _, _ = self.sdda_mae.forward_encoder(pixel_values)
        grids = self.sdda_mae.feature_grids(*pixel_values.shape[-2:])
        decoded = self.decoder(features, grids, self.skip)[0] if self.decoder is not None else None
        return features, decoded, grids

    def classification_logits(self, features, decoded) -> torch.Tensor:
        """Diagnosis logits [B, num_cls_labels] from the source chosen by ``cls_source`` (A8)."""
        source = {"bottleneck": [features[-1]], "decoder": [decoded], "multi_scale": list(features)}
        return self.classification_head(source[self.config.cls_source])

    def compute(self, pixel_values, labels=None, class_labels=None):
        """(seg logits, class logits, seg loss, cls loss, features) for the heads this model has."""
        features, decoded, grids = self.forward_features(pixel_values)
        seg_logits = cls_logits = seg_loss = cls_loss = None
        if self.segmentation_head is not None:
            seg_logits = self.segmentation_head(decoded, grids[0])
            if labels is not None:
                seg_loss = segmentation_loss(seg_logits, labels.to(seg_logits.device), self.config)
        if self.classification_head is not None:
            cls_logits = self.classification_logits(features, decoded)
            if class_labels is not None:
                cls_loss = classification_loss(cls_logits, class_labels.to(cls_logits.device), self.config)
        return seg_logits, cls_logits, seg_loss, cls_loss, features


class SDDAMAEForSemanticSegmentation(SDDAMAEFineTuningModel):
    """Segmentation fine-tuning: loss ``seg_loss_weight * (Dice + CE)`` = 0.5 Dice + 0.5 CE by default."""

    has_classification_head = False

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        **kwargs,
    ):
        """pixel_values: [B, C, H, W]; labels: [B, H, W] ids in [0, num_labels) or 255 (ignored).
        Returns ``SemanticSegmenterOutput`` with logits [B, num_labels, H, W]."""
        self._check_forward_kwargs(kwargs)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        logits, _, seg_loss, _, features = self.compute(pixel_values, labels)
        out = SemanticSegmenterOutput(loss=supervised_loss(seg_loss, None, self.config), logits=logits,
                                      hidden_states=features if output_hidden_states else None)
        return out


class SDDAMAEForImageClassification(SDDAMAEFineTuningModel):
    """Diagnosis fine-tuning with the image-classifier contract of transformers: ``config.id2label`` /
    ``num_labels`` are ITS classes (what ``pipeline("image-classification")`` names), and ``problem_type`` chooses
    the loss -- ``single_label_classification``: ``cls_loss_weight * (CE + focal)`` as the paper's diagnosis term;
    ``multi_label_classification``: BCE with logits; ``regression``: MSE. When ``problem_type`` is None it is set
    from the first labels as transformers does (1 label: regression; integer labels: single-label; else
    multi-label). Head on the bottleneck (``cls_source``).
    """

    has_segmentation_head = False

    @staticmethod
    def num_classification_labels(config: SDDAMAEConfig) -> int:
        return config.num_labels

    def image_classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss chosen by ``config.problem_type`` (see the class docstring). logits: [B, num_labels]."""
        config = self.config
        if config.problem_type is None:
            config.problem_type = ("regression" if config.num_labels == 1 else "single_label_classification"
                                   if not labels.is_floating_point() else "multi_label_classification")
        if config.problem_type == "single_label_classification":
            if labels.ndim != 1 or labels.is_floating_point() or int(labels.min()) < 0 \
                    or int(labels.max()) >= config.num_labels:
                raise ValueError(f"single-label targets must be class ids in [0, {config.num_labels}) of shape "
                                 f"[batch] (config.id2label), got {labels.dtype} {list(labels.shape)}")
            return config.cls_loss_weight * (F.cross_entropy(logits.float(), labels)
                                             + focal_loss(logits, labels, config.focal_gamma, config.focal_alpha))
        if config.problem_type == "multi_label_classification" and labels.shape != logits.shape:
            raise ValueError(f"multi-label targets must have shape {list(logits.shape)}, got {list(labels.shape)}")
        return self.loss_function(labels, logits.float(), config)  # transformers' BCE / MSE by problem_type

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        **kwargs,
    ):
        """pixel_values: [B, C, H, W]; labels: [B] ids in [0, num_labels), [B, num_labels] multi-hot, or [B]
        values (regression). Logits [B, num_labels]."""
        self._check_forward_kwargs(kwargs)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        _, logits, _, _, features = self.compute(pixel_values)
        loss = None if labels is None else self.image_classification_loss(logits, labels.to(logits.device))
        out = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=features if output_hidden_states else None)
        return out


class SDDAMAEForSegmentationAndClassification(SDDAMAEFineTuningModel):
    """The paper's joint fine-tuning model: segmentation and diagnosis heads on the transferred encoder-decoder.

    Loss (eq. (2)): ``0.5 * (Dice + CE)(logits, labels) + 0.5 * (CE + Focal)(class_logits, class_labels)``.
    """

    # Not in the Auto registry (no Auto class exists for two heads); in its own saved folders it takes the
    # AutoModelForSemanticSegmentation slot, so remote-code loading keeps the diagnosis head.
    remote_auto_class = "AutoModelForSemanticSegmentation"

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        class_labels: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        **kwargs,
    ):
        """pixel_values: [B, C, H, W]; labels: [B, H, W] masks; class_labels: [B] diagnosis ids (either may be None)."""
        self._check_forward_kwargs(kwargs)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        seg_logits, cls_logits, seg_loss, cls_loss, features = self.compute(pixel_values, labels, class_labels)
        out = SDDAMAESegmentationAndClassificationOutput(
            loss=supervised_loss(seg_loss, cls_loss, self.config),
            logits=seg_logits,
            class_logits=cls_logits,
            segmentation_loss=seg_loss,
            classification_loss=cls_loss,
            hidden_states=features if output_hidden_states else None,
        )
        return out



class SDDAMAEBackbone(BackboneMixin, SDDAMAEPreTrainedModel):
    """The SDDA-MAE encoder as a transformers backbone (``AutoBackbone``) for UperNet, DPT, Mask2Former and similar
    heads: ``stem`` (patch embedding, stride p) and ``stage1`` .. ``stage{S}`` (stride p * 2^(s-1)), each a
    [B, C_s, h_s, w_s] map. Loads the encoder of any SDDA-MAE checkpoint (names ``sdda_mae.*``)."""

    has_attentions = False
    # what pre-training and fine-tuning checkpoints hold besides the encoder
    _keys_to_ignore_on_load_unexpected = [r"^(decoder|pixel_head|sd_decoder_head|sd_encoder_head|sd_teacher_norm|sd_center|"
                                          r"skip|segmentation_head|classification_head)\.", r"(^|\.)mask_token$"]

    def __init__(self, config: SDDAMAEConfig):
        super().__init__(config)
        self.sdda_mae = SDDAMAEModel(config)
        self.num_features = [config.hidden_sizes[0], *config.hidden_sizes]
        self.post_init()

    def get_input_embeddings(self) -> SDDAMAEPatchEmbeddings:
        return self.sdda_mae.patch_embed

    @can_return_tuple
    def forward(self, pixel_values: torch.Tensor, output_hidden_states: Optional[bool] = None, **kwargs) -> BackboneOutput:
        """pixel_values: [B, C, H, W] -> ``feature_maps``: one [B, C_s, h_s, w_s] map per ``out_features`` stage;
        ``hidden_states``: every level's tokens [B, h_s*w_s, C_s] (stem first) when asked."""
        self._check_forward_kwargs(kwargs)
        levels = self.sdda_mae.forward_pyramid(pixel_values)
        feature_maps = tuple(tokens_to_map(levels[i][0], *levels[i][1]) for i in self.out_indices)
        hidden_states = tuple(tokens for tokens, _ in levels) if self._output_hidden_states(output_hidden_states) else None
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states)

__all__ = [
    "SDDAMAEPreTrainedModel",
    "SDDAMAEModel",
    "SDDAMAEForPreTraining",
    "SDDAMAEFineTuningModel",
    "SDDAMAEForSemanticSegmentation",
    "SDDAMAEForImageClassification",
    "SDDAMAEForSegmentationAndClassification",
    "SDDAMAEBackbone",
    "self_distillation_diagnostics",
]
