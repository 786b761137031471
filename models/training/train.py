"""``maskwatch model train``: transfer learning of MobileNetV2 on detector crops, then fine-tuning of the top blocks.

Phase 1 trains the head on pooled backbone features, computed once for the original crops and for
``augment_copies`` augmented copies of each training crop (the backbone is frozen, so this is exact and cheap).
Phase 2 fine-tunes the top blocks at a low learning rate on freshly augmented batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from edge.vision.crop import TRAINING_MARGIN
from edge.vision.detector import Settings, create_detector
from models.training.augment import Augmentation
from models.training.data import NOT_FACE, Crops, concat, face_mask_crops, scene_crops, train_validation_split
from models.training.network import FINE_TUNE_FROM, backbone, classifier, head, set_fine_tuning
from models.training.plots import plot_confusion, plot_curves
from shared.vocabulary import Profile

log = logging.getLogger(__name__)

#: Bump when the way crops are cut changes, so cached crops are not reused.
CROPS_VERSION = 3
#: Detector score threshold of the ``near`` detector that cuts the face-mask crops (the committed models' crops
#: were cut at 0.5), kept apart from the edge's ``near`` operating point.
FACE_MASK_CROP_THRESHOLD = 0.5
#: The committed models' crops were cut before the edge's BlazeFace detectors dropped covered duplicate boxes
#: (:data:`~edge.vision.detector.BLAZEFACE_COVER`): their weighted NMS merged by IoU alone. A cover share above 1
#: never applies. Mining with the rule finds fewer hard negatives (590 instead of 824 on the scene photos); the
#: committed model, its cross-validation and the training command of the model card use none.
NO_COVER_RULE = math.inf
#: The BlazeFace passes that cut the face-mask crops (the ``near`` detector of the committed models).
FACE_MASK_CROP_SETTINGS = Settings(
    passes=(("full", 1), ("short", 1)), threshold=FACE_MASK_CROP_THRESHOLD, nms_cover=NO_COVER_RULE
)
#: The BlazeFace passes that cut the scene photos' detected-box crops and mine their hard negatives: the ``crowd``
#: detector of the committed models (the profile has since dropped the full range on 3x3 tiles for speed).
SCENE_CROP_SETTINGS = Settings(
    passes=(("full", 1), ("short", 1), ("full", 2), ("short", 2), ("full", 3), ("short", 3)),
    threshold=0.45,
    nms_cover=NO_COVER_RULE,
)


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides a training run (saved with it in ``metrics.json`` under ``settings``)."""

    data: str
    scenes: str | None
    out: str
    backbone_weights: str = "imagenet"
    size: int = 96
    head_epochs: int = 20
    fine_tune_epochs: int = 6
    fine_tune_from: str = FINE_TUNE_FROM
    batch_size: int = 32
    head_learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 2e-5
    balance: bool = False
    low_res: float = 0.0
    hold_out_fold: int | None = None
    folds: int = 2
    augment_copies: int = 2
    validation: float = 0.2
    seed: int = 0
    detector: str | None = "blazeface"
    limit_per_class: int | None = None
    not_face: bool = False


class TqdmEpochs(keras.callbacks.Callback):
    """A progress bar over epochs showing the latest loss and accuracy."""

    def __init__(self, epochs: int, desc: str) -> None:
        super().__init__()
        self.bar = tqdm(total=epochs, desc=desc, unit="epoch", leave=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if "loss" in k or "acc" in k})
        self.bar.update(1)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.bar.close()


def load_crops(settings: TrainSettings, cache_dir: Path | None = None) -> Crops:
    """Face-mask crops cut by the detector (``near`` profile, as the edge) plus the scenes' labelled faces.

    Crops are cached in ``cache_dir`` under a key of the data folders' listings and the crop settings.
    """
    key_parts: list[object] = [
        settings.size,
        settings.detector,
        settings.limit_per_class,
        TRAINING_MARGIN,
        CROPS_VERSION,
        repr(FACE_MASK_CROP_SETTINGS),
        repr(SCENE_CROP_SETTINGS),
    ]
    if settings.not_face:
        key_parts += ["not_face", settings.seed]
    for folder in filter(None, (settings.data, settings.scenes)):
        key_parts += sorted(
            (str(p.relative_to(folder)), p.stat().st_size) for p in Path(folder).rglob("*") if p.is_file()
        )
    key = hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:16]
    cache = (cache_dir or Path.home() / ".cache" / "maskwatch" / "crops") / f"crops-{key}.npz"
    if cache.is_file():
        log.info("using cached crops %s", cache)
        return Crops.load(cache)
    blazeface = settings.detector == "blazeface"
    detector = (
        create_detector(
            Profile.NEAR,
            settings.detector,
            threshold=FACE_MASK_CROP_THRESHOLD,
            settings=FACE_MASK_CROP_SETTINGS if blazeface else None,
        )
        if settings.detector
        else None
    )
    parts = [face_mask_crops(Path(settings.data), settings.size, detector, settings.limit_per_class)]
    if settings.scenes:
        limit = None if settings.limit_per_class is None else settings.limit_per_class // 4
        scene_detector = (
            create_detector(Profile.CROWD, settings.detector, settings=SCENE_CROP_SETTINGS if blazeface else None)
            if settings.detector
            else None
        )
        parts.append(
            scene_crops(Path(settings.scenes), settings.size, limit, scene_detector, settings.not_face, settings.seed)
        )
    crops = concat(parts)
    crops.save(cache)
    return crops


def features(base: keras.Model, images: np.ndarray, batch_size: int, desc: str) -> np.ndarray:
    """Pooled backbone features of uint8 RGB images, with a progress bar."""
    out = np.empty((len(images), base.output_shape[-1]), np.float32)
    for start in tqdm(range(0, len(images), 256), desc=desc, unit="batch", leave=False):
        batch = images[start : start + 256].astype(np.float32) / 127.5 - 1.0
        out[start : start + 256] = base.predict(batch, batch_size=batch_size, verbose=0)
    return out


def balanced_weights(crops: Crops) -> np.ndarray:
    """Sample weights giving every (source, class) cell the same total weight (scene no-mask faces are rare)."""
    cells = [f"{source}/{label}" for source, label in zip(crops.sources, crops.labels, strict=True)]
    counts = {cell: cells.count(cell) for cell in set(cells)}
    return np.array([len(cells) / (len(counts) * counts[cell]) for cell in cells], np.float32)


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled, freshly augmented, weighted training batches with a seeded generator (deterministic per epoch)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        weights: np.ndarray,
        batch_size: int,
        seed: int,
        augmentation: Augmentation,
    ) -> None:
        super().__init__()
        self.images, self.labels, self.weights = images, labels, weights
        self.batch_size, self.seed = batch_size, seed
        self.augmentation = augmentation
        self.epoch = 0
        self.order = np.random.default_rng(seed).permutation(len(images))

    def __len__(self) -> int:
        return int(np.ceil(len(self.images) / self.batch_size))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.augmentation.apply(self.images[chosen], rng), self.labels[chosen], self.weights[chosen]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images))


def face_metrics(labels: np.ndarray, face_score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """How well the ``not_face`` class separates: face recall (faces kept) and not-face recall (rejected)."""
    is_face = labels != NOT_FACE
    kept = face_score >= threshold
    return {
        "faces": int(is_face.sum()),
        "not_faces": int((~is_face).sum()),
        "face_recall": float(kept[is_face].mean()) if is_face.any() else 0.0,
        "not_face_recall": float((~kept[~is_face]).mean()) if (~is_face).any() else 0.0,
    }


def metrics_of(labels: np.ndarray, p_no_mask: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, no-mask precision/recall and the confusion matrix (rows truth mask/no_mask) of predictions on
    face crops (``not_face`` crops, if any, are left out: see :func:`face_metrics`)."""
    faces = labels != NOT_FACE
    labels, p_no_mask = labels[faces], p_no_mask[faces]
    predicted = (p_no_mask >= threshold).astype(int)
    confusion = np.zeros((2, 2), int)
    for truth, guess in zip(labels, predicted, strict=True):
        confusion[truth, guess] += 1
    return {
        "n": len(labels),
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        "no_mask_recall": float(confusion[1, 1] / max(1, confusion[1].sum())),
        "no_mask_precision": float(confusion[1, 1] / max(1, confusion[:, 1].sum())),
        "mask_recall": float(confusion[0, 0] / max(1, confusion[0].sum())),
        "confusion": confusion.tolist(),
    }


def split_crops(settings: TrainSettings) -> tuple[Crops, np.ndarray, np.ndarray]:
    """The crops of a run (:func:`load_crops`) and its (train, validation) indices."""
    crops = load_crops(settings)
    train_index, val_index = train_validation_split(
        crops, settings.validation, settings.seed, settings.hold_out_fold, settings.folds
    )
    return crops, train_index, val_index


def train(settings: TrainSettings) -> dict:
    """Run a whole training; write ``model.keras``, split crops, metrics and plots into ``settings.out``."""
    started = time.perf_counter()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()

    crops, train_index, val_index = split_crops(settings)
    if settings.hold_out_fold is not None:
        log.info(
            "cross-validation: the scene photos of fold %d/%d are the scene validation, all others train",
            settings.hold_out_fold,
            settings.folds,
        )
    train_set, val_set = crops.subset(train_index), crops.subset(val_index)
    log.info("split: %d train / %d validation crops (groups kept whole)", len(train_index), len(val_index))

    base = backbone(settings.size, settings.backbone_weights)
    base.trainable = False
    top = head(settings.seed, 3 if settings.not_face else 2)
    rng = np.random.default_rng(settings.seed)
    augmentation = Augmentation(low_res=settings.low_res)
    train_images = [train_set.images] + [
        augmentation.apply(train_set.images, rng) for _ in range(settings.augment_copies)
    ]
    train_features = np.concatenate(
        [
            features(base, images, settings.batch_size, f"features {i + 1}/{len(train_images)}")
            for i, images in enumerate(train_images)
        ]
    )
    train_labels = np.tile(train_set.labels, len(train_images))
    weights = balanced_weights(train_set) if settings.balance else np.ones(len(train_set.labels), np.float32)
    val_features = features(base, val_set.images, settings.batch_size, "features validation")

    top.compile(
        optimizer=keras.optimizers.Adam(settings.head_learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    head_history = top.fit(
        train_features,
        train_labels,
        sample_weight=np.tile(weights, len(train_images)),
        batch_size=settings.batch_size,
        epochs=settings.head_epochs,
        validation_data=(val_features, val_set.labels),
        shuffle=True,
        verbose=0,
        callbacks=[TqdmEpochs(settings.head_epochs, "head")],
    )
    model = classifier(base, top)
    history = {k: list(map(float, v)) for k, v in head_history.history.items()}
    if settings.fine_tune_epochs > 0:
        trainable = set_fine_tuning(base, settings.fine_tune_from)
        log.info(
            "fine-tuning %d layers from %s at lr %g",
            trainable,
            settings.fine_tune_from,
            settings.fine_tune_learning_rate,
        )
        model.compile(
            optimizer=keras.optimizers.Adam(settings.fine_tune_learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        fine = model.fit(
            AugmentedBatches(
                train_set.images, train_set.labels, weights, settings.batch_size, settings.seed, augmentation
            ),
            epochs=settings.fine_tune_epochs,
            validation_data=(val_set.images, val_set.labels),
            verbose=0,
            callbacks=[TqdmEpochs(settings.fine_tune_epochs, "fine-tune")],
        )
        for key, values in fine.history.items():
            history.setdefault(key, []).extend(map(float, values))

    probabilities = model.predict(val_set.images, batch_size=64, verbose=0)
    p_no_mask = probabilities[:, 1] / np.maximum(probabilities[:, 0] + probabilities[:, 1], 1e-6)
    report: dict[str, Any] = {
        "validation": metrics_of(val_set.labels, p_no_mask),
        "validation_by_source": {
            source: metrics_of(val_set.labels[mask], p_no_mask[mask])
            for source in sorted(set(val_set.sources))
            for mask in [np.array([s == source for s in val_set.sources])]
        },
        "validation_not_face": face_metrics(val_set.labels, 1.0 - probabilities[:, NOT_FACE])
        if settings.not_face
        else None,
        "crops": crops.stats,
        "train_crops": len(train_index),
        "validation_crops": len(val_index),
        "train_groups": len(set(train_set.groups)),
        "validation_groups": len(set(val_set.groups)),
        "history": history,
        "settings": asdict(settings),
        "seconds": round(time.perf_counter() - started, 1),
    }
    model.save(out / "model.keras")
    np.savez_compressed(
        out / "split.npz",
        val_images=val_set.images,
        val_labels=val_set.labels,
        val_sources=np.array(val_set.sources),
        representative=train_set.images[rng.permutation(len(train_index))[:300]],
    )
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    plot_curves(history, out / "training_curves.png")
    plot_confusion(
        np.array(report["validation"]["confusion"]),
        out / "confusion_matrix.png",
        f"validation ({len(val_index)} crops, group-aware split)",
    )
    log.info(
        "validation: accuracy %.4f, no-mask recall %.4f (%.0f s)",
        report["validation"]["accuracy"],
        report["validation"]["no_mask_recall"],
        report["seconds"],
    )
    return report
