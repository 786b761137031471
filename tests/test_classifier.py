"""The committed mask classifier on LiteRT, and reading images of every format the data sets hold."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.capture.images import decode_image, list_images, read_image
from edge.vision.classifier import DEFAULT_MODEL, MaskClassifier
from edge.vision.model_store import ensure_model
from shared.errors import ImageReadError, ModelError
from shared.vocabulary import Profile
from tests.conftest import FACE_MASK, need


def fixed_sample(per_class: int = 100) -> list[tuple[Path, int]]:
    """Every n-th image of each class, by name: the same 200 images on every run."""
    sample = []
    for label, name in enumerate(("with_mask", "without_mask")):
        files = list_images(need(FACE_MASK) / name)
        step = len(files) // per_class
        sample += [(path, label) for path in files[::step][:per_class]]
    return sample


@pytest.fixture(scope="module")
def classifier() -> MaskClassifier:
    return MaskClassifier(num_threads=2)


def test_committed_int8_model_scores_at_least_97_percent_on_200_shared_images(classifier: MaskClassifier) -> None:
    sample = fixed_sample()
    assert len(sample) == 200
    p = classifier.no_mask_probability([read_image(path) for path, _ in sample])
    labels = np.array([label for _, label in sample])
    accuracy = float(((p >= 0.5) == labels).mean())
    assert accuracy >= 0.97, f"accuracy {accuracy:.3f} on the fixed 200-image sample"


def test_probabilities_are_one_per_crop_between_0_and_1(classifier: MaskClassifier) -> None:
    crops = [np.full((30, 20, 3), 128, np.uint8), np.zeros((300, 200, 3), np.uint8)]
    p = classifier.no_mask_probability(crops)
    assert p.shape == (2,) and p.dtype == np.float32
    assert ((p >= 0) & (p <= 1)).all()
    assert classifier.no_mask_probability([]).shape == (0,)


def test_version_names_file_and_digest(classifier: MaskClassifier) -> None:
    assert classifier.path == DEFAULT_MODEL
    assert classifier.version.startswith("mask_classifier_int8@") and len(classifier.version.split("@")[1]) == 12


def test_a_crop_that_is_not_an_image_is_rejected(classifier: MaskClassifier) -> None:
    with pytest.raises(ValueError, match="BGR face crop"):
        classifier.no_mask_probability([np.zeros((10, 10), np.uint8)])


def test_wrong_model_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a mask classifier"):
        MaskClassifier(ensure_model("face_detection_short_range.tflite"))
    with pytest.raises(ModelError, match="not found"):
        MaskClassifier(tmp_path / "missing.tflite")
    (tmp_path / "junk.tflite").write_bytes(b"GIF89a" + bytes(500))
    with pytest.raises(ModelError, match="not a valid TFLite model"):
        MaskClassifier(tmp_path / "junk.tflite")


def test_images_of_every_format_become_bgr() -> None:
    folder = need(FACE_MASK) / "with_mask"
    for name in ("071613cb35756520.png", "822ab33f8e1d4b1f.png", "4a583db0f0fd47f7.webp"):  # RGBA, palette, WebP
        image = read_image(folder / name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_alpha_is_composited_over_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:, :, 2] = 255  # red, fully transparent on the left half
    rgba[:, 2:, 3] = 255
    ok, png = cv2.imencode(".png", rgba)
    assert ok
    image = decode_image(png.tobytes())
    assert image[0, 0].tolist() == [255, 255, 255] and image[0, 3].tolist() == [0, 0, 255]


def test_corrupt_empty_and_missing_images_give_clear_errors(tmp_path: Path) -> None:
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 3)
    with pytest.raises(ImageReadError, match=r"cut\.jpg: not a readable image"):
        read_image(truncated)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="cannot read"):
        read_image(tmp_path / "absent.jpg")
    with pytest.raises(ImageReadError, match="folder not found"):
        list_images(tmp_path / "nowhere")


def test_model_card_names_the_committed_files_bytes_and_digests() -> None:
    from edge.vision.model_store import sha256_of

    card = (DEFAULT_MODEL.parent / "MODEL_CARD.md").read_text()
    for path in sorted(DEFAULT_MODEL.parent.glob("mask_classifier_*.tflite")):
        row = next(line for line in card.splitlines() if line.startswith(f"| `{path.name}` |"))
        assert f"`{sha256_of(path)}`" in row and f"{path.stat().st_size:,}" in row, row
    assert f"`{MaskClassifier(num_threads=1).version}`" in card


def test_mirror_averaging_is_the_mean_of_the_crop_and_its_mirror(classifier: MaskClassifier) -> None:
    crop = read_image(list_images(need(FACE_MASK) / "without_mask")[0])
    single = MaskClassifier(num_threads=1, mirror=False)
    plain, mirrored = single.no_mask_probability([crop, np.ascontiguousarray(crop[:, ::-1])])
    assert classifier.mirror and classifier.no_mask_probability([crop])[0] == pytest.approx((plain + mirrored) / 2)


def test_copies_side_by_side_give_exactly_what_one_copy_gives(classifier: MaskClassifier) -> None:
    crops = [read_image(path) for path, _ in fixed_sample(per_class=8)]
    one, side_by_side = MaskClassifier(num_threads=1).scores(crops), classifier.scores(crops)
    assert len(classifier.lanes) == 2 and len(crops) == 16
    assert np.array_equal(one.p_no_mask, side_by_side.p_no_mask)
    assert np.array_equal(one.face_score, side_by_side.face_score)


@pytest.mark.slow
def test_committed_model_meets_the_face_crop_target_at_each_profile_s_point(classifier: MaskClassifier) -> None:
    """Issue 17's face-crop target (accuracy and no-mask recall >= 98.5 %) on the committed run's validation
    crops, audited (bench/face_crops.py); on all 640 crops crowd is one crop short, as the model card says."""
    from bench.face_crops import flat, measure, validation_crops

    need(FACE_MASK)
    figures = flat(measure(classifier, validation_crops(), {str(p): p.default_point for p in Profile}))
    for profile in Profile:
        assert figures[f"{profile}_audited_accuracy"] >= 0.985, figures
        assert figures[f"{profile}_audited_no_mask_recall"] >= 0.985, figures
    assert figures["crowd_all_accuracy"] == pytest.approx(630 / 640, abs=1e-4)
