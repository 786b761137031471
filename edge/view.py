"""What the node saw last: the latest processed frame and the faces found in it, shared by the pipeline that
writes it and the preview and ``snapshot`` command that read it."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.capture.frames import Frame


@dataclass(frozen=True)
class FaceMark:
    """A face drawn on the preview."""

    box: tuple[int, int, int, int]
    label: str
    score: float
    confirmed: bool


@dataclass
class View:
    """The latest processed frame and what was found in it (for the preview and ``snapshot``)."""

    frame: Frame | None = None
    faces: list[FaceMark] = field(default_factory=list)
    fps: float = 0.0
