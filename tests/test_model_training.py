"""A tiny real training: about 40 shared images -> train -> export f16 + int8 -> LiteRT load -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from edge.capture.images import list_images, read_image
from edge.vision.classifier import MaskClassifier
from edge.vision.detector import create_detector
from models.training.augment import Augmentation
from models.training.data import (
    Crops,
    dhash,
    group_split,
    near_duplicate_groups,
    scene_crops,
    train_validation_split,
    validation_photo,
)
from models.training.export import FLOAT_LAYERS, convert
from models.training.train import SCENE_CROP_SETTINGS
from shared.cli import main
from shared.vocabulary import Profile
from tests.conftest import FACE_MASK, SCENES, WEIGHTS, need


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_tiny_train_export_and_predict_on_litert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = need(WEIGHTS) / "mobilenet_v2_1.0_224_imagenet_no_top.h5"
    monkeypatch.setenv("HOME", str(tmp_path))  # the crop cache goes to a fresh place
    run = tmp_path / "run"
    assert (
        main(
            [
                "model",
                "train",
                str(need(FACE_MASK)),
                "--scenes",
                str(need(SCENES)),
                "--limit",
                "20",
                "--size",
                "64",
                "--epochs",
                "1",
                "--fine-tune-epochs",
                "1",
                "--augment-copies",
                "1",
                "--backbone-weights",
                str(weights),
                "--out",
                str(run),
                "--seed",
                "3",
            ]
        )
        == 0
    )
    assert "validation:" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["crops"]["images"] == 40 and metrics["crops"]["scene_faces"] > 0
    assert metrics["validation_crops"] > 0 and metrics["train_crops"] > metrics["validation_crops"]
    for name in ("model.keras", "training_curves.png", "confusion_matrix.png"):
        assert (run / name).stat().st_size > 1000

    # a loose gap: a one-epoch model is not stable enough for the production 0.5 point check
    assert main(["model", "export", str(run), "--out", str(tmp_path / "out"), "--max-gap", "20"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["validation_n"] == metrics["validation_crops"]
    for variant in ("f16", "int8"):
        classifier = MaskClassifier(tmp_path / "out" / f"mask_classifier_{variant}.tflite", num_threads=1)
        assert classifier.size == (64, 64)
        crops = [read_image(p) for p in list_images(FACE_MASK / "without_mask")[:3]]
        p = classifier.no_mask_probability(crops)
        assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()

    # the export's fallback: int8 with the first depthwise convolution left in float, uint8 in and out still
    selective = tmp_path / "selective.tflite"
    selective.write_bytes(convert(run / "model.keras", np.load(run / "split.npz")["representative"], FLOAT_LAYERS))
    interpreter = Interpreter(str(selective))
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert interpreter.get_output_details()[0]["dtype"] == np.uint8
    tensors = interpreter.get_tensor_details()
    assert any(t["dtype"] == np.float32 and FLOAT_LAYERS[0] in t["name"] for t in tensors)
    assert any(t["dtype"] == np.int8 for t in tensors)
    p_selective = MaskClassifier(selective, num_threads=1).no_mask_probability(crops)
    p_float = MaskClassifier(tmp_path / "out" / "mask_classifier_f16.tflite", num_threads=1).no_mask_probability(crops)
    assert np.abs(p_selective - p_float).max() < 0.1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_training_with_the_same_seed_gives_the_same_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    weights = need(WEIGHTS) / "mobilenet_v2_1.0_224_imagenet_no_top.h5"
    monkeypatch.setenv("HOME", str(tmp_path))
    predictions = []
    for run in ("a", "b"):
        assert (
            main(
                [
                    "model",
                    "train",
                    str(need(FACE_MASK)),
                    "--limit",
                    "12",
                    "--detector",
                    "none",
                    "--size",
                    "64",
                    "--epochs",
                    "2",
                    "--fine-tune-epochs",
                    "1",
                    "--augment-copies",
                    "1",
                    "--low-res",
                    "0.5",
                    "--backbone-weights",
                    str(weights),
                    "--out",
                    str(tmp_path / run),
                    "--seed",
                    "5",
                ]
            )
            == 0
        )
        model = keras.models.load_model(tmp_path / run / "model.keras")
        predictions.append(model.predict(np.load(tmp_path / run / "split.npz")["val_images"], verbose=0))
    np.testing.assert_array_equal(predictions[0], predictions[1])


@pytest.mark.slow
def test_scene_crops_are_cut_as_the_committed_model_s_run_cut_them() -> None:
    """The training's crowd detector mines what the committed model's run mined (models/MODEL_CARD.md,
    "Training"): with the edge's duplicate-cover rule it found 590 hard negatives instead of 824."""
    detector = create_detector(Profile.CROWD, "blazeface", settings=SCENE_CROP_SETTINGS)
    crops = scene_crops(need(SCENES), 96, detector=detector, not_face=True, seed=0)
    assert {key: crops.stats[key] for key in ("scene_detected_crops", "scene_hard_negatives", "scene_background")} == {
        "scene_detected_crops": 1247,
        "scene_hard_negatives": 824,
        "scene_background": 1047,
    }


def test_low_resolution_step_blurs_and_keeps_the_plain_recipe_unchanged() -> None:
    images = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    plain = Augmentation().apply(images, np.random.default_rng(1))
    assert np.array_equal(Augmentation(low_res=0.0).apply(images, np.random.default_rng(1)), plain)
    degraded = Augmentation(low_res=1.0, low_res_px=(16, 16)).apply(images, np.random.default_rng(1))
    assert degraded.shape == images.shape and degraded.dtype == np.uint8
    detail = [np.abs(np.diff(batch.astype(int), axis=2)).mean() for batch in (plain, degraded)]
    assert detail[1] < detail[0] / 3


def test_scene_photos_are_split_whole_and_each_fold_validates_its_own_photos() -> None:
    groups = [f"photo:{i // 2}" for i in range(40)] + [f"dup:{i}" for i in range(10)]
    sources = ["scenes"] * 40 + ["face-mask"] * 10
    crops = Crops(np.zeros((50, 4, 4, 3), np.uint8), np.array([0, 1] * 25), groups, sources)
    plain_val = train_validation_split(crops, 0.2, seed=0)[1]
    folds = [train_validation_split(crops, 0.2, seed=0, fold=fold, folds=2) for fold in (0, 1)]
    face_mask_val = {i for i in plain_val if crops.sources[i] == "face-mask"}
    scene_val: list[int] = []
    for fold, (train_index, val_index) in enumerate(folds):
        assert sorted([*train_index, *val_index]) == list(range(50))
        assert {i for i in val_index if crops.sources[i] == "face-mask"} == face_mask_val
        val_groups = {crops.groups[i] for i in val_index}
        assert not val_groups & {crops.groups[i] for i in train_index}
        assert all(validation_photo(g, 0, fold=fold, folds=2) for g in val_groups if g.startswith("photo:"))
        scene_val += [i for i in val_index if crops.sources[i] == "scenes"]
    assert sorted(scene_val) == list(range(40))  # every scene photo is validated in exactly one fold
    with pytest.raises(ValueError, match="between 0 and 1"):
        train_validation_split(crops, 0.2, seed=0, fold=2, folds=2)


def test_export_refuses_an_incomplete_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "export", str(tmp_path)]) == 1
    assert "model.keras not found" in capsys.readouterr().err


def test_train_refuses_a_folder_without_class_subfolders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "train", str(tmp_path), "--detector", "none", "--out", str(tmp_path / "run")]) == 1
    assert "with_mask/ and without_mask/" in capsys.readouterr().err


def test_mirrored_copies_fall_in_one_group_and_the_split_keeps_groups_whole() -> None:
    images = [read_image(p) for p in list_images(need(FACE_MASK) / "without_mask")[:30]]
    hashes = [(dhash(i), dhash(i[:, ::-1])) for i in images]
    hashes.append((dhash(images[0][:, ::-1]), dhash(images[0])))  # a mirrored copy of image 0
    groups = near_duplicate_groups(hashes)
    assert groups[-1] == groups[0]
    crops = Crops(
        np.zeros((31, 4, 4, 3), np.uint8), np.ones(31, np.int64), [f"g{g}" for g in groups], ["face-mask"] * 31
    )
    train, val = group_split(crops, 0.3, seed=1)
    assert len(val) > 0 and not {crops.groups[i] for i in train} & {crops.groups[i] for i in val}
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(31))
    again = group_split(crops, 0.3, seed=1)
    assert again[1].tolist() == val.tolist()
