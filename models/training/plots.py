"""Training-curve and confusion-matrix figures (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.vocabulary import OperatingPoint


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


def plot_operating_points(points: list[dict], chosen: OperatingPoint, path: Path, title: str) -> None:
    """Alert precision against no-mask recall over the no-mask thresholds (points of
    :func:`models.evaluation.operating_points`), in two panels through the chosen (threshold, face score, detector
    score a no-mask verdict needs), which is circled: one curve per minimum face score at the chosen detector
    score, and one curve per detector score at the chosen face score."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    panels = (
        ("min_face_score", "face score", {"min_no_mask_detector_score": chosen.min_no_mask_detector_score}),
        ("min_no_mask_detector_score", "no-mask detector score", {"min_face_score": chosen.min_face_score}),
    )
    for axis, (key, name, fixed) in zip(axes, panels, strict=True):
        shown = [p for p in points if all(p[k] == v for k, v in fixed.items())]
        for value in sorted({p[key] for p in shown}):
            curve = sorted((p for p in shown if p[key] == value), key=lambda p: p["threshold"])
            axis.plot(
                [p["no_mask_recall"] for p in curve],
                [p["alert_precision"] for p in curve],
                "o-",
                markersize=3,
                label=f"{name} >= {value:g} (face recall {curve[-1]['face_recall']:.2f})",
            )
        for p in shown:
            if OperatingPoint.of(p) == chosen:
                axis.plot(p["no_mask_recall"], p["alert_precision"], "o", markersize=12, fillstyle="none", color="k")
                axis.annotate(
                    f"chosen: threshold {chosen.threshold:g}, face score {chosen.min_face_score:g}, "
                    f"no-mask detector score {chosen.min_no_mask_detector_score:g}",
                    (p["no_mask_recall"], p["alert_precision"]),
                    textcoords="offset points",
                    xytext=(-250, 12),
                    fontsize=7,
                )
        fixed_name, fixed_value = next(iter(fixed.items()))
        axis.set_title(f"{title}\nat {fixed_name.replace('_', ' ')} {fixed_value:g}", fontsize=8)
        axis.set_xlabel("no-mask recall (faces >= 24 px)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, loc="lower left")
    axes[0].set_ylabel("alert precision (every no-mask decision)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
