"""Maskwatch edge node: camera -> faces -> mask -> tracked events over MQTT (runs on a Raspberry Pi)."""
