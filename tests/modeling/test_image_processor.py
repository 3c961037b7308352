"""MedMAEImageProcessor: grayscale/RGB, 8/16-bit, numpy/PIL/torch in; the checkpoint's contract out."""

import numpy as np
import pytest
import torch
from PIL import Image

from medmae import ETMAEConfig, MedMAEImageProcessor
from medmae.modeling.image_processing_medmae import processor_for_config


def test_grayscale_and_rgb_inputs_agree():
    processor = MedMAEImageProcessor(size={"height": 16, "width": 16})
    gray = (np.arange(16 * 16, dtype=np.uint8).reshape(16, 16))
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    outputs = [
        processor(gray)["pixel_values"],
        processor(Image.fromarray(gray))["pixel_values"],
        processor(Image.fromarray(rgb))["pixel_values"],
        processor(torch.from_numpy(gray))["pixel_values"],
        processor(rgb)["pixel_values"],
    ]
    for out in outputs:
        assert out.shape == (1, 3, 16, 16) and out.dtype == torch.float32
        torch.testing.assert_close(out, outputs[0])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(outputs[0] * std + mean, torch.from_numpy(gray / 255.0).float().expand(1, 3, -1, -1))


def test_16_bit_images_are_rescaled_by_bit_depth():
    processor = MedMAEImageProcessor(size={"height": 8, "width": 8}, do_normalize=False)
    image16 = np.full((8, 8), 65535, dtype=np.uint16)
    assert torch.allclose(processor(image16)["pixel_values"], torch.ones(1, 3, 8, 8))
    pil16 = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    assert abs(processor(pil16)["pixel_values"].mean().item() - 32768 / 65535) < 1e-6
    assert torch.allclose(processor(np.full((8, 8), 255, np.uint8))["pixel_values"], torch.ones(1, 3, 8, 8))


def test_resize_batch_and_single_channel_output():
    processor = MedMAEImageProcessor.from_preset("cxr", size={"height": 32, "width": 32}, num_channels=1)
    images = [np.random.default_rng(i).integers(0, 255, (40 + i, 50), dtype=np.uint8) for i in range(3)]
    out = processor(images)["pixel_values"]
    assert out.shape == (3, 1, 32, 32)
    assert processor.image_mean == [0.5056] and processor.image_std == [0.252]
    rgb_to_gray = processor(np.zeros((20, 20, 3), np.uint8))["pixel_values"]
    assert rgb_to_gray.shape == (1, 1, 32, 32)


def test_segmentation_maps_use_nearest_and_int64():
    processor = MedMAEImageProcessor(size={"height": 8, "width": 8})
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:12, 4:12] = 1
    out = processor(np.zeros((16, 16), np.uint8), segmentation_maps=Image.fromarray(mask))
    assert out["labels"].dtype == torch.int64 and out["labels"].shape == (1, 8, 8)
    assert set(out["labels"].unique().tolist()) == {0, 1} and out["labels"].sum() == 16


def test_post_process_semantic_segmentation():
    processor = MedMAEImageProcessor()
    logits = torch.zeros(2, 3, 4, 4)
    logits[0, 2] = 5.0
    maps = processor.post_process_semantic_segmentation(logits, target_sizes=[(8, 6), (4, 4)])
    assert maps[0].shape == (8, 6) and bool((maps[0] == 2).all())
    assert maps[1].shape == (4, 4)


def test_save_load_round_trip(tmp_path):
    processor = MedMAEImageProcessor.from_preset("cxr", size={"height": 64, "width": 64})
    processor.save_pretrained(tmp_path)
    reloaded = MedMAEImageProcessor.from_pretrained(tmp_path)
    assert reloaded.image_mean == processor.image_mean and reloaded.size == {"height": 64, "width": 64}


def test_processor_for_config_follows_the_checkpoint_contract():
    config = ETMAEConfig.from_preset("vit_small_patch16_dec512d8b")
    processor = processor_for_config(config)
    assert processor.size == {"height": 224, "width": 224}
    assert processor.image_mean == [0.5056] * 3


@pytest.mark.parametrize(
    "kwargs, call, message",
    [
        ({}, lambda p: p(np.zeros((2, 8, 8, 8), np.uint8)), "1 \\(grayscale\\) or 3 \\(RGB\\) channels"),
        ({"num_channels": 2}, None, "num_channels must be 1 or 3"),
        ({"image_mean": [0.5, 0.5]}, None, "image_mean/image_std have 2/3 values"),
        ({"do_resize": False}, lambda p: p([np.zeros((8, 8), np.uint8), np.zeros((9, 9), np.uint8)]), "different sizes"),
        ({}, lambda p: MedMAEImageProcessor.from_preset("nope"), "unknown normalisation preset"),
    ],
)
def test_bad_inputs(kwargs, call, message):
    with pytest.raises(ValueError, match=message):
        processor = MedMAEImageProcessor(**kwargs)
        call(processor)
