"""A simulated panoramic camera on a servo, for tests, the demo and machines without a Pi.

``--source scene:DIR`` builds a panorama (``scene.span_deg`` wide, 360 by
default) with the face images of DIR placed at known angles; the camera sees
the window of ``scene.fov_deg`` centred on the current servo angle, at
``scene.fps``, with light noise. When the servo turns, the view turns.

DIR holds either a ``scene.yaml``::

    span_deg: 360
    faces:
      - {file: alice.jpg, angle_deg: 60, label: mask}

or plain images, optionally in ``with_mask/`` and ``without_mask/`` (their
labels become the ground truth), spread evenly around the panorama.
``scene:builtin`` is a scene shipped with the package (public-domain photos).

Angles grow to the right: a face right of the image centre is at a larger angle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np

from edge.capture.frames import Frame
from edge.capture.images import IMAGE_SUFFIXES, read_image
from edge.config import SceneConfig
from shared.config import read_yaml
from shared.errors import ConfigError, ImageReadError
from shared.messages import utc_now

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).with_name("scene")
_LABEL_DIRS = {"with_mask": "mask", "without_mask": "no_mask"}


@dataclass(frozen=True)
class Placement:
    """A face image at a known angle with its ground-truth label (``None`` if unknown)."""

    name: str
    image: np.ndarray
    angle_deg: float
    label: str | None = None
    height_frac: float | None = None


@dataclass(frozen=True)
class Scene:
    """The faces of a panorama and how wide it is."""

    placements: tuple[Placement, ...]
    span_deg: float


def _load(path: Path) -> np.ndarray:
    try:
        return read_image(path)
    except ImageReadError as exc:
        raise ConfigError(f"scene image: {exc}") from exc


def load_scene(spec: str, config: SceneConfig) -> Scene:
    """Read ``DIR`` (or ``builtin``) into a :class:`Scene`; raises ConfigError on a bad folder."""
    folder = BUILTIN_DIR if spec == "builtin" else Path(spec)
    if not folder.is_dir():
        raise ConfigError(f"scene folder not found: {folder} (use scene:DIR or scene:builtin)")
    manifest = folder / "scene.yaml"
    if manifest.is_file():
        data = read_yaml(manifest)
        span = float(data.get("span_deg", config.span_deg))
        placements = []
        for i, face in enumerate(data.get("faces") or []):
            if not isinstance(face, dict) or "file" not in face or "angle_deg" not in face:
                raise ConfigError(f"{manifest}: faces[{i}] needs 'file' and 'angle_deg'")
            placements.append(
                Placement(
                    name=str(face["file"]),
                    image=_load(folder / face["file"]),
                    angle_deg=float(face["angle_deg"]),
                    label=face.get("label"),
                    height_frac=face.get("height_frac"),
                )
            )
        return Scene(tuple(placements), span)
    files: list[tuple[Path, str | None]] = []
    for sub, label in [(folder, None), *((folder / d, lab) for d, lab in _LABEL_DIRS.items())]:
        if sub.is_dir():
            files += [(p, label) for p in sorted(sub.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ConfigError(f"scene folder {folder} has no images")
    step = config.span_deg / len(files)
    start = -config.span_deg / 2 + step / 2
    placements = [
        Placement(name=p.relative_to(folder).as_posix(), image=_load(p), angle_deg=start + i * step, label=label)
        for i, (p, label) in enumerate(files)
    ]
    return Scene(tuple(placements), config.span_deg)


class SceneCamera:
    """The camera of a :class:`Scene`: a window of the panorama at the servo's angle.

    :param scene: the faces.
    :param config: field of view, frame size, fps, noise, pacing.
    :param angle: returns the servo's current angle in degrees.
    """

    def __init__(self, scene: Scene, config: SceneConfig, angle: Callable[[], float]) -> None:
        self.scene = scene
        self.config = config
        self.live = config.realtime
        self.angle = angle
        self.name = "scene"
        self.px_per_deg = config.width / config.fov_deg
        self._panorama: np.ndarray | None = None
        self._noise: list[np.ndarray] = []
        self._index = 0
        self._next_at = 0.0
        self._t0 = utc_now()

    def open(self) -> None:
        cfg = self.config
        width = round(self.scene.span_deg * self.px_per_deg)
        rng = np.random.default_rng(cfg.seed)
        # a soft, uneven background: low-resolution random colours blown up, like a room's walls
        coarse = rng.integers(95, 165, size=(4, max(2, int(self.scene.span_deg // 20)), 3), dtype=np.uint8)
        pano = cv2.resize(coarse, (width, cfg.height), interpolation=cv2.INTER_CUBIC)
        for p in self.scene.placements:
            h = int(cfg.height * (p.height_frac or cfg.face_height_frac))
            w = max(1, int(p.image.shape[1] * h / p.image.shape[0]))
            cx = int((p.angle_deg + self.scene.span_deg / 2) * self.px_per_deg) % width
            x0, y0 = cx - w // 2, (cfg.height - h) // 2
            face = cv2.resize(p.image, (w, h), interpolation=cv2.INTER_AREA)
            cols = np.arange(x0, x0 + w) % width
            pano[y0 : y0 + h, cols] = face
        self._panorama = pano
        self._noise = (
            [rng.normal(0, cfg.noise, size=(cfg.height, cfg.width, 3)).astype(np.int16) for _ in range(4)]
            if cfg.noise > 0
            else []
        )
        self._next_at = time.monotonic()
        self._t0 = utc_now()

    def _left(self, angle: float) -> int:
        centre = (angle + self.scene.span_deg / 2) * self.px_per_deg
        return round(centre - self.config.width / 2)

    def view(self, angle: float) -> np.ndarray:
        """The noiseless window of the panorama seen at ``angle``."""
        if self._panorama is None:
            raise RuntimeError("scene camera is not open")
        left = self._left(angle)
        width = self._panorama.shape[1]
        if self.scene.span_deg >= 360:
            cols = np.arange(left, left + self.config.width) % width
        else:
            cols = np.clip(np.arange(left, left + self.config.width), 0, width - 1)
        return self._panorama[:, cols]

    def read(self) -> Frame | None:
        cfg = self.config
        if cfg.duration_s is not None and self._index >= cfg.duration_s * cfg.fps:
            return None
        if cfg.realtime:
            delay = self._next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next_at = max(self._next_at + 1 / cfg.fps, time.monotonic() - 1 / cfg.fps)
            ts = utc_now()
        else:
            ts = self._t0 + timedelta(seconds=self._index / cfg.fps)
        angle = float(self.angle())
        image = self.view(angle)
        if self._noise:
            noisy = image.astype(np.int16) + self._noise[self._index % len(self._noise)]
            image = np.clip(noisy, 0, 255).astype(np.uint8)
        else:
            image = image.copy()
        frame = Frame(image=image, index=self._index, ts=ts, angle=angle)
        self._index += 1
        return frame

    def close(self) -> None:
        self._panorama = None
        self._index = 0
