"""``maskwatch model export``: a trained Keras classifier to float16 and int8 TFLite, with an agreement check.

The int8 model takes uint8 RGB and returns uint8 probabilities; its representative data are training crops.
It must agree with the float model on the validation split: accuracies (of the class decided at 0.5: mask, no
mask and, for three-class models, not a face) within ``max_gap_pp`` percentage points. When the fully
quantized model misses that, the export tries once more with the layers of :data:`FLOAT_LAYERS` left in float
(selective quantization, as TensorFlow's quantization debugger does it); if that misses too, the export fails
and no int8 file is written.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.vision.classifier import CropScores, MaskClassifier
from models.evaluation import THRESHOLD_SWEEP
from models.training.data import NOT_FACE
from shared.errors import ModelError

if TYPE_CHECKING:  # the train extra, imported where it is used
    import tensorflow as tf

log = logging.getLogger(__name__)

MAX_GAP_PP = 0.5
#: Layers kept in float by the fallback: MobileNetV2's first depthwise convolution, whose channels span very
#: different ranges and lose the most to one int8 scale (largest error/scale of every layer in TensorFlow's
#: quantization debugger on our fine-tuned models). Costs about 0.2 ms per face on the 2-core machine.
FLOAT_LAYERS = ("expanded_conv_depthwise_relu",)


def convert(model_path: Path, representative: np.ndarray | None, float_layers: tuple[str, ...] = ()) -> bytes:
    """TFLite bytes of a saved Keras model: float16 weights when ``representative`` is None, else int8 with
    uint8 input and output, all layers quantized except those whose name contains one of ``float_layers``.
    """
    import keras
    import tensorflow as tf

    model = keras.models.load_model(model_path)
    with tempfile.TemporaryDirectory(prefix="maskwatch-export-") as tmp:
        model.export(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if representative is None:
            converter.target_spec.supported_types = [tf.float16]
        else:
            converter.representative_dataset = lambda: ([image[None]] for image in representative)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
            if float_layers:
                return _selectively_quantized(converter, float_layers)
        return converter.convert()


def _selectively_quantized(converter: tf.lite.TFLiteConverter, float_layers: tuple[str, ...]) -> bytes:
    """Calibrate, then quantize every node but those named by ``float_layers``; uint8 input and output.

    Uses the converter internals that ``tf.lite.experimental.QuantizationDebugger`` uses for its
    ``denylisted_nodes`` (there since TensorFlow 2.5; checked with 2.21).
    """
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python import convert as tflite_convert
    from tensorflow.lite.python import util as tflite_util

    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    names = [t["name"] for t in Interpreter(model_content=calibrated).get_tensor_details()]
    denied = [name for name in names if any(layer in name for layer in float_layers)]
    if not denied:
        raise ModelError(f"no layer named like {float_layers} in the model")
    quantized = tflite_convert.mlir_quantize(calibrated, denylisted_nodes=denied)
    return tflite_util.modify_model_io_type(quantized, tf.uint8, tf.uint8)


def predict_rgb(classifier: MaskClassifier, images_rgb: np.ndarray) -> CropScores:
    """No-mask probabilities and face scores of S x S RGB crops through the edge's own classifier code."""
    return classifier.scores([image[:, :, ::-1] for image in images_rgb])


def decided_classes(scores: CropScores) -> np.ndarray:
    """The class each crop is given at 0.5: 2 (not a face) below face score 0.5, else 1 (no mask) or 0 (mask)."""
    return np.where(scores.face_score < 0.5, NOT_FACE, (scores.p_no_mask >= 0.5).astype(int))


def threshold_sweep(
    labels: np.ndarray, p_no_mask: np.ndarray, sources: np.ndarray, thresholds: tuple[float, ...] = THRESHOLD_SWEEP
) -> dict:
    """Accuracy and no-mask precision/recall per decision threshold, per data source of the validation split."""
    from models.training.train import metrics_of

    sweep = {}
    for source in sorted(set(sources.tolist())):
        chosen = sources == source
        sweep[source] = {
            str(t): {
                k: round(v, 4)
                for k, v in metrics_of(labels[chosen], p_no_mask[chosen], t).items()
                if k in ("accuracy", "no_mask_precision", "no_mask_recall")
            }
            for t in thresholds
        }
    return sweep


def export(run_dir: Path, out_dir: Path, name: str = "mask_classifier", max_gap_pp: float = MAX_GAP_PP) -> dict:
    """Write ``<name>_f16.tflite`` and ``<name>_int8.tflite`` into ``out_dir``; return the agreement figures.

    :raises ModelError: the run folder is incomplete, or int8 and float disagree by more than ``max_gap_pp``.
    """
    model_path, split_path = run_dir / "model.keras", run_dir / "split.npz"
    for path in (model_path, split_path):
        if not path.is_file():
            raise ModelError(f"{path} not found: give the --out folder of 'maskwatch model train'")
    split = np.load(split_path)
    val_images, val_labels = split["val_images"], split["val_labels"]
    out_dir.mkdir(parents=True, exist_ok=True)
    f16_path, int8_path = out_dir / f"{name}_f16.tflite", out_dir / f"{name}_int8.tflite"
    log.info("converting to float16")
    f16_path.write_bytes(convert(model_path, None))
    float_scores = predict_rgb(MaskClassifier(f16_path, 2), val_images)
    float_classes = decided_classes(float_scores)
    acc_float = float((float_classes == val_labels).mean())
    candidate = out_dir / f".{name}_int8.tflite.candidate"
    for float_layers in ((), FLOAT_LAYERS):
        log.info(
            "converting to int8 with %d representative training crops%s",
            len(split["representative"]),
            f", keeping {', '.join(float_layers)} in float" if float_layers else "",
        )
        candidate.write_bytes(convert(model_path, split["representative"], float_layers))
        int8_scores = predict_rgb(MaskClassifier(candidate, 2), val_images)
        int8_classes = decided_classes(int8_scores)
        acc_int8 = float((int8_classes == val_labels).mean())
        figures: dict[str, Any] = {
            "validation_n": len(val_labels),
            "accuracy_f16": acc_float,
            "accuracy_int8": acc_int8,
            "gap_pp": round(100 * abs(acc_float - acc_int8), 3),
            "float_layers": list(float_layers),
            "label_agreement": float((float_classes == int8_classes).mean()),
            "max_abs_probability_diff": float(np.abs(float_scores.p_no_mask - int8_scores.p_no_mask).max()),
            "max_abs_face_score_diff": float(np.abs(float_scores.face_score - int8_scores.face_score).max()),
        }
        if figures["gap_pp"] <= max_gap_pp:
            break
        log.warning(
            "int8 accuracy %.4f vs float %.4f: %.3f points > %s", acc_int8, acc_float, figures["gap_pp"], max_gap_pp
        )
    else:
        candidate.unlink()
        raise ModelError(
            f"int8 model disagrees with float: accuracy {acc_int8:.4f} vs {acc_float:.4f} "
            f"({figures['gap_pp']} points > {max_gap_pp}, also with {', '.join(FLOAT_LAYERS)} "
            "in float); int8 file not written"
        )
    candidate.replace(int8_path)
    sources = split["val_sources"] if "val_sources" in split.files else np.array(["all"] * len(val_labels))
    figures["int8_threshold_sweep"] = threshold_sweep(val_labels, int8_scores.p_no_mask, sources)
    log.info("int8 accuracy %.4f, float16 %.4f, labels agree on %.4f", acc_int8, acc_float, figures["label_agreement"])
    return figures
