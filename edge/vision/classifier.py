"""The mask classifier: a MobileNetV2 exported to TFLite (uint8 RGB input, softmax [mask, no_mask]) on LiteRT.

Example::

    classifier = MaskClassifier()                 # models/mask_classifier_int8.tflite
    p = classifier.no_mask_probability([crop_face(frame, face.box)])
    label, score = decide(p[0], threshold=0.5)  # shared.vocabulary.decide
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.vision.litert import load_interpreter
from edge.vision.model_store import packaged_model, sha256_of
from shared.errors import ModelError

log = logging.getLogger(__name__)

#: The committed default model (int8, the edge's choice).
DEFAULT_MODEL = packaged_model("mask_classifier_int8.tflite")
#: Output index of the "no mask" class.
NO_MASK_INDEX = 1


class Classifier(Protocol):
    """Anything that tells for BGR face crops how likely each face wears no mask."""

    version: str

    def no_mask_probability(self, crops: Sequence[np.ndarray]) -> np.ndarray: ...


class MaskClassifier:
    """Tells for face crops how likely the face wears no mask.

    :param model_path: a classifier ``.tflite`` (default: the committed ``models/mask_classifier_int8.tflite``).
    :param num_threads: CPU threads for LiteRT.
    :param mirror: average each crop's probability with its mirror image's (two inferences per face). The model
        trained with horizontal flips, so both views are equally valid; averaging them removes some int8
        noise (face-mask validation: +0.3 to +0.6 point accuracy, int8; see models/MODEL_CARD.md).
    :raises ModelError: the file is missing, not a TFLite model, or not a mask classifier
        (one (1, H, W, 3) image input, two-class output).
    """

    def __init__(self, model_path: Path | None = None, num_threads: int = 2, mirror: bool = True) -> None:
        path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        self._interpreter = load_interpreter(path, num_threads)
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{path} is not a mask classifier: expected 1 input and 1 output, "
                             f"got {len(inputs)} and {len(outputs)}")
        shape = tuple(int(v) for v in inputs[0]["shape"])
        if len(shape) != 4 or shape[3] != 3 or tuple(outputs[0]["shape"])[-1] != 2:
            raise ModelError(f"{path} is not a mask classifier: input {shape} (want (1, H, W, 3)), "
                             f"output {tuple(outputs[0]['shape'])} (want (1, 2))")
        self.path = path
        self.mirror = mirror
        self.size = (shape[2], shape[1])
        self._in, self._out = inputs[0], outputs[0]
        self.version = f"{path.stem}@{sha256_of(path)[:12]}"
        log.info("mask classifier %s, input %dx%d %s", self.version, shape[2], shape[1],
                 np.dtype(self._in["dtype"]).name)

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

    def _probability(self, tensor: np.ndarray) -> float:
        self._interpreter.set_tensor(self._in["index"], tensor)
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._out["index"])[0]
        scale, zero = self._out["quantization"]
        probabilities = (raw.astype(np.float32) - zero) * scale if scale else raw.astype(np.float32)
        return float(probabilities[NO_MASK_INDEX]) / max(float(probabilities.sum()), 1e-6)

    def no_mask_probability(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Probability 0..1 that each BGR face crop shows no mask; shape (len(crops),)."""
        result = np.empty(len(crops), np.float32)
        for i, crop in enumerate(crops):
            tensor = self._input_tensor(crop)
            result[i] = self._probability(tensor)
            if self.mirror:
                result[i] = (result[i] + self._probability(np.ascontiguousarray(tensor[:, :, ::-1]))) / 2
        return np.clip(result, 0.0, 1.0)
