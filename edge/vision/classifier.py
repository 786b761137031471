"""The mask classifier: a MobileNetV2 exported to TFLite (uint8 RGB input, softmax [mask, no_mask, not_face])
on LiteRT.

The third class, ``not_face``, lets the classifier reject what the detector took for a face (a hand, a bag, a
poster); its complement is the *face score*. Two-class models ([mask, no_mask]) still load: their face score
is always 1.

Example::

    classifier = MaskClassifier()                 # models/mask_classifier_int8.tflite
    scores = classifier.scores([crop_face(frame, face.box)])
    label, score = decide(scores.p_no_mask[0], threshold=0.5)  # shared.vocabulary.decide
    is_face = scores.face_score[0] >= 0.5
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge.vision.lanes import Lanes
from edge.vision.litert import load_interpreter
from edge.vision.model_store import packaged_model, sha256_of
from shared.errors import ModelError

log = logging.getLogger(__name__)

#: The committed default model (int8, the edge's choice).
DEFAULT_MODEL = packaged_model("mask_classifier_int8.tflite")
#: Output indices of the classes: mask, no mask and, in three-class models, not a face.
MASK_INDEX, NO_MASK_INDEX, NOT_FACE_INDEX = 0, 1, 2
#: Output sizes the classifier accepts: [mask, no_mask] or [mask, no_mask, not_face].
CLASS_COUNTS = (2, 3)


@dataclass(frozen=True)
class CropScores:
    """Per crop: ``p_no_mask``, the probability of no mask given that it is a face (0..1), and ``face_score``,
    the probability that it is a face at all (1 - p_not_face; 1 for a two-class model)."""

    p_no_mask: np.ndarray
    face_score: np.ndarray


class Classifier(Protocol):
    """Anything that tells for BGR face crops how likely each face wears no mask and whether it is a face."""

    version: str
    #: The model file.
    path: Path

    @property
    def sha256(self) -> str | None:
        """The sha256 of the model file (64 hex digits), or ``None`` for a model that is not one file."""
        ...

    @property
    def verifies_faces(self) -> bool:
        """Whether :meth:`scores` gives a real face score (a model with a ``not_face`` class)."""
        ...

    def scores(self, crops: Sequence[np.ndarray]) -> CropScores: ...


class MaskClassifier:
    """Tells for face crops how likely the face wears no mask.

    :param model_path: a classifier ``.tflite`` (default: the committed ``models/mask_classifier_int8.tflite``).
    :param num_threads: CPU threads: the classifier holds that many copies of the model, one thread each, and runs
        crops and their mirror images side by side (:class:`~edge.vision.lanes.Lanes`; a 96 px MobileNetV2 keeps a
        second thread of one copy poorly busy). The scores are those of one copy.
    :param mirror: average each crop's probability with its mirror image's (two inferences per face). The model
        trained with horizontal flips, so both views are equally valid; averaging them removes some int8
        noise (face-mask validation: +0.3 to +0.6 point accuracy, int8; see models/MODEL_CARD.md).
    :param name: the model's name in :attr:`version` (default: the file's stem).
    :raises ModelError: the file is missing, not a TFLite model, or not a mask classifier
        (one (1, H, W, 3) image input, a two- or three-class output).
    """

    def __init__(
        self, model_path: Path | None = None, num_threads: int = 2, mirror: bool = True, *, name: str | None = None
    ) -> None:
        path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        interpreter = load_interpreter(path, 1)
        inputs = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"{path} is not a mask classifier: expected 1 input and 1 output, got {len(inputs)} and {len(outputs)}"
            )
        shape = tuple(int(v) for v in inputs[0]["shape"])
        classes = int(outputs[0]["shape"][-1])
        if len(shape) != 4 or shape[3] != 3 or classes not in CLASS_COUNTS:
            raise ModelError(
                f"{path} is not a mask classifier: input {shape} (want (1, H, W, 3)), "
                f"output {tuple(outputs[0]['shape'])} (want (1, 2) or (1, 3))"
            )
        self.path = path
        self.classes = classes
        self.mirror = mirror
        self.size = (shape[2], shape[1])
        self._in, self._out = inputs[0], outputs[0]
        copies = [interpreter, *(load_interpreter(path, 1) for _ in range(num_threads - 1))]
        self.lanes = Lanes(copies, f"classifier-{path.stem}")
        #: sha256 of the model file, 64 hex digits
        self.sha256 = sha256_of(path)
        self.version = f"{name or path.stem}@{self.sha256[:12]}"
        log.info(
            "mask classifier %s, input %dx%d %s", self.version, shape[2], shape[1], np.dtype(self._in["dtype"]).name
        )

    @property
    def verifies_faces(self) -> bool:
        """Whether the model has the ``not_face`` class (else every face score is 1 and means nothing)."""
        return self.classes == 3

    def _input_tensor(self, crop_bgr: np.ndarray) -> np.ndarray:
        if crop_bgr.ndim != 3 or crop_bgr.shape[2] != 3 or crop_bgr.size == 0:
            raise ValueError(f"expected a BGR face crop of shape (H, W, 3), got {crop_bgr.shape}")
        height, width = crop_bgr.shape[:2]
        shrink = width > self.size[0] or height > self.size[1]
        rgb = cv2.resize(crop_bgr, self.size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        rgb = rgb[None, :, :, ::-1]
        dtype = np.dtype(self._in["dtype"])
        if dtype == np.uint8:
            return np.ascontiguousarray(rgb)
        if dtype == np.float32:
            return rgb.astype(np.float32)
        raise ModelError(f"{self.path}: unsupported input type {dtype.name}")

    def _probabilities(self, interpreter: Any, tensor: np.ndarray) -> np.ndarray:
        """The model's class probabilities for one input tensor, normalised to sum to 1."""
        interpreter.set_tensor(self._in["index"], tensor)
        interpreter.invoke()
        raw = interpreter.get_tensor(self._out["index"])[0]
        scale, zero = self._out["quantization"]
        probabilities = (raw.astype(np.float32) - zero) * scale if scale else raw.astype(np.float32)
        return np.clip(probabilities, 0.0, None) / max(float(probabilities.sum()), 1e-6)

    def scores(self, crops: Sequence[np.ndarray]) -> CropScores:
        """No-mask probability and face score of each BGR face crop (see :class:`CropScores`)."""
        tensors = [self._input_tensor(crop) for crop in crops]
        if self.mirror:
            tensors = [view for tensor in tensors for view in (tensor, np.ascontiguousarray(tensor[:, :, ::-1]))]
        views = np.array(self.lanes.map(self._probabilities, tensors), np.float32)
        views = views.reshape(len(crops), 2 if self.mirror else 1, self.classes)
        probabilities = views.sum(axis=1) / views.shape[1]
        face = probabilities[:, MASK_INDEX] + probabilities[:, NO_MASK_INDEX]
        p_no_mask = probabilities[:, NO_MASK_INDEX] / np.maximum(face, 1e-6)
        face_score = np.ones(len(crops), np.float32) if self.classes == 2 else 1.0 - probabilities[:, NOT_FACE_INDEX]
        return CropScores(np.clip(p_no_mask, 0.0, 1.0), np.clip(face_score, 0.0, 1.0))

    def no_mask_probability(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Probability 0..1 that each BGR face crop shows no mask (given it is a face); shape (len(crops),)."""
        return self.scores(crops).p_no_mask
