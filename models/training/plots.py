"""Training-curve and confusion-matrix figures (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: dict[str, list[float]], path: Path) -> None:
    """Loss and accuracy per epoch (training and validation) of both phases, to a PNG."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in history:
                axis.plot(range(1, len(history[key]) + 1), history[key], style, label=key)
        axis.set_xlabel("epoch (head phase, then fine-tuning)")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion(confusion: np.ndarray, path: Path, title: str) -> None:
    """A 2x2 confusion matrix (rows: truth mask/no_mask, columns: prediction), to a PNG."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.imshow(confusion, cmap="Blues")
    names = ("mask", "no_mask")
    axis.set_xticks([0, 1], names)
    axis.set_yticks([0, 1], names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (row, col), value in np.ndenumerate(confusion):
        axis.text(
            col, row, str(value), ha="center", va="center", color="white" if value > confusion.max() / 2 else "black"
        )
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_operating_points(points: list[dict], chosen: tuple[float, float], path: Path, title: str) -> None:
    """Alert precision against no-mask recall, one curve per minimum face score over the no-mask thresholds
    (points of :func:`models.evaluation.operating_points`); the chosen (threshold, face score) is circled."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for face in sorted({p["min_face_score"] for p in points}):
        curve = sorted((p for p in points if p["min_face_score"] == face), key=lambda p: p["threshold"])
        axis.plot(
            [p["no_mask_recall"] for p in curve],
            [p["alert_precision"] for p in curve],
            "o-",
            markersize=3,
            label=f"face score >= {face:g} (face recall {curve[0]['face_recall']:.2f})",
        )
    for p in points:
        if (p["threshold"], p["min_face_score"]) == chosen:
            axis.plot(p["no_mask_recall"], p["alert_precision"], "o", markersize=12, fillstyle="none", color="black")
            axis.annotate(
                f"chosen: threshold {chosen[0]:g}, face score {chosen[1]:g}",
                (p["no_mask_recall"], p["alert_precision"]),
                textcoords="offset points",
                xytext=(-160, 12),
                fontsize=8,
            )
    axis.set_xlabel("no-mask recall (faces >= 24 px found by the detector)")
    axis.set_ylabel("alert precision (every no-mask decision)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
