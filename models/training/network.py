"""The classifier network: uint8 RGB in, Keras MobileNetV2 backbone, the seed's dense head, softmax [mask, no_mask]."""

from __future__ import annotations

from pathlib import Path

import keras

from shared.errors import ModelError

#: First layer trained in the fine-tuning phase (the top blocks 13-16 and the last 1x1 conv).
FINE_TUNE_FROM = "block_13_expand"
FEATURES = 1280


def backbone(size: int, weights: str | Path) -> keras.Model:
    """MobileNetV2 (alpha 1.0) without top, average pooled, taking inputs scaled to [-1, 1].

    :param weights: ``"imagenet"`` (downloads) or a weights file such as ``mobilenet_v2_1.0_224_imagenet_no_top.h5``.
    :raises ModelError: the weights file is missing or does not fit.
    """
    if str(weights) != "imagenet" and not Path(weights).is_file():
        raise ModelError(f"backbone weights not found: {weights} (give a .h5 file or 'imagenet')")
    try:
        return keras.applications.MobileNetV2(
            input_shape=(size, size, 3), include_top=False, pooling="avg", weights=str(weights)
        )
    except (ValueError, OSError) as exc:
        raise ModelError(f"cannot load backbone weights {weights}: {exc}") from exc


def head(seed: int, classes: int = 2) -> keras.Model:
    """The seed's head on pooled features: Dense(128, relu), Dropout(0.5), Dense(``classes``, softmax)
    ([mask, no_mask], or [mask, no_mask, not_face] with 3)."""
    features = keras.Input((FEATURES,), name="features")
    x = keras.layers.Dense(128, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed))(features)
    x = keras.layers.Dropout(0.5, seed=seed)(x)
    out = keras.layers.Dense(
        classes,
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed + 1),
        name="mask_no_mask",
    )(x)
    return keras.Model(features, out, name="head")


def classifier(base: keras.Model, top: keras.Model) -> keras.Model:
    """The whole classifier: uint8 RGB (S, S, 3) in, preprocessing inside, the head's class probabilities out."""
    size = base.input_shape[1]
    pixels = keras.Input((size, size, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit_range")(keras.ops.cast(pixels, "float32"))
    return keras.Model(pixels, top(base(x)), name="mask_classifier")


def set_fine_tuning(base: keras.Model, first_layer: str = FINE_TUNE_FROM) -> int:
    """Make the backbone trainable from ``first_layer`` on (batch norms stay frozen); return how many layers."""
    names = [layer.name for layer in base.layers]
    if first_layer not in names:
        raise ModelError(f"no layer {first_layer!r} in the backbone")
    start = names.index(first_layer)
    base.trainable = True
    count = 0
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= start and not isinstance(layer, keras.layers.BatchNormalization)
        count += layer.trainable and bool(layer.weights)
    return count
