"""Paired image + mask transforms for ``dataset.with_transform(...)``.

Geometry (random resized crop, horizontal flip, resize to the model size) is done by
``torchvision.transforms.v2`` on uint8 tensors, with the mask wrapped as ``tv_tensors.Mask`` so
that it receives exactly the same crop/flip as the image and is resampled with nearest
neighbour (values stay 0/1). Rescaling and normalisation follow the model's
``MedMAEImageProcessor`` (its ``image_mean``, ``image_std``, ``num_channels``, ``do_rescale``,
``rescale_factor``, ``do_normalize`` and ``size``); any object with ``image_mean``/``image_std``
(and optionally ``size``) works, e.g. a transformers image processor.

Augmentation recipes (``recipe=``, ``--augmentation``):

* ``crop_flip`` (default; SDDA-MAE "flip and crop"): random resized crop (scale ``crop_scale``) and
  horizontal flip for training; a plain resize for evaluation.
* ``medical_mae`` (ETMAE's fine-tuning, after Xiao et al. 2023 / lambert-x/medical_mae, built with
  timm's ``create_transform``): bicubic random resized crop (``crop_scale``, medical_mae 0.08-1),
  flip, timm RandAugment ``rand-m6-mstd0.5-inc1``; evaluation Resize(size / 0.875) + CenterCrop(size)
  (256 -> 224). RandAugment runs on RGB (its fill colour is a triple), so grayscale images are
  augmented as equal-channel RGB and converted back: they stay grayscale. Random erasing (medical_mae's
  ``--reprob``) is not applied.
* ``simple`` (the ETMAE authors' code): resize and horizontal flip; resize for evaluation.

There is no mixup/cutmix: multi-label targets (and masks) pass through unchanged, so they stay correct.
Randomness comes from torch's global generator and, for RandAugment, Python's ``random`` and numpy's
global generator (the training loop seeds all three per item, so a resumed run repeats them exactly).

Batches produced (``with_transform`` hands a dict of lists to the transform):

* :class:`SegmentationTransform`: ``pixel_values`` float [B, C, H, W], ``labels`` int64 mask
  [B, H, W], ``class_labels`` int64 [B] (when the dataset has a ``label`` column);
* :class:`ClassificationTransform`: ``pixel_values``, ``labels`` int64 [B] (omitted when the
  dataset has no label column: MAE pre-training);
* :class:`MultiLabelTransform`: ``pixel_values``, ``labels`` float32 [B, K], plus
  ``label_mask`` float32 [B, K] when the dataset has one (CheXpert ``ignore`` policy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.data.auto_augment import rand_augment_transform
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = ["SegmentationTransform", "ClassificationTransform", "MultiLabelTransform", "RECIPES"]

RECIPES = ("crop_flip", "medical_mae", "simple")
RAND_AUGMENT = "rand-m6-mstd0.5-inc1"  # medical_mae's --aa
EVAL_CROP_PCT = 0.875  # medical_mae evaluation: Resize(256) + CenterCrop(224)


class _BaseTransform:
    """Shared geometry and normalisation; subclasses add their targets.

    Arguments: ``processor``; ``train`` (random crop + flip) or not (resize); ``image_size``
    (int or (H, W); default ``processor.size``); ``crop_scale`` / ``crop_ratio`` of
    ``RandomResizedCrop``; ``hflip``; ``image_column``; and the column names of the subclass's
    ``_COLUMNS`` (keyword arguments; None drops an optional target).
    """

    _COLUMNS: dict[str, str | None] = {}

    def __init__(self, processor, train: bool = True, image_size: int | Sequence[int] | None = None,
                 crop_scale: tuple[float, float] = (0.5, 1.0),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = True,
                 image_column: str = "image", recipe: str = "crop_flip", **columns):
        unknown = set(columns) - set(self._COLUMNS)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected argument(s) {sorted(unknown)}")
        for name, default in self._COLUMNS.items():
            setattr(self, name, columns.get(name, default))
        if image_size is None:
            size = getattr(processor, "size", None)
            if not size:
                raise ValueError("image_size is required when the processor has no 'size'")
            image_size = (size["height"], size["width"]) if isinstance(size, dict) else size
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.size = tuple(int(s) for s in image_size)
        self.train, self.image_column = train, image_column
        mean = list(processor.image_mean)
        std = list(processor.image_std)
        self.num_channels = int(getattr(processor, "num_channels", len(mean)))
        if len(mean) == 1 and self.num_channels == 3:
            mean, std = mean * 3, std * 3
        if len(mean) != self.num_channels:
            raise ValueError(f"processor has {len(mean)} mean values for {self.num_channels} channels")
        self.do_rescale = getattr(processor, "do_rescale", True)
        self.rescale_factor = getattr(processor, "rescale_factor", None) or 1 / 255
        self.do_normalize = getattr(processor, "do_normalize", True)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        if recipe not in RECIPES:
            raise ValueError(f"unknown augmentation recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        self.recipe, self.rand_augment = recipe, None
        flip = [v2.RandomHorizontalFlip()] if hflip else []
        if recipe == "medical_mae":
            bicubic = v2.InterpolationMode.BICUBIC
            if train:
                self.geometry = v2.Compose([v2.RandomResizedCrop(self.size, scale=crop_scale, ratio=crop_ratio,
                                                                 interpolation=bicubic, antialias=True), *flip])
                self.rand_augment = rand_augment_transform(RAND_AUGMENT, {
                    "translate_const": int(min(self.size) * 0.45),
                    "img_mean": tuple(min(255, round(255 * m)) for m in mean)})
            else:
                resize = [int(s / EVAL_CROP_PCT) for s in self.size]
                self.geometry = v2.Compose([v2.Resize(resize, interpolation=bicubic, antialias=True),
                                            v2.CenterCrop(self.size)])
        elif recipe == "simple" or not train:
            self.geometry = v2.Compose([v2.Resize(self.size, antialias=True), *(flip if train else [])])
        else:
            self.geometry = v2.Compose([v2.RandomResizedCrop(self.size, scale=crop_scale, ratio=crop_ratio,
                                                             antialias=True), *flip])

    def _image(self, pil) -> tv_tensors.Image:
        mode = "L" if self.num_channels == 1 else "RGB"
        return tv_tensors.Image(F.pil_to_tensor(pil.convert(mode)))

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.do_rescale:
            x = x * self.rescale_factor
        if self.do_normalize:
            x = (x - self.mean) / self.std
        return x.contiguous()

    def _augmented(self, pil) -> torch.Tensor:
        """Geometry (and RandAugment, on PIL, for ``medical_mae`` training) of one image -> uint8 [C, H, W]."""
        if self.rand_augment is None:
            if pil.mode == "L" and self.num_channels == 3:
                # a grayscale image: the geometry on its one channel, then three copies -- the same pixels as
                # converting to RGB first (checked bit for bit in tests/training/test_transforms.py), 1.8x faster
                return self.geometry(tv_tensors.Image(F.pil_to_tensor(pil))).expand(3, -1, -1)
            return self.geometry(self._image(pil))
        mode = "L" if self.num_channels == 1 else "RGB"
        image = self.rand_augment(self.geometry(pil.convert("RGB")))
        return tv_tensors.Image(F.pil_to_tensor(image.convert(mode)))

    def _pixel_values(self, batch) -> torch.Tensor:
        return self._normalize(torch.stack([self._augmented(im) for im in batch[self.image_column]]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, train={self.train}, geometry={self.geometry})"


class SegmentationTransform(_BaseTransform):
    """Image + mask with identical random geometry; see the module docstring.

    ``SegmentationTransform(processor, train=True, image_size=None, crop_scale=(0.5, 1.0),
    hflip=True, mask_column="mask", label_column="label")``.
    """

    _COLUMNS = {"mask_column": "mask", "label_column": "label", "num_classes": 2}

    def __call__(self, batch: dict) -> dict:
        """``labels``: the mask's class ids for ``num_classes`` > 2, else foreground (any non-zero) = 1."""
        if self.recipe == "medical_mae":
            raise ValueError("the medical_mae recipe (RandAugment) is for classification; masks take crop_flip")
        images, masks = [], []
        for im, m in zip(batch[self.image_column], batch[self.mask_column]):
            image = self._image(im)
            mask = tv_tensors.Mask(F.pil_to_tensor(m.convert("L"))[0])
            if mask.shape != image.shape[-2:]:
                raise ValueError(f"mask {tuple(mask.shape)} and image {tuple(image.shape[-2:])} differ")
            image, mask = self.geometry(image, mask)
            images.append(image)
            masks.append(mask)
        masks = torch.stack(masks).long()
        if self.num_classes > 2 and int(masks.max()) >= self.num_classes:
            raise ValueError(f"mask class id {int(masks.max())} >= num_classes {self.num_classes}")
        out = {"pixel_values": self._normalize(torch.stack(images)),
               "labels": masks if self.num_classes > 2 else (masks != 0).long()}
        if self.label_column and self.label_column in batch:
            out["class_labels"] = torch.as_tensor(batch[self.label_column], dtype=torch.long)
        return out


class ClassificationTransform(_BaseTransform):
    """Single-label classification (or unlabeled pre-training when the label column is absent); ``passthrough``
    columns (e.g. ``source`` of a combined pre-training set) are handed on unchanged."""

    _COLUMNS = {"label_column": "label", "passthrough": ()}

    def __call__(self, batch: dict) -> dict:
        out = {"pixel_values": self._pixel_values(batch)}
        if self.label_column and self.label_column in batch:
            out["labels"] = torch.as_tensor(batch[self.label_column], dtype=torch.long)
        for column in self.passthrough:
            out[column] = list(batch[column])
        return out


class MultiLabelTransform(_BaseTransform):
    """Multi-label classification: ``labels`` float [B, K] (+ ``label_mask`` if present)."""

    _COLUMNS = {"label_column": "labels", "mask_column": "label_mask"}

    def __call__(self, batch: dict) -> dict:
        out = {"pixel_values": self._pixel_values(batch),
               "labels": torch.as_tensor(batch[self.label_column], dtype=torch.float32)}
        if self.mask_column in batch:
            out["label_mask"] = torch.as_tensor(batch[self.mask_column], dtype=torch.float32)
        return out
