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


# ---- bad input gets a defined behaviour or a clear error (each was silently wrong in 0.1) ----------------
def test_binary_0_255_masks_become_0_1_not_the_ignore_index():
    processor = MedMAEImageProcessor(size={"height": 8, "width": 8})
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 255
    labels = processor(np.zeros((8, 8), np.uint8), segmentation_maps=Image.fromarray(mask))["labels"][0]
    assert set(labels.unique().tolist()) == {0, 1} and int(labels.sum()) == 9
    keep = MedMAEImageProcessor(size={"height": 8, "width": 8}, binary_masks_255=False)
    assert int(keep(np.zeros((8, 8), np.uint8), segmentation_maps=mask)["labels"].max()) == 255
    multi = mask.copy()
    multi[0, 0] = 2  # a multi-class map: 255 stays the ignore index
    assert int(processor(np.zeros((8, 8), np.uint8), segmentation_maps=multi)["labels"].max()) == 255


def test_cmyk_is_converted_not_read_as_rgb():
    processor = MedMAEImageProcessor(size={"height": 4, "width": 4}, do_normalize=False)
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    out = processor(red.convert("CMYK"))["pixel_values"][0]
    torch.testing.assert_close(out, processor(red)["pixel_values"][0])


def test_12_bit_data_in_uint16_and_integer_types_without_a_bit_depth():
    values = np.full((4, 4), 4095, np.uint16)
    assert float(MedMAEImageProcessor(size=4, do_normalize=False, bits_stored=12)(values)["pixel_values"].max()) == 1.0
    assert float(MedMAEImageProcessor(size=4, do_normalize=False)(values)["pixel_values"].max()) == \
        pytest.approx(4095 / 65535)
    with pytest.raises(ValueError, match="exceed bits_stored=12"):
        MedMAEImageProcessor(size=4, bits_stored=12)(np.full((4, 4), 5000, np.uint16))
    for small, large in ((np.full((4, 4), 200, np.int32), np.full((4, 4), 300, np.int32)),):
        with pytest.raises(ValueError, match="int32 images have no bit depth: give bits_stored"):
            MedMAEImageProcessor(size=4)(small)  # 0.1 divided this by 255 and `large` by 65535
    out = MedMAEImageProcessor(size=4, do_normalize=False, bits_stored=16)(large)["pixel_values"]
    assert float(out.max()) == pytest.approx(300 / 65535)


def test_floats_outside_0_1_are_refused_unless_a_factor_is_given():
    image = np.full((4, 4), 200.0, np.float32)
    with pytest.raises(ValueError, match="float images are taken as \\[0, 1\\].*rescale_factor=1/255"):
        MedMAEImageProcessor(size=4)(image)
    out = MedMAEImageProcessor(size=4, do_normalize=False, rescale_factor=1 / 255)(image)["pixel_values"]
    assert float(out.max()) == pytest.approx(200 / 255)


def test_channel_first_numpy_stacks_empty_images_zero_std_and_size_forms_are_refused(caplog):
    with pytest.raises(ValueError, match="numpy images are \\[H, W\\] or \\[H, W, C\\].*stack of slices"):
        MedMAEImageProcessor(size=4)(np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="numpy images are"):
        MedMAEImageProcessor(size=4)(np.zeros((4, 16, 16), np.uint8))  # 0.1 took slice 4 as alpha
    torch.testing.assert_close(MedMAEImageProcessor(size=4)(torch.zeros(3, 16, 16, dtype=torch.uint8))["pixel_values"],
                               MedMAEImageProcessor(size=4)(np.zeros((16, 16, 3), np.uint8))["pixel_values"])
    with pytest.raises(ValueError, match="empty image"):
        MedMAEImageProcessor(size=4)(np.zeros((0, 0), np.uint8))
    with pytest.raises(ValueError, match="image_std must be positive"):
        MedMAEImageProcessor(image_std=0)
    with pytest.raises(ValueError, match="image_std must be positive"):
        MedMAEImageProcessor(size=4)(np.zeros((4, 4), np.uint8), image_std=[0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="size must be \\{'height': H, 'width': W\\}.*shortest_edge"):
        MedMAEImageProcessor(size={"shortest_edge": 32})
    import logging

    with caplog.at_level(logging.WARNING):
        MedMAEImageProcessor(size=4)(np.zeros((4, 4), np.uint8), do_center_crop=True)
    assert "do_center_crop" in caplog.text  # transformers' validate_kwargs warning, not silence
