"""Paired transforms: mask follows the image's crop/flip exactly, batches have the agreed keys."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from medmae.training import synthetic, transforms


def _processor(channels=3, size=16):
    try:
        from medmae.modeling import MedMAEImageProcessor

        return MedMAEImageProcessor(size={"height": size, "width": size}, num_channels=channels,
                                    image_mean=[0.5] * channels, image_std=[0.25] * channels)
    except Exception:  # modeling not importable yet: a stand-in with the same attributes
        return SimpleNamespace(size={"height": size, "width": size}, image_mean=[0.5] * channels,
                               image_std=[0.25] * channels, num_channels=channels)


def _identity_pair():
    """An image whose pixel value encodes the mask, so alignment can be checked after cropping."""
    rng = np.random.default_rng(0)
    mask = np.kron(rng.random((3, 4)) < 0.5, np.ones((16, 16))).astype(np.uint8)  # 16-px blocks
    image = np.where(mask > 0, 255, 0).astype(np.uint8)
    return Image.fromarray(image, "L"), Image.fromarray(mask, "L")


@pytest.mark.parametrize("channels", [1, 3])
def test_segmentation_pairs_stay_aligned(channels):
    torch.manual_seed(0)
    proc = _processor(channels)
    t = transforms.SegmentationTransform(proc, train=True, image_size=24, crop_scale=(0.3, 1.0))
    img, mask = _identity_pair()
    for _ in range(10):
        out = t({"image": [img, img], "mask": [mask, mask], "label": [1, 2]})
        assert out["pixel_values"].shape == (2, channels, 24, 24)
        assert out["pixel_values"].dtype == torch.float32
        assert out["labels"].shape == (2, 24, 24) and out["labels"].dtype == torch.int64
        assert set(out["labels"].unique().tolist()) <= {0, 1}
        assert out["class_labels"].tolist() == [1, 2]
        raw = out["pixel_values"][:, 0] * 0.25 + 0.5  # undo normalisation -> [0, 1]
        # where the mask is 1 the image is bright; they differ only on resampled block edges
        agree = ((raw > 0.5).long() == out["labels"]).float().mean()
        assert agree > 0.88


def test_eval_resize_and_normalisation():
    proc = _processor(1, size=20)
    t = transforms.SegmentationTransform(proc, train=False)
    img = Image.fromarray(np.full((40, 40), 255, np.uint8))
    mask = Image.fromarray(np.ones((40, 40), np.uint8))
    out = t({"image": [img], "mask": [mask]})
    assert out["pixel_values"].shape == (1, 1, 20, 20) and "class_labels" not in out
    assert torch.allclose(out["pixel_values"], torch.full((1, 1, 20, 20), 2.0))  # (1-.5)/.25
    assert out["labels"].all()


def test_flip_moves_mask_with_image():
    proc = _processor(1, size=8)
    t = transforms.SegmentationTransform(proc, train=True, crop_scale=(1.0, 1.0),
                                         crop_ratio=(1.0, 1.0))
    arr = np.zeros((8, 8), np.uint8)
    arr[:, :2] = 1
    img, mask = Image.fromarray(arr * 255), Image.fromarray(arr)
    seen = set()
    torch.manual_seed(1)
    for _ in range(20):
        out = t({"image": [img], "mask": [mask]})
        left = bool(out["labels"][0, :, 0].all())
        assert left == bool((out["pixel_values"][0, 0, :, 0] > 0).all())
        seen.add(left)
    assert seen == {True, False}  # both flipped and unflipped happened


def test_with_transform_on_datasets():
    dd = synthetic.make_synthetic_cxr(num_images=8, image_size=32, splits={"train": 1.0})
    proc = _processor(3, size=16)
    ds = dd["train"].with_transform(transforms.MultiLabelTransform(proc, train=True))
    batch = ds[:4]
    assert batch["pixel_values"].shape == (4, 3, 16, 16)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (4, 8)
    assert batch["labels"].tolist() == dd["train"][:4]["labels"]  # targets unchanged
    cls = dd["train"].with_transform(transforms.ClassificationTransform(proc, train=False))
    assert cls[:3]["labels"].dtype == torch.int64
    seg = dd["train"].with_transform(transforms.SegmentationTransform(proc))
    assert seg[:2]["labels"].shape == (2, 16, 16)
    pre = dd["train"].remove_columns(["label", "labels", "mask"]).with_transform(
        transforms.ClassificationTransform(proc))
    assert set(pre[:2]) == {"pixel_values"}
    with pytest.raises(TypeError, match="unexpected"):
        transforms.ClassificationTransform(proc, mask_column="mask")


def test_label_mask_passthrough():
    proc = _processor(1, size=8)
    t = transforms.MultiLabelTransform(proc, train=False)
    img = Image.fromarray(np.zeros((10, 10), np.uint8))
    out = t({"image": [img], "labels": [[1.0, 0.0]], "label_mask": [[1.0, 0.0]]})
    assert out["label_mask"].tolist() == [[1.0, 0.0]]


@pytest.mark.parametrize("channels", [1, 3])
def test_medical_mae_recipe_keeps_grayscale_radiographs_valid(channels):
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((40, 48)) * 255).astype(np.uint8), "L") for _ in range(6)]
    train = transforms.MultiLabelTransform(_processor(channels, 32), train=True, recipe="medical_mae",
                                           crop_scale=(0.08, 1.0))
    assert "rand-m6-mstd0.5-inc1" == transforms.RAND_AUGMENT and train.rand_augment is not None
    torch.manual_seed(0)
    out = train({"image": images, "labels": [[0.0, 1.0]] * 6})
    assert out["pixel_values"].shape == (6, channels, 32, 32) and torch.isfinite(out["pixel_values"]).all()
    if channels == 3:  # grayscale stays grayscale through RandAugment (equal channels)
        assert torch.equal(out["pixel_values"][:, 0], out["pixel_values"][:, 1])
    assert out["pixel_values"].min() >= (0 - 0.5) / 0.25 and out["pixel_values"].max() <= (1 - 0.5) / 0.25
    # evaluation: Resize(size / 0.875) + CenterCrop(size), the 256 -> 224 of medical_mae
    evaluation = transforms.MultiLabelTransform(_processor(channels, 224), train=False, recipe="medical_mae")
    assert [type(t).__name__ for t in evaluation.geometry.transforms] == ["Resize", "CenterCrop"]
    assert evaluation.geometry.transforms[0].size == [256, 256]
    square = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (256, 1)), "L")
    centred = evaluation({"image": [square], "labels": [[1.0]]})["pixel_values"]
    assert centred.shape[-2:] == (224, 224)
    simple = transforms.MultiLabelTransform(_processor(channels, 32), train=True, recipe="simple")
    assert [type(t).__name__ for t in simple.geometry.transforms] == ["Resize", "RandomHorizontalFlip"]
    with pytest.raises(ValueError, match="unknown augmentation recipe 'autoaugment'"):
        transforms.MultiLabelTransform(_processor(channels, 32), recipe="autoaugment")


def test_rand_augment_is_reproducible_per_item_seed():
    from medmae.training.dataloading import EpochSeededDataset

    rng = np.random.default_rng(1)
    images = [Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8), "L") for _ in range(4)]

    class Items:
        def __init__(self):
            self.transform = transforms.MultiLabelTransform(_processor(3, 32), train=True, recipe="medical_mae",
                                                            crop_scale=(0.08, 1.0))

        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return {k: v[0] for k, v in self.transform({"image": [images[i]], "labels": [[1.0]]}).items()}

    items = EpochSeededDataset(Items(), seed=5, python_and_numpy=True)
    first = [items[i]["pixel_values"] for i in range(4)]
    import random

    random.random()
    np.random.rand()
    torch.rand(1)  # the global generators move on; the items must not change
    assert all(torch.equal(a, items[i]["pixel_values"]) for i, a in enumerate(first))
    items.set_epoch(1)
    assert not all(torch.equal(a, items[i]["pixel_values"]) for i, a in enumerate(first))


@pytest.mark.parametrize("recipe", ["crop_flip", "simple"])
def test_grayscale_geometry_on_one_channel_gives_the_rgb_pixels(recipe):
    """Grayscale images take the geometry on their one channel (faster); the pixels must be exactly those of
    converting to RGB first, for every crop and flip drawn."""
    rng = np.random.default_rng(1)
    transform = transforms.ClassificationTransform(_processor(3, size=24), train=True, recipe=recipe)
    for seed in range(20):
        height, width = rng.integers(30, 70, 2)
        image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")
        torch.manual_seed(seed)
        fast = transform._augmented(image)
        torch.manual_seed(seed)
        reference = transform.geometry(transform._image(image))
        assert torch.equal(fast, reference), seed
