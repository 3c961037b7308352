# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Weight converters into ETMAE models. Weight provenance is code: every key is mapped by an explicit
rule, loading is strict (a missing or unexpected key is an error that names it), and pickles are
opened with ``weights_only=True`` so a checkpoint cannot run code.

Sources:
- facebookresearch/mae and lambert-x/medical_mae ``.pth`` files (``{'model': state_dict, ...}``, timm
  names, fused ``attn.qkv``): ``from_mae_checkpoint``.
- transformers ``ViTMAEForPreTraining`` / ``ViTMAEModel`` (v5 names: ``vit.layers.i.attention.q_proj``):
  ``from_vit_mae``.
- timm ``VisionTransformer`` state dicts of fine-tuned classifiers (``fc_norm``, ``head``): ``from_timm_vit``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Optional, Union

import torch

from ..configuration.configuration_etmae import ETMAEConfig
from .modeling_etmae import ETMAEForImageClassification, ETMAEForPreTraining, ETMAEModel

# Attention heads of the known widths (DeiT-Ti 3, ViT-S 6 as medical_mae trained it, ViT-B 12, ViT-L/H 16).
DEFAULT_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}

StateDict = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------------------
# Loading helpers
# --------------------------------------------------------------------------------------------------
def load_checkpoint_file(path: Union[str, os.PathLike]) -> StateDict:
    """Read a ``.pth``/``.bin`` (``weights_only=True``) or ``.safetensors`` file; unwrap ``{'model': ...}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt file or a pickle that needs arbitrary code
        raise ValueError(f"cannot read checkpoint {path} with weights_only=True: {error}") from error
    for key in ("model", "state_dict", "model_state"):
        if isinstance(checkpoint, dict) and key in checkpoint and isinstance(checkpoint[key], dict):
            return checkpoint[key]
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return checkpoint


def file_sha256(path: Union[str, os.PathLike]) -> str:
    """Hex SHA-256 of a file (recorded as the provenance of converted or distilled weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict_strictly(model: torch.nn.Module, state_dict: StateDict, allowed_missing: tuple[str, ...] = ()) -> None:
    """``load_state_dict`` that names every missing, unexpected or mis-shaped key in one ValueError.

    ``allowed_missing``: key prefixes that may stay at their initial values (e.g. a new projection head).
    """
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state_dict and not k.startswith(allowed_missing))
    unexpected = sorted(k for k in state_dict if k not in expected)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state_dict if k in expected and state_dict[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            "checkpoint does not match the model:"
            + (f"\n  missing keys: {missing}" if missing else "")
            + (f"\n  unexpected keys: {unexpected}" if unexpected else "")
            + (f"\n  shape mismatches: {mismatched}" if mismatched else "")
        )
    model.load_state_dict(state_dict, strict=False)


def _count(prefix_pattern: str, state_dict: StateDict) -> int:
    indices = {int(m.group(1)) for k in state_dict if (m := re.match(prefix_pattern, k))}
    return max(indices) + 1 if indices else 0


def _heads(width: int, given: Optional[int], role: str) -> int:
    if given is not None:
        return given
    if width not in DEFAULT_HEADS:
        raise ValueError(f"cannot infer the number of {role} attention heads for width {width}; pass it explicitly")
    return DEFAULT_HEADS[width]


def _to_single_channel(state_dict: StateDict, patch_key: str, pred_key: Optional[str], patch_size: int) -> None:
    """Turn a 3-channel model into a 1-channel one: sum the patch projection over input channels (timm /
    segmentation_models_pytorch convention) and average the 3 predicted channels of the pixel head."""
    state_dict[patch_key] = state_dict[patch_key].sum(dim=1, keepdim=True)
    if pred_key is not None:
        for suffix in ("weight", "bias"):
            tensor = state_dict[f"{pred_key}.{suffix}"]
            state_dict[f"{pred_key}.{suffix}"] = tensor.reshape(patch_size * patch_size, 3, *tensor.shape[1:]).mean(1)


# --------------------------------------------------------------------------------------------------
# facebookresearch/mae, lambert-x/medical_mae
# --------------------------------------------------------------------------------------------------
MAE_DECODER_RENAMES = {
    "decoder_embed.": "decoder.embed.",
    "mask_token": "decoder.mask_token",
    "decoder_pos_embed": "decoder.pos_embed",
    "decoder_blocks.": "decoder.blocks.",
    "decoder_norm.": "decoder.norm.",
    "decoder_pred.": "decoder.pred.",
}
MAE_ENCODER_KEYS = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")


def _alias(overrides: dict, name: str, alias_value, alias: str):
    """Pop the config field ``name`` from ``overrides``, reconciled with its alias argument."""
    value = overrides.pop(name, None)
    if value is not None and alias_value is not None and value != alias_value:
        raise ValueError(f"{name}={value} and {alias}={alias_value} disagree; give one of them")
    return value if value is not None else alias_value


def config_from_mae_state_dict(state_dict: StateDict, num_heads: Optional[int] = None,
                               decoder_num_heads: Optional[int] = None, **overrides) -> ETMAEConfig:
    """Infer an ``ETMAEConfig`` from MAE/timm tensor shapes; heads come from ``num_attention_heads`` /
    ``decoder_num_attention_heads`` (the config's own names; ``num_heads`` / ``decoder_num_heads`` are aliases) or
    the known presets. Giving both a name and its alias with different values is an error."""
    num_heads = _alias(overrides, "num_attention_heads", num_heads, "num_heads")
    decoder_num_heads = _alias(overrides, "decoder_num_attention_heads", decoder_num_heads, "decoder_num_heads")
    if "patch_embed.proj.weight" not in state_dict:
        raise ValueError("not a MAE/timm ViT state dict: 'patch_embed.proj.weight' is missing")
    width, channels, patch, _ = state_dict["patch_embed.proj.weight"].shape
    grid = int(round((state_dict["pos_embed"].shape[1] - 1) ** 0.5))
    fields = dict(
        image_size=grid * patch, patch_size=patch, num_channels=channels, hidden_size=width,
        num_hidden_layers=_count(r"blocks\.(\d+)\.", state_dict),
        num_attention_heads=_heads(width, num_heads, "encoder"),
        intermediate_size=state_dict["blocks.0.mlp.fc1.weight"].shape[0],
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict, layer_norm_eps=1e-6,
        teacher_hidden_size=None,
    )
    if "decoder_embed.weight" in state_dict:
        decoder_width = state_dict["decoder_embed.weight"].shape[0]
        fields.update(
            decoder_hidden_size=decoder_width,
            decoder_num_hidden_layers=_count(r"decoder_blocks\.(\d+)\.", state_dict),
            decoder_num_attention_heads=decoder_num_heads or 16,
            decoder_intermediate_size=state_dict["decoder_blocks.0.mlp.fc1.weight"].shape[0]
            if "decoder_blocks.0.mlp.fc1.weight" in state_dict else 4 * decoder_width,
        )
    fields.update(overrides)  # align layers left out: the config derives 3/4 depth
    return ETMAEConfig(**fields)


def from_mae_checkpoint(
    path_or_state_dict: Union[str, os.PathLike, StateDict],
    num_heads: Optional[int] = None,
    decoder_num_heads: Optional[int] = None,
    num_channels: Optional[int] = None,
    **config_overrides,
) -> Union[ETMAEForPreTraining, ETMAEModel]:
    """Convert a facebookresearch/mae or medical_mae checkpoint.

    Returns ``ETMAEForPreTraining`` when the source has a decoder, else the encoder ``ETMAEModel``
    (fine-tuned timm layouts with ``head`` go to ``from_timm_vit``). ``num_heads`` defaults by width
    (192: 3, 384: 6, 768: 12); head counts do not change tensor shapes, so pass it when it differs.
    ``num_channels=1`` sums the patch projection over RGB (and averages the pixel head's channels).
    """
    state_dict = path_or_state_dict if isinstance(path_or_state_dict, dict) else load_checkpoint_file(path_or_state_dict)
    state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if "head.weight" in state_dict:
        raise ValueError("this checkpoint is a fine-tuned classifier (it has 'head.weight'); use from_timm_vit")
    config = config_from_mae_state_dict(state_dict, num_heads, decoder_num_heads, **config_overrides)
    has_decoder = "decoder_embed.weight" in state_dict
    mapped: StateDict = {}
    for key, value in state_dict.items():
        new_key = None
        for old, new in MAE_DECODER_RENAMES.items():
            if key.startswith(old):
                new_key = new + key[len(old):]
                break
        if new_key is None and key.startswith(MAE_ENCODER_KEYS):
            new_key = ("etmae." if has_decoder else "") + key
        if new_key is None:
            raise ValueError(f"unexpected key in MAE checkpoint: {key}")
        mapped[new_key] = value
    if num_channels == 1 and config.num_channels == 3:
        prefix = "etmae." if has_decoder else ""
        _to_single_channel(mapped, f"{prefix}patch_embed.proj.weight", "decoder.pred" if has_decoder else None,
                           config.patch_size)
        config.num_channels = 1
        config.image_mean, config.image_std = config.image_mean[:1], config.image_std[:1]
    model = ETMAEForPreTraining(config) if has_decoder else ETMAEModel(config)
    load_state_dict_strictly(model, mapped)
    return model.eval()


# --------------------------------------------------------------------------------------------------
# transformers ViTMAE (v5 names)
# --------------------------------------------------------------------------------------------------
VIT_MAE_LAYER_RENAMES = {
    "layernorm_before.": "norm1.",
    "layernorm_after.": "norm2.",
    "attention.o_proj.": "attn.proj.",
    "mlp.fc1.": "mlp.fc1.",
    "mlp.fc2.": "mlp.fc2.",
}


def _convert_vit_mae_layers(state_dict: StateDict, source_prefix: str, target_prefix: str) -> StateDict:
    """Map ``<source_prefix>{i}.*`` layers of transformers' ViTMAE onto ``<target_prefix>{i}.*`` timm-style
    blocks, fusing ``q_proj/k_proj/v_proj`` into one ``attn.qkv`` (rows q, k, v)."""
    out: StateDict = {}
    for index in range(_count(re.escape(source_prefix) + r"(\d+)\.", state_dict)):
        src, dst = f"{source_prefix}{index}.", f"{target_prefix}{index}."
        for suffix in ("weight", "bias"):
            parts = [state_dict.get(f"{src}attention.{n}_proj.{suffix}") for n in "qkv"]
            if all(p is not None for p in parts):
                out[f"{dst}attn.qkv.{suffix}"] = torch.cat(parts, dim=0)
        for key, value in state_dict.items():
            if key.startswith(src):
                rest = key[len(src):]
                for old, new in VIT_MAE_LAYER_RENAMES.items():
                    if rest.startswith(old):
                        out[dst + new + rest[len(old):]] = value
                        break
                else:
                    if not re.match(r"attention\.[qkv]_proj\.", rest):
                        raise ValueError(f"unexpected key in ViTMAE state dict: {key}")
    return out


def from_vit_mae(model_or_path, **config_overrides) -> Union[ETMAEForPreTraining, ETMAEModel]:
    """Convert a transformers ``ViTMAEForPreTraining`` (-> ``ETMAEForPreTraining``) or ``ViTMAEModel``
    (-> ``ETMAEModel``), given as a model or a local folder / repository id."""
    if isinstance(model_or_path, (str, os.PathLike)):
        from transformers import AutoModel, AutoModelForPreTraining, ViTMAEConfig

        source_config = ViTMAEConfig.from_pretrained(model_or_path)
        auto = AutoModelForPreTraining if any("PreTraining" in a for a in source_config.architectures or []) else AutoModel
        model_or_path = auto.from_pretrained(model_or_path)
    source = model_or_path
    source_config = source.config
    if getattr(source_config, "model_type", None) != "vit_mae":
        raise ValueError(f"expected a transformers ViTMAE model, got model_type {getattr(source_config, 'model_type', None)!r}")
    state_dict = source.state_dict()
    has_decoder = any(k.startswith("decoder.") for k in state_dict)
    encoder_prefix = "vit." if any(k.startswith("vit.") for k in state_dict) else ""
    fields = {name: getattr(source_config, name) for name in (
        "image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "intermediate_size", "qkv_bias", "layer_norm_eps", "decoder_hidden_size", "decoder_num_hidden_layers",
        "decoder_num_attention_heads", "decoder_intermediate_size", "mask_ratio", "norm_pix_loss")}
    fields["teacher_hidden_size"] = None
    fields["student_align_layer"] = min(8, fields["num_hidden_layers"] - 1)
    fields.update(config_overrides)
    config = ETMAEConfig(**fields)
    if isinstance(fields["image_size"], (tuple, list)):
        raise ValueError("non-square ViTMAE image sizes are not supported")
    target = "etmae." if has_decoder else ""
    e = encoder_prefix + "embeddings."
    mapped: StateDict = {
        target + "cls_token": state_dict[e + "cls_token"],
        target + "pos_embed": state_dict[e + "position_embeddings"],
        target + "patch_embed.proj.weight": state_dict[e + "patch_embeddings.projection.weight"],
        target + "patch_embed.proj.bias": state_dict[e + "patch_embeddings.projection.bias"],
        target + "norm.weight": state_dict[encoder_prefix + "layernorm.weight"],
        target + "norm.bias": state_dict[encoder_prefix + "layernorm.bias"],
    }
    mapped.update(_convert_vit_mae_layers(state_dict, encoder_prefix + "layers.", target + "blocks."))
    if has_decoder:
        mapped.update({
            "decoder.embed.weight": state_dict["decoder.decoder_embed.weight"],
            "decoder.embed.bias": state_dict["decoder.decoder_embed.bias"],
            "decoder.mask_token": state_dict["decoder.mask_token"],
            "decoder.pos_embed": state_dict["decoder.decoder_pos_embed"],
            "decoder.norm.weight": state_dict["decoder.decoder_norm.weight"],
            "decoder.norm.bias": state_dict["decoder.decoder_norm.bias"],
            "decoder.pred.weight": state_dict["decoder.decoder_pred.weight"],
            "decoder.pred.bias": state_dict["decoder.decoder_pred.bias"],
        })
        mapped.update(_convert_vit_mae_layers(state_dict, "decoder.decoder_layers.", "decoder.blocks."))
    known = {k for k in state_dict if k.startswith((e, encoder_prefix + "layernorm.", encoder_prefix + "layers.",
                                                    "decoder."))}
    stray = sorted(set(state_dict) - known)
    if stray:
        raise ValueError(f"unexpected keys in ViTMAE state dict: {stray}")
    model = ETMAEForPreTraining(config) if has_decoder else ETMAEModel(config)
    load_state_dict_strictly(model, mapped)
    return model.eval()


# --------------------------------------------------------------------------------------------------
# timm VisionTransformer (fine-tuned classifiers)
# --------------------------------------------------------------------------------------------------
def from_timm_vit(model_or_state_dict, num_heads: Optional[int] = None, num_channels: Optional[int] = None,
                  **config_overrides) -> ETMAEForImageClassification:
    """Convert a timm ``VisionTransformer`` (a model, a state dict or a checkpoint path) into
    ``ETMAEForImageClassification``. ``fc_norm`` present -> ``global_pool="avg"`` (MAE fine-tuning);
    otherwise the final ``norm`` and the CLS token (``global_pool="cls"``). ``head`` -> ``classifier``."""
    if isinstance(model_or_state_dict, torch.nn.Module):
        if num_heads is None and hasattr(model_or_state_dict, "blocks"):
            num_heads = model_or_state_dict.blocks[0].attn.num_heads
        state_dict = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, dict):
        state_dict = model_or_state_dict
    else:
        state_dict = load_checkpoint_file(model_or_state_dict)
    state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if "head.weight" not in state_dict:
        raise ValueError("not a timm classifier state dict: 'head.weight' is missing")
    avg = "fc_norm.weight" in state_dict
    overrides = dict(global_pool="avg" if avg else "cls", num_labels=state_dict["head.weight"].shape[0])
    overrides.update(config_overrides)
    config = config_from_mae_state_dict(state_dict, num_heads, **overrides)
    mapped: StateDict = {}
    for key, value in state_dict.items():
        if key.startswith("head."):
            mapped["classifier." + key[len("head."):]] = value
        elif key.startswith("fc_norm."):
            mapped[key] = value
        elif key.startswith(MAE_ENCODER_KEYS):
            mapped["etmae." + key] = value
        else:
            raise ValueError(f"unexpected key in timm ViT state dict: {key}")
    if num_channels == 1 and config.num_channels == 3:
        _to_single_channel(mapped, "etmae.patch_embed.proj.weight", None, config.patch_size)
        config.num_channels = 1
        config.image_mean, config.image_std = config.image_mean[:1], config.image_std[:1]
    model = ETMAEForImageClassification(config)
    load_state_dict_strictly(model, mapped)
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Teachers
# --------------------------------------------------------------------------------------------------
def load_teacher(source, num_heads: Optional[int] = None) -> ETMAEModel:
    """A frozen teacher encoder from an ETMAE model, a transformers ViTMAE model, a medmae / transformers
    folder, or a MAE / medical_mae ``.pth`` file."""
    if isinstance(source, ETMAEForPreTraining):
        return source.etmae
    if isinstance(source, ETMAEModel):
        return source
    if isinstance(source, torch.nn.Module):
        converted = from_vit_mae(source)
    else:
        path = Path(source)
        if path.is_dir():
            import json

            model_type = json.loads((path / "config.json").read_text()).get("model_type")
            if model_type == "vit_mae":
                converted = from_vit_mae(path)
            elif model_type == "etmae":
                from transformers import AutoModel

                converted = AutoModel.from_pretrained(path)
            else:
                raise ValueError(f"{path}: model_type {model_type!r} cannot be used as an ETMAE teacher")
        elif path.is_file():
            converted = from_mae_checkpoint(path, num_heads=num_heads)
        else:
            raise FileNotFoundError(f"teacher checkpoint not found: {path}")
    return converted.etmae if isinstance(converted, ETMAEForPreTraining) else converted
