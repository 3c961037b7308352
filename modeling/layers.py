# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Building blocks shared by the medmae model families.

This file ships to the Hugging Face Hub as remote code next to the modeling files, so it imports
only torch and transformers (and their siblings in this folder, with ``from .name import X``).
"""

from __future__ import annotations

import importlib
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


# --------------------------------------------------------------------------------------------------
# Fixed 2-D sin-cos position embedding (facebookresearch/mae util/pos_embed.py, bit-exact layout)
# --------------------------------------------------------------------------------------------------
def get_1d_sincos_pos_embed(embed_dim: int, pos: torch.Tensor) -> torch.Tensor:
    """1-D sin-cos embedding of positions ``pos`` [M] -> [M, embed_dim] as ``[sin | cos]`` (float64)."""
    if embed_dim % 2 != 0:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_height: int, grid_width: int, cls_token: bool = False) -> torch.Tensor:
    """2-D sin-cos position embedding with the exact layout of facebookresearch/mae.

    MAE builds ``np.meshgrid(grid_w, grid_h)``, so the first half of the channels encodes the column (w)
    coordinate and the second half the row (h) coordinate: ``[sin_w | cos_w | sin_h | cos_h]``, tokens in
    raster (row-major) order. Returns [(1 if cls_token) + grid_height * grid_width, embed_dim] (float64);
    the CLS row is zeros.
    """
    if embed_dim % 4 != 0:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {embed_dim}")
    rows = torch.arange(grid_height, dtype=torch.float64)
    cols = torch.arange(grid_width, dtype=torch.float64)
    grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")  # [h, w] each, raster order
    emb = torch.cat(
        [get_1d_sincos_pos_embed(embed_dim // 2, grid_cols), get_1d_sincos_pos_embed(embed_dim // 2, grid_rows)], dim=1
    )
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=torch.float64), emb], dim=0)
    return emb


def interpolate_pos_embed(
    pos_embed: torch.Tensor, grid_size: tuple[int, int], new_grid_size: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Bicubic resize of a [1, prefix + h*w, D] position table to a new (h', w') grid (DINO/MAE style)."""
    if tuple(grid_size) == tuple(new_grid_size):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, grid_size[0], grid_size[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid_size, mode="bicubic", align_corners=False).to(pos_embed.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid_size[0] * new_grid_size[1], dim)
    return torch.cat([prefix, grid], dim=1)


# --------------------------------------------------------------------------------------------------
# MAE steps shared by both families (facebookresearch/mae models_mae.py)
# --------------------------------------------------------------------------------------------------
def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)*(W/p), p*p*C], channel fastest (MAE ``patchify``)."""
    b, c, height, width = imgs.shape
    p = patch_size
    x = imgs.reshape(b, c, height // p, p, width // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (height // p) * (width // p), p * p * c)


def unpatchify(x: torch.Tensor, patch_size: int, num_channels: int, grid: tuple[int, int]) -> torch.Tensor:
    """[B, h*w, p*p*C] -> [B, C, h*p, w*p], the inverse of ``patchify``; grid = (h, w)."""
    p, c = patch_size, num_channels
    h, w = grid
    x = x.reshape(x.shape[0], h, w, p, p, c)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)


def masked_patch_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool) -> torch.Tensor:
    """MAE ``forward_loss`` in fp32: per-patch MSE averaged over removed patches only.

    pred, target: [B, L, p*p*C] (target from ``patchify``); mask: [B, L] with 1 = removed.
    ``norm_pix_loss`` normalises each target patch by its mean and (unbiased) variance + 1e-6, as in MAE.
    A batch without removed patches gives 0 (never NaN).
    """
    target = target.float()
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred.float() - target) ** 2).mean(dim=-1)
    mask = mask.float()
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------------------
# Small modules
# --------------------------------------------------------------------------------------------------
def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth per sample (timm's ``drop_path``)."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    return x * random_tensor.div_(keep_prob)


class DropPath(nn.Module):
    """Stochastic depth (drop path) per sample, as in timm."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear (timm ``Mlp`` names: ``fc1``, ``fc2``)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: Optional[int] = None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def eager_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: Optional[torch.Tensor], scaling: float, dropout: float = 0.0, **kwargs):
    """softmax(q k^T * scaling) v, the reference every attention backend must match (transformers' interface).

    query, key, value: [B, heads, N, head_dim]. Returns ([B, N, heads, head_dim], weights [B, heads, N, N]).
    """
    weights = torch.softmax((query * scaling) @ key.transpose(-2, -1), dim=-1)
    out = F.dropout(weights, p=dropout, training=module.training) @ value
    return out.transpose(1, 2).contiguous(), weights


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm/MAE layout: ``qkv``, ``proj``).

    The kernel is transformers' attention interface: ``config._attn_implementation`` picks ``sdpa`` (default),
    ``flash_attention_2``/``3``, ``flex_attention`` or a registered kernel from ``ALL_ATTENTION_FUNCTIONS``;
    ``eager`` (and any call asking for attention weights) uses ``eager_attention_forward``.
    """

    is_causal = False  # read by the sdpa and flash backends: image tokens attend both ways

    def __init__(self, config, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"hidden size {dim} is not divisible by the number of attention heads {num_heads}")
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, output_attentions: bool = False):
        """x: [B, N, D] -> ([B, N, D], attention weights [B, heads, N, N] or None)."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, N, head_dim]
        implementation = getattr(self.config, "_attn_implementation", None) or "sdpa"
        attention = eager_attention_forward
        if not output_attentions and implementation != "eager":
            attention = ALL_ATTENTION_FUNCTIONS[implementation]
        out, weights = attention(self, q, k, v, None, scaling=self.scale,
                                 dropout=self.attn_drop if self.training else 0.0)
        return self.proj(out.reshape(batch, tokens, dim)), (weights if output_attentions else None)


class ViTBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block (timm ``Block``): ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``."""

    def __init__(self, config, dim: int, num_heads: int, mlp_hidden: int, drop_path_rate: float = 0.0):
        super().__init__()
        eps = config.layer_norm_eps
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(config, dim, num_heads, qkv_bias=config.qkv_bias,
                              attn_drop=getattr(config, "attention_probs_dropout_prob", 0.0))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor, output_attentions: bool = False):
        """x: [B, N, D] -> ([B, N, D], attention weights or None)."""
        attn_out, weights = self.attn(self.norm1(x), output_attentions=output_attentions)
        x = x + self.drop_path(attn_out)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


# --------------------------------------------------------------------------------------------------
# Shared PreTrainedModel behaviour
# --------------------------------------------------------------------------------------------------
def check_pixel_values(pixel_values: torch.Tensor, num_channels: int, multiple_of: int, image_size=None) -> None:
    """Raise a ValueError naming the problem when ``pixel_values`` cannot be fed to the model.

    pixel_values: [B, C, H, W]. H and W must be multiples of ``multiple_of``; ``image_size`` (int or
    (h, w)) additionally pins the size; values must be finite.
    """
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must have shape [batch, channels, height, width], got {tuple(pixel_values.shape)}")
    channels, height, width = pixel_values.shape[1:]
    if channels != num_channels:
        raise ValueError(
            f"pixel_values has {channels} channels but the model expects {num_channels} (config.num_channels); "
            "use MedMAEImageProcessor to convert grayscale/RGB inputs"
        )
    if height % multiple_of or width % multiple_of:
        raise ValueError(f"image size {height}x{width} is not divisible by {multiple_of}")
    if image_size is not None:
        expected = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if (height, width) != expected:
            raise ValueError(
                f"image size {height}x{width} does not match the model's {expected[0]}x{expected[1]} "
                "(resize the input, or pass interpolate_pos_encoding=True where supported)"
            )
    # One reduction instead of an elementwise isfinite mask (~100x cheaper on CPU): NaN and inf survive a sum.
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(pixel_values.sum(dtype=torch.float32))):
        raise ValueError("pixel_values contains NaN or infinite values")


class CheckpointMismatchError(RuntimeError, ValueError):
    """A checkpoint that does not fit the model: tensors of other shapes, or no tensor at all under the model's
    names (weights of another family). A ``RuntimeError`` as transformers raises, and a ``ValueError`` as medmae
    0.1 raised."""


# True in medmae's own medmae/modeling/layers.py; False in a copy shipped as remote code (a module under
# transformers_modules), with or without medmae installed: there save_pretrained and push_to_hub are transformers'.
# medmae's export (medmae.modeling.remote_code) and Hub push (medmae.hub_cards) are not part of the remote code and
# this file may import only torch and transformers, so the methods below import them by name when called
# (importlib, not import statements: medmae.modeling.remote_code checks import statements only).
_IN_MEDMAE = __name__ == "medmae.modeling.layers"


class MedMAEPreTrainedModel(PreTrainedModel):
    """Base class of every medmae model.

    ``save_pretrained`` also writes the flat, self-contained remote code and the ``auto_map`` next to the
    weights (``medmae.modeling.remote_code``), so that collaborators without medmae can load the folder with
    ``trust_remote_code=True``; ``push_to_hub`` exports and uploads medmae's full zoo folder (weights, code,
    processor, card, reference outputs: ``medmae.hub_cards.push.push_model``). Both are ordinary methods that
    do not depend on ``import medmae`` having run; when this file runs as remote code they are transformers'
    ``save_pretrained`` and ``push_to_hub``.
    """

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained`` that refuses a checkpoint whose tensor shapes do not match the
        config (transformers would re-initialise those tensors with only a warning) unless
        ``ignore_mismatched_sizes=True`` is passed."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error) or isinstance(error, CheckpointMismatchError):
                raise
            raise CheckpointMismatchError(
                f"the checkpoint's tensor shapes do not match the configuration of {cls.__name__} (the load report "
                "above lists each tensor); pass ignore_mismatched_sizes=True to re-initialise them on purpose"
            ) from error
        mismatched = info.get("mismatched_keys") or []
        if mismatched and not kwargs.get("ignore_mismatched_sizes", False):
            details = "; ".join(str(item) for item in list(mismatched)[:8])
            raise CheckpointMismatchError(
                f"the checkpoint does not match the configuration of {cls.__name__}: {len(mismatched)} tensors have "
                f"other shapes ({details}). Pass ignore_mismatched_sizes=True to re-initialise them on purpose."
            )
        expected = set(model.state_dict())
        missing = set(info.get("missing_keys") or [])
        unexpected = sorted(info.get("unexpected_keys") or [])
        # Weights of another model: none of the model's names, and as many tensors as a model has (at least a
        # quarter of this one's). An empty checkpoint (state_dict={}) or a stray tensor initialises the model as
        # transformers does.
        if expected and expected <= missing and len(unexpected) >= max(2, len(expected) // 4):
            raise CheckpointMismatchError(
                f"none of the checkpoint's tensors has a name of {cls.__name__} (model_type "
                f"{model.config.model_type!r}); every weight would be random. The weights are probably of another "
                f"model family (first checkpoint keys: {unexpected[:4]}); check config.json's model_type")
        return (model, info) if output_loading_info else model

    def push_to_hub(self, repo_id: str, *args, **kwargs):
        """Export the full zoo folder and upload it in one commit (``medmae.hub_cards.push.push_model``, which
        takes ``PushToHubMixin.push_to_hub``'s arguments and ``processor``, ``run_info``); as remote code,
        transformers' ``push_to_hub``."""
        if not _IN_MEDMAE:
            return super().push_to_hub(repo_id, *args, **kwargs)
        push = importlib.import_module("medmae.hub_cards.push")
        return push.push_model(self, repo_id, *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' ``save_pretrained``, then (in medmae, on the main process) the flat remote code and the
        ``auto_map`` of ``medmae.modeling.remote_code.write_remote_code``."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if _IN_MEDMAE and kwargs.get("is_main_process", True):
            remote_code = importlib.import_module("medmae.modeling.remote_code")
            remote_code.write_remote_code(self, save_directory)


def intermediate_indices(indices, count: int, output_fmt: str, what: str) -> list[int]:
    """timm's ``forward_intermediates`` selection: ``indices`` an int n (the last n of ``count``), None (all) or a list
    (negative from the end) -> sorted-as-given positive indices; ValueError for an index outside 0..count-1 or an
    ``output_fmt`` other than NCHW / NLC."""
    if output_fmt not in ("NCHW", "NLC"):
        raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
    wanted = list(range(count - indices, count)) if isinstance(indices, int) else \
        list(range(count)) if indices is None else [i % count if -count <= i < count else i for i in indices]
    if any(not 0 <= i < count for i in wanted):
        raise ValueError(f"indices {indices} select {what} outside 0..{count - 1}")
    return wanted


def trunc_normal_init_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """Truncated normal in [-2 std, 2 std] through transformers' init guards (skips loaded tensors)."""
    return init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


def xavier_uniform_flat_(tensor: torch.Tensor) -> torch.Tensor:
    """xavier_uniform on the [out, prod(in)] view (MAE's patch projection init), honouring init guards."""
    if getattr(tensor, "_is_hf_initialized", False):
        return tensor
    fan_out, fan_in = tensor.shape[0], math.prod(tensor.shape[1:])
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return init.uniform_(tensor, -bound, bound)
