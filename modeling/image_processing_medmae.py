# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Image processor of every medmae checkpoint: the checkpoint's preprocessing contract, in code.

Grayscale or RGB in (PIL, numpy, torch; 1 or 3 channels; 8- or 16-bit), ``num_channels`` float channels
out, resized, rescaled to [0, 1] by the input's bit depth, and normalised with the checkpoint's
statistics. Segmentation maps are resized with nearest neighbour into int64 ``labels``.

Ships to the Hub as remote code: imports only torch, transformers and numpy.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# Named normalisation statistics (per channel, for 3-channel output).
NORMALIZATION_PRESETS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    # lambert-x/medical_mae chest X-ray statistics (its released ViT-S/ViT-B teachers expect these).
    "cxr": ([0.5056] * 3, [0.252] * 3),
    # [-1, 1] scaling used by DAE-Former.
    "half": ([0.5] * 3, [0.5] * 3),
}
# Statistics each source was normalised with when the lambert-x/medical_mae teachers were pre-trained: NIH with
# its own mean/std, CheXpert with ImageNet's (``--teacher_normalization medical_mae``, per image by ``source``).
TEACHER_SOURCE_STATISTICS = {
    "medical_mae": {"chestxray14": {"image_mean": [0.5056] * 3, "image_std": [0.252] * 3},
                    "chexpert": {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}},
}


def _to_chw_array(image) -> tuple[torch.Tensor, float]:
    """One image -> (float tensor [C, H, W], full-scale value of its integer type or 1.0 for floats)."""
    if hasattr(image, "mode") and hasattr(image, "size") and not isinstance(image, (np.ndarray, torch.Tensor)):
        mode = image.mode
        if mode == "P":
            image = image.convert("RGB")
        elif mode in ("LA", "RGBA"):
            image = image.convert(mode[:-1] if mode == "LA" else "RGB")  # drop alpha
        elif mode in ("I;16", "I;16B", "I;16L"):
            return torch.from_numpy(np.asarray(image, dtype=np.uint16).astype(np.float32))[None], 65535.0
        elif mode == "I":
            array = np.asarray(image, dtype=np.int64)
            scale = 65535.0 if array.max(initial=0) > 255 else 255.0
            return torch.from_numpy(array.astype(np.float32))[None], scale
        array = np.asarray(image)
    elif isinstance(image, torch.Tensor):
        array = image.detach().cpu()
        if array.dtype == torch.uint8:
            array = array.numpy()
        elif array.dtype in (torch.int16, torch.int32, torch.uint16):
            array = array.to(torch.int64).numpy()
        else:
            array = array.float().numpy()
    else:
        array = np.asarray(image)
    if array.dtype == np.uint8:
        scale = 255.0
    elif array.dtype == np.uint16:
        scale = 65535.0
    elif np.issubdtype(array.dtype, np.integer):
        scale = 65535.0 if array.max(initial=0) > 255 else 255.0
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == bool:
        scale = 1.0
    else:
        raise ValueError(f"unsupported image dtype {array.dtype}")
    tensor = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32))
    if tensor.ndim == 2:
        tensor = tensor[None]
    elif tensor.ndim == 3:
        if tensor.shape[-1] in (1, 3, 4) and tensor.shape[0] not in (1, 3, 4):
            tensor = tensor.permute(2, 0, 1)  # channels last -> first
        if tensor.shape[0] == 4:
            tensor = tensor[:3]  # drop alpha
    else:
        raise ValueError(f"an image must have 2 or 3 dimensions, got shape {tuple(tensor.shape)}")
    if tensor.shape[0] not in (1, 3):
        raise ValueError(f"images must have 1 (grayscale) or 3 (RGB) channels, got {tensor.shape[0]}")
    return tensor, scale


def _as_list(images) -> list:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]


class MedMAEImageProcessor(BaseImageProcessor):
    r"""Preprocessing for medmae models.

    Args:
        do_resize: resize to ``size`` (bilinear with antialiasing for images, nearest for maps).
        size: ``{"height": H, "width": W}``, the model's input size.
        do_rescale: divide by the input's full scale (255 for 8-bit, 65535 for 16-bit; floats are taken as [0, 1]).
        rescale_factor: a fixed factor instead of the bit-depth rule (``None``: by bit depth).
        do_normalize: subtract ``image_mean`` and divide by ``image_std`` per channel.
        image_mean, image_std: statistics (default ImageNet); see ``NORMALIZATION_PRESETS`` and ``from_preset``.
        num_channels: channels of ``pixel_values`` (3: grayscale is repeated; 1: RGB is averaged to luminance).
        expected_value_range: documentation of the input the checkpoint was trained on, e.g. ``"uint8 [0, 255]"``.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        size: Optional[dict] = None,
        do_rescale: bool = True,
        rescale_factor: Optional[float] = None,
        do_normalize: bool = True,
        image_mean=None,
        image_std=None,
        num_channels: int = 3,
        expected_value_range: str = "uint8 [0, 255] or uint16 [0, 65535]; floats in [0, 1]",
        **kwargs,
    ):
        super().__init__(**kwargs)
        size = size if size is not None else {"height": 224, "width": 224}
        if isinstance(size, int):
            size = {"height": size, "width": size}
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
        self.do_resize = do_resize
        self.size = {"height": int(size["height"]), "width": int(size["width"])}
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = list(image_mean) if image_mean is not None else list(IMAGENET_MEAN)
        self.image_std = list(image_std) if image_std is not None else list(IMAGENET_STD)
        if num_channels == 1 and len(self.image_mean) == 3 and len(set(self.image_mean)) == 1:
            self.image_mean, self.image_std = self.image_mean[:1], self.image_std[:1]
        if num_channels == 3 and len(self.image_mean) == 1:
            self.image_mean, self.image_std = self.image_mean * 3, self.image_std * 3
        if len(self.image_mean) != num_channels or len(self.image_std) != num_channels:
            raise ValueError(
                f"image_mean/image_std have {len(self.image_mean)}/{len(self.image_std)} values "
                f"for {num_channels} output channels"
            )
        self.num_channels = num_channels
        self.expected_value_range = expected_value_range

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "MedMAEImageProcessor":
        """``imagenet``, ``cxr`` (medical_mae 0.5056 / 0.252) or ``half`` (0.5 / 0.5) normalisation."""
        if name not in NORMALIZATION_PRESETS:
            raise ValueError(f"unknown normalisation preset {name!r}; choose one of {', '.join(NORMALIZATION_PRESETS)}")
        mean, std = NORMALIZATION_PRESETS[name]
        if kwargs.get("num_channels", 3) == 1:
            mean, std = mean[:1], std[:1]
        return cls(image_mean=mean, image_std=std, **kwargs)

    # ---- steps -----------------------------------------------------------------------------------
    def _image_tensor(self, image, do_rescale: bool, rescale_factor: Optional[float]) -> torch.Tensor:
        """One raw image -> float [num_channels, H, W] in [0, 1] (when rescaling)."""
        tensor, full_scale = _to_chw_array(image)
        if do_rescale:
            tensor = tensor * (rescale_factor if rescale_factor is not None else 1.0 / full_scale)
        if self.num_channels == 3 and tensor.shape[0] == 1:
            tensor = tensor.expand(3, -1, -1)
        elif self.num_channels == 1 and tensor.shape[0] == 3:
            tensor = (tensor * tensor.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True)
        return tensor

    def preprocess(
        self,
        images,
        segmentation_maps=None,
        do_resize: Optional[bool] = None,
        size: Optional[dict] = None,
        do_rescale: Optional[bool] = None,
        rescale_factor: Optional[float] = None,
        do_normalize: Optional[bool] = None,
        image_mean=None,
        image_std=None,
        return_tensors: Optional[str] = "pt",
        **kwargs,
    ) -> BatchFeature:
        """images: one image or a list/batch. Returns ``pixel_values`` [B, num_channels, H, W] float32
        (and ``labels`` [B, H, W] int64 when ``segmentation_maps`` are given)."""
        do_resize = self.do_resize if do_resize is None else do_resize
        size = self.size if size is None else ({"height": size, "width": size} if isinstance(size, int) else size)
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        mean = torch.tensor(self.image_mean if image_mean is None else image_mean, dtype=torch.float32)
        std = torch.tensor(self.image_std if image_std is None else image_std, dtype=torch.float32)
        target = (int(size["height"]), int(size["width"]))

        pixel_values = []
        for image in _as_list(images):
            tensor = self._image_tensor(image, do_rescale, rescale_factor)
            if do_resize and tuple(tensor.shape[-2:]) != target:
                tensor = F.interpolate(tensor[None], size=target, mode="bilinear", align_corners=False, antialias=True)[0]
            if do_normalize:
                tensor = (tensor - mean[:, None, None]) / std[:, None, None]
            pixel_values.append(tensor)
        shapes = {tuple(t.shape) for t in pixel_values}
        if len(shapes) > 1:
            raise ValueError(f"images have different sizes {sorted(shapes)}; enable do_resize to batch them")
        data = {"pixel_values": torch.stack(pixel_values).contiguous()}
        if segmentation_maps is not None:
            maps = _as_list(segmentation_maps)
            if len(maps) != len(pixel_values):
                raise ValueError(f"got {len(maps)} segmentation maps for {len(pixel_values)} images")
            data["labels"] = torch.stack([self._segmentation_map(m, target if do_resize else None) for m in maps])
        if return_tensors in (None, "pt"):
            return BatchFeature(data=data, tensor_type=return_tensors)
        if return_tensors == "np":
            return BatchFeature(data={k: v.numpy() for k, v in data.items()}, tensor_type="np")
        raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")

    @staticmethod
    def _segmentation_map(segmentation_map, target: Optional[tuple[int, int]]) -> torch.Tensor:
        """One map (PIL / numpy / tensor, [H, W] or [1, H, W]) -> int64 [H, W], nearest-resized to ``target``."""
        if hasattr(segmentation_map, "mode") and not isinstance(segmentation_map, (np.ndarray, torch.Tensor)):
            if segmentation_map.mode not in ("L", "P", "1", "I", "I;16"):
                segmentation_map = segmentation_map.convert("L")
            segmentation_map = np.array(segmentation_map)
        tensor = torch.as_tensor(np.asarray(segmentation_map)).to(torch.int64)
        if tensor.ndim == 3 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim != 2:
            raise ValueError(f"a segmentation map must be [H, W], got shape {tuple(tensor.shape)}")
        if target is not None and tuple(tensor.shape) != target:
            tensor = F.interpolate(tensor[None, None].float(), size=target, mode="nearest-exact")[0, 0].to(torch.int64)
        return tensor

    def post_process_semantic_segmentation(self, outputs, target_sizes=None) -> list[torch.Tensor]:
        """Segmentation logits [B, K, h, w] -> list of int64 maps [H, W] (bilinear resize to ``target_sizes``, argmax)."""
        logits = outputs.logits if hasattr(outputs, "logits") else outputs
        results = []
        for i in range(logits.shape[0]):
            item = logits[i : i + 1].float()
            if target_sizes is not None:
                size = tuple(int(s) for s in target_sizes[i])
                item = F.interpolate(item, size=size, mode="bilinear", align_corners=False)
            results.append(item[0].argmax(dim=0))
        return results


def processor_for_config(config, **kwargs) -> MedMAEImageProcessor:
    """The processor matching a model config's input contract (size, channels, statistics)."""
    image_size = config.image_size
    mean = getattr(config, "image_mean", None)
    std = getattr(config, "image_std", None)
    return MedMAEImageProcessor(size={"height": image_size, "width": image_size}, num_channels=config.num_channels,
                                image_mean=mean, image_std=std, **kwargs)

