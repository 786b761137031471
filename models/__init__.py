"""Maskwatch models: the committed ``.tflite`` classifiers and the training pipeline.

The ``.tflite`` files beside this module are package data; :func:`default_model_path`
finds them whether Maskwatch is installed or run from a checkout.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent


def default_model_path(kind: str = "int8") -> Path:
    """Path of the committed mask classifier (``int8``, the edge default, or ``f16``)."""
    return MODELS_DIR / f"mask_classifier_{kind}.tflite"
