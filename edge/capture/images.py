"""Reading image files into OpenCV BGR frames, whatever their format (JPEG, PNG with alpha or palette, WebP)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from shared.errors import ImageReadError

#: File name endings treated as images when a folder is scanned.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to a BGR ``uint8`` array of shape (H, W, 3).

    Alpha is composited over white, grey and palette images become BGR, 16-bit images are scaled to 8 bits.

    :raises ImageReadError: the bytes are not a decodable image.
    """
    if not data:
        raise ImageReadError(f"{name}: file is empty")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageReadError(f"{name}: not a readable image (corrupt or unsupported format)")
    if image.dtype == np.uint16:
        image = np.right_shift(image, 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError(f"{name}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        blended = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image[:, :, :3])


def read_image(path: Path | str) -> np.ndarray:
    """Read an image file to a BGR ``uint8`` array of shape (H, W, 3).

    :raises ImageReadError: the file is missing, empty or not a readable image.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return decode_image(data, str(path))


def list_images(folder: Path | str) -> list[Path]:
    """Image files directly in ``folder`` (by suffix), sorted by name.

    :raises ImageReadError: the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
