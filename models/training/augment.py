"""The seed's augmentation recipe (Keras ImageDataGenerator settings) as one random affine warp per image, plus a
low-resolution step that makes large, sharp web faces look like the small faces of a camera frame."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random transform: rotation (degrees), zoom, width/height shift (fractions), shear (radians).

    ``low_res`` is the share of images that are then shrunk to a random face size in ``low_res_px`` (shorter
    side, pixels), JPEG-compressed at that size with a quality in ``jpeg_quality``, enlarged back the way the
    edge enlarges a small crop (linear) and blurred with a Gaussian of sigma up to ``blur_sigma`` pixels.
    """

    rotation_deg: float = 20.0
    zoom: float = 0.15
    shift: float = 0.2
    shear: float = 0.15
    horizontal_flip: bool = True
    low_res: float = 0.0
    low_res_px: tuple[int, int] = (16, 64)
    jpeg_quality: tuple[int, int] = (30, 95)
    blur_sigma: float = 1.0

    def matrix(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A random 2x3 affine matrix for a size x size image, about its centre."""
        angle = np.deg2rad(rng.uniform(-self.rotation_deg, self.rotation_deg))
        zoom_x, zoom_y = rng.uniform(1 - self.zoom, 1 + self.zoom, size=2)
        shear = rng.uniform(-self.shear, self.shear)
        shift_x, shift_y = rng.uniform(-self.shift, self.shift, size=2) * size
        flip = -1.0 if self.horizontal_flip and rng.random() < 0.5 else 1.0
        rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        linear = rotate @ np.array([[1.0, -np.sin(shear)], [0.0, np.cos(shear)]]) @ np.diag([flip / zoom_x, 1 / zoom_y])
        centre = np.array([size / 2, size / 2])
        offset = centre - linear @ centre + np.array([shift_x, shift_y])
        return np.hstack([linear, offset[:, None]]).astype(np.float32)

    def degrade(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A square RGB image as a small, compressed, slightly blurred face enlarged back to its size."""
        size = image.shape[0]
        small = min(size, int(rng.integers(self.low_res_px[0], self.low_res_px[1] + 1)))
        quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        sigma = rng.uniform(0.0, self.blur_sigma)
        shrunk = cv2.resize(image, (small, small), interpolation=cv2.INTER_AREA)
        _, encoded = cv2.imencode(".jpg", shrunk[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        assert decoded is not None  # OpenCV decodes the JPEG it just encoded
        out = cv2.resize(decoded[:, :, ::-1], (size, size), interpolation=cv2.INTER_LINEAR)
        return cv2.GaussianBlur(out, (0, 0), sigma) if sigma > 0.1 else out

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Randomly transformed copies of a batch (n, S, S, 3) uint8; borders are filled by nearest pixels."""
        size = images.shape[1]
        out = np.empty_like(images)
        for i, image in enumerate(images):
            out[i] = cv2.warpAffine(
                image, self.matrix(rng, size), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            if self.low_res and rng.random() < self.low_res:
                out[i] = self.degrade(out[i], rng)
        return out
