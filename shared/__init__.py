"""The contract between Maskwatch edge nodes and the hub: topics, messages, config, MQTT."""

__version__ = "0.1.0"
