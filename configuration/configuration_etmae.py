# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""ETMAE configuration: a ViT MAE student distilled from a frozen MAE teacher (ETMAE, Dassum et al.).

Ships to the Hub as remote code: imports only transformers.
"""

from __future__ import annotations

import copy
from typing import Optional

from transformers import PretrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

from .statistics import CXR_MEAN, CXR_STD, IMAGENET_MEAN, IMAGENET_STD, per_channel

_VIT = dict(image_size=224, patch_size=16, layer_norm_eps=1e-6, decoder_num_attention_heads=16,
            decoder_hidden_size=512, decoder_intermediate_size=2048)

ETMAE_PRESETS: dict[str, dict] = {
    # ETMAE student: ViT-Tiny/16 (DeiT-Ti: 3 heads) with a 512-d, 2-block decoder (Table 1: 12.4M + projection).
    "vit_tiny_patch16_dec512d2b": dict(_VIT, hidden_size=192, num_hidden_layers=12, num_attention_heads=3,
                                       intermediate_size=768, decoder_num_hidden_layers=2, teacher_hidden_size=384,
                                       teacher_align_layer=8),  # 3/4 of the 12-block ViT-S/B teachers
    # medical_mae ViT-S/16 teacher as released (CXR-0.3M), decoder 512-d x 2.
    "vit_small_patch16_dec512d2b": dict(_VIT, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                        intermediate_size=1536, decoder_num_hidden_layers=2, mask_ratio=0.9,
                                        image_mean=CXR_MEAN, image_std=CXR_STD),
    # ViT-S/16 teacher as ETMAE instantiated it (decoder 512-d x 8; Table 1: 47.6M).
    "vit_small_patch16_dec512d8b": dict(_VIT, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                        intermediate_size=1536, decoder_num_hidden_layers=8, mask_ratio=0.9,
                                        image_mean=CXR_MEAN, image_std=CXR_STD),
    # medical_mae ViT-B/16 teacher (CXR-0.5M), decoder 512-d x 8 (Table 1: 111.9M).
    "vit_base_patch16_dec512d8b": dict(_VIT, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                       intermediate_size=3072, decoder_num_hidden_layers=8, mask_ratio=0.9,
                                       image_mean=CXR_MEAN, image_std=CXR_STD),
    # A few-hundred-thousand-parameter model for tests and the laptop demo.
    "tiny_test": dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                      intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                      decoder_num_attention_heads=2, decoder_intermediate_size=64, layer_norm_eps=1e-6,
                      student_align_layer=2, teacher_align_layer=2, teacher_hidden_size=48),
}
ETMAE_PRESET_ALIASES = {
    "etmae-vit-tiny": "vit_tiny_patch16_dec512d2b",
    "vit-tiny": "vit_tiny_patch16_dec512d2b",
    "vit-small": "vit_small_patch16_dec512d8b",
    "vit-base": "vit_base_patch16_dec512d8b",
}


def align_layer_at_three_quarters(depth: int) -> int:
    """ETMAE / DMAE: align at 3/4 depth -> 0-based block ``3 * depth // 4 - 1`` (8 of 12; 2 of 4; 0 of 1)."""
    return max(3 * int(depth) // 4 - 1, 0)


class ETMAEConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of the ETMAE models (``ETMAEModel``, ``ETMAEForPreTraining``, ``ETMAEForImageClassification``).

    The ViT/MAE fields use the names of ``transformers.ViTMAEConfig``. Defaults give the ETMAE student
    (ViT-Tiny/16, 3 heads, decoder 512-d x 2, LayerNorm eps 1e-6 as in MAE).

    Args:
        image_size, patch_size, num_channels: input geometry; ``image_size`` must be divisible by ``patch_size``.
            Position embeddings are FIXED 2-D sin-cos tables as in MAE (not learned, never zero), in the encoder and
            the decoder.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: encoder width, depth, heads, MLP width.
        qkv_bias: bias on the fused qkv projection (MAE: True).
        layer_norm_eps: LayerNorm epsilon (MAE 1e-6; transformers' ViTMAE default 1e-12 is not MAE-faithful).
        attention_probs_dropout_prob: dropout on attention weights (MAE: 0).
        drop_path_rate: stochastic depth at the last block, linearly increasing (fine-tuning: 0.2 in medical_mae).
        initializer_range: std of the cls and mask tokens (MAE: 0.02); linear layers use xavier uniform as in MAE.
        decoder_hidden_size, decoder_num_hidden_layers, decoder_num_attention_heads, decoder_intermediate_size: MAE decoder.
        mask_ratio: fraction of patches removed in pre-training (ETMAE 0.75; medical_mae teachers 0.9).
        norm_pix_loss: normalise each target patch by its mean and std (MAE option; default off as in ETMAE).
        teacher_hidden_size: width of the teacher's features (ViT-S 384, ViT-B 768); sizes the projection head.
        student_align_layer, teacher_align_layer: 0-based block whose (pre-norm) output is aligned; None (default) is
            3/4 depth as in ETMAE / DMAE (``3 * depth // 4 - 1``: 8 of 12), for the teacher derived from its depth
            when it is attached. Explicit values are validated.
        distill_projection: ``linear`` (DMAE ``fc-1layer``, default) or ``mlp`` (DMAE ``mlp-1layer``).
        distill_loss: ``l1`` (ETMAE), ``l2`` or ``smooth_l1``.
        distill_normalize: L2-normalise student and teacher features over channels before the loss (DMAE: on).
        distill_include_cls: include the CLS token in the aligned features (DMAE: yes).
        distill_weight: alpha in ``L = L_MAE + alpha * L_dist`` (not given in the paper; DMAE's code uses 1).
        image_mean, image_std: normalisation the model's inputs were made with (part of the checkpoint's contract).
        teacher_image_mean, teacher_image_std: normalisation the teacher expects; inputs are re-normalised when they differ.
        teacher_source_statistics: ``{source: {"image_mean": [...], "image_std": [...]}}`` when the teacher saw each
            source with its own statistics (lambert-x/medical_mae: NIH 0.5056 / 0.252, CheXpert ImageNet); every
            image is then re-normalised by its batch ``source`` (``forward(teacher_source=...)``), and a batch
            without sources, or with a source not listed, is an error rather than a silent default.
        global_pool: ``avg`` (MAE fine-tuning: mean of patch tokens then ``fc_norm``) or ``cls`` (CLS after the final norm).
        problem_type: ``single_label_classification`` or ``multi_label_classification`` (BCE; NIH / CheXpert).
    """

    model_type = "etmae"

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        num_channels: int = 3,
        hidden_size: int = 192,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 3,
        intermediate_size: int = 768,
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-6,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.0,
        initializer_range: float = 0.02,
        decoder_hidden_size: int = 512,
        decoder_num_hidden_layers: int = 2,
        decoder_num_attention_heads: int = 16,
        decoder_intermediate_size: int = 2048,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
        teacher_hidden_size: Optional[int] = 384,
        student_align_layer: Optional[int] = None,
        teacher_align_layer: Optional[int] = None,
        distill_projection: str = "linear",
        distill_loss: str = "l1",
        distill_normalize: bool = True,
        distill_include_cls: bool = True,
        distill_weight: float = 1.0,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        teacher_image_mean=None,
        teacher_image_std=None,
        teacher_source_statistics: Optional[dict] = None,
        global_pool: str = "avg",
        classifier_init_std: float = 2e-5,
        out_features: Optional[list] = None,
        out_indices: Optional[list] = None,
        **kwargs,
    ):
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.qkv_bias = qkv_bias
        self.layer_norm_eps = layer_norm_eps
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_hidden_layers = decoder_num_hidden_layers
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_intermediate_size = decoder_intermediate_size
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.teacher_hidden_size = teacher_hidden_size
        # None -> 3/4 depth (ETMAE / DMAE "align at 3/4 depth": 0-based block 3 * depth // 4 - 1, 8 of 12)
        self.student_align_layer = align_layer_at_three_quarters(num_hidden_layers) if student_align_layer is None \
            else student_align_layer
        self.teacher_align_layer = teacher_align_layer
        self.distill_projection = distill_projection
        self.distill_loss = distill_loss
        self.distill_normalize = distill_normalize
        self.distill_include_cls = distill_include_cls
        self.distill_weight = distill_weight
        self.image_mean = per_channel(image_mean)
        self.image_std = per_channel(image_std)
        self.teacher_image_mean = per_channel(teacher_image_mean)
        self.teacher_image_std = per_channel(teacher_image_std)
        self.teacher_source_statistics = (
            {str(k): {"image_mean": list(v["image_mean"]), "image_std": list(v["image_std"])}
             for k, v in teacher_source_statistics.items()} if teacher_source_statistics else None)
        self.global_pool = global_pool
        self.classifier_init_std = classifier_init_std
        kwargs.pop("stage_names", None)  # derived from the depth below
        super().__init__(**kwargs)
        # AutoBackbone stages: "stem" = patch embedding + position, "stage{k}" = output of block k (all stride p)
        self.stage_names = ["stem"] + [f"stage{k}" for k in range(1, num_hidden_layers + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        self.validate_etmae()

    def validate_etmae(self) -> None:
        """Raise ValueError for impossible values (called at construction)."""
        for name in ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "intermediate_size", "decoder_hidden_size", "decoder_num_attention_heads",
                     "decoder_intermediate_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.decoder_num_hidden_layers < 0:
            raise ValueError(f"decoder_num_hidden_layers must be >= 0, got {self.decoder_num_hidden_layers}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        if self.decoder_hidden_size % self.decoder_num_attention_heads:
            raise ValueError(f"decoder_hidden_size {self.decoder_hidden_size} is not divisible by "
                             f"decoder_num_attention_heads {self.decoder_num_attention_heads}")
        if self.hidden_size % 4 or self.decoder_hidden_size % 4:
            raise ValueError("hidden sizes must be divisible by 4 for the 2-D sin-cos position embedding")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if not 0 <= self.student_align_layer < self.num_hidden_layers:
            raise ValueError(f"student_align_layer {self.student_align_layer} is beyond the student's depth "
                             f"({self.num_hidden_layers} blocks, 0-based)")
        if self.teacher_align_layer is not None and self.teacher_align_layer < 0:
            raise ValueError(f"teacher_align_layer must be >= 0, got {self.teacher_align_layer}")
        if self.distill_projection not in ("linear", "mlp"):
            raise ValueError(f"distill_projection must be 'linear' or 'mlp', got {self.distill_projection!r}")
        if self.distill_loss not in ("l1", "l2", "smooth_l1"):
            raise ValueError(f"distill_loss must be 'l1', 'l2' or 'smooth_l1', got {self.distill_loss!r}")
        if self.global_pool not in ("avg", "cls"):
            raise ValueError(f"global_pool must be 'avg' or 'cls', got {self.global_pool!r}")
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) not in (1, self.num_channels):
                raise ValueError(f"{name} has {len(getattr(self, name))} values for {self.num_channels} channels")
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std must be positive (it divides the pixels), got {self.image_std}")
        for source, stats in (self.teacher_source_statistics or {}).items():
            for name in ("image_mean", "image_std"):
                if len(stats[name]) not in (1, self.num_channels) or (name == "image_std" and min(stats[name]) <= 0):
                    raise ValueError(f"teacher_source_statistics[{source!r}][{name!r}] = {stats[name]} does not fit "
                                     f"{self.num_channels} channels (std must be positive)")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "ETMAEConfig":
        """Build a named size: ``vit_tiny_patch16_dec512d2b`` (student), ``vit_small_patch16_dec512d2b`` /
        ``vit_small_patch16_dec512d8b`` / ``vit_base_patch16_dec512d8b`` (teachers), ``tiny_test``."""
        key = ETMAE_PRESET_ALIASES.get(name, name)
        if key not in ETMAE_PRESETS:
            valid = sorted(ETMAE_PRESETS) + sorted(ETMAE_PRESET_ALIASES)
            raise ValueError(f"unknown ETMAE preset {name!r}; choose one of {', '.join(valid)}")
        return cls(**{**copy.deepcopy(ETMAE_PRESETS[key]), **overrides})
