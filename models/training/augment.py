"""The seed's augmentation recipe (Keras ImageDataGenerator settings) as one random affine warp per image."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random transform: rotation (degrees), zoom, width/height shift (fractions), shear (radians)."""

    rotation_deg: float = 20.0
    zoom: float = 0.15
    shift: float = 0.2
    shear: float = 0.15
    horizontal_flip: bool = True

    def matrix(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A random 2x3 affine matrix for a size x size image, about its centre."""
        angle = np.deg2rad(rng.uniform(-self.rotation_deg, self.rotation_deg))
        zoom_x, zoom_y = rng.uniform(1 - self.zoom, 1 + self.zoom, size=2)
        shear = rng.uniform(-self.shear, self.shear)
        shift_x, shift_y = rng.uniform(-self.shift, self.shift, size=2) * size
        flip = -1.0 if self.horizontal_flip and rng.random() < 0.5 else 1.0
        rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        linear = rotate @ np.array([[1.0, -np.sin(shear)], [0.0, np.cos(shear)]]) @ np.diag([flip / zoom_x,
                                                                                                1 / zoom_y])
        centre = np.array([size / 2, size / 2])
        offset = centre - linear @ centre + np.array([shift_x, shift_y])
        return np.hstack([linear, offset[:, None]]).astype(np.float32)

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Randomly transformed copies of a batch (n, S, S, 3) uint8; borders are filled by nearest pixels."""
        size = images.shape[1]
        out = np.empty_like(images)
        for i, image in enumerate(images):
            out[i] = cv2.warpAffine(image, self.matrix(rng, size), (size, size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
        return out
