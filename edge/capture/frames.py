"""A captured frame, and the protocol every frame source follows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np

from shared.messages import utc_now


@dataclass
class Frame:
    """One captured image (BGR ``uint8``) and where it came from."""

    image: np.ndarray
    index: int
    ts: datetime = field(default_factory=utc_now)
    name: str | None = None
    angle: float | None = None
    still: bool = False
    captured: float = field(default_factory=time.monotonic)

    @property
    def ref(self) -> int | str:
        """The event's ``frame`` field: the file name of a still, else the index."""
        return self.name if self.still and self.name else self.index


class FrameSource(Protocol):
    """Something that yields frames.

    ``read()`` returns the next frame, or ``None`` at the end of a finite source;
    it raises :class:`HardwareError` when a live device fails.
    """

    name: str
    live: bool

    def open(self) -> None: ...
    def read(self) -> Frame | None: ...
    def close(self) -> None: ...
