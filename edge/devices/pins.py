"""Choosing the gpiozero pin factory: the real one on a Raspberry Pi, the mock one elsewhere."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from shared.errors import HardwareError

log = logging.getLogger(__name__)

_MODEL_FILE = Path("/proc/device-tree/model")


def on_raspberry_pi() -> bool:
    """Whether this machine says it is a Raspberry Pi."""
    try:
        return "raspberry pi" in _MODEL_FILE.read_text(errors="replace").lower()
    except OSError:
        return False


def make_pin_factory(name: str) -> Any:
    """A gpiozero pin factory by name: ``auto``, ``mock``, ``lgpio``, ``pigpio``, ``rpigpio`` or ``native``.

    ``auto`` is gpiozero's own default on a Pi and ``MockFactory(pin_class=MockPWMPin)`` elsewhere.

    :raises HardwareError: the factory's library is missing or cannot reach the GPIO.
    """
    if name == "auto":
        name = "default" if on_raspberry_pi() else "mock"
        if name == "mock":
            log.info("not a Raspberry Pi: servo and indicator use gpiozero's mock pins")
    try:
        if name == "mock":
            from gpiozero.pins.mock import MockFactory, MockPWMPin

            return MockFactory(pin_class=MockPWMPin)
        if name == "default":
            from gpiozero import Device

            return Device._default_pin_factory()
        if name == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory()
        if name == "pigpio":
            from gpiozero.pins.pigpio import PiGPIOFactory

            return PiGPIOFactory()
        if name == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
        if name == "native":
            from gpiozero.pins.native import NativeFactory

            return NativeFactory()
    except ImportError as exc:
        raise HardwareError(f"pin factory {name!r} needs {exc.name} (install it, or use pin_factory: mock)") from exc
    except Exception as exc:  # the factories raise their own error types when the GPIO is unreachable
        raise HardwareError(f"pin factory {name!r} failed: {exc}") from exc
    raise HardwareError(f"unknown pin factory {name!r}: use auto, mock, lgpio, pigpio, rpigpio or native")
