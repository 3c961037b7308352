# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Building blocks of SDDA-MAE: patch embedding, Swin-MAE window masking, DAE-Former dual attention
(efficient spatial attention, channel attention, MixFFN), patch merging and patch expanding.

Tokens are kept as [B, N, C] in raster order with the grid (h, w) passed alongside; nothing here
depends on the image size given at construction, so any size that fits the stage/mask geometry runs.

Ships to the Hub as remote code: imports only torch and transformers.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .layers import DropPath


def tokens_to_map(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, h*w, C] tokens (raster order) -> [B, C, h, w] feature map (a channels-last view, no copy)."""
    return x.reshape(x.shape[0], height, width, x.shape[2]).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] feature map -> [B, h*w, C] tokens (raster order; a view for channels-last maps)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2] * x.shape[3], x.shape[1])


def pixel_shuffle_tokens(x: torch.Tensor, height: int, width: int, scale: int) -> torch.Tensor:
    """Rearrange ``b h w (p1 p2 c) -> b (h p1) (w p2) c`` (Swin-Unet / DAE-Former PatchExpand layout).

    x: [B, h*w, s*s*C] -> [B, (h*s)*(w*s), C].
    """
    batch, _, channels = x.shape
    out = channels // (scale * scale)
    x = x.reshape(batch, height, width, scale, scale, out).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, height * scale * width * scale, out)


class SDDAMAEPatchEmbeddings(nn.Module):
    """Patch embedding followed by LayerNorm (A3).

    ``downsample="patch_merging"``: non-overlapping ``Conv2d(k = s = patch_size)`` (Swin-MAE), so a token
    sees only its own patch and masking leaks nothing. ``"overlap_conv"``: DAE-Former's overlapping
    ``Conv2d(k = 2p - 1, s = p, pad = p - 1)`` (7 / 4 / 3 at p = 4).
    pixel_values [B, C_in, H, W] -> (tokens [B, (H/p)*(W/p), C], (H/p, W/p)).
    """

    def __init__(self, config):
        super().__init__()
        p, dim = config.patch_size, config.hidden_sizes[0]
        if config.downsample == "overlap_conv":
            self.proj = nn.Conv2d(config.num_channels, dim, kernel_size=2 * p - 1, stride=p, padding=p - 1)
        else:
            self.proj = nn.Conv2d(config.num_channels, dim, kernel_size=p, stride=p)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(pixel_values)
        grid = (x.shape[2], x.shape[3])
        return self.norm(map_to_tokens(x)), grid


def window_masking(
    x: torch.Tensor,
    grid: tuple[int, int],
    mask_token: torch.Tensor,
    mask_ratio: float,
    mask_unit: int,
    noise: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Swin-MAE window masking, vectorised over the batch (paper: "masking strategy inspired by Swin-MAE").

    The (h, w) patch grid is tiled into units of ``mask_unit x mask_unit`` patches; per sample, the
    ``int(units * (1 - mask_ratio))`` units with the smallest ``noise`` are kept and every other unit is
    masked. Masked tokens are REPLACED (not removed) by one shared learnable ``mask_token``.

    x: [B, h*w, C] embedded patches; mask_token: [1, 1, C] (or [C]); noise: [B, units] with
    units = (h / mask_unit) * (w / mask_unit), uniform [0, 1) when None.
    Returns (x_masked [B, h*w, C], mask [B, h*w] patch resolution, unit_mask [B, units]); 1 = masked, raster order.
    """
    batch, length, channels = x.shape
    height, width = grid
    if height % mask_unit or width % mask_unit:
        raise ValueError(f"patch grid {height}x{width} is not divisible by the mask unit of {mask_unit} patches")
    units_h, units_w = height // mask_unit, width // mask_unit
    num_units = units_h * units_w
    if noise is None:
        noise = torch.rand(batch, num_units, device=x.device)
    elif tuple(noise.shape) != (batch, num_units):
        raise ValueError(f"noise must have shape [batch, mask units] = {[batch, num_units]}, got {list(noise.shape)}")
    len_keep = int(num_units * (1 - mask_ratio))
    rank = torch.argsort(torch.argsort(noise.to(x.device), dim=1), dim=1)  # rank of each unit's noise
    unit_mask = (rank >= len_keep).to(x.dtype)  # [B, units]
    mask = unit_mask.reshape(batch, units_h, 1, units_w, 1).expand(-1, -1, mask_unit, -1, mask_unit)
    mask = mask.reshape(batch, length)
    x_masked = torch.where(mask.bool()[..., None], mask_token.reshape(1, 1, channels).to(x.dtype), x)
    return x_masked, mask, unit_mask


class EfficientAttention(nn.Module):
    """Efficient (linear) attention of Shen et al., as in DAE-Former: O(N d^2) in the number of tokens N.

    K is soft-maxed over tokens, Q over channels; context = K^T V [d_k, d_v] is a global summary that
    every query reads: out = Q context. 1x1 convolutions of the source are written as Linear layers
    (same parameters). x: [B, N, C] -> [B, N, C].
    """

    def __init__(self, dim: int, num_heads: int = 1):
        super().__init__()
        self.num_heads = num_heads
        self.keys = nn.Linear(dim, dim)
        self.queries = nn.Linear(dim, dim)
        self.values = nn.Linear(dim, dim)
        self.reprojection = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        keys = self.keys(x).softmax(dim=1)  # over tokens, per channel
        queries = self.queries(x).reshape(batch, tokens, heads, head_dim).softmax(dim=-1)  # over a head's channels
        values = self.values(x).reshape(batch, tokens, heads, head_dim).transpose(1, 2)  # [B, heads, N, d_v]
        keys = keys.reshape(batch, tokens, heads, head_dim).permute(0, 2, 3, 1)  # [B, heads, d_k, N]
        context = keys @ values  # [B, heads, d_k, d_v]: O(N d^2)
        out = (queries.transpose(1, 2) @ context).transpose(1, 2).reshape(batch, tokens, dim)
        return self.reprojection(out)


class ChannelAttention(nn.Module):
    """Channel ("transpose", XCiT) attention of DAE-Former: a [C/h x C/h] attention map per head.

    q, k are L2-normalised over tokens; logits are scaled by a learnable per-head ``temperature``
    (initialised to 1). x: [B, N, C] -> [B, N, C].
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 4, 1)
        q, k, v = qkv.unbind(0)  # [B, heads, C/h, N]
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)  # [B, heads, C/h, C/h]
        out = (attn @ v).permute(0, 3, 1, 2).reshape(batch, tokens, dim)
        return self.proj(out)


class MixFFN(nn.Module):
    """MixFFN with a 3x3 depth-wise convolution on the token grid (SegFormer / DAE-Former).

    ``skip=True`` (DAE-Former ``MixFFN_skip``): ``fc2(GELU(LN(DWConv(h) + h)))`` with ``h = fc1(x)``;
    ``skip=False`` (``MixFFN``): ``fc2(GELU(DWConv(fc1(x))))``. DAE-Former's two unused LayerNorms are omitted.
    x: [B, h*w, C] -> [B, h*w, C].
    """

    def __init__(self, dim: int, hidden: int, skip: bool = True, eps: float = 1e-5):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps) if skip else None
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        h = self.fc1(x)
        mixed = map_to_tokens(self.dwconv(tokens_to_map(h, height, width)))
        if self.norm is not None:
            mixed = self.norm(mixed + h)
        return self.fc2(self.act(mixed))


class SDDAMAEDualAttentionBlock(GradientCheckpointingLayer):
    """Dual Attention Transformer (DAT) block: DAE-Former's ``DualTransformerBlock``, pre-norm residuals.

    ``block_order="spatial_first"`` (default; DAE-Former paper and xmindflow/DAEFormer since 5cc9048)::

        x = x + EffAttn(LN1(x));      x = x + MixFFN1(LN2(x))
        x = x + ChannelAttn(LN3(x));  x = x + MixFFN2(LN4(x))

    ``"channel_first"`` (the repository's earlier commits) swaps the two attentions. x: [B, h*w, C] -> [B, h*w, C].
    """

    def __init__(self, config, dim: int, channel_heads: int, drop_path: float = 0.0):
        super().__init__()
        eps = config.layer_norm_eps
        hidden = int(dim * config.mlp_ratio)
        skip = config.ffn_type == "mix_skip"
        self.spatial_first = config.block_order == "spatial_first"
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.norm4 = nn.LayerNorm(dim, eps=eps)
        self.spatial_attn = EfficientAttention(dim, config.efficient_attention_heads)
        self.channel_attn = ChannelAttention(dim, channel_heads)
        self.mlp1 = MixFFN(dim, hidden, skip, eps)
        self.mlp2 = MixFFN(dim, hidden, skip, eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        first, second = (self.spatial_attn, self.channel_attn) if self.spatial_first else (self.channel_attn, self.spatial_attn)
        x = x + self.drop_path(first(self.norm1(x)))
        x = x + self.drop_path(self.mlp1(self.norm2(x), height, width))
        x = x + self.drop_path(second(self.norm3(x)))
        x = x + self.drop_path(self.mlp2(self.norm4(x), height, width))
        return x


class PatchMerging(nn.Module):
    """Swin patch merging: concatenate each 2x2 neighbourhood, LayerNorm(4C), Linear(4C -> C_out, no bias).

    Neighbour order (0,0), (1,0), (0,1), (1,1) as in Swin. x: [B, h*w, C] -> ([B, h/2 * w/2, C_out], (h/2, w/2)).
    """

    def __init__(self, in_dim: int, out_dim: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_dim, eps=eps)
        self.reduction = nn.Linear(4 * in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor, height: int, width: int):
        batch, _, channels = x.shape
        x = x.reshape(batch, height, width, channels)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        x = x.reshape(batch, -1, 4 * channels)
        return self.reduction(self.norm(x)), (height // 2, width // 2)


class ConvDownsample(nn.Module):
    """DAE-Former / SegFormer overlapping downsampling: Conv2d(k3, s2, p1) then LayerNorm (A3 option).

    x: [B, h*w, C] -> ([B, h/2 * w/2, C_out], (h/2, w/2)).
    """

    def __init__(self, in_dim: int, out_dim: int, eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim, eps=eps)

    def forward(self, x: torch.Tensor, height: int, width: int):
        x = self.proj(tokens_to_map(x, height, width))
        return self.norm(map_to_tokens(x)), (x.shape[2], x.shape[3])


class PatchExpand(nn.Module):
    """Patch expanding (x ``scale`` resolution) for the decoder and the segmentation head (A9).

    ``mode="generalized"``: ``Linear(C_in -> s*s*C_out, no bias)``, pixel shuffle, LayerNorm(C_out).
    ``mode="dae"``: DAE-Former / Swin-Unet ``PatchExpand`` (``Linear(C_in -> 2 C_in)``, shuffle to C_in/2,
    LayerNorm) followed by DAE-Former's ``x1_linear(C_in/2 -> C_out)`` when the widths differ.
    x: [B, h*w, C_in] -> ([B, (h*s)*(w*s), C_out], (h*s, w*s)).
    """

    def __init__(self, in_dim: int, out_dim: int, scale: int = 2, mode: str = "generalized", eps: float = 1e-5):
        super().__init__()
        self.scale = scale
        if mode == "dae":
            shuffled = in_dim * 2 // (scale * scale)
            self.expand = nn.Linear(in_dim, in_dim * 2, bias=False)
            self.norm = nn.LayerNorm(shuffled, eps=eps)
            self.project = nn.Linear(shuffled, out_dim) if shuffled != out_dim else None
        else:
            self.expand = nn.Linear(in_dim, scale * scale * out_dim, bias=False)
            self.norm = nn.LayerNorm(out_dim, eps=eps)
            self.project = None

    def forward(self, x: torch.Tensor, height: int, width: int):
        x = pixel_shuffle_tokens(self.expand(x), height, width, self.scale)
        x = self.norm(x)
        if self.project is not None:
            x = self.project(x)
        return x, (height * self.scale, width * self.scale)
