"""`maskwatch model eval` and `maskwatch detect`: exact JSON shapes, clear errors on bad input."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from edge.capture.images import list_images
from shared.cli import main
from shared.vocabulary import Profile
from tests.conftest import FACE_MASK, SCENES, need


@pytest.fixture(scope="module")
def crops_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six real images per class, one of them RGBA and one WebP, plus a corrupt file."""
    root = tmp_path_factory.mktemp("crops")
    for name in ("with_mask", "without_mask"):
        (root / name).mkdir()
        for path in list_images(need(FACE_MASK) / name)[:6]:
            shutil.copy(path, root / name / path.name)
    for special in ("071613cb35756520.png", "4a583db0f0fd47f7.webp"):
        shutil.copy(FACE_MASK / "with_mask" / special, root / "with_mask" / special)
    (root / "without_mask" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0not really a jpeg")
    return root


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    for sub in ("images", "annotations"):
        (root / sub).mkdir()
    for stem in ("maksssksksss0", "maksssksksss1", "maksssksksss10"):
        shutil.copy(need(SCENES) / "images" / f"{stem}.jpg", root / "images")
        shutil.copy(SCENES / "annotations" / f"{stem}.xml", root / "annotations")
    return root


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, list[dict]]:
    code = main(argv)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return code, [json.loads(line) for line in lines]


def test_eval_crops_json_has_the_exact_keys(capsys: pytest.CaptureFixture[str], crops_dir: Path) -> None:
    code, (result,) = run_json(capsys, ["model", "eval", str(crops_dir), "--json"])
    assert code == 0
    assert set(result) == {
        "n",
        "accuracy",
        "per_class",
        "no_face",
        "not_face",
        "threshold",
        "min_face_score",
        "min_no_mask_detector_score",
        "ms_per_image",
        "model",
    }
    assert set(result["per_class"]) == {"mask", "no_mask"}
    assert set(result["per_class"]["mask"]) == {"precision", "recall", "n"}
    assert result["n"] == 14  # the corrupt file is skipped, not counted
    assert result["threshold"] == Profile.CROWD.default_point.threshold  # the operating point it was judged at
    assert result["per_class"]["mask"]["n"] == 8 and result["no_face"] == 0
    assert result["accuracy"] >= 0.75
    assert result["model"].startswith("mask_classifier_int8@")


def test_eval_detect_counts_images_without_a_face(capsys: pytest.CaptureFixture[str], crops_dir: Path) -> None:
    code, (result,) = run_json(capsys, ["model", "eval", str(crops_dir), "--detect", "--profile", "near", "--json"])
    assert code == 0
    assert result["n"] == 14
    correct = sum(v["recall"] * v["n"] for v in result["per_class"].values())
    assert result["accuracy"] == pytest.approx(correct / 14, abs=1e-3)
    assert 0 <= result["no_face"] <= 14


def test_eval_scenes_reports_recall_per_class_and_size(capsys: pytest.CaptureFixture[str], scenes_dir: Path) -> None:
    code, (result,) = run_json(capsys, ["model", "eval", str(scenes_dir), "--scenes", "--json"])
    assert code == 0
    assert result["images"] == 3 and result["faces"] >= 10
    assert set(result["recall"]) == {"with_mask", "without_mask", "mask_weared_incorrect"}
    assert result["recall"]["without_mask"]["all"]["n"] >= 1
    assert set(result["no_mask_decision"]) == {"all", ">=24"}
    assert {"precision", "recall", "faces", "accuracy", "n"} <= set(result["no_mask_decision"]["all"])
    assert 0 < result["precision"] <= 1 and result["ms_per_image"] > 0
    # the profile's operating point: no option gives any of its settings
    assert {setting: result[setting] for setting in Profile.CROWD.default_point._fields} == (
        Profile.CROWD.default_point._asdict()
    )
    alerts = result["alerts"]
    assert alerts["alerts"] == alerts["right"] + alerts["on_masked_face"] + alerts["on_no_face"]
    assert alerts["false_alerts_per_photo"] == pytest.approx((alerts["alerts"] - alerts["right"]) / 3, abs=1e-4)
    assert {"alert_precision", "false_alerts_per_photo", "alert_recall"} <= set(result["threshold_sweep"]["0.5"])


def test_threshold_follows_the_profile_unless_given(capsys: pytest.CaptureFixture[str], scenes_dir: Path) -> None:
    near = Profile.NEAR.default_point.threshold
    for extra, expected in ((["--profile", "near"], near), (["--threshold", "0.7"], 0.7)):
        code, (result,) = run_json(capsys, ["model", "eval", str(scenes_dir), "--scenes", "--json", *extra])
        assert code == 0 and result["threshold"] == expected
    code, (result,) = run_json(
        capsys, ["model", "eval", str(scenes_dir), "--scenes", "--json", "--min-face-score", "0.99"]
    )
    assert code == 0 and result["min_face_score"] == 0.99
    gated = {}
    for needed in ("0", "1"):
        code, (result,) = run_json(
            capsys,
            ["model", "eval", str(scenes_dir), "--scenes", "--json", "--min-no-mask-detector-score", needed],
        )
        assert code == 0 and result["min_no_mask_detector_score"] == float(needed)
        gated[needed] = result["alerts"]["alerts"]
    assert gated["0"] > 0 and gated["1"] == 0  # no detection scores 1: every no-mask verdict is dropped


def test_detect_prints_one_json_line_per_image(
    capsys: pytest.CaptureFixture[str], scenes_dir: Path, tmp_path: Path
) -> None:
    code, results = run_json(
        capsys, ["detect", str(scenes_dir / "images"), "--json", "--annotate", str(tmp_path / "out")]
    )
    assert code == 0
    assert len(results) == 3
    for result in results:
        assert set(result) == {"image", "faces", "ms"} and set(result["ms"]) == {"detect", "classify", "total"}
        for face in result["faces"]:
            assert set(face) == {"box", "detector_score", "face_score", "label", "score"}
            assert len(face["box"]) == 4 and face["label"] in ("mask", "no_mask") and face["score"] <= 1
            # score is the probability of the label; detect defaults to the crowd profile's threshold
            threshold = Profile.CROWD.default_point.threshold
            assert face["score"] >= (threshold if face["label"] == "no_mask" else 1 - threshold)
    assert sum(len(r["faces"]) for r in results) >= 5
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "maksssksksss0.jpg",
        "maksssksksss1.jpg",
        "maksssksksss10.jpg",
    ]


def test_detect_reports_unreadable_images_and_goes_on(capsys: pytest.CaptureFixture[str], crops_dir: Path) -> None:
    code = main(["detect", str(crops_dir / "without_mask"), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.jpg: not a readable image" in captured.err
    assert len(captured.out.strip().splitlines()) == 6


@pytest.mark.parametrize(
    "argv,message",
    [
        (["model", "eval", "{tmp}/absent"], "folder not found"),
        (["model", "eval", "{tmp}"], "with_mask/ and without_mask/"),
        (["model", "eval", "{tmp}", "--scenes"], "images/ and annotations/"),
        (["model", "eval", "{tmp}/empty"], "no images"),
        (["model", "eval", "{tmp}/empty", "--model", "{tmp}/junk.tflite"], "not a valid TFLite model"),
        (["model", "eval", "{tmp}/empty", "--threshold", "1.5"], "between 0 and 1"),
    ],
)
def test_bad_inputs_give_clear_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    for name in ("with_mask", "without_mask"):
        (tmp_path / "empty" / name).mkdir(parents=True)
    (tmp_path / "junk.tflite").write_bytes(b"junk" * 64)
    try:
        code = main([a.format(tmp=tmp_path) for a in argv])
    except SystemExit as usage:  # argparse's own checks (missing folder, threshold range)
        code = usage.code
    assert code in (1, 2)
    assert message in capsys.readouterr().err


def test_model_fetch_gives_up_after_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An index that accepts the connection and never answers: the download ends at --timeout, exit 1."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setenv("MASKWATCH_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    try:
        assert main(["model", "fetch", "--timeout", "2"]) == 1
    finally:
        silent.close()
    assert "timed out after 2 s" in capsys.readouterr().err
