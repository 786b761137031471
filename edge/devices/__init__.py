"""Devices: the pan servo and the LED/buzzer indicator, gpiozero devices on an injected pin factory."""
