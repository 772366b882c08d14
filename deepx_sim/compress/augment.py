"""Augmented digits: seeded small distortions of scikit-learn's 8x8 images, split by source image.

scikit-learn's digits has 1,797 images, so a held-apart test split holds a few
hundred rows and an accuracy loss measured on it has a standard error of about
a point.  Without network access no larger digit set can be fetched, so each
source image is distorted into many variants (Simard et al. 2003, "Best
practices for convolutional neural networks applied to visual document
analysis", ICDAR: affine plus elastic distortions):

- an affine map about the image centre: rotation uniform in +-ROTATION_DEG,
  scale uniform in 1 +- SCALE, shift uniform in +-SHIFT_PX per axis;
- an elastic displacement field: i.i.d. uniform(-1, 1) per pixel and axis,
  smoothed by a Gaussian of ELASTIC_SIGMA_PX pixels, times ELASTIC_ALPHA;
- bilinear resampling, pixels outside the image read 0; values stay in [0, 1].

Variant 0 of every image is the image itself.  The split is made on source
images (the stratified split ``digits()`` uses), before any distortion, so all
variants of one image fall in the same split: no test image is a distortion of
a training image.  Variants are drawn from one generator per split, seeded by
(seed, split), in image order: the same seed gives the same arrays.  Rows of
one source image are correlated; ``groups`` names each row's source image so
that standard errors can be taken over images (cluster-robust).
"""

from __future__ import annotations

import numpy as np

#: Distortion sizes for 8x8 images (Simard et al. use rotations and elastic fields of
#: a few pixels on 28x28 MNIST; these are scaled down to the 8x8 grid).
ROTATION_DEG = 12.0
SCALE = 0.1
SHIFT_PX = 0.75
ELASTIC_SIGMA_PX = 1.5
ELASTIC_ALPHA = 4.0
#: Variants per source image: training images (incl. the original), test images.
TRAIN_VARIANTS = 10
TEST_VARIANTS = 32
_SPLIT_TAGS = {"train": 0, "test": 1}


def distort(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random affine-plus-elastic distortion of each (H, W) image in ``images`` (N, H, W)."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    n, h, w = images.shape
    angle = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG, n))
    scale = 1 + rng.uniform(-SCALE, SCALE, n)
    shift = rng.uniform(-SHIFT_PX, SHIFT_PX, (n, 2))
    field = rng.uniform(-1, 1, (2, n, h, w))
    field = ELASTIC_ALPHA * gaussian_filter(field, sigma=(0, 0, ELASTIC_SIGMA_PX, ELASTIC_SIGMA_PX),
                                            mode="constant")
    rows, cols = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    cos, sin = (np.cos(angle) / scale)[:, None, None], (np.sin(angle) / scale)[:, None, None]
    # the output pixel (r, c) reads the input at the inverse map of (r, c)
    src_r = cos * rows - sin * cols + (h - 1) / 2 + shift[:, 0, None, None] + field[0]
    src_c = sin * rows + cos * cols + (w - 1) / 2 + shift[:, 1, None, None] + field[1]
    index = np.broadcast_to(np.arange(n)[:, None, None], (n, h, w))
    out = map_coordinates(images, [index, src_r, src_c], order=1, mode="constant", cval=0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def variants(images: np.ndarray, count: int, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(``count`` variants of each image, (N * count, H, W) image-major; the source image
    index of each row).  Variant 0 is the image itself."""
    if count < 1:
        raise ValueError(f"variants per image must be >= 1, got {count}")
    rng = np.random.default_rng([seed, _SPLIT_TAGS[split]])
    images = images.astype(np.float32)
    stack = [images] + [distort(images, rng) for _ in range(count - 1)]
    out = np.stack(stack, axis=1).reshape(-1, *images.shape[1:])
    return out, np.repeat(np.arange(len(images)), count)
