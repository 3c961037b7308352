# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""The reference sample of an export: a synthetic image, its inputs and the model's outputs on them."""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import torch


def synthetic_sample(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic 8-bit grayscale test image [H, W]: smooth blobs plus noise (not patient data)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.zeros((height, width))
    for _ in range(4):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.1, 0.4) * min(height, width)
        image += rng.uniform(0.3, 1.0) * np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * radius**2))
    image = image / image.max() * 0.8 + 0.2 * rng.random((height, width))
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def _mask_noise_shape(output) -> Optional[tuple[int, ...]]:
    """Shape of the masking noise of a pre-training output: that of ``unit_mask`` when the model masks
    groups of patches (SDDA-MAE), else that of ``mask`` (ETMAE); None for models that do not mask."""
    for name in ("unit_mask", "mask"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
    return None


def output_tensors(output) -> dict[str, torch.Tensor]:
    """The tensor fields of a model output (``ModelOutput`` or tuple), float32 on CPU, keyed ``output.NAME``."""
    items = output.items() if hasattr(output, "items") else enumerate(output)
    return {f"output.{name}": value.detach().float().cpu().clone(memory_format=torch.contiguous_format)
            for name, value in items if isinstance(value, torch.Tensor)}


def run_model(model, pixel_values: torch.Tensor, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Forward ``model`` on ``pixel_values`` and the extra ``inputs`` (``input.NAME`` keys) in eval mode."""
    kwargs = {key.split(".", 1)[1]: value for key, value in inputs.items() if key.startswith("input.")}
    with torch.no_grad():
        return output_tensors(model.eval()(pixel_values=pixel_values, return_dict=True, **kwargs))


def reference_sample(model, processor, seed: int = 0) -> dict[str, torch.Tensor]:
    """``sample_image`` (uint8 [H, W]), its ``pixel_values``, extra ``input.*`` tensors (masking noise for
    pre-training models, so outputs are deterministic) and the model's ``output.*`` tensors."""
    size = processor.size
    image = synthetic_sample(int(size["height"]), int(size["width"]), seed)
    pixel_values = processor(image, return_tensors="pt")["pixel_values"].float()
    inputs: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        probe = model.eval()(pixel_values=pixel_values, return_dict=True)
    shape = _mask_noise_shape(probe)
    if shape is not None:
        inputs["input.noise"] = torch.rand(shape, generator=generator)
    return {"sample_image": torch.from_numpy(image), "pixel_values": pixel_values, **inputs,
            **run_model(model, pixel_values, inputs)}
