"""Labelled scene photos (PASCAL VOC face boxes) and matching detections to them."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import DatasetError

log = logging.getLogger(__name__)

#: VOC class names and whether the face counts as "no mask" (an incorrectly worn mask does).
SCENE_CLASSES = {"with_mask": False, "without_mask": True, "mask_weared_incorrect": True}


@dataclass(frozen=True)
class LabelledFace:
    """A labelled face box (x, y, w, h) and its VOC class."""

    box: tuple[int, int, int, int]
    label: str

    @property
    def no_mask(self) -> bool:
        return SCENE_CLASSES[self.label]

    @property
    def size(self) -> int:
        """The shorter side in pixels."""
        return min(self.box[2], self.box[3])


@dataclass(frozen=True)
class Scene:
    """One photo and its labelled faces."""

    image: Path
    faces: tuple[LabelledFace, ...]


def read_annotation(path: Path, width: int | None = None, height: int | None = None) -> list[LabelledFace]:
    """Labelled faces of one VOC XML file, boxes clipped to the image size it declares.

    :raises DatasetError: the file is not valid VOC XML or names an unknown class.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable PASCAL VOC file ({exc})") from exc
    size = root.find("size")
    if size is not None and width is None:
        width, height = int(size.findtext("width", "0")), int(size.findtext("height", "0"))
    faces = []
    for obj in root.iter("object"):
        label = (obj.findtext("name") or "").strip()
        if label not in SCENE_CLASSES:
            raise DatasetError(f"{path}: unknown class {label!r}, expected one of {sorted(SCENE_CLASSES)}")
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError(f"{path}: object without <bndbox>")
        x0, y0, x1, y1 = (round(float(bb.findtext(k, "0"))) for k in ("xmin", "ymin", "xmax", "ymax"))
        if width and height:
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        if x1 > x0 and y1 > y0:
            faces.append(LabelledFace((x0, y0, x1 - x0, y1 - y0), label))
    return faces


def load_scenes(folder: Path) -> list[Scene]:
    """Scenes of a folder holding ``images/`` and ``annotations/`` (one VOC XML per image, same stem).

    :raises DatasetError: a subfolder is missing or holds no annotated image.
    """
    images, annotations = folder / "images", folder / "annotations"
    for sub in (images, annotations):
        if not sub.is_dir():
            raise DatasetError(f"{folder}: expected subfolders images/ and annotations/ ({sub.name}/ is missing)")
    scenes = []
    for xml in sorted(annotations.glob("*.xml")):
        candidates = [p for p in images.glob(xml.stem + ".*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}]
        if not candidates:
            log.warning("%s: no image for this annotation; skipped", xml)
            continue
        scenes.append(Scene(candidates[0], tuple(read_annotation(xml))))
    if not scenes:
        raise DatasetError(f"{folder}: no annotated images found")
    return scenes


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (n, 4) with every box in ``b`` (m, 4); boxes are x, y, w, h."""
    a = a.astype(np.float64)[:, None, :]
    b = b.astype(np.float64)[None, :, :]
    ix = np.clip(np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ix * iy
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return inter / np.maximum(union, 1e-9)


def match(
    labelled: list[tuple[int, int, int, int]], detected: list[tuple[int, int, int, int]], min_iou: float = 0.3
) -> dict[int, int]:
    """Greedy one-to-one matching by IoU: {labelled index: detected index} for pairs with IoU >= ``min_iou``."""
    if not labelled or not detected:
        return {}
    ious = iou_matrix(np.array(labelled), np.array(detected))
    pairs = sorted(((ious[i, j], i, j) for i, j in zip(*np.nonzero(ious >= min_iou), strict=True)), reverse=True)
    matched: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in pairs:
        if i not in matched and j not in used:
            matched[int(i)] = int(j)
            used.add(int(j))
    return matched
