"""JPEG snapshots: size-capped encoding, face crops, privacy blur."""

from __future__ import annotations

import cv2
import numpy as np

from edge.vision.crop import expand_box
from shared.errors import SnapshotError

Box = tuple[int, int, int, int]


def encode_jpeg(image: np.ndarray, max_bytes: int, quality: int = 85) -> bytes:
    """JPEG bytes of ``image`` no larger than ``max_bytes``: lower quality, then scale down, until it fits.

    :raises SnapshotError: even a tiny version does not fit.
    """
    q = quality
    img = image
    while True:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok and len(buf) <= max_bytes:
            return buf.tobytes()
        if q > 40:
            q -= 15
        elif min(img.shape[:2]) > 32:
            img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        else:
            raise SnapshotError(f"cannot fit a JPEG of {image.shape[1]}x{image.shape[0]} in {max_bytes} bytes")


def blur_box(image: np.ndarray, box: Box) -> np.ndarray:
    """A copy of ``image`` with ``box`` pixelated beyond recognition."""
    out = image.copy()
    x, y, w, h = box
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(out.shape[1], x + w), min(out.shape[0], y + h)
    if x1 > x0 and y1 > y0:
        region = out[y0:y1, x0:x1]
        small = cv2.resize(region, (max(1, (x1 - x0) // 12), max(1, (y1 - y0) // 12)), interpolation=cv2.INTER_AREA)
        out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    return out


def face_snapshot(
    frame: np.ndarray, box: Box, *, blur: bool, whole_frame: bool, max_bytes: int, quality: int = 85
) -> bytes:
    """The JPEG published with a no-mask event: the face with some context (or the frame), maybe blurred."""
    image = blur_box(frame, box) if blur else frame
    if not whole_frame:
        x, y, w, h = expand_box(box, 0.3, frame.shape[1], frame.shape[0])
        image = image[y : y + h, x : x + w]
    return encode_jpeg(image, max_bytes, quality)
