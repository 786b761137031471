"""Face detectors behind one interface: MediaPipe BlazeFace (LiteRT) and OpenCV's res10 SSD.

Each detector runs one or more *passes* of a single-shot network: the whole frame, then optionally the frame
cut into overlapping tiles (each tile is scaled up to the network input, so small faces get more pixels).
Detections of all passes are merged by weighted non-maximum suppression. A tiled operating point runs its
passes concurrently, one per CPU thread, each on its own copy of the networks (:class:`MultiPassDetector`).

Two operating points: ``near`` (entrance cameras, faces of 48 px and more, one pass, speed first) and
``crowd`` (small faces in scenes, several passes, recall first).

Example::

    detector = create_detector("near")
    for face in detector.detect(frame_bgr):
        print(face.box, face.score)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal, Protocol

import cv2
import numpy as np

from edge.vision.lanes import Lanes
from edge.vision.litert import load_interpreter
from edge.vision.model_store import ensure_model
from shared.errors import ModelError
from shared.vocabulary import Profile

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("blazeface", "res10")
#: The BlazeFace ranges (:class:`BlazeFaceNet`).
BlazeFaceVariant = Literal["short", "full"]
#: The network a detector pass runs: OpenCV's res10 SSD or a BlazeFace range.
Variant = Literal["res10", BlazeFaceVariant]


@dataclass(frozen=True)
class Face:
    """A detected face: ``box`` (x, y, w, h) in frame pixels and the detector's confidence 0..1."""

    box: tuple[int, int, int, int]
    score: float


class FaceDetector(Protocol):
    """Anything that finds faces in a BGR frame."""

    name: str

    def detect(self, frame_bgr: np.ndarray) -> list[Face]: ...


#: One network pass: takes a BGR image, returns (boxes (n, 4) as x0, y0, x1, y1 in image pixels, scores (n,)).
Network = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Settings:
    """How a detector runs: its passes (network variant, tile grid), score threshold, NMS overlap, smallest face.

    A grid of n cuts the frame into n x n overlapping tiles, each scaled to the network input (1 = whole frame).
    """

    passes: tuple[tuple[Variant, int], ...]
    threshold: float
    nms_iou: float = 0.3
    #: a box that a stronger kept box covers by at least this share of its own area is dropped as a duplicate
    #: (1.0: only boxes wholly inside another; above 1: none); see :func:`weighted_nms`
    nms_cover: float = 1.0
    tile_overlap: float = 0.3
    min_face_px: int = 0
    verify_below: float = 0.0
    verify_with: Variant = "short"
    verify_context: float = 1.0


def ssd_anchors(input_size: int, strides: tuple[int, ...], per_cell: tuple[int, ...]) -> np.ndarray:
    """Anchor centres (n, 2) normalised to 0..1, as MediaPipe's SsdAnchorsCalculator lays them out."""
    anchors = []
    for stride, count in zip(strides, per_cell, strict=True):
        cells = input_size // stride
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        grid_y, grid_x = np.meshgrid(centres, centres, indexing="ij")
        layer = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
        anchors.append(np.repeat(layer, count, axis=0))
    return np.concatenate(anchors).astype(np.float32)


class BlazeFaceNet:
    """One pass of MediaPipe BlazeFace (``short`` 128x128 or ``full`` range 192x192) on LiteRT.

    The image is letterboxed into the square input (scaled, padded right and bottom), boxes are decoded
    from the SSD anchors and mapped back to image pixels.
    """

    #: Boxes are moved down by this share of their height: BlazeFace's boxes sit higher on the face than
    #: labelled face boxes (median 6 % of the height over the 721 faces of 24 px and more it finds in
    #: ../shared/datasets/face-mask-scenes), so crops, matching and tracking use the usual face box.
    DOWN_SHIFT = 0.06
    LAYOUTS = {  # variant: (model file, input size, strides, anchors per cell)
        "short": ("face_detection_short_range.tflite", 128, (8, 16), (2, 6)),
        "full": ("face_detection_full_range.tflite", 192, (4,), (1,)),
    }

    def __init__(self, variant: BlazeFaceVariant = "full", num_threads: int = 2, min_score: float = 0.1) -> None:
        if variant not in self.LAYOUTS:
            raise ModelError(f"BlazeFace variant must be one of {sorted(self.LAYOUTS)}, got {variant!r}")
        filename, self.size, strides, per_cell = self.LAYOUTS[variant]
        self.variant = variant
        self.min_score = min_score
        self._interpreter = load_interpreter(ensure_model(filename), num_threads)
        self._anchors = ssd_anchors(self.size, strides, per_cell)
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: d["shape"][-1])
        self._scores, self._boxes = outputs[0]["index"], outputs[1]["index"]
        self._tensor = np.zeros((1, self.size, self.size, 3), np.float32)

    def _run(self, image_bgr: np.ndarray) -> float:
        """Letterbox the image into the input and run the network; return the scale from image to input pixels."""
        height, width = image_bgr.shape[:2]
        scale = self.size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=interpolation)
        self._tensor.fill(0.0)
        self._tensor[0, :new_h, :new_w] = resized[:, :, ::-1] * np.float32(1 / 127.5) - 1.0
        self._interpreter.set_tensor(self._input, self._tensor)
        self._interpreter.invoke()
        return scale

    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scale = self._run(image_bgr)
        logits = self._interpreter.get_tensor(self._scores).reshape(-1)
        keep = logits > np.log(self.min_score / (1 - self.min_score))
        if not keep.any():
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        raw = self._interpreter.get_tensor(self._boxes)[0, keep, :4] / self.size
        centre = raw[:, :2] + self._anchors[keep]
        centre[:, 1] += self.DOWN_SHIFT * raw[:, 3]
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1) * (self.size / scale)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -80, 80)))
        return boxes.astype(np.float32), scores.astype(np.float32)


class Res10Net:
    """One pass of OpenCV's res10 300x300 SSD face detector (Caffe, run by ``cv2.dnn``)."""

    def __init__(self, num_threads: int = 2, min_score: float = 0.1) -> None:
        prototxt = ensure_model("res10_deploy.prototxt")
        weights = ensure_model("res10_300x300_ssd_iter_140000.caffemodel")
        try:
            self._net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
        except cv2.error as exc:
            raise ModelError(f"cannot load res10 SSD from {weights}: {exc}") from exc
        cv2.setNumThreads(num_threads)
        self.min_score = min_score

    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = image_bgr.shape[:2]
        blob = cv2.dnn.blobFromImage(cv2.resize(image_bgr, (300, 300)), 1.0, (300, 300), (104.0, 177.0, 123.0))
        self._net.setInput(blob)
        out = self._net.forward()[0, 0]
        out = out[out[:, 2] > self.min_score]
        boxes = out[:, 3:7] * np.array([width, height, width, height], np.float32)
        return boxes.astype(np.float32), out[:, 2].astype(np.float32)


def tiles(width: int, height: int, grid: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Overlapping tiles (x0, y0, x1, y1) covering a frame in a ``grid`` x ``grid`` layout."""
    if grid == 1:
        return [(0, 0, width, height)]
    spans = []
    for length in (width, height):
        size = length / (grid - (grid - 1) * overlap)
        step = size * (1 - overlap)
        spans.append([(round(i * step), min(length, round(i * step + size))) for i in range(grid)])
    return [(x0, y0, x1, y1) for (y0, y1) in spans[1] for (x0, x1) in spans[0]]


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, iou: float, cover: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Merge overlapping boxes: each kept box is the score-weighted mean of the boxes it suppresses (IoU >=
    ``iou``); a weaker box that a kept box covers by ``cover`` or more of its own area is dropped, not merged.

    Tiles and the two BlazeFace ranges find one face at several sizes; the inner and outer boxes of one face have a
    low IoU but one covers most of the other. Kept, each became its own decision (scene photos, crowd: a third of
    the false no-mask alerts were such duplicates, models/MODEL_CARD.md).
    """
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    areas = np.maximum(0, boxes[:, 2] - boxes[:, 0]) * np.maximum(0, boxes[:, 3] - boxes[:, 1])
    alive = np.ones(len(boxes), bool)
    kept_boxes, kept_scores = [], []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        x0 = np.maximum(boxes[i, 0], boxes[:, 0])
        y0 = np.maximum(boxes[i, 1], boxes[:, 1])
        x1 = np.minimum(boxes[i, 2], boxes[:, 2])
        y1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.maximum(0, x1 - x0) * np.maximum(0, y1 - y0)
        overlap = inter / np.maximum(areas[i] + areas - inter, 1e-6)
        covered = inter / np.maximum(np.minimum(areas[i], areas), 1e-6)
        group = alive & (overlap >= iou)
        alive &= ~(group | (covered >= cover))
        weights = scores[group]
        kept_boxes.append((boxes[group] * weights[:, None]).sum(axis=0) / weights.sum())
        kept_scores.append(scores[i])
    if not kept_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    return np.array(kept_boxes, np.float32), np.array(kept_scores, np.float32)


class MultiPassDetector:
    """Runs single-shot networks over the frame and its tiles, and merges what the passes found.

    With more than one lane, the passes run concurrently, one per lane (:class:`~edge.vision.lanes.Lanes`):
    tiled operating points run many small inferences, which one network spreading over two threads uses poorly.
    The detections and their order are those of a single lane. :meth:`detect` is not meant to be called from
    several threads at once.

    :param name: detector name shown in events and reports (e.g. ``blazeface/crowd``).
    :param lanes: one or more sets of single-pass networks by variant name (see :data:`Network`), each set
        holding its own copies (a network runs one image at a time).
    :param settings: passes, threshold, NMS overlap and smallest face kept.
    """

    def __init__(self, name: str, lanes: Sequence[dict[str, Network]], settings: Settings) -> None:
        if not lanes:
            raise ModelError("a detector needs at least one set of networks")
        missing = {variant for variant, _ in settings.passes for lane in lanes if variant not in lane}
        if missing:
            raise ModelError(f"no network for passes {sorted(missing)}")
        self.name = name
        self.lanes = Lanes(lanes, f"detector-{name}")
        self.settings = settings

    def detect(self, frame_bgr: np.ndarray) -> list[Face]:
        """Faces in ``frame_bgr`` (BGR uint8, H x W x 3), best first."""
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.size == 0:
            raise ValueError(f"expected a BGR frame of shape (H, W, 3), got {frame_bgr.shape}")
        height, width = frame_bgr.shape[:2]
        jobs = [
            (variant, tile)
            for variant, grid in self.settings.passes
            for tile in tiles(width, height, grid, self.settings.tile_overlap)
        ]
        found = self.lanes.map(partial(_run_pass, frame_bgr), jobs)
        found_boxes, found_scores = [], []
        for (_, (x0, y0, _, _)), (boxes, scores) in zip(jobs, found, strict=True):
            keep = scores >= self.settings.threshold
            found_boxes.append(boxes[keep] + np.array([x0, y0, x0, y0], np.float32))
            found_scores.append(scores[keep])
        boxes, scores = weighted_nms(
            np.concatenate(found_boxes), np.concatenate(found_scores), self.settings.nms_iou, self.settings.nms_cover
        )
        if self.settings.verify_below > 0:
            boxes, scores = self._verified(frame_bgr, boxes, scores)
        faces = []
        for (bx0, by0, bx1, by1), score in zip(boxes, scores, strict=True):
            x0, y0 = max(0, round(bx0)), max(0, round(by0))
            x1, y1 = min(width, round(bx1)), min(height, round(by1))
            if min(x1 - x0, y1 - y0) >= max(1, self.settings.min_face_px):
                faces.append(Face((x0, y0, x1 - x0, y1 - y0), float(score)))
        return faces

    def _verified(self, frame_bgr: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keep weak detections only if a second network confirms a face in a zoomed-in window around them."""
        keep = scores >= self.settings.verify_below
        network = self.lanes.copies[0][self.settings.verify_with]
        height, width = frame_bgr.shape[:2]
        for i in np.nonzero(~keep)[0]:
            x0, y0, x1, y1 = boxes[i]
            pad = self.settings.verify_context * max(x1 - x0, y1 - y0)
            wx0, wy0 = max(0, round(x0 - pad)), max(0, round(y0 - pad))
            wx1, wy1 = min(width, round(x1 + pad)), min(height, round(y1 + pad))
            if wx1 - wx0 < 2 or wy1 - wy0 < 2:
                continue
            found, found_scores = network(frame_bgr[wy0:wy1, wx0:wx1])
            found = found[found_scores >= self.settings.threshold] + np.array([wx0, wy0, wx0, wy0], np.float32)
            if len(found):
                inter_w = np.minimum(found[:, 2], x1) - np.maximum(found[:, 0], x0)
                inter_h = np.minimum(found[:, 3], y1) - np.maximum(found[:, 1], y0)
                keep[i] = bool(((inter_w > 0) & (inter_h > 0)).any())
        return boxes[keep], scores[keep]


def _run_pass(
    frame_bgr: np.ndarray, networks: dict[str, Network], job: tuple[str, tuple[int, int, int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """One pass of ``job``'s network over its tile of the frame: (boxes in tile pixels, scores)."""
    variant, (x0, y0, x1, y1) = job
    return networks[variant](frame_bgr[y0:y1, x0:x1])


#: BlazeFace's duplicate rule (:attr:`Settings.nms_cover`): chosen on 5-fold cross-validation of the scene photos
#: (0.5 and 0.2 measured beside it; models/MODEL_CARD.md, "Duplicate boxes").
BLAZEFACE_COVER = 0.3
#: Operating points per detector kind and profile.
SETTINGS: dict[tuple[str, Profile], Settings] = {
    # speed first: both ranges on the whole frame. 0.4 (was 0.5) finds 72 % of the scene faces >= 24 px instead of
    # 62.5 %; the weak boxes it adds are kept from alerting by the no-mask detector score (models/MODEL_CARD.md,
    # "Operating points").
    ("blazeface", Profile.NEAR): Settings(passes=(("full", 1), ("short", 1)), threshold=0.4, nms_cover=BLAZEFACE_COVER),
    # recall first: both ranges on the whole frame and on 2x2 tiles, the short range on 3x3 tiles, lower threshold.
    # The full range on 3x3 tiles cost 40 % of the detector's time and, once no-mask verdicts needed a strong
    # detection, added no alert precision at the recall targets (cross-validated, models/MODEL_CARD.md). Short
    # range only at 0.35 (half the cost) lost alert precision: 0.37 against 0.69 before that rule existed.
    ("blazeface", Profile.CROWD): Settings(
        passes=(("full", 1), ("short", 1), ("full", 2), ("short", 2), ("short", 3)),
        threshold=0.35,
        nms_cover=BLAZEFACE_COVER,
    ),
    ("res10", Profile.NEAR): Settings(passes=(("res10", 1),), threshold=0.5),
    ("res10", Profile.CROWD): Settings(passes=(("res10", 1), ("res10", 2)), threshold=0.3),
}


def create_detector(
    profile: Profile | str = Profile.NEAR,
    kind: str | None = None,
    num_threads: int = 2,
    threshold: float | None = None,
    settings: Settings | None = None,
) -> FaceDetector:
    """Build the face detector for an operating point, fetching its model files on first use.

    :param profile: ``near`` (faces of 48 px and more, speed first) or ``crowd`` (small faces, recall first).
    :param kind: ``blazeface`` (default) or ``res10``.
    :param num_threads: CPU threads for the network.
    :param threshold: detector score threshold instead of the operating point's.
    :param settings: passes and thresholds instead of the operating point's (``threshold`` still wins).
    :raises ModelError: unknown kind/profile, or model files missing and not fetchable.
    """
    kind = kind or "blazeface"
    try:
        profile = Profile(profile)
    except ValueError:
        raise ModelError(f"profile must be one of {', '.join(Profile)}, got {profile!r}") from None
    if kind not in KINDS:
        raise ModelError(f"detector kind must be one of {', '.join(KINDS)}, got {kind!r}")
    settings = settings or SETTINGS[(kind, profile)]
    if threshold is not None:
        settings = replace(settings, threshold=threshold)
    # tiled passes are many small inferences: one lane per thread; a whole-frame point: one lane using every thread
    # (res10's thread count is OpenCV's global setting, not its network's: one lane)
    tiled = any(grid > 1 for _, grid in settings.passes)
    lane_count = num_threads if tiled and kind == "blazeface" else 1
    lanes = [_networks(settings, num_threads // lane_count) for _ in range(lane_count)]
    return MultiPassDetector(f"{kind}/{profile}", lanes, settings)


def _networks(settings: Settings, num_threads: int) -> dict[str, Network]:
    """One copy of each network the passes of ``settings`` run."""
    networks: dict[str, Network] = {}
    for variant in sorted({variant for variant, _ in settings.passes}):
        if variant == "res10":
            networks[variant] = Res10Net(num_threads, min_score=settings.threshold)
        else:
            networks[variant] = BlazeFaceNet(variant, num_threads, min_score=settings.threshold)
    return networks
