# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""SDDA-MAE configuration: a Dual-Attention (DAE-Former) U-shaped masked autoencoder with self-distillation
from decoder to encoder (Wang, Chen, Wang, Liu; MIDL short paper).

Ships to the Hub as remote code: imports only transformers.
"""

from __future__ import annotations

import copy
import math
from typing import Optional, Union

from transformers import PretrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

from .statistics import IMAGENET_MEAN, IMAGENET_STD, per_channel

SDDA_MAE_PRESETS: dict[str, dict] = {
    # The faithful reconstruction traced at 512 px in the method notes (section 5.2): about 26.4M parameters.
    "sdda_mae_512": dict(image_size=512, hidden_sizes=[128, 320, 512], encoder_depths=[2, 2, 2],
                         decoder_depths=[2, 2], channel_attention_heads=8, sd_proj_dim=512),
    # A 64 px model of about 0.2M parameters for tests and laptop demos (4 x 4 = 16 mask units).
    "tiny_test": dict(image_size=64, hidden_sizes=[16, 32, 64], encoder_depths=[1, 1, 1], decoder_depths=[1, 1],
                      channel_attention_heads=2, sd_proj_dim=32, skip_dim=8),
}
SDDA_MAE_PRESET_ALIASES = {"default": "sdda_mae_512", "sdda-mae": "sdda_mae_512", "tiny": "tiny_test"}

_CHOICES = {
    "block_order": ("spatial_first", "channel_first"),
    "ffn_type": ("mix_skip", "mix"),
    "downsample": ("patch_merging", "overlap_conv"),
    "expand_mode": ("generalized", "dae"),
    "sd_head_type": ("linear", "mlp"),
    "sd_pooling": ("mean", "token"),
    "sd_tokens": ("all", "visible", "masked"),
    "sd_loss": ("ce", "kl"),
    "sd_mode": ("frozen_teacher", "detached", "sdmae"),
    "skip_mode": ("full_scale", "same_scale_concat", "none"),
    "cls_source": ("bottleneck", "decoder", "multi_scale"),
}


# Temperatures (student, teacher) of each self-distillation mode when ``sd_student_temp`` / ``sd_teacher_temp`` are None.
SD_MODE_TEMPERATURES = {"frozen_teacher": (1.0, 1.0), "detached": (1.0, 1.0), "sdmae": (0.1, 0.04)}


def _int_keys(mapping: Optional[dict]) -> Optional[dict]:
    """JSON turns integer keys into strings; turn them back."""
    if mapping is None:
        return None
    return {int(k): v for k, v in mapping.items()}


class SDDAMAEConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of the SDDA-MAE models (``SDDAMAEModel``, ``SDDAMAEForPreTraining``,
    ``SDDAMAEForSemanticSegmentation``, ``SDDAMAEForImageClassification``, ``SDDAMAEForSegmentationAndClassification``).

    The paper is a two-page abstract; every unstated choice is a field whose default is the faithful
    reading of the method notes (section 5.4, ambiguities A1-A15):

    - A1 ``sd_head_type="linear"``: the paper's "single-layer MLP" read literally as one ``nn.Linear`` per branch.
    - A2 ``sd_proj_dim=512``: width K of the self-distillation vectors, equal to the bottleneck width.
    - A3 ``downsample="patch_merging"``, ``patch_size=4``: non-overlapping 4x4 embedding and Swin patch merging,
      because DAE-Former's overlapping 7x7 convolution would leak masked pixels into visible tokens.
    - A4 ``mask_unit_patches=4``, ``mask_ratio=0.6``: Swin-MAE window masking of 4x4-patch (16 px) units, the mask
      token replacing the embedding after its LayerNorm (no position embedding); 60% is the paper's best ratio.
    - A5 ``sd_pooling="mean"``, ``sd_tokens="visible"``: V_encoder / V_decoder are the token means of the bottleneck
      and of the last decoder stage over the VISIBLE positions (SD-MAE, irsLu/SD-MAE ``modeling_pretrain.py``: both
      heads read the unmasked tokens only); ``"all"`` / ``"masked"`` are options.
    - A6 ``sd_mode="frozen_teacher"``, ``sd_weight=1``, ``sd_loss="ce"``: the decoder (teacher) vector is
      standardised over the global batch (BatchNorm without affine, statistics all-reduced under DDP) and projected
      by a FROZEN random single-layer head (weights N(0, 1/C), no bias: unit-variance logits), soft-maxed at
      temperature 1; the encoder (student) head is a trainable single layer at temperature 1; cross-entropy
      teacher -> student, teacher detached, summed unweighted with the MSE as in the paper's L_unsup. Why: the
      literal BYOT reading (``"detached"``: a detached, therefore never-trained head) gives a teacher that is
      uniform to 1e-3 nats and identical for every image (measured at the 512 px preset), so the term carries no
      signal; SD-MAE's no-stop-gradient reading (``"sdmae"``: both heads trained, DINO centering, temperatures
      0.1 / 0.04) collapsed to one shared one-hot within 50 steps in a trial. The frozen, batch-standardised teacher
      cannot collapse, stays image-specific (0.3-0.4 nats of per-image information over 150 steps of the tiny
      config, batch 16) and follows the decoder as it learns. Temperatures 0.1 / 0.1 made the SD gradient on the
      encoder 35-130x the MSE gradient and slowed reconstruction; at 1 / 1 it is 1.5-7x (measured, tiny config).
      ``sd_student_temp`` / ``sd_teacher_temp`` = None take the mode's values (``SD_MODE_TEMPERATURES``).
      ``sd_weight=1`` is the paper's unweighted sum. Measured with ``medmae reproduce sdda`` on the synthetic
      ultrasound set (default CPU budget, seeds 0-2): neither 1 nor SD-MAE's 0.2 helped fine-tuning -- Encoder &
      Decoder Dice 78.97 ± 8.83 (DAT, no SD) vs 64.38 ± 25.97 (DAT & SD, 1) and 60.05 ± 21.46 (0.2); Only Encoder
      85.17 ± 4.83 vs 65.04 ± 24.77 and 70.08 ± 13.57 -- within seed noise by a paired t-test, with 2 of 6 (1) and
      1 of 6 (0.2) fine-tunings from SD pre-training ending at the all-background prediction (0 of 6 from DAT).
      No weight showed a benefit, so the paper's is kept; ``--sd_warmup`` ramps it over the lr warm-up.
    - A7 ``skip_mode="full_scale"``, ``skip_dim=64``: UNet3+ full-scale skips, projected, concatenated, normalised and
      added through a zero-initialised fuse so the transferred decoder is unchanged at step 0.
    - A8 ``cls_source="bottleneck"``: the diagnosis head pools the deepest encoder feature (UNet3+ CGM placement).
    - A9 ``expand_mode="generalized"``: patch expanding is ``Linear(C_in -> 4 C_out)`` + 2x2 pixel shuffle + LN, since
      the widths 512 -> 320 -> 128 are not halvings (``"dae"`` is DAE-Former's expand-then-``x1_linear``).
    - A10 ``decoder_depths=[2, 2]``: two DAT blocks at H/8 and at H/4, none at the bottleneck (Swin-MAE, DAE-Former).
    - A11 ``norm_pix_loss=False``: the paper's plain MSE on masked 4x4 patches (Swin-MAE's default).
    - A12 ``pretrain_recipe`` / ``finetune_recipe``: AdamW(0.9, 0.95), lr 2e-4, wd 0.05, 10% warm-up, cosine for
      pre-training; AdamW + cosine at 1.5e-3 for fine-tuning (the BUSI lr 0.01 is an SGD rate, see the notes).
    - A13 ``image_mean`` / ``image_std`` = ImageNet, ``crop_scale=(0.5, 1.0)``: resize to 512, random resized crop
      and horizontal flip, the paper saying only "flip and crop".
    - A14 ``dice_include_background=True``, ``dice_squared=True``: DAE-Former's DiceLoss over softmax
      probabilities, background class included, squared denominators, smooth 1e-5.
    - A15 heads in fine-tuning: the pixel head and both SD heads are dropped; the skip, segmentation and
      classification heads are new (zero-initialised fuse). ``SDDAMAE*.from_pretraining(..., transfer="encoder")``
      re-initialises the decoder for the paper's "Only Encoder" ablation rows.

    Args:
        image_size: side of the (square) training images; any size that fits the stage/mask geometry runs.
        num_channels: input channels.
        patch_size: side of a patch in pixels (the stride of the patch embedding).
        hidden_sizes: width of each encoder stage (stage s works at H / (patch_size * 2**s)).
        encoder_depths: DAT blocks per encoder stage.
        decoder_depths: DAT blocks per decoder stage, coarse to fine (one fewer stage than the encoder).
        channel_attention_heads: heads of the channel (transpose) attention, an int or one per stage.
        efficient_attention_heads: heads of the efficient (linear) spatial attention (DAE-Former: 1).
        mlp_ratio: MixFFN hidden width / block width.
        ffn_type: ``mix_skip`` (DAE-Former default: ``GELU(LN(DWConv(h) + h))``) or ``mix`` (SegFormer MixFFN).
        block_order: ``spatial_first`` (default: efficient attention, FFN, channel attention, FFN, as in the DAE-Former
            paper and its code since xmindflow/DAEFormer@5cc9048 "changed to newest model", 2022-11-18) or
            ``channel_first`` (the earlier commits c5a9adb and before).
        layer_norm_eps: LayerNorm epsilon (torch default, as in DAE-Former).
        drop_path_rate: stochastic depth at the deepest block, increasing linearly (DAE-Former: 0).
        initializer_range: std of the truncated-normal linear weights and of the mask token.
        mask_ratio, mask_unit_patches, norm_pix_loss: masking and reconstruction target (A4, A11).
        sd_*: self-distillation options (A1, A2, A5, A6); ``sd_mode`` is one of ``frozen_teacher`` (default),
            ``detached`` (literal BYOT reading, degenerate) and ``sdmae`` (no stop-gradient, may collapse);
            ``sd_center_momentum``: EMA of the DINO centre of the teacher logits (``sdmae`` only; in
            ``frozen_teacher`` the standardised input makes the teacher logits zero-mean over the batch already).
        skip_mode, skip_dim: fine-tuning skip connections (A7).
        expand_mode: patch-expanding rule (A9).
        cls_source: which features feed the diagnosis head (A8).
        id2label / label2id: SEGMENTATION classes (read by the image-segmentation pipeline); default background/lesion.
        cls_id2label / cls_label2id: DIAGNOSIS classes of the classification head; ``num_cls_labels`` builds
            generic ones when no map is given.
        seg_loss_weight, cls_loss_weight: L_sup = seg_w * (Dice + CE) + cls_w * (CE + Focal) (paper: 0.5 / 0.5).
        focal_gamma, focal_alpha: focal loss exponent (2) and optional class-1 weight for binary problems (None).
        dice_include_background, dice_squared, dice_smooth: Dice conventions (A14).
        semantic_loss_ignore_index: mask value that is ignored by the segmentation losses (255).
        image_mean, image_std, crop_scale, pretrain_recipe, finetune_recipe: data and optimisation contract (A12, A13).
    """

    model_type = "sdda_mae"
    keys_to_ignore_at_inference = [
        "segmentation_loss", "classification_loss", "reconstruction_loss", "self_distillation_loss", "hidden_states",
        "sd_teacher_probs", "sd_student_log_probs",
    ]

    def __init__(
        self,
        image_size: int = 512,
        num_channels: int = 3,
        patch_size: int = 4,
        hidden_sizes: tuple = (128, 320, 512),
        encoder_depths: tuple = (2, 2, 2),
        decoder_depths: tuple = (2, 2),
        channel_attention_heads: Union[int, tuple] = 8,
        efficient_attention_heads: int = 1,
        mlp_ratio: float = 4.0,
        ffn_type: str = "mix_skip",
        block_order: str = "spatial_first",
        layer_norm_eps: float = 1e-5,
        drop_path_rate: float = 0.0,
        initializer_range: float = 0.02,
        downsample: str = "patch_merging",
        mask_ratio: float = 0.6,
        mask_unit_patches: int = 4,
        norm_pix_loss: bool = False,
        sd_head_type: str = "linear",
        sd_proj_dim: int = 512,
        sd_pooling: str = "mean",
        sd_tokens: str = "visible",
        sd_mode: str = "frozen_teacher",
        sd_student_temp: Optional[float] = None,
        sd_teacher_temp: Optional[float] = None,
        sd_center_momentum: float = 0.9,
        sd_scale_t2: bool = False,
        sd_weight: float = 1.0,
        sd_loss: str = "ce",
        skip_mode: str = "full_scale",
        skip_dim: int = 64,
        expand_mode: str = "generalized",
        cls_source: str = "bottleneck",
        cls_id2label: Optional[dict] = None,
        cls_label2id: Optional[dict] = None,
        num_cls_labels: Optional[int] = None,
        seg_loss_weight: float = 0.5,
        cls_loss_weight: float = 0.5,
        focal_gamma: float = 2.0,
        focal_alpha: Optional[float] = None,
        dice_include_background: bool = True,
        dice_squared: bool = True,
        dice_smooth: float = 1e-5,
        semantic_loss_ignore_index: int = 255,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        crop_scale=(0.5, 1.0),
        pretrain_recipe: Optional[dict] = None,
        finetune_recipe: Optional[dict] = None,
        **kwargs,
    ):
        self.image_size = image_size
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.hidden_sizes = list(hidden_sizes)
        self.encoder_depths = list(encoder_depths)
        self.decoder_depths = list(decoder_depths)
        heads = channel_attention_heads
        self.channel_attention_heads = list(heads) if isinstance(heads, (list, tuple)) else heads
        self.efficient_attention_heads = efficient_attention_heads
        self.mlp_ratio = mlp_ratio
        self.ffn_type = ffn_type
        self.block_order = block_order
        self.layer_norm_eps = layer_norm_eps
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        self.downsample = downsample
        self.mask_ratio = mask_ratio
        self.mask_unit_patches = mask_unit_patches
        self.norm_pix_loss = norm_pix_loss
        self.sd_head_type = sd_head_type
        self.sd_proj_dim = sd_proj_dim
        self.sd_pooling = sd_pooling
        self.sd_tokens = sd_tokens
        self.sd_mode = sd_mode
        self.sd_student_temp = sd_student_temp
        self.sd_teacher_temp = sd_teacher_temp
        self.sd_center_momentum = sd_center_momentum
        self.sd_scale_t2 = sd_scale_t2
        self.sd_weight = sd_weight
        self.sd_loss = sd_loss
        self.skip_mode = skip_mode
        self.skip_dim = skip_dim
        self.expand_mode = expand_mode
        self.cls_source = cls_source
        if cls_id2label is None:
            cls_id2label = ({i: f"LABEL_{i}" for i in range(num_cls_labels)} if num_cls_labels is not None
                            else {0: "negative", 1: "positive"})
        self.cls_id2label = _int_keys(cls_id2label)
        self.cls_label2id = (dict(cls_label2id) if cls_label2id is not None
                             else {v: k for k, v in self.cls_id2label.items()})
        self.seg_loss_weight = seg_loss_weight
        self.cls_loss_weight = cls_loss_weight
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.dice_include_background = dice_include_background
        self.dice_squared = dice_squared
        self.dice_smooth = dice_smooth
        self.semantic_loss_ignore_index = semantic_loss_ignore_index
        self.image_mean = per_channel(image_mean)
        self.image_std = per_channel(image_std)
        self.crop_scale = list(crop_scale)
        self.pretrain_recipe = pretrain_recipe if pretrain_recipe is not None else dict(
            optimizer="adamw", betas=[0.9, 0.95], learning_rate=2e-4, weight_decay=0.05, warmup_ratio=0.1,
            scheduler="cosine", epochs={"siim_acr": 400, "busi": 200}, batch_size={"siim_acr": 24, "busi": 12})
        self.finetune_recipe = finetune_recipe if finetune_recipe is not None else dict(
            optimizer="adamw", learning_rate=1.5e-3, weight_decay=0.05, scheduler="cosine",
            epochs={"siim_acr": 100, "busi": 50}, batch_size={"siim_acr": 24, "busi": 12},
            busi_alternative=dict(optimizer="sgd", learning_rate=0.01, momentum=0.9, weight_decay=1e-4,
                                  scheduler="poly", power=0.9))
        legacy_detach = kwargs.pop("sd_detach_teacher", None)  # medmae 0.1 configs: True = today's "detached"
        if legacy_detach is not None and sd_mode == "frozen_teacher":
            self.sd_mode = "detached" if legacy_detach else "sdmae"
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = {0: "background", 1: "lesion"}
        out_features, out_indices = kwargs.pop("out_features", None), kwargs.pop("out_indices", None)
        kwargs.pop("stage_names", None)  # derived from hidden_sizes below
        super().__init__(**kwargs)
        # AutoBackbone stages: "stem" = patch embedding (stride p), "stage{s}" = encoder stage s (stride p * 2^(s-1))
        self.stage_names = ["stem"] + [f"stage{s}" for s in range(1, len(self.hidden_sizes) + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        self.validate_sdda_mae()

    # ---- derived quantities ------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.hidden_sizes)

    @property
    def depths(self) -> list[int]:
        """``encoder_depths`` under the name transformers' hierarchical backbones use (Swin, ConvNext)."""
        return self.encoder_depths

    @property
    def num_cls_labels(self) -> int:
        """Number of diagnosis classes (the segmentation classes are ``num_labels``)."""
        return len(self.cls_id2label)

    @property
    def sd_temperatures(self) -> tuple[float, float]:
        """(student, teacher) softmax temperatures: the explicit fields, else the ``sd_mode``'s defaults."""
        student, teacher = SD_MODE_TEMPERATURES[self.sd_mode]
        return (self.sd_student_temp if self.sd_student_temp is not None else student,
                self.sd_teacher_temp if self.sd_teacher_temp is not None else teacher)

    @property
    def stage_heads(self) -> list[int]:
        """Channel-attention heads of each stage."""
        heads = self.channel_attention_heads
        return list(heads) if isinstance(heads, list) else [heads] * self.num_stages

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: patch_size * lcm(2**(stages-1), mask_unit_patches)."""
        return self.patch_size * math.lcm(2 ** (self.num_stages - 1), self.mask_unit_patches)

    def validate_sdda_mae(self) -> None:
        """Raise ValueError naming the problem for impossible values (called at construction)."""
        for name in ("image_size", "num_channels", "patch_size", "efficient_attention_heads", "mask_unit_patches",
                     "sd_proj_dim", "skip_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_stages < 2:
            raise ValueError(f"hidden_sizes needs at least 2 stages, got {self.hidden_sizes}")
        if any(not isinstance(c, int) or c <= 0 for c in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes}")
        if len(self.encoder_depths) != self.num_stages:
            raise ValueError(f"encoder_depths has {len(self.encoder_depths)} entries for {self.num_stages} stages "
                             f"(hidden_sizes={self.hidden_sizes})")
        if len(self.decoder_depths) != self.num_stages - 1:
            raise ValueError(f"decoder_depths must have {self.num_stages - 1} entries (one per decoder stage, coarse "
                             f"to fine), got {self.decoder_depths}")
        if any(d < 0 for d in self.encoder_depths + self.decoder_depths):
            raise ValueError("encoder_depths and decoder_depths must be >= 0")
        if isinstance(self.channel_attention_heads, list) and len(self.channel_attention_heads) != self.num_stages:
            raise ValueError(f"channel_attention_heads has {len(self.channel_attention_heads)} entries for "
                             f"{self.num_stages} stages")
        for width, heads in zip(self.hidden_sizes, self.stage_heads):
            if not isinstance(heads, int) or heads <= 0 or width % heads:
                raise ValueError(f"stage width {width} is not divisible by channel_attention_heads {heads}")
            if width % self.efficient_attention_heads:
                raise ValueError(f"stage width {width} is not divisible by efficient_attention_heads "
                                 f"{self.efficient_attention_heads}")
        if self.image_size % self.size_multiple:
            raise ValueError(
                f"image_size {self.image_size} does not fit the stage/mask geometry: it must be a multiple of "
                f"patch_size x lcm(2^(stages-1), mask_unit_patches) = {self.patch_size} x "
                f"lcm({2 ** (self.num_stages - 1)}, {self.mask_unit_patches}) = {self.size_multiple}"
            )
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        for name in ("sd_student_temp", "sd_teacher_temp"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"{name} must be a positive number (or None: the sd_mode's value), got {value!r}")
        if not 0.0 <= self.sd_center_momentum < 1.0:
            raise ValueError(f"sd_center_momentum must be in [0, 1), got {self.sd_center_momentum}")
        if self.sd_weight < 0:
            raise ValueError(f"sd_weight must be >= 0 (0 switches self-distillation off), got {self.sd_weight}")
        if self.sd_tokens != "all" and self.sd_pooling == "token" and self.mask_unit_patches % 2 ** (self.num_stages - 1):
            raise ValueError("sd_tokens='visible'/'masked' with sd_pooling='token' needs mask units aligned with "
                             "bottleneck tokens (mask_unit_patches a multiple of 2^(stages-1))")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {getattr(self, name)!r}")
        if self.num_labels < 1 or self.num_cls_labels < 1:
            raise ValueError("there must be at least one segmentation class (id2label) and one diagnosis class "
                             "(cls_id2label)")
        if sorted(self.cls_id2label) != list(range(self.num_cls_labels)):
            raise ValueError(f"cls_id2label keys must be 0..{self.num_cls_labels - 1}, got {sorted(self.cls_id2label)}")
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) not in (1, self.num_channels):
                raise ValueError(f"{name} has {len(getattr(self, name))} values for {self.num_channels} channels")
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std must be positive (it divides the pixels), got {self.image_std}")
        if self.focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {self.focal_gamma}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SDDAMAEConfig":
        """Build a named size: ``sdda_mae_512`` (the paper's setting, alias ``default``) or ``tiny_test`` (64 px)."""
        key = SDDA_MAE_PRESET_ALIASES.get(name, name)
        if key not in SDDA_MAE_PRESETS:
            valid = sorted(SDDA_MAE_PRESETS) + sorted(SDDA_MAE_PRESET_ALIASES)
            raise ValueError(f"unknown SDDA-MAE preset {name!r}; choose one of {', '.join(valid)}")
        return cls(**{**copy.deepcopy(SDDA_MAE_PRESETS[key]), **overrides})
