"""Training crops: face-mask images cut by the edge's detector, the labelled faces of scene photos and, for the
third class ``not_face``, what the detector finds in the scene photos that is no labelled face plus background
patches.

Every crop carries a group: near-duplicate images (perceptual hash with mirroring) and photos of the same
person share one, and so do all faces of one scene photo, so a validation split never sees a relative of a
training image.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edge.capture.images import list_images, read_image
from edge.vision.crop import TRAINING_MARGIN, crop_face
from edge.vision.detector import FaceDetector
from models.scenes import iou_matrix, load_scenes, match
from shared.errors import DatasetError, ImageReadError

log = logging.getLogger(__name__)

#: Class folders of a face-mask data set and their label (1 = no mask).
CLASS_FOLDERS = {"with_mask": 0, "without_mask": 1}
#: Label of the third class: a detection that matches no labelled face, or a background patch.
NOT_FACE = 2
#: A detection is a hard negative when its IoU with every labelled face stays under this (the scoring's match).
NEGATIVE_MAX_IOU = 0.3
#: Background patches cut per scene photo for ``not_face`` (boxes touching no labelled face).
BACKGROUND_PER_PHOTO = 3
#: Hamming distance of 64-bit dHashes under which two images count as near duplicates.
NEAR_DUPLICATE_BITS = 4
#: Scene faces smaller than this (shorter side, px) are too small to teach anything and are left out.
MIN_SCENE_FACE_PX = 8
_RMFD_NAME = re.compile(r"^\d+_\d+_(.+)_\d+\.\w+$")


@dataclass
class Crops:
    """Face crops resized to the model input, with labels, groups and where each came from."""

    images: np.ndarray  # (n, S, S, 3) uint8 RGB
    labels: np.ndarray  # (n,) 0 mask, 1 no mask, 2 not a face
    groups: list[str]
    sources: list[str]  # "face-mask" or "scenes"
    stats: dict[str, int] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write the crops to an ``.npz`` file (folders are created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part.npz")
        np.savez(
            partial,
            images=self.images,
            labels=self.labels,
            groups=np.array(self.groups),
            sources=np.array(self.sources),
            stats=np.array(json.dumps(self.stats)),
        )
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> Crops:
        """Crops written by :meth:`save`."""
        with np.load(path) as data:
            return cls(
                data["images"],
                data["labels"],
                data["groups"].tolist(),
                data["sources"].tolist(),
                json.loads(str(data["stats"])),
            )

    def subset(self, index: np.ndarray) -> Crops:
        return Crops(
            self.images[index],
            self.labels[index],
            [self.groups[i] for i in index],
            [self.sources[i] for i in index],
            dict(self.stats),
        )


def dhash(image_bgr: np.ndarray) -> int:
    """64-bit difference hash of an image (grey, 9x8, horizontal gradient signs)."""
    grey = cv2.cvtColor(cv2.resize(image_bgr, (9, 8), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    bits = (grey[:, 1:] > grey[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def near_duplicate_groups(hashes: list[tuple[int, int]], max_bits: int = NEAR_DUPLICATE_BITS) -> list[int]:
    """Union-find group ids for images whose dHash or mirrored dHash are within ``max_bits`` of each other.

    :param hashes: (dhash, dhash of the mirrored image) per image.
    """
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    plain = np.array([h for h, _ in hashes], np.uint64)
    mirrored = np.array([m for _, m in hashes], np.uint64)
    for i, (h, _) in enumerate(hashes):
        for other in (plain, mirrored):
            xor = np.bitwise_xor(other[i + 1 :], np.uint64(h))
            distance = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
            for j in np.nonzero(distance <= max_bits)[0] + i + 1:
                parent[root(int(j))] = root(i)
    return [root(i) for i in range(len(hashes))]


def identity_of(source_path: str) -> str | None:
    """The person's name of an RMFD-style file name (``N_N_<name>_NNNN.jpg``), else ``None``."""
    match = _RMFD_NAME.match(Path(source_path).name)
    return match.group(1).lower() if match else None


def _source_names(folder: Path) -> dict[str, str]:
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        return {}
    with manifest.open(newline="") as stream:
        return {row["file"]: row.get("source_paths", "") for row in csv.DictReader(stream)}


def resize_square(crop_bgr: np.ndarray, size: int) -> np.ndarray:
    """A crop resized to size x size RGB, the way the classifier resizes at run time."""
    shrink = crop_bgr.shape[0] > size or crop_bgr.shape[1] > size
    resized = cv2.resize(crop_bgr, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return resized[:, :, ::-1]


def face_mask_crops(
    folder: Path, size: int, detector: FaceDetector | None, limit_per_class: int | None = None
) -> Crops:
    """Crops of a folder with ``with_mask/`` and ``without_mask/`` images, cut by ``detector``.

    The largest detected face is cut with the edge's margin; when no face is found the whole image is used
    and counted in ``stats["whole_image"]``. Unreadable files are logged, counted and skipped.

    :raises DatasetError: a class folder is missing or empty.
    """
    paths: list[tuple[Path, int]] = []
    for name, label in CLASS_FOLDERS.items():
        sub = folder / name
        if not sub.is_dir():
            raise DatasetError(f"{folder}: expected subfolders with_mask/ and without_mask/ ({name}/ is missing)")
        found = list_images(sub)
        if not found:
            raise DatasetError(f"{sub}: no images (.jpg, .png, .webp)")
        paths += [(p, label) for p in found[:limit_per_class]]
    sources = _source_names(folder)
    images, labels, hashes, identities = [], [], [], []
    stats = {"images": 0, "unreadable": 0, "whole_image": 0}
    for path, label in tqdm(paths, desc="face-mask crops", unit="img", leave=False):
        try:
            frame = read_image(path)
        except ImageReadError as exc:
            log.warning("skipped: %s", exc)
            stats["unreadable"] += 1
            continue
        crop = frame
        if detector is not None:
            faces = detector.detect(frame)
            if faces:
                largest = max(faces, key=lambda f: f.box[2] * f.box[3])
                crop = crop_face(frame, largest.box, TRAINING_MARGIN)
            else:
                stats["whole_image"] += 1
        stats["images"] += 1
        images.append(resize_square(crop, size))
        labels.append(label)
        hashes.append((dhash(frame), dhash(frame[:, ::-1])))
        identities.append(identity_of(sources.get(f"{path.parent.name}/{path.name}", "")))
    near = near_duplicate_groups(hashes)
    groups = [f"person:{who}" if who else f"dup:{g}" for who, g in zip(identities, near, strict=True)]
    # an identity and a near-duplicate cluster touching it must stay together too
    merged = _merge_groups(groups, [f"dup:{g}" for g in near])
    stats["groups"] = len(set(merged))
    log.info(
        "face-mask: %d crops, %d without a detected face (whole image used), %d unreadable, %d groups",
        stats["images"],
        stats["whole_image"],
        stats["unreadable"],
        stats["groups"],
    )
    return Crops(
        np.array(images, np.uint8).reshape(-1, size, size, 3),
        np.array(labels, np.int64),
        merged,
        ["face-mask"] * len(labels),
        stats,
    )


def _merge_groups(first: list[str], second: list[str]) -> list[str]:
    """Join two groupings of the same items: items sharing a group in either end up together."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            key = parent[key]
        return key

    for a, b in zip(first, second, strict=True):
        parent[root(a)] = root(b)
    return [root(a) for a in first]


def photo_group(frame: np.ndarray) -> str:
    """The group of a scene photo: a hash of its pixels, so exact duplicate photos share it."""
    return "photo:" + hashlib.sha256(frame.tobytes()).hexdigest()[:16]


def validation_photo(group: str, seed: int, validation: float = 0.2, fold: int | None = None, folds: int = 2) -> bool:
    """Whether a scene photo group is on the validation side: with ``fold``, when it is in that
    cross-validation fold (0 .. folds - 1); without, for a ``validation`` share of the photos. Both come from
    a seeded hash of the group name, so the bench can tell which photos a model never saw.
    """
    digest = int(hashlib.sha256(f"fold:{seed}:{group}".encode()).hexdigest(), 16)
    if fold is not None:
        return digest % folds == fold
    return digest / 2**256 < validation


def background_boxes(
    faces: list[tuple[int, int, int, int]], width: int, height: int, count: int, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """Up to ``count`` square boxes of face-like sizes (8-96 px) that touch none of ``faces`` (x, y, w, h)."""
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(20 * count):
        if len(boxes) == count:
            break
        side = int(rng.integers(MIN_SCENE_FACE_PX, min(96, width, height) + 1))
        x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        if not faces or iou_matrix(np.array([(x, y, side, side)]), np.array(faces)).max() == 0:
            boxes.append((x, y, side, side))
    return boxes


def scene_crops(
    folder: Path,
    size: int,
    limit: int | None = None,
    detector: FaceDetector | None = None,
    not_face: bool = False,
    seed: int = 0,
) -> Crops:
    """Crops of every labelled face of a scenes folder (VOC), cut with the edge's margin; grouped by photo.

    An incorrectly worn mask is labelled "no mask". Faces under :data:`MIN_SCENE_FACE_PX` are left out.
    With a ``detector``, a labelled face that it finds (IoU >= 0.3) gives a second crop: the detected box, cut
    as the edge cuts it at run time (detected boxes vary more than labelled ones).
    With ``not_face``, crops labelled :data:`NOT_FACE` are added from the same photo (so they share its group
    and a cross-validation fold never trains on its held-out photos' negatives): the detector's boxes that
    overlap no labelled face by :data:`NEGATIVE_MAX_IOU` or more (hard negatives), and
    :data:`BACKGROUND_PER_PHOTO` random background patches (seeded by ``seed``).
    """
    scenes = load_scenes(folder)[:limit]
    images, labels, groups = [], [], []
    stats = {"scene_photos": 0, "scene_faces": 0, "scene_small_skipped": 0, "scene_detected_crops": 0}
    if not_face:
        stats |= {"scene_hard_negatives": 0, "scene_background": 0}
    rng = np.random.default_rng(seed)
    for scene in tqdm(scenes, desc="scene crops", unit="photo", leave=False):
        try:
            frame = read_image(scene.image)
        except ImageReadError as exc:
            log.warning("skipped: %s", exc)
            continue
        stats["scene_photos"] += 1
        group = photo_group(frame)
        kept = [face for face in scene.faces if face.size >= MIN_SCENE_FACE_PX]
        stats["scene_small_skipped"] += len(scene.faces) - len(kept)
        stats["scene_faces"] += len(kept)
        boxes = [(face.box, int(face.no_mask)) for face in kept]
        if detector is not None:
            detected = [f.box for f in detector.detect(frame)]
            pairs = match([face.box for face in kept], detected)
            boxes += [(detected[j], int(kept[i].no_mask)) for i, j in sorted(pairs.items())]
            stats["scene_detected_crops"] += len(pairs)
            if not_face:
                negatives = _hard_negatives([face.box for face in scene.faces], detected)
                boxes += [(box, NOT_FACE) for box in negatives]
                stats["scene_hard_negatives"] += len(negatives)
        if not_face:
            background = background_boxes(
                [face.box for face in scene.faces], frame.shape[1], frame.shape[0], BACKGROUND_PER_PHOTO, rng
            )
            boxes += [(box, NOT_FACE) for box in background]
            stats["scene_background"] += len(background)
        for box, label in boxes:
            images.append(resize_square(crop_face(frame, box, TRAINING_MARGIN), size))
            labels.append(label)
            groups.append(group)
    log.info(
        "scenes: %d faces from %d photos (%d faces under %d px left out), %d more crops of detected boxes, "
        "%d hard negatives, %d background patches",
        stats["scene_faces"],
        stats["scene_photos"],
        stats["scene_small_skipped"],
        MIN_SCENE_FACE_PX,
        stats["scene_detected_crops"],
        stats.get("scene_hard_negatives", 0),
        stats.get("scene_background", 0),
    )
    return Crops(
        np.array(images, np.uint8).reshape(-1, size, size, 3),
        np.array(labels, np.int64),
        groups,
        ["scenes"] * len(labels),
        stats,
    )


def _hard_negatives(
    labelled: list[tuple[int, int, int, int]], detected: list[tuple[int, int, int, int]]
) -> list[tuple[int, int, int, int]]:
    """Detected boxes of :data:`MIN_SCENE_FACE_PX` or more that overlap no labelled face enough to match it."""
    if not detected:
        return []
    sized = [box for box in detected if min(box[2], box[3]) >= MIN_SCENE_FACE_PX]
    if not labelled or not sized:
        return sized
    overlap = iou_matrix(np.array(sized), np.array(labelled)).max(axis=1)
    return [box for box, best in zip(sized, overlap, strict=True) if best < NEGATIVE_MAX_IOU]


def concat(parts: list[Crops]) -> Crops:
    """One set of crops from several."""
    stats: dict[str, int] = {}
    for part in parts:
        stats.update(part.stats)
    return Crops(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        [g for p in parts for g in p.groups],
        [s for p in parts for s in p.sources],
        stats,
    )


def group_split(crops: Crops, validation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): whole groups go to one side, about ``validation`` of each source and class.

    Groups are ordered by a seeded hash of their name, so the split depends only on the seed and the data.
    """
    if not 0 < validation < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, got {validation}")
    val_groups: set[str] = set()
    for source in sorted(set(crops.sources)):
        for label in sorted(set(crops.labels.tolist())):
            members = [
                g
                for g, s, y in zip(crops.groups, crops.sources, crops.labels, strict=True)
                if s == source and y == label
            ]
            if not members:
                continue
            counts: dict[str, int] = {}
            for g in members:
                counts[g] = counts.get(g, 0) + 1
            order = sorted(counts, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
            taken = sum(counts[g] for g in order if g in val_groups)
            for g in order:
                if taken >= validation * len(members):
                    break
                if g not in val_groups:
                    val_groups.add(g)
                    taken += counts[g]
    is_val = np.array([g in val_groups for g in crops.groups])
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


def train_validation_split(
    crops: Crops, validation: float, seed: int, fold: int | None = None, folds: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): face-mask crops as in :func:`group_split`; scene crops by photo, with
    :func:`validation_photo` (with ``fold``, cross-validation: that fold's photos are the scene validation and
    every other photo trains).

    :raises ValueError: ``fold`` is not in 0 .. folds - 1.
    """
    if fold is not None and not 0 <= fold < folds:
        raise ValueError(f"hold-out fold must be between 0 and {folds - 1}, got {fold}")
    is_val = np.zeros(len(crops.labels), bool)
    is_val[group_split(crops, validation, seed)[1]] = True
    for i, (source, group) in enumerate(zip(crops.sources, crops.groups, strict=True)):
        if source == "scenes":
            is_val[i] = validation_photo(group, seed, validation, fold, folds)
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]
