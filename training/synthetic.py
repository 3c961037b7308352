"""Built-in synthetic datasets: an ultrasound-like set like BUSI and a chest-X-ray-like set like NIH/CheXpert.

They are the embedded default for demos and tests: deterministic (seeded), any size, fast
(vectorised numpy over chunks of images; 1,000 images of 128 px take about a second or two), and
they return ``datasets.DatasetDict``s with the SAME columns as the real loaders of
:mod:`medmae.training.data`, so every training script runs on them unchanged. Images are stored
as PNG-encoded ``datasets.Image`` (uint8, mode ``L``); masks as 0/1 PNGs.

Image ``i`` depends only on ``(seed, i, image_size)``: images are generated in chunks of
:data:`CHUNK` with ``numpy.random.default_rng([seed, chunk])``, so the first 100 images of a
1,000-image set equal a 100-image set. Splits are contiguous index ranges (the images are i.i.d.).

Ultrasound-like set (:func:`make_synthetic_ultrasound`, classes like BUSI)
--------------------------------------------------------------------------
Every image: skin line, a darker subcutaneous-fat layer and a brighter glandular layer with wavy
boundaries, a muscle/chest-wall band at depth; multiplicative speckle (Rayleigh, slightly
correlated); depth attenuation ``exp(-alpha * depth)``; 0-3 small, low-contrast, wider-than-tall
hypoechoic fat lobules as distractors (in every class).

* ``normal``: no lesion (empty mask).
* ``benign``: a hypoechoic, homogeneous, smooth oval lesion WIDER than tall (aspect w/h
  1.0-2.0), gently lobulated at most, often with posterior acoustic ENHANCEMENT (brighter below).
* ``malignant``: a darker, heterogeneous lesion TALLER than wide (aspect 0.6-1.15) with an
  irregular, angular or spiculated margin (high-frequency boundary harmonics), an echogenic halo
  and posterior acoustic SHADOWING (darker column below) in most cases.

Aspect ratios, margin irregularity and posterior effects overlap between benign and malignant,
so the task is learnable but not trivial. Lesions have a radius of 10-20 % of the image (3-6 px
at 32 px), visible at 32-64 px.

Chest-X-ray-like set (:func:`make_synthetic_cxr`, multi-label like NIH/CheXpert)
---------------------------------------------------------------------------------
Every image: a torso, two dark lung fields with vascular texture and a domed diaphragm, curved
ribs, spine/mediastinum, and a heart shadow to the image right (patient's left). Findings:

* ``Cardiomegaly``: heart 1.35-1.6x wider (normal 0.95-1.15x), cardiothoracic ratio > 0.5;
* ``Effusion``: fluid filling a lung base with a meniscus (blunted costophrenic angle), one or
  both sides;
* ``Pneumothorax``: a dark band along the upper lateral lung edge without lung markings,
  bounded by a bright visceral pleural line; its pixels are the ``mask`` and ``label`` is
  ``present`` (SIIM-style joint segmentation/classification);
* ``Nodule``: 1-3 small round opacities; ``Mass``: one larger opacity;
* ``Consolidation``: a dense patchy opacity in one lung;
* ``Edema``: bilateral perihilar haze;
* ``Atelectasis``: a plate-like linear opacity in a lower zone with an elevated hemidiaphragm.

Co-occurrence follows a latent "heart failure" state (cardiomegaly, edema and effusion together)
and effusion -> atelectasis, consolidation <-> atelectasis, as in real data. ``labels=`` picks
and orders the label columns; CheXpert names (``Pleural Effusion``) are accepted as aliases, so
``labels=CHEXPERT_COMPETITION_LABELS`` works.

Command line: ``python -m medmae.training.synthetic --kind ultrasound --out grid.png`` writes a
PNG grid of examples (see :func:`main`).
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image as PILImage

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

__all__ = ["ULTRASOUND_CLASSES", "SYNTHETIC_CXR_LABELS", "CHUNK", "synthetic_ultrasound_arrays",
           "synthetic_cxr_arrays", "make_synthetic_ultrasound", "make_synthetic_cxr",
           "save_example_grid", "main"]

ULTRASOUND_CLASSES = ("normal", "benign", "malignant")  # same ClassLabel as BUSI
#: Findings of the synthetic CXR set, in the NIH conventional order.
SYNTHETIC_CXR_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Mass", "Nodule", "Pneumothorax",
                        "Consolidation", "Edema")
_ALIASES = {"Pleural Effusion": "Effusion", "Pleural_Effusion": "Effusion"}
CHUNK = 128
DEFAULT_SPLITS = {"train": 0.8, "validation": 0.1, "test": 0.1}


# ============================================================================ shared helpers


def _grid(size: int):
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return c[None, :, None], c[None, None, :]  # yy (1, H, 1), xx (1, 1, W)


def _col(v):
    """(B,) -> (B, 1, 1) float32 for broadcasting against (B, H, W)."""
    return np.asarray(v, dtype=np.float32)[:, None, None]


def _smooth(x: np.ndarray, passes: int = 1) -> np.ndarray:
    """Cheap separable 3-tap blur over the last two axes (edges replicated)."""
    for _ in range(passes):
        p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
        x = (p[..., :-2, 1:-1] + 2 * p[..., 1:-1, 1:-1] + p[..., 2:, 1:-1]) / 4
        p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
        x = (p[..., 1:-1, :-2] + 2 * p[..., 1:-1, 1:-1] + p[..., 1:-1, 2:]) / 4
    return x


def _soft(d: np.ndarray, width: float) -> np.ndarray:
    """Smooth step: 1 where d << 0, 0 where d >> 0 (anti-aliased region edges)."""
    return 1.0 / (1.0 + np.exp(np.clip(d / width, -30, 30)))


def _low_freq_noise(rng, batch: int, size: int, cells: int = 6) -> np.ndarray:
    """Smooth random field in about [-1, 1]: coarse noise upsampled bilinearly."""
    coarse = rng.standard_normal((batch, cells + 1, cells + 1)).astype(np.float32)
    pos = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.minimum(pos.astype(int), cells - 1)
    f = pos - i0
    rows = coarse[:, i0] * (1 - f)[None, :, None] + coarse[:, i0 + 1] * f[None, :, None]
    return rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]


def _work_size(size: int) -> int:
    """Resolution at which the smooth anatomy is computed: half size for even sizes >= 64 (4x
    fewer pixels; speckle, noise and edges are added at full size)."""
    return size // 2 if size >= 64 and size % 2 == 0 else size


def _upsample(x: np.ndarray, size: int) -> np.ndarray:
    """(B, s, s) -> (B, size, size) for size = s or 2 s: pixel repeat then a 3-tap blur."""
    if x.shape[-1] == size:
        return x
    return _smooth(np.repeat(np.repeat(x, 2, axis=-2), 2, axis=-1))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _png(array: np.ndarray) -> dict:
    buf = io.BytesIO()
    PILImage.fromarray(array).save(buf, format="PNG", compress_level=1)
    return {"bytes": buf.getvalue(), "path": None}


def _chunked(num_images: int, image_size: int, seed: int, make_chunk):
    """Concatenate ``make_chunk(rng, CHUNK, image_size)`` outputs, truncated to num_images."""
    if num_images < 0 or image_size < 16:
        raise ValueError("num_images must be >= 0 and image_size >= 16")
    parts = [make_chunk(np.random.default_rng([seed, c]), CHUNK, image_size)
             for c in range(-(-num_images // CHUNK))]
    if not parts:
        return make_chunk(np.random.default_rng([seed, 0]), 0, image_size)
    return {k: np.concatenate([p[k] for p in parts])[:num_images] for k in parts[0]}


def _split_sizes(num_images: int, splits) -> dict[str, int]:
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    if not splits or any(f < 0 for f in splits.values()) or sum(splits.values()) > 1 + 1e-9:
        raise ValueError(f"splits must be non-negative fractions summing to <= 1, got {splits}")
    sizes = {k: int(num_images * f) for k, f in splits.items()}
    first = next(iter(sizes))
    sizes[first] += int(round(num_images * sum(splits.values()))) - sum(sizes.values())
    return sizes


def _to_dataset_dict(columns: dict, features: Features, num_images: int, splits, info) -> DatasetDict:
    dd, start = DatasetDict(), 0
    for name, n in _split_sizes(num_images, splits).items():
        part = {k: v[start:start + n] for k, v in columns.items()}
        dd[name] = Dataset.from_dict(part, features=features, split=name,
                                     info=datasets.DatasetInfo(description=info["description"],
                                                               features=features))
        start += n
    dd.medmae_split_info = {k: v for k, v in info.items() if k != "description"}
    return dd


# ============================================================================ ultrasound


def _ultrasound_chunk(rng, n: int, size: int) -> dict:
    work = _work_size(size)
    yy, xx = _grid(work)
    labels = rng.permutation(np.arange(n) % 3)
    is_b, is_m = labels == 1, labels == 2
    # ---- tissue layers with wavy boundaries
    wave = lambda base, amp: _col(base) + _col(amp) * np.sin(  # noqa: E731
        2 * np.pi * (_col(rng.uniform(0.5, 2, n)) * xx + _col(rng.uniform(0, 1, n))))
    b1 = wave(rng.uniform(0.04, 0.07, n), rng.uniform(0.0, 0.01, n))
    b2 = wave(rng.uniform(0.18, 0.3, n), rng.uniform(0.01, 0.04, n))
    b3 = wave(rng.uniform(0.72, 0.85, n), rng.uniform(0.01, 0.04, n))
    skin, fat, gland, muscle = (_col(rng.uniform(*r, n)) for r in
                                ((0.75, 0.95), (0.25, 0.4), (0.5, 0.7), (0.35, 0.5)))
    tissue = np.where(yy < b1, skin, np.where(yy < b2, fat, np.where(yy < b3, gland, muscle)))
    tissue = tissue * (1 + 0.15 * _low_freq_noise(rng, n, work, 5))
    # ---- distractor fat lobules (all classes): small, low contrast, wider than tall
    for _ in range(3):
        present = _col(rng.random(n) < 0.5)
        d = ((xx - _col(rng.uniform(0.15, 0.85, n))) / _col(rng.uniform(0.05, 0.1, n))) ** 2 + \
            ((yy - _col(rng.uniform(0.3, 0.7, n))) / _col(rng.uniform(0.025, 0.05, n))) ** 2
        tissue = tissue * (1 - present * _col(rng.uniform(0.2, 0.4, n)) * _soft(d - 1, 0.15))
    # ---- lesion geometry: elliptical radius modulated by boundary harmonics
    r = rng.uniform(0.10, 0.20, n)
    aspect = np.where(is_m, rng.uniform(0.6, 1.15, n), rng.uniform(1.0, 2.0, n))  # width / height
    a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
    cx, cy = rng.uniform(0.3, 0.7, n), rng.uniform(0.35, 0.6, n)
    dx, dy = (xx - _col(cx)) / _col(a), (yy - _col(cy)) / _col(b)
    rho, theta = np.sqrt(dx ** 2 + dy ** 2), np.arctan2(dy, dx)
    boundary = np.ones_like(rho)
    for k in (2, 3, 4, 5, 7, 9, 12, 15):
        if k <= 4:  # lobulation: both classes, benign gentle
            amp = np.where(is_m, rng.uniform(0.03, 0.12, n), rng.uniform(0.0, 0.09, n))
        else:  # irregular / spiculated margin: mostly malignant, a few benign mildly
            amp = np.where(is_m, rng.uniform(0.03, 0.11, n) * (k <= 9) + rng.uniform(0.0, 0.08, n) * (k > 9),
                           rng.uniform(0.0, 0.025, n))
        boundary = boundary + _col(amp) * np.cos(k * theta + _col(rng.uniform(0, 2 * np.pi, n)))
    has_lesion = _col(labels > 0)
    inside = _soft(rho - boundary, 0.04) * has_lesion
    # interior: hypoechoic; malignant darker and heterogeneous
    darkness = _col(np.where(is_m, rng.uniform(0.7, 0.9, n), rng.uniform(0.55, 0.8, n)))
    hetero = _col(np.where(is_m, 0.35, 0.1)) * _low_freq_noise(rng, n, work, 8)
    lesion_gain = 1 - inside * np.clip(darkness + hetero * 0.3, 0, 0.95)
    # malignant echogenic halo; benign thin capsule
    ring = np.exp(-((rho - boundary - 0.15) / 0.12) ** 2) * has_lesion
    halo = _col(np.where(is_m, rng.uniform(0.1, 0.35, n), rng.uniform(0.0, 0.12, n))) * ring
    # posterior column: shadowing (mostly malignant) or enhancement (mostly benign)
    posterior = np.where(is_m, np.where(rng.random(n) < 0.8, -rng.uniform(0.3, 0.6, n), 0.0),
                         np.where(rng.random(n) < 0.6, rng.uniform(0.15, 0.4, n),
                                  np.where(rng.random(n) < 0.15, -rng.uniform(0.1, 0.3, n), 0.0)))
    below = _soft(_col(cy + b * 0.5) - yy, 0.02)  # deeper than the lesion centre
    column = _soft(np.abs(xx - _col(cx)) / _col(a * 0.8) - 1, 0.15) * below * (1 - inside) * has_lesion
    img = tissue * lesion_gain * (1 + _col(posterior) * column) + halo * 0.5
    # ---- depth attenuation and speckle
    img = _upsample(img * np.exp(-_col(rng.uniform(0.4, 1.4, n)) * yy), size)
    mask = _upsample(inside, size) > 0.5
    speckle = np.sqrt(-2 * np.log(rng.random((n, size, size), dtype=np.float32) + 1e-7))
    speckle = _smooth(speckle) / 1.25
    img = img * speckle * _col(rng.uniform(0.8, 1.15, n))
    return {"image": _to_uint8(np.clip(img, 0, 1)), "mask": mask.astype(np.uint8),
            "label": labels.astype(np.int64)}


def synthetic_ultrasound_arrays(num_images: int = 16, image_size: int = 128, seed: int = 0) -> dict:
    """Raw arrays of the ultrasound-like set: ``image`` uint8 (N, S, S), ``mask`` uint8 {0,1}
    (N, S, S), ``label`` int64 (N,) with 0 = normal, 1 = benign, 2 = malignant."""
    return _chunked(num_images, image_size, seed, _ultrasound_chunk)


def make_synthetic_ultrasound(num_images: int = 600, image_size: int = 128, seed: int = 0,
                              splits: Mapping[str, float] | None = None) -> DatasetDict:
    """BUSI-like DatasetDict (columns ``image``, ``mask``, ``label``, ``image_id``; see the
    module docstring for what each class looks like). ``splits`` maps split names to fractions
    (default train 0.8 / validation 0.1 / test 0.1; rounding goes to the first split)."""
    arr = synthetic_ultrasound_arrays(num_images, image_size, seed)
    features = Features({"image": datasets.Image(mode="L"), "mask": datasets.Image(),
                         "label": ClassLabel(names=list(ULTRASOUND_CLASSES)),
                         "image_id": Value("string")})
    columns = {"image": [_png(x) for x in arr["image"]], "mask": [_png(x) for x in arr["mask"]],
               "label": arr["label"].tolist(),
               "image_id": [f"synthetic_ultrasound-{seed}-{i:06d}" for i in range(num_images)]}
    info = {"dataset": "synthetic_ultrasound", "seed": seed, "image_size": image_size,
            "num_images": num_images, "splits": dict(splits or DEFAULT_SPLITS),
            "description": "Synthetic BUSI-like ultrasound (medmae.training.synthetic)"}
    return _to_dataset_dict(columns, features, num_images, splits, info)


# ============================================================================ chest X-ray


def _cxr_chunk(rng, n: int, size: int) -> dict:
    work = _work_size(size)
    yy, xx = _grid(work)
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    coin = lambda p: rng.random(n) < p  # noqa: E731
    # ---- latent findings with realistic co-occurrence
    failure = coin(0.25)
    f = {"Cardiomegaly": np.where(failure, coin(0.8), coin(0.1)),
         "Edema": np.where(failure, coin(0.6), coin(0.05))}
    f["Effusion"] = np.where(failure, coin(0.5), coin(0.12))
    f["Atelectasis"] = np.where(f["Effusion"], coin(0.4), coin(0.12))
    f["Consolidation"] = np.where(f["Atelectasis"], coin(0.3), coin(0.12))
    f["Pneumothorax"], f["Nodule"], f["Mass"] = coin(0.2), coin(0.15), coin(0.1)
    # ---- anatomy
    body = _soft(((xx - 0.5) / _col(u(0.42, 0.5))) ** 2 + ((yy - 0.55) / 0.6) ** 2 - 1, 0.02)
    img = 0.05 + body * _col(u(0.45, 0.55))
    texture = _low_freq_noise(rng, n, work, 10)
    lungs, lung_side, lung_dist, lung_geo = np.zeros_like(img), [], [], []
    for side, sign in (("right", -1), ("left", 1)):  # image left = patient's right
        lx, ly = 0.5 + sign * u(0.18, 0.22), u(0.42, 0.46)
        la, lb = u(0.13, 0.17), u(0.27, 0.32)
        dome = _col(ly + lb * u(0.55, 0.75))  # diaphragm height
        dist = ((xx - _col(lx)) / _col(la)) ** 2 + ((yy - _col(ly)) / _col(lb)) ** 2
        below = yy - (dome - 0.08 * ((xx - _col(lx)) / _col(la)) ** 2)
        lung = _soft(dist - 1, 0.03) * _soft(below, 0.01)
        lung_side.append(lung)
        lung_dist.append(dist)
        lung_geo.append((lx, ly, la, lb, dome))
        lungs = np.maximum(lungs, lung)
    img = img - lungs * _col(u(0.3, 0.38)) * (1 - 0.12 * texture)
    # ribs: curved periodic bands, brighter inside the torso
    phase = _col(u(0, 1))
    curve = yy - 0.9 * (xx - 0.5) ** 2
    ribs = np.clip(np.sin(2 * np.pi * (curve * _col(u(9, 11)) + phase)) - 0.55, 0, None) * 2.2
    img = img + body * ribs * (0.04 + 0.06 * lungs)
    # mediastinum / spine
    img = img + _soft(np.abs(xx - 0.5) - _col(u(0.045, 0.06)), 0.01) * body * 0.25
    # heart: cardiomegaly = wider heart (cardiothoracic ratio > 0.5)
    hw = np.where(f["Cardiomegaly"], u(1.35, 1.6), u(0.95, 1.15)) * 0.11
    hx, hy = 0.53 + hw * 0.35, u(0.55, 0.59)
    heart = _soft(((xx - _col(hx)) / _col(hw)) ** 2 + ((yy - _col(hy)) / _col(u(0.11, 0.13))) ** 2 - 1, 0.03)
    img = img + heart * (0.12 + 0.2 * lungs)
    # ---- findings
    which_side = rng.integers(0, 2, n)  # 0 = image left, 1 = image right
    pick = lambda arrs: np.where(_col(which_side) == 0, arrs[0], arrs[1])  # noqa: E731
    lung_one, dist_one = pick(lung_side), pick(lung_dist)
    geo = [np.where(which_side == 0, g0, g1) for g0, g1 in zip(*lung_geo)]
    lx, ly, la, lb, dome = geo
    # effusion: fluid at the base with a meniscus (higher laterally); sometimes bilateral
    both = coin(0.4)
    level = _col(dome[:, 0, 0] - u(0.1, 0.2)) - 0.06 * np.abs(xx - 0.5) / 0.3
    fluid = _soft(level - yy, 0.015)
    eff_region = np.where(_col(both), lungs, lung_one) * fluid
    img = img + _col(f["Effusion"]) * eff_region * 0.32
    # edema: bilateral perihilar haze
    hilum = np.exp(-(((np.abs(xx - 0.5) - 0.12) / 0.12) ** 2 + ((yy - 0.5) / 0.15) ** 2))
    img = img + _col(f["Edema"]) * lungs * hilum * _col(u(0.15, 0.25)) * (1 + 0.3 * texture)
    # consolidation: dense patchy opacity in one lung
    cdist = ((xx - _col(lx + u(-0.4, 0.4) * la)) / _col(u(0.07, 0.12))) ** 2 + \
        ((yy - _col(ly + u(-0.2, 0.5) * lb)) / _col(u(0.07, 0.12))) ** 2
    patch = _soft(cdist - 1 + 0.5 * _low_freq_noise(rng, n, work, 12), 0.1) * lung_one
    img = img + _col(f["Consolidation"]) * patch * 0.3
    # atelectasis: plate-like linear opacity in a lower zone
    line_y = _col(ly + lb * u(0.25, 0.45)) + _col(u(-0.3, 0.3)) * (xx - _col(lx))
    plate = _soft(np.abs(yy - line_y) - _col(u(0.012, 0.025)), 0.006) * lung_one
    img = img + _col(f["Atelectasis"]) * plate * 0.3
    # nodules (1-3 small) and mass (one larger)
    for k in range(3):
        on = f["Nodule"] & ((k == 0) | coin(0.4))
        nd = np.sqrt(((xx - _col(lx + u(-0.6, 0.6) * la)) ** 2) + (yy - _col(ly + u(-0.6, 0.5) * lb)) ** 2)
        img = img + _col(on) * _soft(nd - _col(u(0.02, 0.035)), 0.006) * lungs * 0.28
    md = np.sqrt((xx - _col(lx + u(-0.4, 0.4) * la)) ** 2 + (yy - _col(ly + u(-0.4, 0.3) * lb)) ** 2)
    img = img + _col(f["Mass"]) * _soft(md - _col(u(0.05, 0.08)), 0.008) * lungs * 0.3
    # pneumothorax: dark rim along the upper lateral lung edge, no markings, pleural line
    depth = u(0.4, 0.65)  # fraction of the lung's elliptical radius that collapsed
    lateral = np.where(which_side == 0, -1.0, 1.0)
    upper = _soft(yy - _col(ly + lb * 0.25), 0.02)
    side_w = _soft(-(xx - _col(lx)) * _col(lateral) - _col(la) * 0.2, 0.02)
    core = _soft(dist_one - (1 - _col(depth)) ** 2, 0.02)  # 1 inside the collapsed lung
    ptx = _col(f["Pneumothorax"]) * lung_one * (1 - core) * upper * side_w
    pleural = np.exp(-((np.sqrt(dist_one) - (1 - _col(depth))) / 0.04) ** 2) * upper * side_w * lung_one
    collapsed = _col(f["Pneumothorax"]) * lung_one * core * 0.08  # the collapsed lung is denser
    img = img - ptx * (0.2 + 0.1 * texture) + _col(f["Pneumothorax"]) * pleural * 0.25 + collapsed
    # ---- exposure, blur, noise
    mask = _upsample(ptx, size) > 0.5
    img = _upsample(img, size) * _col(u(0.85, 1.15)) + _col(u(-0.05, 0.05))
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * 0.02
    findings = np.stack([f[k] for k in SYNTHETIC_CXR_LABELS], 1).astype(np.float32)
    return {"image": _to_uint8(np.clip(img, 0, 1)), "mask": mask.astype(np.uint8),
            "findings": findings}


def synthetic_cxr_arrays(num_images: int = 16, image_size: int = 128, seed: int = 0) -> dict:
    """Raw arrays of the CXR-like set: ``image`` uint8 (N, S, S), ``mask`` uint8 {0,1}
    (pneumothorax), ``findings`` float32 (N, 8) in :data:`SYNTHETIC_CXR_LABELS` order."""
    return _chunked(num_images, image_size, seed, _cxr_chunk)


def _resolve_labels(labels: Sequence[str]) -> list[int]:
    out = []
    for name in labels:
        key = _ALIASES.get(name, name)
        if key not in SYNTHETIC_CXR_LABELS:
            raise ValueError(f"unknown synthetic CXR label {name!r}; choose from "
                             f"{SYNTHETIC_CXR_LABELS} (or {sorted(_ALIASES)})")
        out.append(SYNTHETIC_CXR_LABELS.index(key))
    return out


def make_synthetic_cxr(num_images: int = 1000, image_size: int = 128, seed: int = 0,
                       labels: Sequence[str] = SYNTHETIC_CXR_LABELS,
                       splits: Mapping[str, float] | None = None) -> DatasetDict:
    """NIH/CheXpert-like multi-label DatasetDict with columns ``image``, ``labels``
    (``List(float32)`` in the order of ``labels``), ``mask`` (pneumothorax pixels), ``label``
    (ClassLabel absent/present for the pneumothorax) and ``image_id``. See the module docstring
    for each finding's appearance."""
    index = _resolve_labels(labels)
    arr = synthetic_cxr_arrays(num_images, image_size, seed)
    ptx = SYNTHETIC_CXR_LABELS.index("Pneumothorax")
    features = Features({"image": datasets.Image(mode="L"), "labels": List(Value("float32")),
                         "mask": datasets.Image(), "label": ClassLabel(names=["absent", "present"]),
                         "image_id": Value("string")})
    columns = {"image": [_png(x) for x in arr["image"]],
               "labels": arr["findings"][:, index].tolist(),
               "mask": [_png(x) for x in arr["mask"]],
               "label": arr["findings"][:, ptx].astype(np.int64).tolist(),
               "image_id": [f"synthetic_cxr-{seed}-{i:06d}" for i in range(num_images)]}
    info = {"dataset": "synthetic_cxr", "seed": seed, "image_size": image_size,
            "num_images": num_images, "labels": list(labels), "splits": dict(splits or DEFAULT_SPLITS),
            "description": "Synthetic chest-X-ray-like multi-label set; labels order: " + ", ".join(labels)}
    return _to_dataset_dict(columns, features, num_images, splits, info)


# ============================================================================ example grid and CLI


def _caption(row: Mapping, features) -> str:
    if "labels" in row:
        names = features.get("_label_names") or []
        on = [names[i] if i < len(names) else str(i) for i, v in enumerate(row["labels"]) if v]
        return ", ".join(on) or "no finding"
    if "label" in row:
        return features["label"].int2str(row["label"])
    return ""


def save_example_grid(dataset, path, num_examples: int = 16, columns: int = 4,
                      label_names: Sequence[str] | None = None) -> None:
    """Save a PNG grid of the first ``num_examples`` images of ``dataset`` (a Dataset, or a
    DatasetDict whose first split is used), with the mask outlined in red and the class or the
    positive findings as caption. Works for the real loaders' datasets too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(dataset, Mapping):
        dataset = dataset[next(iter(dataset))]
    n = min(num_examples, len(dataset))
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    features = dict(dataset.features)
    if label_names is None and "labels" in features:
        desc = dataset.info.description or ""
        label_names = desc.split("labels order: ")[-1].split(", ") if "labels order: " in desc else None
    features["_label_names"] = list(label_names or [])
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        row = dataset[i]
        ax = axes.ravel()[i]
        ax.imshow(np.asarray(row["image"].convert("L")), cmap="gray", vmin=0, vmax=255)
        if "mask" in row and row["mask"] is not None:
            m = np.asarray(row["mask"])
            if m.any():
                ax.contour(m, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(_caption(row, features), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medmae.training.synthetic --kind {ultrasound,cxr} --out grid.png``: generate a
    set, print its generation time, and save a grid of examples."""
    parser = argparse.ArgumentParser(prog="python -m medmae.training.synthetic",
                                     description=main.__doc__)
    parser.add_argument("--kind", choices=["ultrasound", "cxr"], default="ultrasound")
    parser.add_argument("--out", default="synthetic_examples.png", help="PNG file to write")
    parser.add_argument("--num-images", type=int, default=16, help="images to generate")
    parser.add_argument("--num-examples", type=int, default=16, help="images shown in the grid")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make = make_synthetic_ultrasound if args.kind == "ultrasound" else make_synthetic_cxr
    start = time.perf_counter()
    dd = make(num_images=args.num_images, image_size=args.image_size, seed=args.seed,
              splits={"train": 1.0})
    seconds = time.perf_counter() - start
    print(f"generated {args.num_images} {args.kind} images of {args.image_size} px in {seconds:.2f} s")
    save_example_grid(dd["train"], args.out, num_examples=args.num_examples)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
