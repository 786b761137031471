"""The blue/red indicator: blue while every face in view wears a mask, red while any does not.

Wiring: a blue LED on ``indicator.blue_pin`` (GPIO22), a red LED on ``indicator.red_pin`` (GPIO27),
each through a resistor to ground; an optional active buzzer on ``indicator.buzzer_pin``.

Example (mock pins)::

    >>> from gpiozero.pins.mock import MockFactory, MockPWMPin
    >>> ind = Indicator(IndicatorConfig(), pin_factory=MockFactory(pin_class=MockPWMPin))
    >>> ind.show_no_mask(); ind.state
    'no_mask'
    >>> ind.close()
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Literal

from edge.config import IndicatorConfig
from shared.errors import HardwareError

log = logging.getLogger(__name__)

IndicatorState = Literal["idle", "mask", "no_mask"]


class Indicator:
    """Owns the two LEDs and the optional buzzer.

    :param config: pins and buzz length.
    :param pin_factory: a gpiozero pin factory (mock pins in tests).
    :raises HardwareError: a pin cannot be used.
    """

    def __init__(self, config: IndicatorConfig, pin_factory: Any = None) -> None:
        from gpiozero import LED, Buzzer

        self.config = config
        self.state: IndicatorState = "idle"
        self._devices: list[Any] = []
        try:
            self.blue = LED(config.blue_pin, pin_factory=pin_factory)
            self._devices.append(self.blue)
            self.red = LED(config.red_pin, pin_factory=pin_factory)
            self._devices.append(self.red)
            self.buzzer = Buzzer(config.buzzer_pin, pin_factory=pin_factory) if config.buzzer_pin is not None else None
            if self.buzzer:
                self._devices.append(self.buzzer)
        except Exception as exc:  # gpiozero's pin errors, or OSError for a busy pin
            self.close()
            raise HardwareError(f"cannot set up the indicator: {exc}") from exc

    def show_mask(self) -> None:
        """Blue: every face in view wears a mask."""
        self.red.off()
        self.blue.on()
        self.state = "mask"

    def show_no_mask(self) -> None:
        """Red: someone in view wears no mask."""
        self.blue.off()
        self.red.on()
        self.state = "no_mask"

    def show_idle(self) -> None:
        """Both off: no face in view."""
        self.blue.off()
        self.red.off()
        self.state = "idle"

    def show(self, labels: Iterable[str]) -> None:
        """Show the verdict for the labels of the faces in view (no labels: idle)."""
        labels = list(labels)
        if not labels:
            target: IndicatorState = "idle"
        elif "no_mask" in labels:
            target = "no_mask"
        else:
            target = "mask"
        if target != self.state:
            {"idle": self.show_idle, "mask": self.show_mask, "no_mask": self.show_no_mask}[target]()

    def buzz(self) -> None:
        """One short beep (a new no-mask event), if a buzzer is configured; does not block."""
        if self.buzzer:
            self.buzzer.blink(on_time=self.config.buzz_s, off_time=0.0, n=1, background=True)

    def close(self) -> None:
        """Release the pins; idempotent."""
        for device in reversed(self._devices):
            device.close()
        self._devices = []
