"""Maskwatch models: the committed ``.tflite`` mask classifiers (package data, found by
:func:`edge.vision.model_store.packaged_model`), the model card, evaluation and the training pipeline.

Imports flow one way: ``models`` uses the edge's inference path (detector, crop, classifier); the edge never
imports ``models`` code, it only reads the ``.tflite`` data files. Keep this module free of code.
"""
