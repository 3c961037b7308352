# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""ETMAE: tiny ViT masked autoencoders distilled from a frozen MAE teacher (Dassum, Librandi, Paez).

The encoder and decoder follow facebookresearch/mae ``models_mae.py`` step by step (``patchify``,
``random_masking``, ``forward_encoder``, ``forward_decoder``, ``forward_loss``) with timm/MAE parameter
names, so MAE, medical_mae and timm checkpoints convert by renaming only. The distillation term is
DMAE's feature alignment (Bai et al.): the student's block-``k_S`` output, projected to the teacher's
width, is matched with L1 to the teacher's block-``k_T`` output on the SAME visible patches.

Ships to the Hub as remote code: imports only torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput, ImageClassifierOutput
from transformers.utils import ModelOutput, can_return_tuple

from ..configuration.configuration_etmae import ETMAEConfig, align_layer_at_three_quarters
from .layers import (
    MedMAEPreTrainedModel,
    Mlp,
    ViTBlock,
    check_pixel_values,
    get_2d_sincos_pos_embed,
    interpolate_pos_embed,
    intermediate_indices,
    masked_patch_mse,
    patchify,
    unpatchify,
    trunc_normal_init_,
    xavier_uniform_flat_,
)


@dataclass
class ETMAEModelOutput(ModelOutput):
    """Encoder output.

    Args:
        last_hidden_state: [B, 1 + kept, D] tokens after the final norm (CLS first); kept = all patches without masking.
        pooler_output: [B, D] the image vector: mean of the patch tokens (``global_pool="avg"``) or the CLS token
            (``"cls"``) of ``last_hidden_state`` (what ``pipeline("image-feature-extraction", pool=True)`` returns).
        mask: [B, L] 1 = removed, 0 = kept, raster order (None without masking).
        ids_restore: [B, L] permutation that undoes the shuffle (None without masking).
        hidden_states: tuple of [B, 1 + kept, D]; index 0 = embeddings, index k = output of block k-1 (pre-norm).
        attentions: tuple of [B, heads, N, N] per block when requested.
    """

    last_hidden_state: Optional[torch.FloatTensor] = None
    pooler_output: Optional[torch.FloatTensor] = None
    mask: Optional[torch.LongTensor] = None
    ids_restore: Optional[torch.LongTensor] = None
    hidden_states: Optional[tuple[torch.FloatTensor, ...]] = None
    attentions: Optional[tuple[torch.FloatTensor, ...]] = None


@dataclass
class ETMAEForPreTrainingOutput(ModelOutput):
    """Pre-training output: ``loss = reconstruction_loss + distill_weight * distillation_loss``.

    Args:
        logits: [B, L, patch_size**2 * C] predicted pixels of every patch (normalised if ``norm_pix_loss``).
        mask, ids_restore: as in ``ETMAEModelOutput``.
        distillation_loss: None when no teacher is attached.
    """

    loss: Optional[torch.FloatTensor] = None
    reconstruction_loss: Optional[torch.FloatTensor] = None
    distillation_loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    mask: Optional[torch.LongTensor] = None
    ids_restore: Optional[torch.LongTensor] = None
    hidden_states: Optional[tuple[torch.FloatTensor, ...]] = None
    attentions: Optional[tuple[torch.FloatTensor, ...]] = None


def random_masking(x: torch.Tensor, mask_ratio: float, noise: Optional[torch.Tensor] = None):
    """Per-sample random masking by argsort of noise (MAE ``random_masking``).

    x: [B, L, D]; noise: [B, L] (uniform [0, 1) when None; small noise = keep).
    Returns x_masked [B, int(L * (1 - mask_ratio)), D], mask [B, L] (1 = removed), ids_restore [B, L].
    """
    batch, length, dim = x.shape
    len_keep = int(length * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(batch, length, device=x.device)
    elif noise.shape != (batch, length):
        raise ValueError(f"noise must have shape [batch, num_patches] = {[batch, length]}, got {list(noise.shape)}")
    ids_shuffle = torch.argsort(noise.to(x.device), dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x_masked = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(batch, length, device=x.device, dtype=x.dtype)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return x_masked, mask, ids_restore


class PatchProjection(nn.Conv2d):
    """The patch projection, Conv2d(k = s = patch_size), as its own class so that ``_init_weights`` reaches it: the
    ``PatchEmbed`` wrapper has no parameters of its own, and transformers' initialisation of code outside the
    transformers package skips such a module, which left PyTorch's default Conv2d init in every new ETMAE."""


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: Conv2d(k = s = patch_size). [B, C, H, W] -> [B, (H/p)*(W/p), D]."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = PatchProjection(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def _drop_path_rates(config: ETMAEConfig) -> list[float]:
    """Stochastic depth increasing linearly from 0 to ``drop_path_rate`` over the blocks (timm)."""
    n = config.num_hidden_layers
    return [config.drop_path_rate * i / max(n - 1, 1) for i in range(n)]


class ETMAEPreTrainedModel(MedMAEPreTrainedModel):
    config_class = ETMAEConfig
    config: ETMAEConfig
    base_model_prefix = "etmae"
    _no_split_modules = ["ViTBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def no_weight_decay(self) -> set[str]:
        """Parameter names without weight decay besides biases and 1-D weights (timm's ``no_weight_decay``): the CLS
        token and the position tables, as MAE's fine-tuning lists them (``models_vit.py``)."""
        return {name for name, _ in self.named_parameters() if name.split(".")[-1] in ("cls_token", "pos_embed")}

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's ``group_matcher``, the layers of layer-wise lr decay: the stem (CLS token, position table, patch
        embedding) is layer 0 and encoder block k is layer k + 1; everything else (norms, head) is the top layer."""
        prefix = "" if isinstance(self, ETMAEModel) else r"etmae\."
        return {"stem": rf"^{prefix}(?:cls_token|pos_embed|patch_embed)", "blocks": rf"^{prefix}blocks\.(\d+)"}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """MAE initialisation: xavier-uniform linear layers (fused qkv as one matrix), xavier on the flattened
        patch projection, normal(0.02) cls/mask tokens, LayerNorm (1, 0), fixed sin-cos position tables."""
        if isinstance(module, nn.Linear) and module is getattr(self, "classifier", None):
            trunc_normal_init_(module.weight, std=self.config.classifier_init_std)  # MAE fine-tuning head
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, PatchProjection):
            xavier_uniform_flat_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ETMAEModel):
            grid = module.grid_size
            init.copy_(module.pos_embed, get_2d_sincos_pos_embed(module.pos_embed.shape[-1], *grid, cls_token=True)[None])
            init.normal_(module.cls_token, std=self.config.initializer_range)
        elif isinstance(module, ETMAEDecoder):
            grid = module.grid_size
            init.copy_(module.pos_embed, get_2d_sincos_pos_embed(module.pos_embed.shape[-1], *grid, cls_token=True)[None])
            init.normal_(module.mask_token, std=self.config.initializer_range)


class ETMAEModel(ETMAEPreTrainedModel):
    """The ViT encoder (features). Masking happens only when ``mask_ratio`` or ``noise`` is given; without it,
    tokens keep their raster order (no shuffle), which is what fine-tuning and feature extraction need.

    ``use_final_norm=False`` drops the final LayerNorm (MAE fine-tuning with global average pooling, which
    normalises the pooled vector with ``fc_norm`` instead).
    """

    def __init__(self, config: ETMAEConfig, use_final_norm: bool = True):
        super().__init__(config)
        self.grid_size = (config.image_size // config.patch_size,) * 2
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.patch_embed = PatchEmbed(config.patch_size, config.num_channels, config.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        # Fixed sin-cos table, a Parameter without gradient as in MAE (counted in parameters, saved in checkpoints).
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, config.hidden_size), requires_grad=False)
        rates = _drop_path_rates(config)
        self.blocks = nn.ModuleList(
            ViTBlock(config, config.hidden_size, config.num_attention_heads, config.intermediate_size, rates[i])
            for i in range(config.num_hidden_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if use_final_norm else None
        self.post_init()

    def get_input_embeddings(self) -> PatchEmbed:
        return self.patch_embed

    def position_embedding(self, height: int, width: int, interpolate_pos_encoding: bool) -> torch.Tensor:
        """[1, 1 + h*w, D] position table for an input of ``height`` x ``width`` pixels."""
        grid = (height // self.config.patch_size, width // self.config.patch_size)
        if grid == self.grid_size:
            return self.pos_embed
        return interpolate_pos_embed(self.pos_embed, self.grid_size, grid)

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Patch embedding plus position (before masking, as in MAE). [B, C, H, W] -> [B, L, D] (no CLS)."""
        check_pixel_values(pixel_values, self.config.num_channels, self.config.patch_size,
                           None if interpolate_pos_encoding else self.config.image_size)
        pos = self.position_embedding(*pixel_values.shape[-2:], interpolate_pos_encoding)
        x = self.patch_embed(pixel_values.to(self.patch_embed.proj.weight.dtype))
        return x + pos[:, 1:]

    def prepend_cls(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, D] -> [B, 1 + N, D] with ``cls_token + pos_embed[:, :1]`` first."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)

    def forward_encoder(
        self,
        pixel_values: torch.Tensor,
        mask_ratio: Optional[float] = None,
        noise: Optional[torch.Tensor] = None,
        num_blocks: Optional[int] = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        interpolate_pos_encoding: bool = False,
    ):
        """Embed, mask (when asked), prepend CLS and run the first ``num_blocks`` blocks (all by default).

        Returns (x [B, 1 + kept, D] pre-norm, mask, ids_restore, hidden_states tuple, attentions tuple).
        Stopping early (``num_blocks``) is how a distillation teacher avoids computing unused blocks.
        """
        x = self.embed(pixel_values, interpolate_pos_encoding)
        mask = ids_restore = None
        if mask_ratio is None and noise is not None:
            mask_ratio = self.config.mask_ratio
        if mask_ratio is not None and mask_ratio > 0:
            x, mask, ids_restore = random_masking(x, mask_ratio, noise)
        x = self.prepend_cls(x)
        hidden_states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for block in self.blocks[: num_blocks if num_blocks is not None else len(self.blocks)]:
            x, weights = block(x, output_attentions=output_attentions)
            if output_hidden_states:
                hidden_states = hidden_states + (x,)
            if output_attentions:
                attentions = attentions + (weights,)
        return x, mask, ids_restore, hidden_states, attentions

    def token_map(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Patch tokens as a feature map: [B, 1 + h*w, D] (CLS first) -> [B, D, h, w] for an H x W input."""
        grid = (height // self.config.patch_size, width // self.config.patch_size)
        return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, *grid).contiguous()

    def forward_intermediates(
        self,
        pixel_values: torch.Tensor,
        indices: Optional[Union[int, list[int]]] = None,
        norm: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        interpolate_pos_encoding: bool = False,
    ):
        """timm's ``forward_intermediates``: outputs of the blocks ``indices`` (0-based, negative from the end; an int n
        = the last n blocks; None = all), whole images, no masking. Blocks after the last index are skipped when
        ``intermediates_only``. ``norm`` applies the final LayerNorm to each (when the model has one).

        Returns intermediates as [B, D, h, w] (``"NCHW"``) or patch tokens [B, h*w, D] (``"NLC"``), CLS dropped;
        with ``intermediates_only=False`` returns (final tokens [B, 1 + h*w, D] after the norm, intermediates).
        """
        depth = len(self.blocks)
        wanted = intermediate_indices(indices, depth, output_fmt, "blocks")
        num_blocks = max(wanted) + 1 if intermediates_only else depth
        x, _, _, hidden_states, _ = self.forward_encoder(
            pixel_values, num_blocks=num_blocks, output_hidden_states=True,
            interpolate_pos_encoding=interpolate_pos_encoding)
        normed = (lambda t: self.norm(t)) if norm and self.norm is not None else (lambda t: t)
        height, width = pixel_values.shape[-2:]
        intermediates = []
        for i in wanted:
            tokens = normed(hidden_states[i + 1])
            intermediates.append(self.token_map(tokens, height, width) if output_fmt == "NCHW" else tokens[:, 1:])
        if intermediates_only:
            return intermediates
        return (self.norm(x) if self.norm is not None else x), intermediates

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: Optional[torch.Tensor] = None,
        mask_ratio: Optional[float] = None,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        interpolate_pos_encoding: bool = False,
    ):
        """pixel_values: [B, C, H, W]. ``noise`` [B, L] / ``mask_ratio`` switch on MAE masking."""
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        x, mask, ids_restore, hidden_states, attentions = self.forward_encoder(
            pixel_values, mask_ratio, noise, None, output_hidden_states, output_attentions, interpolate_pos_encoding
        )
        if self.norm is not None:
            x = self.norm(x)
        pooled = x[:, 1:].mean(dim=1) if self.config.global_pool == "avg" else x[:, 0]
        out = ETMAEModelOutput(last_hidden_state=x, pooler_output=pooled, mask=mask, ids_restore=ids_restore,
                               hidden_states=hidden_states, attentions=attentions)
        return out


class ETMAEDecoder(nn.Module):
    """MAE decoder: embed to decoder width, insert mask tokens, unshuffle, add sin-cos positions, blocks, predict pixels.

    Parameter names: ``embed``, ``mask_token``, ``pos_embed``, ``blocks``, ``norm``, ``pred``
    (MAE: ``decoder_embed``, ``mask_token``, ``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``).
    """

    def __init__(self, config: ETMAEConfig):
        super().__init__()
        self.config = config
        dim = config.decoder_hidden_size
        self.grid_size = (config.image_size // config.patch_size,) * 2
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed = nn.Linear(config.hidden_size, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            ViTBlock(config, dim, config.decoder_num_attention_heads, config.decoder_intermediate_size)
            for _ in range(config.decoder_num_hidden_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.pred = nn.Linear(dim, config.patch_size**2 * config.num_channels)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: Optional[tuple[int, int]] = None):
        """latent: [B, 1 + kept, D] (after the encoder norm); ids_restore: [B, L]. Returns [B, L, p*p*C]."""
        x = self.embed(latent)
        batch, length = ids_restore.shape
        mask_tokens = self.mask_token.to(x.dtype).expand(batch, length + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))  # unshuffle
        x = torch.cat([x[:, :1], x_], dim=1)
        pos = self.pos_embed if grid is None else interpolate_pos_embed(self.pos_embed, self.grid_size, grid)
        x = x + pos
        for block in self.blocks:
            x, _ = block(x)
        return self.pred(self.norm(x))[:, 1:]


class ETMAEForPreTraining(ETMAEPreTrainedModel):
    """MAE pre-training of the ViT encoder, with ETMAE's feature distillation when a teacher is attached.

    ``set_teacher(teacher)`` attaches a frozen ``ETMAEModel`` (or the encoder of an ``ETMAEForPreTraining``) of
    any width; ``medmae.modeling.convert.load_teacher`` builds one from a medmae folder, a MAE / medical_mae
    ``.pth`` file or a transformers ``ViTMAE`` model. The teacher is never part of ``state_dict``.
    """

    _keys_to_ignore_on_load_unexpected = [r"^distill_proj\."]

    def __init__(self, config: ETMAEConfig):
        super().__init__(config)
        self.etmae = ETMAEModel(config)
        self.decoder = ETMAEDecoder(config)
        if config.teacher_hidden_size:
            if config.distill_projection == "linear":
                self.distill_proj = nn.Linear(config.hidden_size, config.teacher_hidden_size)
            else:
                self.distill_proj = Mlp(config.hidden_size, config.teacher_hidden_size, config.teacher_hidden_size)
        else:
            self.distill_proj = None
        self._teacher: list = []  # a list keeps the teacher out of modules, parameters and state_dict
        self.post_init()

    # ---- teacher -------------------------------------------------------------------------------
    @property
    def teacher(self) -> Optional[ETMAEModel]:
        return self._teacher[0] if self._teacher else None

    def set_teacher(self, teacher: Optional[nn.Module], image_mean=None, image_std=None,
                    source_statistics: Optional[dict] = None) -> None:
        """Attach a frozen teacher encoder (eval mode, no gradients) or detach it with ``None``.

        ``image_mean`` / ``image_std``: the input normalisation the teacher was trained with; the student's inputs are
        re-normalised to it when it differs from ``config.image_mean``. ``source_statistics``: ``{source:
        {"image_mean", "image_std"}}`` when the teacher saw each source with its own statistics (medical_mae: NIH
        0.5056 / 0.252, CheXpert ImageNet); then ``forward`` needs ``teacher_source``.
        """
        if teacher is None:
            self._teacher = []
            return
        if isinstance(teacher, ETMAEForPreTraining):
            teacher = teacher.etmae
        if not isinstance(teacher, ETMAEModel):
            raise TypeError(
                f"teacher must be an ETMAEModel or ETMAEForPreTraining, got {type(teacher).__name__}; "
                "convert other checkpoints with medmae.modeling.convert.load_teacher"
            )
        if self.distill_proj is None or teacher.config.hidden_size != self.config.teacher_hidden_size:
            raise ValueError(
                f"teacher width {teacher.config.hidden_size} does not match config.teacher_hidden_size "
                f"{self.config.teacher_hidden_size} (the projection head's output size)"
            )
        if self.config.teacher_align_layer is None:  # 3/4 of the teacher's depth, as the paper
            self.config.teacher_align_layer = align_layer_at_three_quarters(teacher.config.num_hidden_layers)
        if self.config.teacher_align_layer >= teacher.config.num_hidden_layers:
            raise ValueError(f"teacher_align_layer {self.config.teacher_align_layer} is beyond the teacher's depth "
                             f"({teacher.config.num_hidden_layers} blocks)")
        if (teacher.config.patch_size, teacher.config.num_channels) != (self.config.patch_size, self.config.num_channels):
            raise ValueError("teacher and student must share patch size and channels to share one mask: teacher "
                             f"patch_size {teacher.config.patch_size}, num_channels {teacher.config.num_channels}; "
                             f"student {self.config.patch_size}, {self.config.num_channels}")
        teacher.requires_grad_(False)
        teacher.eval()
        param = next(self.parameters())
        teacher.to(device=param.device)
        self._teacher = [teacher]
        if image_mean is not None:
            self.config.teacher_image_mean = list(image_mean)
        if image_std is not None:
            self.config.teacher_image_std = list(image_std)
        if source_statistics is not None:
            self.config.teacher_source_statistics = {
                str(k): {"image_mean": list(v["image_mean"]), "image_std": list(v["image_std"])}
                for k, v in source_statistics.items()}
            self.config.validate_etmae()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher stays in eval mode
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self._teacher:
            self._teacher[0]._apply(fn, *args, **kwargs)  # .to(device) moves the teacher too
        return self

    def teacher_statistics(self, pixel_values: torch.Tensor, teacher_source=None):
        """(mean_t, std_t) the teacher expects, [1 or B, C, 1, 1]: per image from ``teacher_source`` (source names
        [B] or indices [B] into ``sorted(config.teacher_source_statistics)``) when the config has per-source
        statistics, else ``teacher_image_mean`` / ``teacher_image_std`` (None: the student's own)."""
        per_source = self.config.teacher_source_statistics
        view = (-1, pixel_values.shape[1], 1, 1)
        if not per_source:
            mean_t = self.config.teacher_image_mean or self.config.image_mean
            std_t = self.config.teacher_image_std or self.config.image_std
            return (pixel_values.new_tensor(mean_t).expand(pixel_values.shape[1]).reshape(view),
                    pixel_values.new_tensor(std_t).expand(pixel_values.shape[1]).reshape(view))
        names = sorted(per_source)
        if teacher_source is None:
            raise ValueError(f"the teacher has per-source input statistics for {names}: pass teacher_source (the "
                             "batch's `source` column) so each image is re-normalised as the teacher saw its source")
        if isinstance(teacher_source, torch.Tensor):
            teacher_source = [names[int(i)] for i in teacher_source.reshape(-1).tolist()]
        unknown = sorted(set(teacher_source) - set(names))
        if unknown:
            raise ValueError(f"teacher_source {unknown} has no teacher statistics (known: {names}); add it to "
                             "config.teacher_source_statistics")
        if len(teacher_source) != pixel_values.shape[0]:
            raise ValueError(f"teacher_source has {len(teacher_source)} entries for a batch of {pixel_values.shape[0]}")
        channels = pixel_values.shape[1]
        mean_t = pixel_values.new_tensor([per_source[s]["image_mean"] * (channels // len(per_source[s]["image_mean"]))
                                          for s in teacher_source])
        std_t = pixel_values.new_tensor([per_source[s]["image_std"] * (channels // len(per_source[s]["image_std"]))
                                         for s in teacher_source])
        return mean_t.reshape(view), std_t.reshape(view)

    def teacher_inputs(self, pixel_values: torch.Tensor, teacher_source=None) -> torch.Tensor:
        """Re-normalise student inputs to the teacher's statistics: x_t = (x * std_s + mean_s - mean_t) / std_t."""
        if not self.config.teacher_source_statistics and self.config.teacher_image_mean is None \
                and self.config.teacher_image_std is None:
            return pixel_values
        view = (1, -1, 1, 1)
        mean_s = pixel_values.new_tensor(self.config.image_mean).view(view)
        std_s = pixel_values.new_tensor(self.config.image_std).view(view)
        mean_t, std_t = self.teacher_statistics(pixel_values, teacher_source)
        return ((pixel_values * std_s + mean_s) - mean_t) / std_t

    # ---- MAE steps -------------------------------------------------------------------------------
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, L, p*p*C] (channel fastest, as in MAE)."""
        return patchify(imgs, self.config.patch_size)

    def unpatchify(self, x: torch.Tensor, grid: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """[B, L, p*p*C] -> [B, C, H, W] (inverse of ``patchify``)."""
        return unpatchify(x, self.config.patch_size, self.config.num_channels, grid or self.etmae.grid_size)

    def forward_loss(self, pixel_values: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked-patch MSE (MAE ``forward_loss``; ETMAE eq. (1) L_MAE), in fp32.

        pred: [B, L, p*p*C]; mask: [B, L] with 1 = removed. Only removed patches count.
        """
        return masked_patch_mse(pred, self.patchify(pixel_values), mask, self.config.norm_pix_loss)

    def distillation_loss(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        """ETMAE eq. (2) L_dist: loss(normalise(proj(z_S)), normalise(z_T)) over tokens and channels, in fp32.

        student_features: [B, N, D_s] (block ``student_align_layer``), teacher_features: [B, N, D_t].
        """
        if not self.config.distill_include_cls:
            student_features, teacher_features = student_features[:, 1:], teacher_features[:, 1:]
        projected = self.distill_proj(student_features).float()
        target = teacher_features.detach().float()
        if self.config.distill_normalize:
            projected, target = F.normalize(projected, dim=-1), F.normalize(target, dim=-1)
        if self.config.distill_loss == "l1":
            return F.l1_loss(projected, target)
        if self.config.distill_loss == "l2":
            return F.mse_loss(projected, target)
        return F.smooth_l1_loss(projected, target)

    @torch.no_grad()
    def forward_teacher(self, pixel_values: torch.Tensor, noise: torch.Tensor, mask_ratio: float,
                        teacher_source=None) -> torch.Tensor:
        """Teacher features at ``teacher_align_layer`` on the student's visible patches (same noise, same mask);
        blocks after the align layer are never computed. Returns [B, 1 + kept, D_t]."""
        teacher = self.teacher
        x, *_ = teacher.forward_encoder(
            self.teacher_inputs(pixel_values, teacher_source), mask_ratio, noise,
            num_blocks=self.config.teacher_align_layer + 1
        )
        return x

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: Optional[torch.Tensor] = None,
        mask_ratio: Optional[float] = None,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        interpolate_pos_encoding: bool = False,
        teacher_source=None,
    ):
        """pixel_values: [B, C, H, W] normalised images. noise: [B, L] (drawn when None and shared with the teacher).
        teacher_source: [B] source names or indices of the images (needed when the teacher has per-source statistics).

        Returns ``ETMAEForPreTrainingOutput`` with ``loss = L_MAE + distill_weight * L_dist`` (ETMAE eq. (3)).
        """
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        mask_ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        if not 0 < mask_ratio < 1:
            raise ValueError(f"pre-training needs 0 < mask_ratio < 1, got {mask_ratio}")
        height, width = pixel_values.shape[-2:]
        grid = (height // self.config.patch_size, width // self.config.patch_size)
        if noise is None:
            noise = torch.rand(pixel_values.shape[0], grid[0] * grid[1], device=pixel_values.device)
        distill = self.teacher is not None
        need_states = output_hidden_states or distill
        x, mask, ids_restore, hidden_states, attentions = self.etmae.forward_encoder(
            pixel_values, mask_ratio, noise, None, need_states, output_attentions, interpolate_pos_encoding
        )
        latent = self.etmae.norm(x)
        pred = self.decoder(latent, ids_restore, None if grid == self.etmae.grid_size else grid)
        reconstruction_loss = self.forward_loss(pixel_values, pred, mask)
        distillation_loss = None
        loss = reconstruction_loss
        if distill:
            teacher_features = self.forward_teacher(pixel_values, noise, mask_ratio, teacher_source)
            distillation_loss = self.distillation_loss(hidden_states[self.config.student_align_layer + 1], teacher_features)
            loss = loss + self.config.distill_weight * distillation_loss
        out = ETMAEForPreTrainingOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            distillation_loss=distillation_loss,
            logits=pred,
            mask=mask,
            ids_restore=ids_restore,
            hidden_states=hidden_states if output_hidden_states else None,
            attentions=attentions,
        )
        return out


class ETMAEForImageClassification(ETMAEPreTrainedModel):
    """ViT classifier for fine-tuning (MAE ``models_vit.py``): no masking, mean of patch tokens -> ``fc_norm`` ->
    ``classifier`` (``global_pool="avg"``), or CLS after the final norm (``global_pool="cls"``).

    ``problem_type="multi_label_classification"`` uses BCE with logits (NIH ChestX-ray14, CheXpert).
    """

    accepts_loss_kwargs = False  # Trainer must not rescale the loss under DDP
    # Loading from a pre-training checkpoint drops its decoder and distillation projection (and, with average
    # pooling, the encoder's final norm): expected, so not listed as UNEXPECTED.
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^distill_proj\.", r"^etmae\.norm\."]

    def __init__(self, config: ETMAEConfig):
        super().__init__(config)
        avg = config.global_pool == "avg"
        self.etmae = ETMAEModel(config, use_final_norm=not avg)
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if avg else None
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor,
                            label_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The fine-tuning loss, used by the scripts and by Trainer alike (one loss, one place), in fp32.

        Multi-label: BCE with logits averaged over every entry, ``label_mask`` weighting each (0 = ignored, as
        ``F.binary_cross_entropy_with_logits(weight=...)``); targets must be 0 or 1 -- CheXpert's -1 (uncertain)
        must be mapped by an uncertainty policy first. Otherwise ``problem_type`` picks transformers' loss.
        """
        if self.config.problem_type != "multi_label_classification":
            if label_mask is not None:
                raise ValueError("label_mask applies to multi-label classification only "
                                 f"(config.problem_type is {self.config.problem_type!r})")
            return self.loss_function(labels, logits.float(), self.config)
        if labels.shape != logits.shape:
            raise ValueError(f"multi-label targets must have shape [batch, num_labels] = {list(logits.shape)}, "
                             f"got {list(labels.shape)}")
        bad = labels[(labels != 0) & (labels != 1)]
        if bad.numel():
            raise ValueError(f"multi-label targets must be 0 or 1, got {sorted(set(bad.tolist()))[:5]}: map "
                             "uncertain labels (CheXpert -1) with an uncertainty policy (ones, zeros, ignore, mixed)")
        weight = None if label_mask is None else label_mask.to(logits.device, torch.float32)
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), weight=weight)

    def forward_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs):
        """Pooled, normalised features [B, D] and the encoder output."""
        outputs = self.etmae(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs)
        tokens = outputs.last_hidden_state
        pooled = self.fc_norm(tokens[:, 1:].mean(dim=1)) if self.fc_norm is not None else tokens[:, 0]
        return pooled, outputs

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ):
        """pixel_values: [B, C, H, W]; labels: [B] class ids or [B, num_labels] multi-hot floats.

        ``label_mask=`` (keyword): [B, num_labels], 1 = scored, 0 = left out of the multi-label loss (CheXpert's
        ``ignore`` uncertainty policy). It is taken from ``**kwargs`` on purpose: Trainer counts every named forward
        argument containing "label" as a label and would skip evaluation metrics for batches without one. Any other
        keyword is an error.
        """
        label_mask = kwargs.pop("label_mask", None)
        if kwargs:
            raise TypeError(f"{type(self).__name__}.forward() got unexpected keyword argument(s) {sorted(kwargs)}")
        pooled, outputs = self.forward_features(
            pixel_values, interpolate_pos_encoding,
            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
        )
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            loss = self.classification_loss(logits, labels.to(logits.device), label_mask)
        out = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                    attentions=outputs.attentions)
        return out


class ETMAEBackbone(BackboneMixin, ETMAEPreTrainedModel):
    """The ETMAE encoder as a transformers backbone (``AutoBackbone``) for UperNet, DPT, Mask2Former and similar heads.

    Stages: ``stem`` (patch embedding + position) and ``stage1`` .. ``stage{depth}`` (block outputs), all at stride
    ``patch_size`` (a plain ViT); each selected stage goes through the encoder's final LayerNorm (as Dinov2Backbone's
    ``apply_layernorm``) and is returned as a [B, hidden_size, H / p, W / p] map. Loads the encoder of any ETMAE
    checkpoint (names ``etmae.*``).
    """

    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^distill_proj\.", r"^fc_norm\.", r"^classifier\."]

    def __init__(self, config: ETMAEConfig):
        super().__init__(config)
        self.etmae = ETMAEModel(config)
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self.post_init()

    def get_input_embeddings(self) -> PatchEmbed:
        return self.etmae.patch_embed

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        interpolate_pos_encoding: bool = False,
    ) -> BackboneOutput:
        """pixel_values: [B, C, H, W] -> ``feature_maps``: one [B, D, H / p, W / p] map per ``out_features`` stage."""
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        _, _, _, hidden_states, attentions = self.etmae.forward_encoder(
            pixel_values, output_hidden_states=True, output_attentions=output_attentions,
            interpolate_pos_encoding=interpolate_pos_encoding)
        height, width = pixel_values.shape[-2:]
        feature_maps = tuple(self.etmae.token_map(self.etmae.norm(hidden_states[i]), height, width)
                             for i in self.out_indices)
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states if output_hidden_states else None,
                              attentions=attentions)
