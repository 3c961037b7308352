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
from transformers.image_utils import validate_kwargs

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


# PIL modes whose pixels are colours in another space: converted to RGB (CMYK read as RGB would swap colours).
_COLOUR_MODES = ("P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "PA", "La", "1")


def _full_scale(array: np.ndarray, bits_stored: Optional[int]) -> float:
    """The value that maps to 1.0: ``2**bits_stored - 1`` when given, else 255 (uint8 / bool 1), 65535 (uint16),
    1.0 (floats, which must already be in [0, 1]). Other integer types (int16/32/64) carry no bit depth:
    ``bits_stored`` or ``rescale_factor`` must say it."""
    if array.dtype == bool:
        return 1.0
    if bits_stored is not None and np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 2 ** bits_stored - 1):
            raise ValueError(f"pixel values {array.min()}..{array.max()} exceed bits_stored={bits_stored} "
                             f"(0..{2 ** bits_stored - 1})")
        return float(2 ** bits_stored - 1)
    if array.dtype == np.uint8:
        return 255.0
    if array.dtype == np.uint16:
        return 65535.0
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < -1e-3 or np.nanmax(array) > 1 + 1e-3):
            raise ValueError(f"float images are taken as [0, 1], got values {np.nanmin(array):.4g}..{np.nanmax(array):.4g}: "
                             "pass the integer image (uint8 / uint16), or rescale_factor=1/255 for floats in 0..255")
        return 1.0
    if np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{array.dtype} images have no bit depth: give bits_stored (e.g. 12 for 12-bit data) or "
                         "rescale_factor, or pass uint8 / uint16")
    raise ValueError(f"unsupported image dtype {array.dtype}")


def _pil_array(image) -> np.ndarray:
    """A PIL image as numpy with its bit depth: colour spaces converted to RGB, alpha dropped, 16-bit kept."""
    mode = image.mode
    if mode in _COLOUR_MODES:
        image = image.convert("RGB" if mode not in ("1", "La") else "L")
    elif mode in ("LA", "RGBA"):
        image = image.convert("L" if mode == "LA" else "RGB")  # drop alpha
    elif mode.startswith("I;16"):
        return np.asarray(image, dtype=np.uint16)
    elif mode == "I":  # PIL's 32-bit container, which its PNG decoder uses for 16-bit files: 16-bit when it fits
        values = np.asarray(image, dtype=np.int64)
        return values.astype(np.uint16) if values.size and 0 <= values.min() and values.max() <= 65535 else values
    return np.asarray(image)


def _to_chw_array(image, bits_stored: Optional[int] = None, by_bit_depth: bool = True) -> tuple[torch.Tensor, float]:
    """One image -> (float tensor [C, H, W], the value that maps to 1.0; see :func:`_full_scale`; 1.0 without
    ``by_bit_depth``, when a fixed ``rescale_factor`` or no rescaling makes the dtype irrelevant).

    Layouts: PIL images; numpy ``[H, W]`` or channels-last ``[H, W, C]``; torch ``[H, W]`` or channels-first
    ``[C, H, W]``; C in 1 (grayscale), 3 (RGB), 4 (RGBA: alpha dropped). A numpy ``[C, H, W]`` is refused: it is
    a channels-first image or a stack of slices, and neither may be guessed."""
    if hasattr(image, "mode") and hasattr(image, "size") and not isinstance(image, (np.ndarray, torch.Tensor)):
        array, channels_first = _pil_array(image), False
    elif isinstance(image, torch.Tensor):
        array, channels_first = image.detach().cpu(), True
        array = array.numpy() if array.dtype in (torch.uint8, torch.bool) else \
            array.to(torch.int64).numpy() if not array.is_floating_point() else array.float().numpy()
    else:
        array, channels_first = np.asarray(image), False
    if array.size == 0:
        raise ValueError(f"an empty image (shape {tuple(array.shape)}) cannot be processed")
    if array.ndim == 3 and not channels_first and array.shape[0] in (3, 4) and array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"numpy image of shape {tuple(array.shape)}: numpy images are [H, W] or [H, W, C] "
                         "(channels last). For a channels-first RGB image use np.moveaxis(x, 0, -1) or a torch "
                         "tensor; a stack of slices goes in as separate images")
    scale = _full_scale(array, bits_stored) if by_bit_depth else 1.0
    tensor = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32))
    if tensor.ndim == 2:
        tensor = tensor[None]
    elif tensor.ndim == 3:
        if not channels_first:
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
        do_rescale: divide by the input's full scale (255 for 8-bit, 65535 for 16-bit, ``2**bits_stored - 1`` when
            set; floats must already be in [0, 1], anything else is an error, not a silent scale).
        rescale_factor: a fixed factor instead of the bit-depth rule (``None``: by bit depth).
        bits_stored: the bits actually used by integer images, e.g. 12 for 12-bit radiographs stored in uint16
            (``None``: the container's, 8 or 16; int16/int32 images need it or ``rescale_factor``).
        binary_masks_255: segmentation maps whose values are only 0 and 255 (BUSI-style binary masks) become 0/1;
            False keeps 255, e.g. when it is the ignore index of maps that happen to hold no other class.
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
        bits_stored: Optional[int] = None,
        binary_masks_255: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        size = _check_size(size if size is not None else {"height": 224, "width": 224})
        if bits_stored is not None and not 1 <= int(bits_stored) <= 32:
            raise ValueError(f"bits_stored must be 1..32, got {bits_stored}")
        self.bits_stored = None if bits_stored is None else int(bits_stored)
        self.binary_masks_255 = binary_masks_255
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
        self.do_resize = do_resize
        self.size = {"height": int(size["height"]), "width": int(size["width"])}
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        # a single number applies to every channel, as in transformers' processors
        self.image_mean = _values(image_mean) if image_mean is not None else list(IMAGENET_MEAN)
        self.image_std = _values(image_std) if image_std is not None else list(IMAGENET_STD)
        if num_channels == 1 and len(self.image_mean) == 3 and len(set(self.image_mean)) == 1:
            self.image_mean, self.image_std = self.image_mean[:1], self.image_std[:1]
        if num_channels == 3:
            self.image_mean = self.image_mean * 3 if len(self.image_mean) == 1 else self.image_mean
            self.image_std = self.image_std * 3 if len(self.image_std) == 1 else self.image_std
        if len(self.image_mean) != num_channels or len(self.image_std) != num_channels:
            raise ValueError(
                f"image_mean/image_std have {len(self.image_mean)}/{len(self.image_std)} values "
                f"for {num_channels} output channels"
            )
        _check_std(self.image_std)
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
        tensor, full_scale = _to_chw_array(image, self.bits_stored, by_bit_depth=do_rescale and rescale_factor is None)
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
        validate_kwargs(captured_kwargs=list(kwargs), valid_processor_keys=[])  # warns: nothing else is read
        do_resize = self.do_resize if do_resize is None else do_resize
        size = self.size if size is None else _check_size(size)
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        mean = torch.tensor(self.image_mean if image_mean is None else image_mean, dtype=torch.float32)
        std = torch.tensor(self.image_std if image_std is None else _check_std(image_std), dtype=torch.float32)
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
            data["labels"] = torch.stack([self._segmentation_map(m, target if do_resize else None,
                                                                 self.binary_masks_255) for m in maps])
        if return_tensors in (None, "pt"):
            return BatchFeature(data=data, tensor_type=return_tensors)
        if return_tensors == "np":
            return BatchFeature(data={k: v.numpy() for k, v in data.items()}, tensor_type="np")
        raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")

    @staticmethod
    def _segmentation_map(segmentation_map, target: Optional[tuple[int, int]],
                          binary_masks_255: bool = True) -> torch.Tensor:
        """One map (PIL / numpy / tensor, [H, W] or [1, H, W]) -> int64 [H, W], nearest-resized to ``target``; a
        0/255 binary mask becomes 0/1 (``binary_masks_255``), else 255 would be the ignore index of every lesion
        pixel."""
        if hasattr(segmentation_map, "mode") and not isinstance(segmentation_map, (np.ndarray, torch.Tensor)):
            if segmentation_map.mode not in ("L", "P", "1", "I", "I;16"):
                segmentation_map = segmentation_map.convert("L")
            segmentation_map = np.array(segmentation_map)
        tensor = torch.as_tensor(np.asarray(segmentation_map)).to(torch.int64)
        if tensor.ndim == 3 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim != 2:
            raise ValueError(f"a segmentation map must be [H, W], got shape {tuple(tensor.shape)}")
        if binary_masks_255 and tensor.numel() and bool(((tensor == 0) | (tensor == 255)).all()) \
                and bool((tensor == 255).any()):
            tensor = (tensor == 255).to(torch.int64)
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


def _check_size(size) -> dict:
    """``{"height", "width"}`` (an int: square). Other transformers size forms are refused: a medmae model takes one
    fixed input size."""
    if isinstance(size, int):
        return {"height": size, "width": size}
    if not isinstance(size, dict) or set(size) != {"height", "width"}:
        raise ValueError(f"size must be {{'height': H, 'width': W}} (the model's fixed input size) or an int, got "
                         f"{size!r}; e.g. shortest_edge resizing would need a crop the model was not trained with")
    return {"height": int(size["height"]), "width": int(size["width"])}


def _values(value) -> list:
    return [float(v) for v in value] if isinstance(value, (list, tuple, np.ndarray, torch.Tensor)) else [float(value)]


def _check_std(std) -> list:
    values = _values(std)
    if any(not v > 0 for v in values):
        raise ValueError(f"image_std must be positive, got {values} (a zero std divides by zero)")
    return values


def processor_for_config(config, **kwargs) -> MedMAEImageProcessor:
    """The processor matching a model config's input contract (size, channels, statistics)."""
    image_size = config.image_size
    mean = getattr(config, "image_mean", None)
    std = getattr(config, "image_std", None)
    return MedMAEImageProcessor(size={"height": image_size, "width": image_size}, num_channels=config.num_channels,
                                image_mean=mean, image_std=std, **kwargs)

