"""Cutting a face out of a frame with the margin the mask classifier was trained with."""

from __future__ import annotations

import numpy as np

#: Context kept around a detected face box, as a fraction of the box size on each side.
#: Training crops use the same value, so keep them in step (see models/MODEL_CARD.md).
TRAINING_MARGIN = 0.15


def expand_box(box: tuple[int, int, int, int], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Grow ``box`` (x, y, w, h) by ``margin`` of its size on each side and clip it to a width x height frame."""
    x, y, w, h = box
    dx, dy = round(w * margin), round(h * margin)
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return x0, y0, x1 - x0, y1 - y0


def crop_face(frame_bgr: np.ndarray, box: tuple[int, int, int, int], margin: float = TRAINING_MARGIN) -> np.ndarray:
    """Return the face region of ``frame_bgr`` with ``margin`` of context, clipped to the frame.

    :param frame_bgr: an (H, W, 3) ``uint8`` frame.
    :param box: the face box (x, y, w, h) in frame pixels.
    :param margin: context on each side as a fraction of the box size (0 or more).
    :raises ValueError: the margin is negative or the box lies outside the frame or is empty.
    """
    if margin < 0:
        raise ValueError(f"margin must be 0 or more, got {margin}")
    height, width = frame_bgr.shape[:2]
    x, y, w, h = expand_box(box, margin, width, height)
    if w <= 0 or h <= 0:
        raise ValueError(f"face box {box} is empty or outside the {width}x{height} frame")
    return frame_bgr[y : y + h, x : x + w]
