"""Loading TensorFlow Lite models with LiteRT (``ai_edge_litert``), ``tflite_runtime`` as fallback."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from shared.errors import ModelError

log = logging.getLogger(__name__)


def interpreter_class() -> type:
    """Return the ``Interpreter`` class of LiteRT, or of ``tflite_runtime`` when LiteRT is absent."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ImportError("no TFLite runtime: install ai-edge-litert", name="ai_edge_litert") from None
    return Interpreter


def load_interpreter(path: Path | str, num_threads: int = 2) -> Any:
    """Load a ``.tflite`` file and allocate its tensors.

    :param path: the model file.
    :param num_threads: CPU threads the runtime may use (1 or more).
    :raises ModelError: the file is missing, empty or not a TFLite model.
    """
    path = Path(path)
    if num_threads < 1:
        raise ModelError(f"num_threads must be 1 or more, got {num_threads}")
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelError(f"model file is empty: {path}")
    interpreter_type = interpreter_class()
    try:
        interpreter = interpreter_type(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"not a valid TFLite model: {path} ({exc})") from exc
    log.debug("loaded %s with %d thread(s)", path, num_threads)
    return interpreter
